#!/usr/bin/env python
"""ProteinGym zero-shot evaluation entry point, the same code as ``bitesm eval proteingym``.

    python eval/proteingym.py --model runs/quickstart/model --assays data/proteingym/substitutions \
        --output runs/quickstart/eval/proteingym.json
"""

import sys

from bitesm.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "proteingym", *sys.argv[1:]]))
