#!/usr/bin/env python
"""``bitesm eval compare`` as a script (same code; see README "Evaluation")."""

import sys

from bitesm.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "compare", *sys.argv[1:]]))
