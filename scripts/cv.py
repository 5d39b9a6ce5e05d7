"""`python scripts/cv.py ARGS` is `torch-logreg cv ARGS`; see `--help`."""

import sys

from torch_logreg.app.cli import main

sys.exit(main(["cv", *sys.argv[1:]]))
