"""Ternary models at their real size: 2-bit packed checkpoints and ``bitesm export --format packed``.

:func:`to_packed` turns a trained ternary bitesm model (``weight_format="latent"``: full-precision latent weights,
quantized in every forward) into its inference form (``weight_format="packed"``): every BitLinear becomes a
:class:`~bitesm.nn.packed_bitlinear.PackedBitLinear` holding the ternary weight packed four values per byte and its
scale. ``save_pretrained`` of the result writes those tensors to ``model.safetensors`` with
``"weight_format": "packed"`` in ``config.json``; ``from_pretrained`` (or ``AutoModelForMaskedLM`` with
``trust_remote_code=True`` where bitesm is not installed) builds PackedBitLinear layers and loads them. Embeddings,
LayerNorms, biases and the LM head stay in the model's float dtype.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..errors import UserInputError
from ..nn.packed_bitlinear import replace_bitlinear_with_packed

__all__ = [
    "PackedExportError",
    "export_packed",
    "packed_size_report",
    "to_packed",
    "weight_file_bytes",
]

_CARRIED_FILES = ("training_config.yaml", "trainer_state.json", "README.md")


class PackedExportError(UserInputError):
    """The model cannot be packed (not a ternary bitesm model, or already packed); the message names the fix."""


def to_packed(model: torch.nn.Module) -> torch.nn.Module:
    """Pack a ternary bitesm model in place (module docstring) and return it, in eval mode.

    Args:
        model: a bitesm model (``BitEsmForMaskedLM``, ``BitEsmModel``, ``BitEsmForSequenceClassification``) with
            ``config.quantization == "ternary"`` and ``config.weight_format == "latent"``.

    Returns:
        the same model, its BitLinear layers replaced, ``config.weight_format = "packed"``.

    Raises:
        PackedExportError: not a ternary bitesm model, already packed, or no BitLinear layer found.
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "bitesm" or getattr(config, "quantization", None) != "ternary":
        raise PackedExportError(
            f"only ternary bitesm models can be packed; this one has model_type="
            f"{getattr(config, 'model_type', None)!r}, quantization={getattr(config, 'quantization', None)!r}. "
            "Fix: train with model.quantization: ternary (or convert an ESM-2 model with BitEsmForMaskedLM.from_esm "
            "and train it)"
        )
    if getattr(config, "weight_format", "latent") == "packed":
        raise PackedExportError(
            "the model is already packed (config.weight_format='packed'): packing it again would write the same "
            "model. Fix: use it as it is, or pack the latent checkpoint it was exported from"
        )
    if replace_bitlinear_with_packed(model) == 0:
        raise PackedExportError(
            "the model has no BitLinear layer to pack (modules_to_not_convert keeps every Linear in floating point), "
            "so the export would be the same model. Fix: export a model whose encoder layers are ternary"
        )
    config.weight_format = "packed"
    return model.eval()


