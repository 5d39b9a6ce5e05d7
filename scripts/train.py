"""`python scripts/train.py ARGS` is `torch-logreg train ARGS`; see `--help`."""

import sys

from torch_logreg.app.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
