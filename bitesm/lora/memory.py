"""Memory report of a LoRA run: the base's weight bytes in fp32, bf16 and 4-bit NF4, and the trainable parameters.

What is counted (deduplicated ``named_parameters``; a tied tensor once; buffers not counted):

* **Linear weights**: the ``weight`` of the base's encoder Linear layers, the layers a 4-bit base stores in NF4 and
  a ternary base in BitLinear (``nn.Linear`` and its subclasses ``bnb.nn.Linear4bit`` / ``BitLinear`` whose name
  contains ``encoder``; LoRA's own ``lora_A`` / ``lora_B`` excluded). ``fp32_bytes = 4 n``, ``bf16_bytes = 2 n``;
  ``nf4_bytes`` is *measured* on a model loaded in 4 bits (the packed codes and every tensor of the layer's
  ``QuantState``: block absmax, codebook, and with double quantization the second-level absmax, codebook and
  offset), else *computed* by :func:`bitesm.lora.nf4.nf4_weight_bytes` (the same count).
* **other base parameters**: embeddings, LayerNorms, biases and the heads, which stay floating point in every
  format (fp32 and bf16 bytes; the NF4 base keeps them as loaded, fp32).
* **trainable**: every parameter with ``requires_grad`` (LoRA's A and B, a sequence head), its bytes as held.

The fp32 / bf16 / NF4 numbers are storage sizes of the weights; activations, gradients and optimizer state (AdamW:
two fp32 moments per *trainable* parameter only, LoRA's saving) come on top.
"""

from __future__ import annotations

from torch import nn

from ..ptq.memory import format_bytes
from .nf4 import is_4bit_layer, nf4_weight_bytes

__all__ = ["format_memory_report", "measured_4bit_bytes", "memory_report"]


def measured_4bit_bytes(module: nn.Module) -> int:
    """Bytes of a loaded ``bnb.nn.Linear4bit``'s weight: packed codes plus every ``QuantState`` tensor."""
    weight = module.weight
    state = weight.quant_state
    tensors = [weight.data, state.absmax, state.code]
    if state.nested:
        tensors += [state.offset, state.state2.absmax, state.state2.code]
    return sum(t.numel() * t.element_size() for t in tensors)


def _is_base_linear(name: str, module: nn.Module) -> bool:
    parts = name.split(".")
    return (
        isinstance(module, nn.Linear)
        and "encoder" in parts
        and not any(p.startswith("lora_") or p == "modules_to_save" for p in parts)
    )


def memory_report(model: nn.Module, double_quant: bool = True) -> dict:
    """Weight memory of a (peft-wrapped or plain) model's base and its trainable parameters (module docstring).

    Args:
        model: a bitesm / ESM-2 model, 4-bit, ternary or fp, with or without LoRA adapters.
        double_quant: for a base not loaded in 4 bits, the NF4 size is computed with or without QLoRA's double
            quantization (a loaded 4-bit base is measured).

    Returns:
        dict with ``base_format`` (``"nf4"``/``"fp4"``, ``"ternary"`` or ``"fp"``); ``linear_weights``:
        ``tensors``, ``params``, ``fp32_bytes``, ``bf16_bytes``, ``nf4_bytes``, ``nf4_measured`` (bool),
        ``nf4_fraction_of_fp32``; ``other_base_params``: ``params``, ``fp32_bytes``, ``bf16_bytes``; ``base``:
        ``params``, ``fp32_bytes``, ``bf16_bytes``, ``nf4_bytes`` (NF4 Linear weights + fp32 rest); ``trainable``:
        ``params``, ``bytes``, ``fraction_of_base``. Sizes in bytes.
    """
    linear_params: dict[int, int] = {}  # id(weight) -> numel
    nf4_bytes = 0
    measured = False
    base_format = "fp"
    for name, module in model.named_modules():
        if not _is_base_linear(name, module):
            continue
        numel = module.in_features * module.out_features
        linear_params[id(module.weight)] = numel
        if is_4bit_layer(module):
            nf4_bytes += measured_4bit_bytes(module)
            measured = True
            base_format = module.weight.quant_type
        else:
            nf4_bytes += nf4_weight_bytes(numel, double_quant=double_quant)
            if type(module).__name__ == "BitLinear":
                base_format = "ternary"
    other = trainable = trainable_bytes = 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            trainable += param.numel()
            trainable_bytes += param.numel() * param.element_size()
        parts = name.split(".")
        if id(param) in linear_params or any(p.startswith("lora_") or p == "modules_to_save" for p in parts):
            continue
        other += param.numel()
    n_linear = sum(linear_params.values())
    base_params = n_linear + other
    return {
        "base_format": base_format,
        "linear_weights": {
            "tensors": len(linear_params),
            "params": n_linear,
            "fp32_bytes": 4 * n_linear,
            "bf16_bytes": 2 * n_linear,
            "nf4_bytes": nf4_bytes,
            "nf4_measured": measured,
            "nf4_fraction_of_fp32": nf4_bytes / (4 * n_linear) if n_linear else None,
        },
        "other_base_params": {"params": other, "fp32_bytes": 4 * other, "bf16_bytes": 2 * other},
        "base": {
            "params": base_params,
            "fp32_bytes": 4 * base_params,
            "bf16_bytes": 2 * base_params,
            "nf4_bytes": nf4_bytes + 4 * other,
        },
        "trainable": {
            "params": trainable,
            "bytes": trainable_bytes,
            "fraction_of_base": trainable / base_params if base_params else None,
        },
    }


def format_memory_report(report: dict) -> str:
    """A small text table of :func:`memory_report` (the lines ``bitesm lora`` prints at start)."""
    lin, other, base, tr = report["linear_weights"], report["other_base_params"], report["base"], report["trainable"]
    how = "measured" if lin["nf4_measured"] else "computed"
    fraction = lin["nf4_fraction_of_fp32"]
    lines = [
        f"memory report (base format: {report['base_format']})",
        f"{'':28}{'params':>12}{'fp32':>11}{'bf16':>11}{'NF4':>11}",
        f"{'encoder Linear weights':28}{lin['params']:>12,}{format_bytes(lin['fp32_bytes']):>11}"
        f"{format_bytes(lin['bf16_bytes']):>11}{format_bytes(lin['nf4_bytes']):>11}"
        f"  (NF4 {how}: {100 * fraction:.1f}% of fp32)" if fraction is not None else "",
        f"{'other base parameters':28}{other['params']:>12,}{format_bytes(other['fp32_bytes']):>11}"
        f"{format_bytes(other['bf16_bytes']):>11}{format_bytes(other['fp32_bytes']):>11}  (kept fp32)",
        f"{'whole base':28}{base['params']:>12,}{format_bytes(base['fp32_bytes']):>11}"
        f"{format_bytes(base['bf16_bytes']):>11}{format_bytes(base['nf4_bytes']):>11}",
        f"trainable parameters: {tr['params']:,} ({format_bytes(tr['bytes'])}, "
        f"{100 * (tr['fraction_of_base'] or 0):.2f}% of the base's)",
    ]
    return "\n".join(line for line in lines if line)
