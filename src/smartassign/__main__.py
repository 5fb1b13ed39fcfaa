"""``python -m smartassign``: the same as the ``smartassign`` command."""

import sys

from smartassign.cli import main

sys.exit(main())
