"""`python scripts/gradcheck.py ARGS` is `torch-logreg gradcheck ARGS`; see `--help`."""

import sys

from torch_logreg.app.cli import main

sys.exit(main(["gradcheck", *sys.argv[1:]]))
