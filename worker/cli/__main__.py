"""``python -m worker.cli``: the ``fetalhc`` command line (as the console script)."""

from worker.cli import main

raise SystemExit(main())
