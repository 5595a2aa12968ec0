"""``python -m bitesm.cli``: the ``bitesm`` command."""

import sys

from . import main

sys.exit(main())
