#!/usr/bin/env python
"""``bitesm eval run`` as a script (same code; see README "Evaluation")."""

import sys

from bitesm.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "run", *sys.argv[1:]]))