def export_packed(model_dir: str | os.PathLike, output_dir: str | os.PathLike) -> dict:
    """Load a ternary checkpoint, pack it and save it (with tokenizer and training records) to ``output_dir``.

    Args:
        model_dir: a bitesm checkpoint folder (or Hub id) with ``quantization: ternary``.
        output_dir: the new folder (written through a temporary sibling and renamed, so it is complete or absent).

    Returns:
        ``{"input_bytes", "output_bytes", "ratio", "packed_layers"}``: weight-file sizes (``*.safetensors``) and
        their ratio.

    Raises:
        PackedExportError: nothing to pack: the checkpoint is floating point (ESM-2, or bitesm without
            ``quantization: ternary``) or already packed (see :func:`to_packed`); ``output_dir`` exists and is not
            empty.
        CheckpointMismatchError: the checkpoint's files contradict each other or a weight file is damaged
            (:mod:`bitesm.models.checkpoint_checks`).
        OSError: the checkpoint cannot be found.
    """
    from transformers import AutoModelForMaskedLM

    import bitesm  # noqa: F401  (registers the bitesm model type)

    from ..data.tokenizer import load_tokenizer
    from ..training.checkpoint import replace_dir
    from .checkpoint_checks import check_checkpoint, load_checked

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise PackedExportError(f"output folder {output_dir} exists and is not empty. Fix: pass a new --output")
    config = check_checkpoint(model_dir)
    _check_packable(config, model_dir)
    model = load_checked(AutoModelForMaskedLM, str(model_dir), checked=False)
    to_packed(model)
    packed_layers = sum(type(m).__name__ == "PackedBitLinear" for m in model.modules())
    tmp = output_dir.with_name(f".tmp-{output_dir.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    load_tokenizer(str(model_dir)).save_pretrained(tmp)
    src = Path(model_dir)
    for name in _CARRIED_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    replace_dir(tmp, output_dir)
    size_in = weight_file_bytes(src) if src.is_dir() else 0
    size_out = weight_file_bytes(output_dir)
    return {"input_bytes": size_in, "output_bytes": size_out,
            "ratio": size_in / size_out if size_in and size_out else None, "packed_layers": packed_layers}


def weight_file_bytes(folder: str | os.PathLike) -> int:
    """Total size of a folder's weight files (``*.safetensors``): what :func:`export_packed` compares."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def packed_size_report(model: torch.nn.Module, source: str | os.PathLike | None = None) -> dict:
    """The weight-file sizes ``bitesm export --format packed`` reports for a ternary model, measured the same way.

    A copy of ``model`` (rebuilt from its config and state dict) is packed (:func:`to_packed`) and saved with ``save_pretrained`` to a temporary folder, as
    :func:`export_packed` does; the latent size is that of ``source``'s ``*.safetensors`` when ``source`` is a local
    checkpoint folder (the files export reads), else of ``model`` saved the same way.

    Args:
        model: a ternary bitesm model with latent weights (left unchanged).
        source: the checkpoint folder ``model`` was loaded from, or ``None``.

    Returns:
        ``{"latent_bytes", "packed_bytes", "ratio", "packed_layers"}`` (``ratio = latent_bytes / packed_bytes``).

    Raises:
        PackedExportError: as :func:`to_packed` (not ternary, already packed, no BitLinear layer).
    """
    import copy
    import tempfile

    # a fresh copy from config and state dict (deepcopy cannot copy the prepacked kernels an inference forward caches)
    clone = type(model)(copy.deepcopy(model.config)).to(next(model.parameters()).dtype)
    clone.load_state_dict(model.state_dict())
    packed = to_packed(clone)
    packed_layers = sum(type(m).__name__ == "PackedBitLinear" for m in packed.modules())
    with tempfile.TemporaryDirectory(prefix="bitesm-packed-size-") as tmp:
        packed.save_pretrained(Path(tmp) / "packed")
        packed_bytes = weight_file_bytes(Path(tmp) / "packed")
        del packed
        if source is not None and Path(source).is_dir() and weight_file_bytes(source):
            latent_bytes = weight_file_bytes(source)
        else:
            model.save_pretrained(Path(tmp) / "latent")
            latent_bytes = weight_file_bytes(Path(tmp) / "latent")
    return {"latent_bytes": latent_bytes, "packed_bytes": packed_bytes, "ratio": latent_bytes / packed_bytes,
            "packed_layers": packed_layers}


def _check_packable(config: dict, model_dir) -> None:
    """Refuse, before loading, a checkpoint that export would not change (its ``config.json`` already checked)."""
    model_type, quantization = config.get("model_type"), config.get("quantization")
    if model_type != "bitesm" or quantization != "ternary":
        raise PackedExportError(
            f"{model_dir} is a floating-point model (model_type={model_type!r}, quantization={quantization!r}): "
            "there are no ternary weights to pack, and a packed copy would be mislabelled. Fix: export a ternary "
            "bitesm checkpoint (train with model.quantization: ternary, e.g. configs/quickstart.yaml)"
        )
    if config.get("weight_format") == "packed":
        raise PackedExportError(
            f"{model_dir} is already packed (weight_format 'packed' in config.json): exporting it again would write "
            "the same model. Fix: use it as it is, or export the latent checkpoint it was made from"
        )
