import sys

from landmeta.cli import main

sys.exit(main())
