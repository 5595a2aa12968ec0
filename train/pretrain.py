#!/usr/bin/env python
"""MLM pretraining entry point, the same code as ``bitesm train``.

One process:       python train/pretrain.py --config configs/quickstart.yaml --output-dir runs/quickstart
Data parallel:     accelerate launch --multi_gpu --num_processes 8 train/pretrain.py --config ... --output-dir ...
Two CPU processes: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 train/pretrain.py ...
"""

import sys

from bitesm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
