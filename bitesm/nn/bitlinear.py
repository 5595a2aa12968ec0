"""BitLinear: the BitNet b1.58 drop-in replacement for ``nn.Linear``, and model conversion.

Sources: Ma et al., 2024, "The Era of 1-bit LLMs: All Large Language Models are in 1.58 Bits" (BitNet b1.58),
and Morsing et al., 2024, "2Bits of Protein" (ternary ESM-2, eq. 1-3). The quantization math lives in
:mod:`bitesm.quant.primitives`; this module only wires it into a layer. The conversion helper follows
transformers' ``integrations/bitnet.py`` (``replace_with_bitnet_linear`` with ``modules_to_not_convert``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from ..quant.primitives import (
    DEFAULT_EPS,
    fake_quantize_ternary_absmean,
    quantize_ternary_absmean,
    ternary_linear,
)
from .int8_linear import TernaryInt8Weight, training_codes_kernel

logger = logging.getLogger(__name__)

__all__ = ["BitLinear", "replace_linear_with_bitlinear", "DEFAULT_MODULES_TO_NOT_CONVERT"]

#: ESM-2 modules that stay full precision: the LM head, the contact head and the (unused) pooler of ``EsmModel``;
#: embeddings are ``nn.Embedding`` and never converted.
DEFAULT_MODULES_TO_NOT_CONVERT = ("lm_head", "contact_head", "pooler")


class BitLinear(nn.Linear):
    """``nn.Linear`` with ternary absmean weights and per-token absmax activations (BitNet b1.58).

    Forward (training and inference alike)::

        W_hat = RoundClip(W / (gamma + eps), -1, 1) * (gamma + eps),  gamma = mean|W|   (per tensor)
        x_hat = clamp(round(x / s_x), -2^(b-1), 2^(b-1) - 1) * s_x,   s_x = max_j|x_j| / (2^(b-1) - 1)  (per token)
        y     = x_hat @ W_hat^T + bias  =  (x_int @ W~^T) * s_x * (gamma + eps) + bias

    computed in the second form (:func:`bitesm.quant.primitives.ternary_linear`: the integer codes multiplied, then
    one rescale), exactly as the packed integer layer (:class:`bitesm.nn.packed_bitlinear.PackedBitLinear`) does.
    Without gradients (evaluation, embedding) and with at most 8 activation bits, the product runs on the device's
    integer GEMM (:mod:`bitesm.nn.int8_linear`) with the ternary codes cached until the weight changes: the same
    numbers, several times faster on a CPU. Training on an x86 CPU multiplies the codes of the forward in integers
    too (:func:`bitesm.nn.int8_linear.training_codes_kernel`), with the weight prepacked every step.

    Gradients reach the full-precision latent weights ``W`` and the input through straight-through estimators.
    The parameters are exactly those of ``nn.Linear`` (``weight [out, in]``, ``bias [out]``), so a BitLinear model
    has the same state dict as its full-precision twin.

    Args:
        in_features, out_features, bias, device, dtype: as ``nn.Linear``.
        activation_bits: activation bit width b (8 in BitNet b1.58); ``None`` leaves activations unquantized.
        weight_eps: the epsilon of 2Bits of Protein eq. 1.

    Shapes:
        input ``[..., in_features]`` (float32 or bfloat16), output ``[..., out_features]`` of the same dtype.

    Raises:
        ValueError: if ``activation_bits`` is not None and not in [2, 16].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        activation_bits: int | None = 8,
        weight_eps: float = DEFAULT_EPS,
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if activation_bits is not None and not (2 <= int(activation_bits) <= 16):
            raise ValueError(f"activation_bits must be None or in [2, 16], got {activation_bits!r}")
        self.activation_bits = activation_bits
        self.weight_eps = weight_eps

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> BitLinear:
        """Wrap an existing ``nn.Linear``, sharing (not copying) its weight and bias parameters."""
        new = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta", **kwargs
        )
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight ``W~ * (gamma + eps)`` (STE), ``[out_features, in_features]``, weight dtype."""
        return fake_quantize_ternary_absmean(self.weight, self.weight_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.activation_bits
        if not torch.is_grad_enabled() and bits is not None and bits <= 8:
            return self._integer_forward(x, bits)
        return ternary_linear(x, self.weight, self.bias, bits, self.weight_eps, training_codes_kernel(x.device))

    def _integer_forward(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        """Inference without gradients: the integer GEMM of the packed layer on this layer's ternary codes (cached
        until the latent weight changes); equal to :func:`ternary_linear` bit for bit in float32."""
        int8_weight = self.__dict__.setdefault("_int8_weight", TernaryInt8Weight())  # not a submodule or state
        return int8_weight.linear(
            x, bits, self.weight, lambda: quantize_ternary_absmean(self.weight.detach(), self.weight_eps), self.bias,
            self.out_features,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights=ternary(absmean), activation_bits={self.activation_bits}"


def _excluded(name: str, modules_to_not_convert: Iterable[str]) -> bool:
    padded = f".{name}."
    return any(f".{key}." in padded or name == key for key in modules_to_not_convert)


def replace_linear_with_bitlinear(
    model: nn.Module,
    modules_to_not_convert: Iterable[str] | None = DEFAULT_MODULES_TO_NOT_CONVERT,
    activation_bits: int | None = 8,
    weight_eps: float = DEFAULT_EPS,
) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`BitLinear` sharing its parameters, in place.

    A Linear is kept when any entry of ``modules_to_not_convert`` equals its qualified name or is one of its
    dotted name components (``"lm_head"`` keeps ``lm_head.dense`` and ``lm_head.decoder``; ``"contact_head"`` keeps
    ``esm.contact_head.regression``). For ESM-2 the defaults convert the query/key/value, attention output and both
    FFN projections of every layer (6 per layer: 36 for the 8M model) and nothing else.

    Args:
        model: any module; modified in place.
        modules_to_not_convert: names to keep full precision (default: LM head and contact head).
        activation_bits, weight_eps: passed to each BitLinear.

    Returns:
        the number of Linear layers converted (also logged at INFO level).
    """
    skip = tuple(modules_to_not_convert or ())
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not _excluded(name, skip)
    ]
    for name, module in targets:
        model.set_submodule(name, BitLinear.from_linear(module, activation_bits=activation_bits,
                                                        weight_eps=weight_eps), strict=True)
    logger.info("Converted %d nn.Linear layers to BitLinear (kept: %s)", len(targets), ", ".join(skip) or "none")
    return len(targets)
