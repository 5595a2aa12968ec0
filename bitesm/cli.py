"""The ``bitesm`` command: ``bitesm train ...`` and ``bitesm eval proteingym ...``.

Each subcommand's arguments and behaviour live next to the library code they drive (``add_cli_arguments`` and
``cli_main`` in :mod:`bitesm.training.cli` and :mod:`bitesm.evaluation.proteingym`); the scripts in ``train/`` and
``eval/`` call the same functions.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .evaluation import proteingym
    from .training import cli as training_cli

    parser = argparse.ArgumentParser(prog="bitesm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="MLM pretraining (ternary or fp ESM-2) from a YAML config")
    training_cli.add_cli_arguments(train)
    train.set_defaults(handler=training_cli.cli_main)

    evaluate = commands.add_parser("eval", help="evaluate a model")
    suites = evaluate.add_subparsers(dest="suite", required=True, metavar="SUITE")
    pg = suites.add_parser("proteingym", help="ProteinGym zero-shot DMS Spearman by masked-marginals")
    proteingym.add_cli_arguments(pg)
    pg.set_defaults(handler=proteingym.cli_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
