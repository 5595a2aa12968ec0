"""``bitesm train`` (also ``train/pretrain.py``), over :func:`bitesm.training.trainer.train`. The parser imports
only the standard library."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ._model_options import required_group

DESCRIPTION = (
    "Masked-language-model pretraining of a ternary (BitNet b1.58) or full-precision ESM-2 encoder from a YAML config, "
    "on Accelerate (one process, or 'accelerate launch' for data parallel). The run folder gets checkpoints, "
    "TensorBoard logs, metrics.jsonl and the final model in Hugging Face format. SIGTERM or Ctrl-C writes a "
    "checkpoint at the end of the current step; --resume continues exactly."
)


def add_run_arguments(parser: argparse.ArgumentParser, config_help: str, output_help: str, set_example: str,
                      required: bool = True) -> None:
    """``--config``, ``--output-dir``, ``--resume``, ``--allow-config-change`` and ``--set`` of a training run
    (``bitesm train``, ``bitesm lora``); :func:`run_options` turns them into the keyword arguments of ``train``.

    Args:
        parser: the command's parser.
        config_help, output_help: help texts of ``--config`` and ``--output-dir``.
        set_example: an example ``KEY=VALUE`` for ``--set``'s help.
        required: list ``--config`` and ``--output-dir`` as required (``bitesm lora`` checks them itself, because
            ``bitesm lora merge`` takes neither).
    """
    group = required_group(parser) if required else parser
    suffix = "" if required else " (required unless 'merge')"
    group.add_argument("--config", required=required, help=config_help + suffix)
    group.add_argument("--output-dir", required=required, help=output_help + suffix)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --output-dir (the config must match the "
                        "checkpoint's, except logging, evaluation, checkpoint and budget settings)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept config changes that break an exact resume (batch size, learning "
                        "rate, max_steps, data...); each segment's config is recorded in "
                        "<output-dir>/config_history.jsonl")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, parsed as the key's type, e.g. --set {set_example} "
                        "(repeatable)")


def run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`bitesm.training.trainer.train` (and :func:`bitesm.lora.trainer.train_lora`)
    given by :func:`add_run_arguments`: ``resume`` and ``allow_config_change``."""
    return {"resume": args.resume, "allow_config_change": getattr(args, "allow_config_change", False)}


def load_run_config(args: argparse.Namespace):
    """The validated :class:`~bitesm.training.config.Config` of ``--config`` with the ``--set`` overrides.

    Raises:
        ConfigError: a missing, malformed or invalid config, or an override of the wrong type or an unknown key.
    """
    from ..training.config import load_config, parse_override

    return load_config(args.config, dict(parse_override(o) for o in args.overrides))


def report_interrupted(err, command: str) -> int:
    """Print the one-line message of a run stopped by SIGTERM / SIGINT (main process only) and return its exit code.

    Args:
        err: the :class:`~bitesm.training.preemption.TrainingInterrupted` raised by ``train``.
        command: how the message names the command, e.g. ``"bitesm train"``.

    Returns:
        ``err.exit_code``: 143 for SIGTERM, 130 for SIGINT.
    """
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"{command}: {err}", file=sys.stderr)
    return err.exit_code


def run_training(args: argparse.Namespace, command: str, train_fn) -> tuple[int, dict | None]:
    """Load the run's config and call ``train_fn(config, output_dir, resume=..., allow_config_change=...)`` (the
    training functions of ``bitesm train`` and ``bitesm lora``).

    Returns:
        ``(exit code, result)``: ``(0, result)`` on the main process; ``(0, None)`` on the others; ``(143 or 130,
        None)`` when SIGTERM / SIGINT stopped the run after a checkpoint (the main process printed one line).

    Raises:
        ConfigError: a bad config, override, input path, output folder or resume.
    """
    config = load_run_config(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from accelerate import PartialState

    from ..training.preemption import TrainingInterrupted

    try:
        result = train_fn(config, args.output_dir, **run_options(args))
    except TrainingInterrupted as err:
        return report_interrupted(err, command), None
    return 0, (result if PartialState().is_main_process else None)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bitesm train`` to the ``bitesm`` subparsers ``commands``."""
    parser = commands.add_parser("train", help="MLM pretraining (ternary or fp ESM-2) from a YAML config",
                                 description=DESCRIPTION)
    add_run_arguments(parser, "YAML training config, e.g. configs/quickstart.yaml",
                      "run folder (checkpoints, tensorboard/, model/, eval/)", "training.max_steps=100")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Run ``bitesm train``; returns the exit code: 0, or 143 / 130 when SIGTERM / SIGINT stopped the run after a
    checkpoint (one line says which step and that ``--resume`` continues). The final JSON summary and the labelled
    ProteinGym Spearman's rho lines are printed by the main process.

    Raises:
        ConfigError: a bad config, override, input path, output folder or resume (see :func:`load_run_config` and
            :func:`bitesm.training.trainer.train`).
    """
    from ..training.trainer import train

    code, result = run_training(args, "bitesm train", train)
    if result is None:
        return code
    summary = {k: v for k, v in result.items() if k != "proteingym"}
    pg = result.get("proteingym")
    if pg:
        summary["proteingym_mean_spearman"] = pg.get("mean_spearman")
        summary["proteingym_summary_spearman"] = (pg.get("summary") or {}).get("spearman")
    print(json.dumps(summary, indent=2))
    if pg:
        from ..evaluation.proteingym import describe_spearman

        print("\n".join(describe_spearman(pg)))
    return 0
