"""``python -m suite_tools`` is ``suite``."""

import sys

from suite_tools.cli import main

sys.exit(main())
