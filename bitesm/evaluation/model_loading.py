"""Load a masked language model for evaluation: a checkpoint folder or a Hub id, on the device and precision asked for."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..data.tokenizer import load_tokenizer
from ..errors import UserInputError

__all__ = ["DEVICE_TYPES", "DTYPES", "DeviceError", "ModelLoadError", "load_masked_lm", "resolve_device"]

#: ``--dtype`` names -> torch dtypes of the model weights (log-softmax is always float32).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserInputError):
    """A model could not be loaded for evaluation; the message names the model and the fix."""


class DeviceError(ModelLoadError):
    """The device asked for does not exist on this machine, or is not a device name; the message names the value
    and the fix."""


#: Device types :func:`resolve_device` accepts (each checked for availability).
DEVICE_TYPES = ("cpu", "cuda", "mps")


def _torch_build() -> str:
    """``"torch 2.x.y, CPU build"`` / ``"torch 2.x.y, CUDA 12.4 build"``: for messages about missing devices."""
    cuda = getattr(torch.version, "cuda", None)
    return f"torch {torch.__version__}, " + (f"CUDA {cuda} build" if cuda else "CPU build")


def resolve_device(device: str | torch.device | None, option: str | None = None) -> torch.device:
    """``device`` as a ``torch.device``, checked to exist on this machine; ``None`` = ``cuda`` if available, else
    ``cpu``.

    Call it before loading a model: a device that is not there fails at once, naming the value and the fix, instead
    of deep inside ``model.to(...)``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a ``torch.device``, or ``None``.
        option: how the caller's user gave the value (e.g. ``"--device"``), used in the message; default
            ``device=...``.

    Returns:
        The ``torch.device``.

    Raises:
        DeviceError: not a device name (``"tpu9"``), a type other than :data:`DEVICE_TYPES`, ``cuda`` on a machine
            without a usable CUDA GPU (or ``cuda:N`` beyond the GPUs there are), ``mps`` where the Metal backend is
            not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    given, leave_out = (f"{option} {device}", f"use {option} cpu or leave {option} out") if option else (
        f"device={str(device)!r}", "use device='cpu', or None for the default")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise DeviceError(f"{given}: not a torch device name ({err}); {leave_out} (or cuda, cuda:N, mps where there "
                          "is one)") from err
    if resolved.type not in DEVICE_TYPES:
        raise DeviceError(f"{given}: bitesm evaluates on {', '.join(DEVICE_TYPES)} only; {leave_out}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{given}: CUDA is not available on this machine ({_torch_build()}); {leave_out}")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"{given}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; use one "
                              "of those, or cuda for the first")
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"{given}: the Apple MPS backend is not available on this machine ({_torch_build()}); "
                              f"{leave_out}")
    return resolved


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
        ModelLoadError: unknown ``dtype``, or the checkpoint cannot be loaded (message has transformers' reason), or
            its files contradict each other (``config.json`` against itself or the weights, a truncated weight file:
            :mod:`bitesm.models.checkpoint_checks`; the message names the file and the fix).
    """
    from transformers import AutoModelForMaskedLM

    import bitesm  # noqa: F401  (registers bitesm model types with the Auto classes)

    from ..models.checkpoint_checks import CheckpointMismatchError, load_checked

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    try:
        loaded = load_checked(AutoModelForMaskedLM, str(model), dtype=DTYPES[dtype])
        tokenizer = load_tokenizer(str(model))
    except CheckpointMismatchError as err:
        raise ModelLoadError(str(err)) from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load model {str(model)!r}: {err}\nFix: pass a checkpoint folder containing config.json and "
            "weights, or a Hub id (network or the Hugging Face cache)."
        ) from err
    return loaded.to(resolve_device(device)).eval(), tokenizer
