"""``python -m torch_logreg``: the ``torch-logreg`` command line."""

from .app.cli import main

raise SystemExit(main())
