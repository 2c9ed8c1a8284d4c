"""``python -m sodlib ...``: see :mod:`sodlib.cli`."""
from sodlib.cli import main

raise SystemExit(main())
