#!/usr/bin/env python
"""4-bit LoRA entry point (continued MLM pretraining or a sequence head), the same code as ``bitesm lora``.

One process:       python train/finetune_lora.py --config configs/qlora-long-esm2-t6.yaml --output-dir runs/qlora
Data parallel:     accelerate launch --multi_gpu --num_processes 8 train/finetune_lora.py --config ... --output-dir ...
Two CPU processes: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 train/finetune_lora.py ...
"""

import sys

from bitesm.cli import main

if __name__ == "__main__":
    sys.exit(main(["lora", *sys.argv[1:]]))
