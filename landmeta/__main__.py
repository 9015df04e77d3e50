"""`python -m landmeta`: the console script."""

import sys

from landmeta.cli import main

sys.exit(main())
