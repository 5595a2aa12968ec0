"""The ``bitesm`` command, the only part of bitesm that parses arguments.

One module per command group, each a thin layer over library functions a Python user can call with the same
options: :mod:`~bitesm.cli.train` (``bitesm train``), :mod:`~bitesm.cli.lora` (``bitesm lora``, ``bitesm lora
merge``), :mod:`~bitesm.cli.evaluate` (``bitesm eval proteingym | run | watch | compare | contacts | go``),
:mod:`~bitesm.cli.embed`, :mod:`~bitesm.cli.ptq` (``bitesm ptq``, ``bitesm ptq analyze``), :mod:`~bitesm.cli.convert`
(``bitesm convert long``), :mod:`~bitesm.cli.export` and :mod:`~bitesm.cli.push`. Building the parser imports no
library code (``bitesm --help`` needs neither torch nor transformers); a command imports what it runs.

Errors: a user's mistake (:class:`bitesm.errors.UserInputError`, or the operating system's answer about a path the
user gave) prints one line ``bitesm <command>: error: <message>`` and exits 2; ``BITESM_DEBUG=1`` shows the
traceback. Any other exception is a bug and keeps its traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: The command-group modules, in the order ``bitesm --help`` lists them.
COMMAND_MODULES = ("train", "lora", "evaluate", "embed", "ptq", "convert", "export", "push")
DESCRIPTION = (
    "Train, quantize, run and evaluate low-bit (ternary BitNet b1.58, PTQ W8A8, NF4 + LoRA) ESM-2 protein language "
    "models in HuggingFace format. 'bitesm COMMAND --help' describes each command."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``bitesm`` argument parser: one subcommand per command (each module's ``register``)."""
    parser = argparse.ArgumentParser(prog="bitesm", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(commands)
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

    from ..errors import UserInputError

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
    prog = " ".join(["bitesm"] + [str(getattr(args, k)) for k in ("command", "suite", "conversion", "ptq_command",
                                                                  "lora_command") if getattr(args, k, None)])
    try:
        from ..runtime import steady_malloc

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

