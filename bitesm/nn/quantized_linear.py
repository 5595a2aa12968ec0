"""Inference-only Linear layer whose weight is stored as int8 codes plus float32 scales (post-training quantization).

:class:`Int8Linear` holds a symmetric uniform b-bit weight (b <= 8; PTQ4Protein eq. 1-4 with ``r = max|W|``, per
output channel or per tensor) as what it is: the integer codes ``q = clamp(round(W / s), -2^(b-1), 2^(b-1) - 1)``
in an ``int8`` tensor and the step ``s`` in float32, a quarter of the fp32 bytes.

Forward, two paths, both equal to an ``nn.Linear`` holding the fake-quantized weight
(:func:`bitesm.quant.primitives.fake_quantize_weight_symmetric`) up to float rounding:

* **float** (the default): ``x (q * s)^T + b`` with the dequantized weight computed once per device and dtype and
  cached (never saved); bit for bit the fake-quantized model's product.
* **integer** (opt-in, ``layer.integer_gemm = True``): when the layer's input quantizer (the ``ffn_input`` site of post-training quantization, a forward
  pre-hook) is a calibrated static per-tensor *uniform* quantizer of at most 8 bits and the input is float32, the
  activation codes ``u = round((x_hat - r_l) / s_x)`` in ``[0, 2^b - 1]`` are recovered from the hook's output, shifted
  to int8 (``u - 2^(b-1)``) and multiplied with the int8 weight codes by the device's integer GEMM
  (:func:`bitesm.nn.int8_linear.int8_ternary_linear` on :func:`~bitesm.nn.int8_linear.prepack_ternary`, which take any
  int8 codes: oneDNN on x86, ``torch._int_mm`` on CUDA, an exact float product elsewhere); then one float rescale
  ``y = s_x s_w acc + (r_l + 2^(b-1) s_x) s_w rowsum(q) + b``. Per layer this agrees with the float path to about
  1e-6, but it is not bit-identical, and in a whole model with static activation quantizers downstream a last-bit
  difference can move a value across a rounding boundary of the next quantizer (one step, ~1e-2): the logits of
  an 8M W8A8 uniform model then differ from the fake-quantized model's by ~3e-2. It is therefore off by default;
  weights-only models, piecewise activations and other dtypes always take the float path.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant.primitives import DEFAULT_EPS, asymmetric_scale_offset, quantize_affine, signed_range, symmetric_scale
from .int8_linear import int8_backend, int8_ternary_linear, prepack_ternary

__all__ = ["Int8Linear", "replace_linear_with_int8"]


class Int8Linear(nn.Linear):
    """``y = x (q * s)^T + b`` from int8 weight codes ``q`` and float32 scales ``s``; inference only.

    A subclass of ``nn.Linear`` so that code selecting Linear layers (activation-quantizer sites, memory
    accounting) treats it as one; but ``weight`` is an ``int8`` buffer, not a parameter.

    State dict: ``weight`` (``int8`` ``[out, in]``, the codes, in ``[-2^(b-1), 2^(b-1) - 1]``), ``weight_scale``
    (``float32`` ``[out, 1]`` per output channel, or ``[1, 1]`` per tensor) and ``bias`` (``[out]``, the model's
    dtype).

    Args:
        in_features, out_features: as ``nn.Linear``.
        bias: whether the layer has a bias.
        weight_bits: bit width b of the codes, 2..8.
        per_channel: one scale per output channel (True) or one per tensor.
        device, dtype: of the bias.

    Shapes:
        input ``[..., in_features]`` (float), output ``[..., out_features]`` of the input's dtype.

    Raises:
        ValueError: ``weight_bits`` outside 2..8 (wider codes do not fit int8).
        RuntimeError: in ``forward`` when gradients are required: the layer is not trainable.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 8,
                 per_channel: bool = True, device=None, dtype=None):
        nn.Module.__init__(self)
        if not isinstance(weight_bits, int) or not 2 <= weight_bits <= 8:
            raise ValueError(f"Int8Linear stores codes of 2..8 bits, got weight_bits={weight_bits!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight_bits = weight_bits
        self.per_channel = bool(per_channel)
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        rows = out_features if per_channel else 1
        self.register_buffer("weight_scale", torch.ones(rows, 1, dtype=torch.float32, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._cache: tuple | None = None
        self._packed: tuple | None = None

    def reset_parameters(self) -> None:  # nn.Linear's initialisation does not apply to codes
        pass

    @classmethod
    @torch.no_grad()
    def from_linear(cls, layer: nn.Linear, weight_bits: int, per_channel: bool = True,
                    eps: float = DEFAULT_EPS) -> Int8Linear:
        """Quantize a float ``nn.Linear`` (PTQ4Protein eq. 1-4, symmetric, ``r = max|W|``).

        The codes and scales are those of :func:`bitesm.quant.primitives.fake_quantize_weight_symmetric`, so the
        layer computes with exactly the fake-quantized weight. A weight already on the grid (fake-quantized) gives
        the same codes back (its absmax is ``qmax * s``).

        Raises:
            ValueError: ``weight_bits`` outside 2..8.
        """
        w = layer.weight.detach()
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, weight_bits=weight_bits,
                  per_channel=per_channel, device=w.device, dtype=w.dtype)
        absmax = w.abs().amax(dim=-1, keepdim=True) if per_channel else w.abs().amax().reshape(1, 1)
        scale = symmetric_scale(absmax.float(), weight_bits, eps)
        qmin, qmax = signed_range(weight_bits)
        new.weight.copy_(quantize_affine(w, scale, None, qmin, qmax, dtype=torch.int8))
        new.weight_scale.copy_(scale)
        if layer.bias is not None:
            new.bias.data.copy_(layer.bias.detach())
        return new

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``q * s`` ``[out, in]`` in ``dtype`` (computed in float32, as the fake quantizer does), cached per
        device, dtype and weight version; the cache is not part of the state dict."""
        key = (self.weight.device, dtype, self.weight.data_ptr(), self.weight._version,
               self.weight_scale.data_ptr(), self.weight_scale._version)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, (self.weight.float() * self.weight_scale).to(dtype))
        return self._cache[1]

    def _apply(self, fn, recurse=True):
        self._cache = self._packed = None
        return super()._apply(fn, recurse)

    #: opt in to the integer GEMM for a static uniform <= 8-bit input quantizer (module docstring)
    integer_gemm: bool = False

    def _uniform_input_quantizer(self):
        """The calibrated static uniform <= 8-bit input quantizer the integer path can use, or ``None``."""
        if not self.integer_gemm:
            return None
        q = getattr(self, "input_quantizer", None)
        if q is None or getattr(q, "method", None) != "uniform" or not q.bits <= 8 or q.observer is not None:
            return None
        return q if q.enabled and q.calibrated else None

    def _prepacked(self, backend: str) -> tuple:
        key = (backend, self.weight.device, self.weight.data_ptr(), self.weight._version,
               self.weight_scale.data_ptr(), self.weight_scale._version)
        if self._packed is None or self._packed[0] != key:
            w_scale = self.weight_scale.reshape(1, -1)  # [1, out] (or [1, 1])
            row_sums = self.weight.sum(dim=1, dtype=torch.int32).float().reshape(1, -1) * w_scale
            self._packed = (key, prepack_ternary(self.weight, backend), w_scale, row_sums)
        return self._packed[1:]

    def _integer_forward(self, x: torch.Tensor, quantizer) -> torch.Tensor:
        bits = quantizer.bits
        x_scale, offset = asymmetric_scale_offset(quantizer.r_l, quantizer.r_u, bits)
        half = 2 ** (bits - 1)
        x2 = x.reshape(-1, self.in_features)
        codes = quantize_affine(x2, x_scale, offset, 0, 2**bits - 1).sub_(half).to(torch.int8)
        backend = int8_backend(x.device)
        packed, w_scale, row_sums = self._prepacked(backend)
        acc = int8_ternary_linear(codes, x_scale.reshape(1, 1).expand(codes.shape[0], 1), packed, self.weight,
                                  w_scale, None, backend)
        y = acc.add_(row_sums * (offset + half * x_scale))
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError(
                "Int8Linear is inference-only (int8 weight codes have no gradient); fine-tune the floating-point "
                "checkpoint and quantize it again with bitesm ptq"
            )
        quantizer = self._uniform_input_quantizer()
        if quantizer is not None and x.dtype == torch.float32:
            return self._integer_forward(x, quantizer)
        return nn.functional.linear(x, self.dequantized_weight(x.dtype), self.bias)

    def extra_repr(self) -> str:
        granularity = "per_channel" if self.per_channel else "per_tensor"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weights=int{self.weight_bits} codes ({granularity} float32 scales)")


def replace_linear_with_int8(model: nn.Module, weight_bits: int, per_channel: bool = True, empty: bool = False,
                             predicate=None) -> int:
    """Replace the encoder ``nn.Linear`` layers of ``model`` (exact type ``nn.Linear`` with ``"encoder."`` in the
    qualified name: not the LM head, contact head, pooler or BitLinear layers) by :class:`Int8Linear`, in place.

    Args:
        model: any module.
        weight_bits: code bit width, 2..8.
        per_channel: one scale per output channel, or per tensor.
        empty: build empty layers of the same shape (loaded later from an int8 checkpoint) instead of quantizing
            each layer's float weight (:meth:`Int8Linear.from_linear`).
        predicate: optional ``(name, module) -> bool`` overriding the selection.

    Returns:
        the number of layers replaced.

    Raises:
        ValueError: ``weight_bits`` outside 2..8.
    """
    select = predicate or (lambda name, m: type(m) is nn.Linear and "encoder." in name)
    targets = [(n, m) for n, m in model.named_modules() if select(n, m)]
    for name, module in targets:
        if empty:
            new = Int8Linear(module.in_features, module.out_features, bias=module.bias is not None,
                             weight_bits=weight_bits, per_channel=per_channel, device=module.weight.device,
                             dtype=module.weight.dtype)
        else:
            new = Int8Linear.from_linear(module, weight_bits, per_channel)
        model.set_submodule(name, new, strict=True)
    return len(targets)
