"""``bitesm lora`` (train LoRA adapters on a 4-bit, fp or ternary base from a YAML config; also
``train/finetune_lora.py``) and ``bitesm lora merge`` (merge a trained adapter into a floating-point base)."""

from __future__ import annotations

import argparse
import json
import logging

from ..training.cli import add_run_arguments


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(
        parser,
        "YAML config with a lora: section, e.g. configs/qlora-long-esm2-t6.yaml",
        "run folder (adapter/, memory_report.json, checkpoints/, tensorboard/, base/)",
        "lora.r=16",
        required=False,  # not for 'bitesm lora merge'
    )
    commands = parser.add_subparsers(dest="lora_command", metavar="merge")
    merge = commands.add_parser(
        "merge", help="merge a trained adapter into a floating-point copy of its base (4-bit bases are dequantized)"
    )
    merge.add_argument("--adapter", required=True, help="adapter folder of a run (<output-dir>/adapter)")
    merge.add_argument("--output", required=True, help="folder for the merged bitesm checkpoint")


def cli_main(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.lora_command == "merge":
        from .adapters import merge_adapter

        model = merge_adapter(args.adapter, args.output)
        print(json.dumps({"adapter": args.adapter, "output": args.output, "model": type(model).__name__}, indent=2))
        return 0
    if not args.config or not args.output_dir:
        raise SystemExit("bitesm lora: error: --config and --output-dir are required (or use 'bitesm lora merge')")
    from ..training.config import load_config, parse_override
    from .trainer import train_lora

    config = load_config(args.config, dict(parse_override(o) for o in args.overrides))
    result = train_lora(config, args.output_dir, resume=args.resume)
    if not PartialState().is_main_process:
        return 0
    print(json.dumps(result, indent=2))
    return 0
