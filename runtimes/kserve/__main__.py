"""``python -m runtimes.kserve``: the same command as ``taskgate kserve``."""

import sys

from runtimes.kserve.server import main

sys.exit(main())
