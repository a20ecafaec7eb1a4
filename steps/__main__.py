"""``python -m steps`` is ``spot-batch``."""

import sys

from steps.cli import main

sys.exit(main())
