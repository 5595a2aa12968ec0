"""The ``bitesm`` command: ``bitesm train``, ``bitesm eval proteingym``, ``bitesm ptq`` and ``bitesm ptq analyze``.

Each subcommand's arguments and behaviour live next to the library code they drive (``add_cli_arguments`` and
``cli_main`` in :mod:`bitesm.training.cli`, :mod:`bitesm.evaluation.proteingym` and :mod:`bitesm.ptq.cli`); the scripts in ``train/`` and
``eval/`` call the same functions.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .evaluation import proteingym
    from .ptq import cli as ptq_cli
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
    ptq = commands.add_parser(
        "ptq", help="post-training quantization (PTQ4Protein): 'bitesm ptq --model ... --output DIR' or 'bitesm ptq analyze'"
    )
    ptq_cli.add_cli_arguments(ptq)
    ptq.set_defaults(handler=ptq_cli.cli_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
