"""``python -m mttlib <command> ...``: see :mod:`mttlib.cli`."""

import sys

from mttlib.cli import main

sys.exit(main())
