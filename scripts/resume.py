"""`python scripts/resume.py ARGS` is `torch-logreg resume ARGS`; see `--help`."""

import sys

from torch_logreg.app.cli import main

sys.exit(main(["resume", *sys.argv[1:]]))
