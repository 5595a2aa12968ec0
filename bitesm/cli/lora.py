"""``bitesm lora`` (train LoRA adapters on a 4-bit, fp or ternary base from a YAML config; also
``train/finetune_lora.py``) and ``bitesm lora merge`` (merge a trained adapter into a floating-point base), over
:mod:`bitesm.lora`. The parser imports only the standard library."""

from __future__ import annotations

import argparse
import json
import logging

from ._model_options import check_output, required_group
from .train import add_run_arguments, run_training

DESCRIPTION = (
    "4-bit LoRA (QLoRA): train low-rank adapters on a frozen base whose encoder Linear weights are NF4 (bitsandbytes), "
    "floating point or ternary, for continued MLM pretraining or a sequence-level classification or regression head, "
    "from a YAML config with a lora: section. 'bitesm lora merge' merges a trained adapter into a floating-point copy "
    "of its base."
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bitesm lora`` and ``bitesm lora merge`` to the ``bitesm`` subparsers ``commands``."""
    parser = commands.add_parser(
        "lora", help="4-bit LoRA (QLoRA): adapters on an NF4, fp or ternary base, MLM or a sequence head, from a YAML "
        "config; 'bitesm lora merge' merges an adapter into an fp base", description=DESCRIPTION)
    add_run_arguments(parser, "YAML config with a lora: section, e.g. configs/qlora-long-esm2-t6.yaml",
                      "run folder (adapter/, memory_report.json, checkpoints/, tensorboard/, base/)", "lora.r=16",
                      required=False)  # not for 'bitesm lora merge'
    parser.set_defaults(handler=run_lora)
    sub = parser.add_subparsers(dest="lora_command", metavar="merge")
    merge = sub.add_parser("merge", help="merge a trained adapter into a floating-point copy of its base (4-bit bases "
                           "are dequantized)", description="Merge a trained LoRA adapter into a floating-point copy "
                           "of its base (a 4-bit base is dequantized first) and save a plain bitesm checkpoint.")
    required = required_group(merge)
    required.add_argument("--adapter", required=True, help="adapter folder of a run (<output-dir>/adapter)")
    required.add_argument("--output", required=True, help="folder for the merged bitesm checkpoint")
    merge.set_defaults(handler=run_merge)


def run_lora(args: argparse.Namespace) -> int:
    """Run ``bitesm lora``; returns 0, or 143 / 130 when SIGTERM / SIGINT stopped it after a checkpoint.

    Raises:
        UserInputError: ``--config`` or ``--output-dir`` missing; a bad config, override, input, output or resume.
    """
    from ..errors import UserInputError

    if not args.config or not args.output_dir:
        missing = " and ".join(o for o, v in (("--config", args.config), ("--output-dir", args.output_dir)) if not v)
        raise UserInputError(f"{missing} required: bitesm lora --config CFG --output-dir DIR "
                             "(or 'bitesm lora merge --adapter DIR --output DIR')")
    from ..lora.trainer import train_lora

    code, result = run_training(args, "bitesm lora", train_lora)
    if result is not None:
        print(json.dumps(result, indent=2))
    return code


def run_merge(args: argparse.Namespace) -> int:
    """Run ``bitesm lora merge``; returns 0.

    Raises:
        UserInputError: the adapter folder cannot be used, or the output cannot be written; a ternary base
            (``TernaryMergeError``: load the adapter on its base instead).
    """
    from pathlib import Path

    from ..errors import UserInputError

    if not (Path(args.adapter) / "adapter_config.json").is_file():
        raise UserInputError(f"--adapter {args.adapter} is not an adapter folder (no adapter_config.json). Fix: pass "
                             "the adapter/ folder of a 'bitesm lora' run")
    check_output(args.output, folder=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..lora.adapters import merge_adapter

    model = merge_adapter(args.adapter, args.output)
    print(json.dumps({"adapter": args.adapter, "output": args.output, "model": type(model).__name__}, indent=2))
    return 0
