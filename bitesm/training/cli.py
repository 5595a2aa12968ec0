"""``bitesm train``: the command line of :mod:`bitesm.training` (also ``train/pretrain.py``)."""

from __future__ import annotations

import argparse
import json
import logging


def add_run_arguments(
    parser: argparse.ArgumentParser, config_help: str, output_help: str, set_example: str, required: bool = True
) -> None:
    """``--config``, ``--output-dir``, ``--resume`` and ``--set`` of a training run (``bitesm train``, ``bitesm lora``)."""
    parser.add_argument("--config", required=required, help=config_help)
    parser.add_argument("--output-dir", required=required, help=output_help)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {set_example} (repeatable)",
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(
        parser,
        "YAML training config, e.g. configs/quickstart.yaml",
        "run folder (checkpoints, tensorboard/, model/, eval/)",
        "training.max_steps=100",
    )


def cli_main(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .config import load_config, parse_override
    from .trainer import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, dict(parse_override(o) for o in args.overrides))
    result = train(config, args.output_dir, resume=args.resume)
    if not PartialState().is_main_process:
        return 0
    summary = {k: v for k, v in result.items() if k != "proteingym"}
    if "proteingym" in result:
        summary["proteingym_mean_spearman"] = result["proteingym"].get("mean_spearman")
    print(json.dumps(summary, indent=2))
    return 0
