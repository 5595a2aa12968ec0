"""Inference-only BitLinear with 2-bit packed ternary weights and an integer matrix multiply.

:class:`PackedBitLinear` holds what a trained :class:`~bitesm.nn.bitlinear.BitLinear` computes with, and nothing
else: the ternary weight ``W~ = RoundClip(W / (gamma + eps), -1, 1)`` packed four values per byte
(:mod:`bitesm.quant.packing`) and its scale ``gamma + eps`` (2Bits of Protein eq. 1-3), 1/16 of the fp32 bytes.
Its forward quantizes activations with the same function as BitLinear
(:func:`~bitesm.quant.primitives.quantize_per_token_absmax`) and multiplies integers
(:func:`~bitesm.nn.int8_linear.int8_ternary_linear`), so its outputs equal BitLinear's up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant.packing import pack_ternary, packed_rows, unpack_ternary
from ..quant.primitives import (
    DEFAULT_EPS,
    absmax_per_token_scale,
    quantize_affine,
    quantize_ternary_absmean,
    rescale_accumulator,
    signed_range,
)
from .bitlinear import BitLinear
from .int8_linear import TernaryInt8Weight

__all__ = ["PackedBitLinear", "replace_bitlinear_with_packed"]


class PackedBitLinear(nn.Module):
    """``y = x_hat W~^T (gamma + eps) + b`` from 2-bit packed ternary weights; inference only.

    State dict: ``weight_packed`` (``uint8`` ``[ceil(out / 4), in]``, :func:`bitesm.quant.packing.pack_ternary`
    layout), ``weight_scale`` (0-d ``float32``: ``gamma + eps``) and ``bias`` (``[out]``, the dtype of the model).

    Forward: with ``activation_bits`` <= 8, per-token absmax int8 activations times the int8 ternary weight by the
    device's integer GEMM (:func:`bitesm.nn.int8_linear.int8_backend`); with 9-16 bits, the float product of the
    codes; with ``None``, float activations times the ternary codes; then the one float32 rescale
    (:func:`bitesm.quant.primitives.rescale_accumulator`). In float32 this equals the latent BitLinear
    (:func:`bitesm.quant.primitives.ternary_linear`) bit for bit (integer products are exact in both). The
    unpacked / prepacked weight is cached per device on first use (not saved).

    Args:
        in_features, out_features: as ``nn.Linear``.
        bias: whether the layer has a bias.
        activation_bits: as :class:`BitLinear` (8 in BitNet b1.58), or ``None``.
        weight_eps: as :class:`BitLinear` (kept for the record; the scale is stored).
        device, dtype: of the bias (buffers ``weight_packed``/``weight_scale`` have fixed dtypes).

    Shapes:
        input ``[..., in_features]`` (float32 or bfloat16), output ``[..., out_features]`` of the input's dtype.

    Raises:
        RuntimeError: in ``forward`` when gradients are required (``torch.is_grad_enabled()`` and the input needs
            grad): a packed layer is not trainable; train the latent BitLinear model.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation_bits: int | None = 8,
        weight_eps: float = DEFAULT_EPS,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation_bits = activation_bits
        self.weight_eps = weight_eps
        self.register_buffer(
            "weight_packed",
            torch.full((packed_rows(out_features), in_features), 0b01010101, dtype=torch.uint8, device=device),
        )
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._int8_weight = TernaryInt8Weight()

    @classmethod
    def from_bitlinear(cls, layer: BitLinear) -> PackedBitLinear:
        """Pack a (trained) BitLinear: ``quantize_ternary_absmean`` of its latent weight, the same function
        BitLinear's forward uses."""
        w_ternary, scale = quantize_ternary_absmean(layer.weight.detach(), layer.weight_eps)
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None,
                  activation_bits=layer.activation_bits, weight_eps=layer.weight_eps, device=layer.weight.device,
                  dtype=layer.weight.dtype)
        new.weight_packed.copy_(pack_ternary(w_ternary))
        new.weight_scale.copy_(scale)
        if layer.bias is not None:
            new.bias.data.copy_(layer.bias.detach())
        return new

    def ternary_weight(self, dtype: torch.dtype = torch.int8) -> torch.Tensor:
        """The unpacked ternary weight ``W~`` ``[out, in]`` in {-1, 0, 1} (``dtype``)."""
        return unpack_ternary(self.weight_packed, self.out_features, dtype)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``W~ * (gamma + eps)``: the weight BitLinear computes with, ``[out, in]``."""
        return (self.ternary_weight(torch.float32) * self.weight_scale).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError(
                "PackedBitLinear is inference-only (2-bit packed weights have no gradient); train the latent "
                "BitLinear model and pack it with bitesm.models.packed.to_packed / bitesm export --format packed"
            )
        bits = self.activation_bits
        if bits is None:  # weights-only ternary: as ternary_linear
            acc = nn.functional.linear(x, self.ternary_weight(x.dtype))
            return rescale_accumulator(acc, self.weight_scale, self.bias)
        if bits > 8:
            shape = x.shape
            x2 = x.reshape(-1, self.in_features)  # codes beyond int8: the float product of codes, as ternary_linear
            x_scale = absmax_per_token_scale(x2, bits)
            qmin, qmax = signed_range(bits)
            codes = quantize_affine(x2, x_scale, None, qmin, qmax).to(x.dtype)
            acc = nn.functional.linear(codes, self.ternary_weight(x.dtype))
            y = rescale_accumulator(acc, x_scale * self.weight_scale, self.bias)
            return y.reshape(*shape[:-1], self.out_features)
        return self._int8_weight.linear(
            x, bits, self.weight_packed, lambda: (self.ternary_weight(torch.int8), self.weight_scale), self.bias,
            self.out_features,
        )

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weights=ternary(2-bit packed), activation_bits={self.activation_bits}")


def replace_bitlinear_with_packed(model: nn.Module, empty: bool = False) -> int:
    """Replace every :class:`BitLinear` of ``model`` by a :class:`PackedBitLinear`, in place.

    Args:
        model: any module.
        empty: build empty packed layers of the same shape (their buffers are then loaded from a packed
            checkpoint) instead of packing each BitLinear's latent weight (:meth:`PackedBitLinear.from_bitlinear`).

    Returns:
        the number of layers replaced.
    """
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, BitLinear)]
    for name, module in targets:
        if empty:
            new = PackedBitLinear(module.in_features, module.out_features, bias=module.bias is not None,
                                  activation_bits=module.activation_bits, weight_eps=module.weight_eps,
                                  device=module.weight.device, dtype=module.weight.dtype)
        else:
            new = PackedBitLinear.from_bitlinear(module)
        model.set_submodule(name, new, strict=True)
    return len(targets)
