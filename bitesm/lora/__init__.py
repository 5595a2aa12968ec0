"""4-bit LoRA (QLoRA) for ESM-2, Long ESM-2 and ternary bitesm bases: continued MLM pretraining or sequence heads.

QLoRA (Dettmers et al. 2023): the base's encoder Linear weights are stored in 4-bit NF4 (bitsandbytes), frozen, and
low-rank adapters (LoRA, Hu et al. 2021) train in full precision; Long ESM-2's "quantized" models (arXiv 2501.07747)
are trained this way. Modules: ``nf4`` (bitsandbytes config, CPU fix), ``base`` (which base, loaded how),
``adapters`` (attach / save / load / merge with peft, LoRA on BitLinear), ``memory`` (the memory report),
``trainer`` (the pretraining loop with these); ``bitesm lora`` is :mod:`bitesm.cli.lora`.
"""

from .adapters import (
    LoraBitLinear,
    TernaryMergeError,
    attach_lora,
    load_adapter,
    merge_adapter,
    resolve_target_modules,
    save_adapter,
)
from .base import BaseSpec, load_base, prepare_base
from .memory import format_memory_report, memory_report
from .nf4 import bnb_config, disable_cpu_weight_repacking, nf4_weight_bytes
from .trainer import LoraTrainer, train_lora

__all__ = [
    "BaseSpec",
    "LoraBitLinear",
    "LoraTrainer",
    "TernaryMergeError",
    "attach_lora",
    "bnb_config",
    "disable_cpu_weight_repacking",
    "format_memory_report",
    "load_adapter",
    "load_base",
    "memory_report",
    "merge_adapter",
    "nf4_weight_bytes",
    "prepare_base",
    "resolve_target_modules",
    "save_adapter",
    "train_lora",
]
