"""The ``bitesm`` command: ``bitesm train``, ``bitesm lora``, ``bitesm lora merge``, ``bitesm eval proteingym``,
``bitesm eval run``, ``bitesm eval watch``, ``bitesm eval compare``, ``bitesm eval contacts``, ``bitesm eval go``, ``bitesm embed``, ``bitesm ptq``,
``bitesm ptq analyze``, ``bitesm convert long``, ``bitesm export`` and ``bitesm push``.

Each subcommand's arguments and behaviour live next to the library code they drive (``add_cli_arguments`` and
``cli_main`` in :mod:`bitesm.training.cli`, :mod:`bitesm.lora.cli`, :mod:`bitesm.evaluation.proteingym`,
:mod:`bitesm.evaluation.run`, :mod:`bitesm.evaluation.compare`, :mod:`bitesm.evaluation.embeddings`,
:mod:`bitesm.ptq.cli`, :mod:`bitesm.models.long`, :mod:`bitesm.models.packed` and :mod:`bitesm.hub.cli`); the scripts in ``train/`` and ``eval/``
call the same functions.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .evaluation import compare as eval_compare
    from .evaluation import contacts as eval_contacts
    from .evaluation import embeddings
    from .evaluation import go_prediction as eval_go
    from .evaluation import proteingym
    from .evaluation import run as eval_run
    from .hub import cli as hub_cli
    from .lora import cli as lora_cli
    from .models import long as long_model
    from .models import packed as packed_model
    from .ptq import cli as ptq_cli
    from .training import cli as training_cli

    parser = argparse.ArgumentParser(prog="bitesm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="MLM pretraining (ternary or fp ESM-2) from a YAML config")
    training_cli.add_cli_arguments(train)
    train.set_defaults(handler=training_cli.cli_main)

    lora = commands.add_parser(
        "lora",
        help="4-bit LoRA (QLoRA): adapters on an NF4, fp or ternary base, MLM or a sequence head, from a YAML config; "
        "'bitesm lora merge' merges an adapter into an fp base",
    )
    lora_cli.add_cli_arguments(lora)
    lora.set_defaults(handler=lora_cli.cli_main)

    evaluate = commands.add_parser("eval", help="evaluate a model")
    suites = evaluate.add_subparsers(dest="suite", required=True, metavar="SUITE")
    pg = suites.add_parser("proteingym", help="ProteinGym zero-shot DMS Spearman by masked-marginals")
    proteingym.add_cli_arguments(pg)
    pg.set_defaults(handler=proteingym.cli_main)
    run = suites.add_parser(
        "run", help="evaluate a model on suites (proteingym) with results cached by content: reruns are cheap"
    )
    eval_run.add_run_arguments(run)
    run.set_defaults(handler=eval_run.run_cli_main)
    watch = suites.add_parser("watch", help="evaluate every new checkpoint of a bitesm train run as it appears")
    eval_run.add_watch_arguments(watch)
    watch.set_defaults(handler=eval_run.watch_cli_main)
    ct = suites.add_parser("contacts", help="unsupervised contact precision (long-range P@L) from attention maps")
    eval_contacts.add_cli_arguments(ct)
    ct.set_defaults(handler=eval_contacts.cli_main)
    go = suites.add_parser("go", help="GO function prediction from embeddings (CAFA-style Fmax by cafaeval, BPO/CCO/MFO)")
    eval_go.add_cli_arguments(go)
    go.set_defaults(handler=eval_go.cli_main)
    cmp = suites.add_parser(
        "compare", help="compare ProteinGym results: markdown table with bootstrap errors and Z-tests, PNG plots"
    )
    eval_compare.add_cli_arguments(cmp)
    cmp.set_defaults(handler=eval_compare.cli_main)
    embed = commands.add_parser(
        "embed", help="per-protein (and per-residue) embeddings of a FASTA file, proteins of any length, to safetensors"
    )
    embeddings.add_cli_arguments(embed)
    embed.set_defaults(handler=embeddings.cli_main)
    ptq = commands.add_parser(
        "ptq", help="post-training quantization (PTQ4Protein): 'bitesm ptq --model ... --output DIR' or 'bitesm ptq analyze'"
    )
    ptq_cli.add_cli_arguments(ptq)
    ptq.set_defaults(handler=ptq_cli.cli_main)

    convert = commands.add_parser("convert", help="convert a checkpoint")
    conversions = convert.add_subparsers(dest="conversion", required=True, metavar="CONVERSION")
    long = conversions.add_parser(
        "long", help="Long ESM-2 (arXiv 2501.07747): sliding-window attention and a longer input (2,048 residues)"
    )
    long_model.add_cli_arguments(long)
    long.set_defaults(handler=long_model.cli_main)
    export = commands.add_parser(
        "export", help="export a ternary checkpoint: --format packed (2-bit weights, integer inference, ~12x smaller)"
    )
    packed_model.add_cli_arguments(export)
    export.set_defaults(handler=packed_model.cli_main)
    push = commands.add_parser("push", help="upload a model or run folder to the HuggingFace Hub with a model card")
    hub_cli.add_cli_arguments(push)
    push.set_defaults(handler=hub_cli.cli_main)
    return parser


#: ``$BITESM_DEBUG``: set to 1 to see the traceback of a user error too.
DEBUG_ENV = "BITESM_DEBUG"
#: Exit codes: a user's mistake, and an interrupt (128 + SIGINT, as shells report Ctrl-C).
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def user_error_message(err: BaseException) -> str | None:
    """The one-line message the command prints for ``err`` when it is a user's mistake, else ``None`` (a bug).

    User mistakes are :class:`bitesm.errors.UserInputError` and the operating system's answers about a path the user
    gave (not found, a folder where a file was expected, no permission, read-only file system, no space left on
    device), which name the path.
    """
    import errno

    from .errors import UserInputError

    if isinstance(err, UserInputError):
        return str(err)
    path_errors = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    if isinstance(err, path_errors) and err.errno is None:  # raised by bitesm with its own message
        return str(err)
    if isinstance(err, OSError) and err.errno is not None:
        path = err.filename if err.filename is not None else "?"
        if err.errno == errno.ENOSPC:
            return (
                f"no space left on device while writing {path}. Files written before it were kept whole (bitesm "
                "writes atomically: no partial file replaced them); free some space and run the command again "
                "(training: add --resume to continue from the last checkpoint)."
            )
        fixes = {
            errno.ENOENT: "check the path",
            errno.EISDIR: "give a file, not a folder",
            errno.ENOTDIR: "give a folder, not a file (or a path under an existing folder)",
            errno.EACCES: "choose a path you may read and write, or fix its permissions",
            errno.EPERM: "choose a path you may read and write, or fix its permissions",
            errno.EROFS: "choose a writable output location",
        }
        if err.errno in fixes and err.filename is not None:
            return f"{err.strerror or err}: {path}; {fixes[err.errno]}."
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the ``bitesm`` command; returns the exit code (0, 2 for a user's mistake, 130 when interrupted)."""
    import os

    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own usage errors exit 2 with one message
    prog = " ".join(["bitesm"] + [str(getattr(args, k)) for k in ("command", "suite", "conversion")
                                  if getattr(args, k, None)])
    try:
        from .runtime import quiet_optional_kernel_warning, steady_malloc

        quiet_optional_kernel_warning()
        steady_malloc()  # reuse freed CPU activations instead of page-faulting them in every forward (bitesm.runtime)
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001  (a user's mistake is reported in one line; a bug re-raises)
        message = user_error_message(err)
        if message is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
