"""`python scripts/evaluate.py ARGS` is `torch-logreg evaluate ARGS`; see `--help`."""

import sys

from torch_logreg.app.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
