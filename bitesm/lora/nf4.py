"""4-bit NormalFloat (NF4) bases through bitsandbytes: the quantization config, and the CPU weight-repacking fix.

QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", section 3) stores a frozen base's
Linear weights as 4-bit NormalFloat codes in blocks of 64 with one absmax scale per block, optionally quantizing
those scales to 8 bits in blocks of 256 ("double quantization"), and dequantizes them to the compute dtype for every
matmul. bitsandbytes implements it (``bnb.nn.Linear4bit``) and transformers loads a checkpoint that way
(``from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))``, which replaces every
``nn.Linear`` outside ``llm_int8_skip_modules`` by a ``Linear4bit``).

For ESM-2 the 4-bit layers are the encoder's six Linear layers per layer (query, key, value, attention output, FFN in
and out), the same set BitLinear makes ternary; the LM head, contact head, pooler and a sequence head stay in floating
point (:data:`FULL_PRECISION_MODULES`).

CPU: bitsandbytes' ``Linear4bit.forward`` repacks its weight into a CPU-specific layout the first time it runs in
eval mode without gradients on a CPU with AVX512-BF16 (``support_avx512bf16_for_cpu``, set from the CPU when the layer
is built); the training path does not read that layout, so the next training step after a validation pass fails.
(Forced on a CPU without the instruction, the repacked weights are even misread by the eval forward.)
:func:`disable_cpu_weight_repacking` turns the repacking off on every layer right after loading; validation then runs
the same kernel as training, on CPU as on CUDA (where the flag is never read).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "BLOCKSIZE",
    "FULL_PRECISION_MODULES",
    "bnb_config",
    "disable_cpu_weight_repacking",
    "is_4bit_layer",
    "nf4_weight_bytes",
]

#: bitsandbytes' 4-bit block size (weights per absmax scale) and its double-quantization block size (scales per
#: second-level scale).
BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
#: Module names kept in floating point: the heads (``lm_head``, ``contact_head``, ``pooler`` as in
#: :data:`bitesm.nn.bitlinear.DEFAULT_MODULES_TO_NOT_CONVERT`, and a sequence model's ``classifier``).
FULL_PRECISION_MODULES = ("lm_head", "contact_head", "pooler", "classifier")


def bnb_config(quant_type: str = "nf4", double_quant: bool = True, compute_dtype: str | torch.dtype = "float32"):
    """The ``transformers.BitsAndBytesConfig`` that loads a bitesm / ESM-2 base with 4-bit encoder Linear weights.

    Args:
        quant_type: ``"nf4"`` (QLoRA's NormalFloat) or ``"fp4"``.
        double_quant: quantize the per-block absmax scales too (``bnb_4bit_use_double_quant``).
        compute_dtype: dtype of the dequantized weights in the matmul: ``"float32"`` on CPUs, ``"bfloat16"`` on
            GPUs (QLoRA), or a ``torch.dtype``.

    Returns:
        a ``BitsAndBytesConfig`` with ``load_in_4bit=True`` whose ``llm_int8_skip_modules`` keep
        :data:`FULL_PRECISION_MODULES` (wherever they sit in the model) in floating point.

    Raises:
        ValueError: an unknown ``quant_type`` or ``compute_dtype``.
    """
    from transformers import BitsAndBytesConfig

    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type={quant_type!r}; use 'nf4' (QLoRA) or 'fp4'")
    dtype = compute_dtype if isinstance(compute_dtype, torch.dtype) else getattr(torch, str(compute_dtype), None)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"compute_dtype={compute_dtype!r}; use 'float32' (CPU), 'bfloat16' (GPU) or 'float16'")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=dtype,
        # transformers matches a skip entry from the start of a module's name or as its suffix; the optional
        # prefix makes "contact_head" also keep "esm.contact_head.regression".
        llm_int8_skip_modules=[rf"(?:.*\.)?{name}" for name in FULL_PRECISION_MODULES],
    )


def is_4bit_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a bitsandbytes ``Linear4bit`` (False when bitsandbytes is not installed)."""
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - bitsandbytes is a dependency of bitesm.lora
        return False
    return isinstance(module, bnb.nn.Linear4bit)


def disable_cpu_weight_repacking(model: nn.Module) -> int:
    """Turn off bitsandbytes' eval-mode CPU weight repacking on every ``Linear4bit`` of ``model`` (module docstring).

    Call it right after loading a 4-bit model that will alternate training and evaluation. Harmless on CUDA and on
    CPUs without AVX512-BF16.

    Returns:
        the number of ``Linear4bit`` layers changed.
    """
    n = 0
    for module in model.modules():
        if is_4bit_layer(module):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def nf4_weight_bytes(numel: int, double_quant: bool = True, blocksize: int = BLOCKSIZE) -> int:
    """Bytes bitsandbytes keeps for one 4-bit weight tensor of ``numel`` values (QLoRA section 3).

    ``ceil(numel / 2)`` bytes of packed 4-bit codes, the 16-value codebook (fp32), and one absmax per block of
    ``blocksize``: fp32 without double quantization; with it, one byte per block plus one fp32 scale per 256 blocks,
    a 256-value fp32 second-level codebook and an fp32 offset. Equals the tensors of ``Params4bit`` and its
    ``QuantState`` (:func:`bitesm.lora.memory.measured_4bit_bytes`).
    """
    blocks = math.ceil(numel / blocksize)
    total = math.ceil(numel / 2) + 16 * 4
    if double_quant:
        total += blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + 256 * 4 + 4
    else:
        total += 4 * blocks
    return total
