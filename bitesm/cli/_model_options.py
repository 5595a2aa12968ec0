"""Options and checks shared by the commands that load a masked language model (``bitesm eval ...``, ``bitesm
embed``).

Building a parser with these imports nothing but the standard library; the checks import the library when they run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: ``--dtype`` choices: the keys of :data:`bitesm.evaluation.model_loading.DTYPES` (a test checks they agree).
DTYPE_NAMES = ("float32", "bfloat16", "float16")

MODEL_HELP = ("checkpoint folder or Hugging Face Hub id of a masked language model with the ESM-2 vocabulary "
              "(EsmForMaskedLM or a bitesm model)")


def required_group(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The group ``--help`` lists a command's required options under ("required arguments")."""
    return parser.add_argument_group("required arguments")


def add_device_options(parser: argparse.ArgumentParser,
                       dtype_help: str = "dtype of the model weights (default float32)") -> None:
    """Add ``--device`` (default ``None``: cuda if available, else cpu) and ``--dtype`` (one of
    :data:`DTYPE_NAMES`, default float32) to ``parser``."""
    parser.add_argument("--device", default=None,
                        help="torch device to run on: cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help=dtype_help)


def add_embedding_options(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    """Add ``--layer`` (hidden-state index, default ``None``: the final representation) and ``--max-tokens`` (padded
    tokens per forward pass, default ``max_tokens``): the embedding options of ``bitesm embed`` and
    ``bitesm eval go``."""
    parser.add_argument("--layer", type=int, default=None,
                        help="hidden-state index (0 = embeddings, k = after layer k, negative from the end; default: "
                             "the final representation)")
    parser.add_argument("--max-tokens", type=int, default=max_tokens,
                        help=f"padded tokens per forward pass (default {max_tokens})")


def check_device(device: str | None):
    """``--device`` as a ``torch.device``, checked before a model is loaded.

    Raises:
        bitesm.evaluation.model_loading.DeviceError: not a device name, or a device this machine lacks; the message
            names the value and the fix.
    """
    from ..evaluation.model_loading import resolve_device

    return resolve_device(device, option="--device")


def check_output(path: str | None, option: str | None = "--output", folder: bool = False) -> Path | None:
    """Check that the output ``path`` (a file, or a folder with ``folder``) can be written, before computing
    anything; ``None`` (no output asked for) passes.

    Raises:
        bitesm.errors.UserInputError: the path cannot be written (:func:`bitesm.io.check_writable`).
    """
    if path is None:
        return None
    from ..io import check_writable

    return check_writable(path, folder=folder, option=option)


def check_at_least(value: float | None, option: str, minimum: int = 1) -> None:
    """A numeric option must be ``>= minimum`` (``None``, an option left out, passes).

    Raises:
        bitesm.errors.UserInputError: ``"--OPTION must be >= MINIMUM, got VALUE."``.
    """
    if value is not None and value < minimum:
        from ..errors import UserInputError

        raise UserInputError(f"{option} must be >= {minimum}, got {value}.")
