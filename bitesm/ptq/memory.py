"""Weight-memory accounting of post-training-quantized models (PTQ4Protein Table III).

:func:`weight_memory_report` computes the bytes needed to store a model's parameters when the Linear weights
of the encoder are kept as ``weight_bits``-bit integers and everything else in fp32:

* **quantized weights** (default: the ``weight`` of every :class:`torch.nn.Linear`, subclasses included, whose
  qualified name contains none of ``lm_head``, ``contact_head``, ``pooler``): ``ceil(numel * weight_bits / 8)``
  bytes per tensor (codes bit-packed densely), plus **one fp32 scale per output channel** (per-channel
  quantization: ``weight.shape[0]`` scales, 4 bytes each). Zero-points are not counted (symmetric quantization).
  An int8-stored weight (:class:`~bitesm.nn.quantized_linear.Int8Linear`: an ``int8`` ``weight`` buffer) counts
  as the parameter it stands for, so a model reloaded from an int8 PTQ checkpoint reports what its fake-quantized
  original reports.
* **other parameters** (embeddings, LayerNorms, all biases, LM head, contact head, pooler): 4 bytes each.

The fp32 baseline is 4 bytes per parameter whatever dtype the model is actually held in. Parameters are the
deduplicated ``model.named_parameters()``: a tied/shared tensor (ESM-2's LM-head decoder is tied to the word
embeddings) counts once. Buffers (rotary ``inv_freq``, ``position_ids``, calibrated activation ranges) are not
parameters and are not counted. Activation bits (``act_bits``) do not change the stored size (activations are
transient); the value is only recorded in the report, as in the paper's "W8A8" style configuration labels.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

__all__ = ["default_quantized_modules", "format_bytes", "weight_memory_report"]

FP32_BYTES = 4
#: Substrings of qualified module names that the default predicate keeps in floating point.
EXCLUDED_NAME_PARTS = ("lm_head", "contact_head", "pooler")


def default_quantized_modules(name: str, module: nn.Module) -> bool:
    """Default predicate: an :class:`nn.Linear` (or subclass) of the encoder, i.e. not in the LM head,
    contact head or pooler."""
    return isinstance(module, nn.Linear) and not any(part in name for part in EXCLUDED_NAME_PARTS)


def _check_bits(name: str, bits: int | None) -> int | None:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{name} must be an int or None, got {type(bits).__name__} ({bits!r}).")
    if not (1 <= bits <= 16 or bits == 32):
        raise ValueError(
            f"{name}={bits} is not supported; pass an integer bit width 1..16, or 32 / None for full precision."
        )
    return bits


def weight_memory_report(
    model: nn.Module,
    weight_bits: int | None,
    act_bits: int | None = None,
    quantized_modules: Callable[[str, nn.Module], bool] | None = None,
) -> dict:
    """Parameter storage of ``model`` with its encoder Linear weights quantized to ``weight_bits`` bits.

    Args:
        model: the model (e.g. ``EsmForMaskedLM`` or a bitesm model).
        weight_bits: bits per quantized weight (1..16); ``None`` or ``32``: the fp32 baseline (nothing quantized).
        act_bits: activation bits, recorded only (see the module docstring); ``None`` = full precision.
        quantized_modules: predicate ``(qualified_name, module) -> bool`` selecting the modules whose ``weight``
            parameter is quantized (scales: ``weight.shape[0]`` per tensor); default
            :func:`default_quantized_modules`.

    Returns:
        dict with ``total_bytes`` (= ``quantized_weight_bytes + other_bytes``), ``fp32_bytes`` (4 bytes per
        parameter), ``quantized_weight_bytes`` (packed codes + per-channel fp32 scales), ``scale_bytes`` (the
        scales alone), ``other_bytes`` (fp32 remainder), ``compression_ratio`` (``fp32_bytes / total_bytes``),
        ``n_params``, ``n_quantized_params``, ``n_quantized_tensors``, ``weight_bits`` (``None`` for the fp32
        baseline) and ``act_bits``.
    """
    weight_bits = _check_bits("weight_bits", weight_bits)
    act_bits = _check_bits("act_bits", act_bits)
    if weight_bits == 32:
        weight_bits = None
    predicate = default_quantized_modules if quantized_modules is None else quantized_modules

    # id(parameter) -> number of output channels, for the selected modules' weights (a tied weight once).
    targets: dict[int, int] = {}
    # int8-stored weights (Int8Linear: an int8 ``weight`` buffer) count as the parameters they stand for
    stored: dict[int, object] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        stored_codes = not isinstance(weight, nn.Parameter) and getattr(weight, "dtype", None) == torch.int8
        if stored_codes and isinstance(module, nn.Linear):
            stored[id(weight)] = weight
        if weight_bits is not None and (isinstance(weight, nn.Parameter) or stored_codes) and predicate(name, module):
            targets[id(weight)] = int(weight.shape[0]) if weight.dim() > 0 else 1

    n_params = n_quant = n_tensors = 0
    code_bytes = scale_bytes = other_bytes = 0
    for param in [p for _, p in model.named_parameters()] + list(stored.values()):  # shared tensors once
        numel = param.numel()
        n_params += numel
        out_channels = targets.get(id(param))
        if out_channels is None:
            other_bytes += FP32_BYTES * numel
        else:
            n_quant += numel
            n_tensors += 1
            code_bytes += math.ceil(numel * weight_bits / 8)
            scale_bytes += FP32_BYTES * out_channels

    fp32_bytes = FP32_BYTES * n_params
    quantized_weight_bytes = code_bytes + scale_bytes
    total_bytes = quantized_weight_bytes + other_bytes
    return {
        "total_bytes": total_bytes,
        "fp32_bytes": fp32_bytes,
        "quantized_weight_bytes": quantized_weight_bytes,
        "scale_bytes": scale_bytes,
        "other_bytes": other_bytes,
        "compression_ratio": fp32_bytes / total_bytes if total_bytes else 1.0,
        "n_params": n_params,
        "n_quantized_params": n_quant,
        "n_quantized_tensors": n_tensors,
        "weight_bits": weight_bits,
        "act_bits": act_bits,
    }


def format_bytes(n: int | float) -> str:
    """Human-readable decimal (SI) size with one decimal: ``7_500_000 -> "7.5 MB"``, ``512 -> "512 B"``."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0 or not math.isfinite(n):
        raise ValueError(f"format_bytes() needs a finite number of bytes >= 0, got {n!r}.")
    if n < 1000:
        return f"{int(n)} B" if float(n).is_integer() else f"{n:.1f} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000.0
        if value < 999.95 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
