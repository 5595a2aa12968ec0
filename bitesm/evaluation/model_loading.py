"""Load a masked language model for evaluation: a checkpoint folder or a Hub id, on the device and precision asked for."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..data.tokenizer import load_tokenizer
from ..errors import UserInputError

__all__ = ["DTYPES", "ModelLoadError", "add_device_arguments", "load_masked_lm", "resolve_device"]

#: ``--dtype`` names -> torch dtypes of the model weights (log-softmax is always float32).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserInputError):
    """A model could not be loaded for evaluation; the message names the model and the fix."""


def add_device_arguments(parser: Any, dtype_help: str = "model weights dtype") -> Any:
    """Add the ``--device`` and ``--dtype`` options every evaluation command takes (``--dtype`` one of
    :data:`DTYPES`, default float32); returns ``parser``."""
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help=dtype_help)
    return parser


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` = ``cuda`` if available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_masked_lm(
    model: str | os.PathLike, dtype: str = "float32", device: str | torch.device | None = None
) -> tuple[torch.nn.Module, Any]:
    """``AutoModelForMaskedLM`` and tokenizer of a checkpoint folder or Hub id, in eval mode on ``device``.

    bitesm is imported first, so bitesm checkpoints resolve without ``trust_remote_code``; transformers'
    ``EsmForMaskedLM`` checkpoints (``facebook/esm2_t6_8M_UR50D``) load as they are. A folder without tokenizer files
    gets the packaged ESM-2 tokenizer (:func:`bitesm.data.tokenizer.load_tokenizer`).

    Args:
        model: checkpoint folder (``config.json`` + weights) or Hub id.
        dtype: a key of :data:`DTYPES`.
        device: torch device; default :func:`resolve_device`.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelLoadError: unknown ``dtype``, or the checkpoint cannot be loaded (message has transformers' reason).
    """
    from transformers import AutoModelForMaskedLM

    import bitesm  # noqa: F401  (registers bitesm model types with the Auto classes)

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    try:
        loaded = AutoModelForMaskedLM.from_pretrained(str(model), dtype=DTYPES[dtype])
        tokenizer = load_tokenizer(str(model))
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load model {str(model)!r}: {err}\nFix: pass a checkpoint folder containing config.json and "
            "weights, or a Hub id (network or the Hugging Face cache)."
        ) from err
    return loaded.to(resolve_device(device)).eval(), tokenizer
