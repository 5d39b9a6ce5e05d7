"""`python scripts/predict.py ARGS` is `torch-logreg predict ARGS`; see `--help`."""

import sys

from torch_logreg.app.cli import main

sys.exit(main(["predict", *sys.argv[1:]]))
