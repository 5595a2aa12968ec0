"""Pure quantization math shared by QAT (BitLinear), PTQ and packed inference.

Everything here is a stateless function of tensors: no modules, no parameters, no observers.
The one quantizer used everywhere is the *affine* (scale + offset) uniform quantizer of
PTQ4Protein (eq. 1-4)::

    q     = clamp(round((x - offset) / scale), qmin, qmax)        # quantize   (eq. 2-3)
    x_hat = q * scale + offset                                    # dequantize (eq. 4)

with two ways of choosing ``scale`` and ``offset`` from a clipping range [r_l, r_u] (eq. 1):

* symmetric signed:     scale = max(|r_l|, |r_u|) / (2^(b-1) - 1), offset = 0,   q in [-2^(b-1), 2^(b-1) - 1]
* asymmetric unsigned:  scale = (r_u - r_l) / (2^b - 1),           offset = r_l, q in [0, 2^b - 1]

BitNet b1.58 is two instances of it (Ma et al., 2024, "The Era of 1-bit LLMs", eq. 1-3; repeated as
eq. 1-3 of "2Bits of Protein", Morsing et al., 2024):

* weights, absmean ternary: gamma = mean(|W|), W~ = RoundClip(W / (gamma + eps), -1, 1), i.e. the affine
  quantizer with scale = gamma + eps, offset = 0, qmin = -1, qmax = 1 (per tensor);
* activations, per-token absmax 8-bit: scale = max_j |x_j| / 127 per token (row of the last dim),
  offset = 0, q in [-128, 127] (the symmetric signed rule above with b = 8 and a per-token range).

Each quantizer has a fake-quant form (quantize then dequantize, same dtype as the input) and a
straight-through estimator (STE) form for training: forward value ``x_hat``, gradient d x_hat / d x = 1
(Bengio et al., 2013), written as an autograd function so the forward value is exactly ``x_hat``.

Layout follows torchao's ``quant_primitives.py``: math here, modules elsewhere (:mod:`bitesm.nn`).
All functions are device-agnostic; the rounding arithmetic runs in float32 whatever the input dtype
(bf16 cannot hold ``x / scale`` precisely enough), and results are cast back to the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_EPS",
    "signed_range",
    "unsigned_range",
    "symmetric_scale",
    "asymmetric_scale_offset",
    "quantize_affine",
    "dequantize_affine",
    "fake_quantize_affine",
    "ste",
    "absmean_ternary_scale",
    "quantize_ternary_absmean",
    "fake_quantize_ternary_absmean",
    "fake_quantize_weight_symmetric",
    "absmax_per_token_scale",
    "quantize_per_token_absmax",
    "fake_quantize_per_token_absmax",
    "scaled_ste",
    "rescale_accumulator",
    "ternary_linear",
]

#: Default epsilon guarding scales against division by zero (BitNet b1.58 reference code uses 1e-5).
DEFAULT_EPS = 1e-5


def _check_bits(bits: int, minimum: int = 2) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not (minimum <= bits <= 32):
        raise ValueError(f"bits must be an int in [{minimum}, 32], got {bits!r}")


def signed_range(bits: int) -> tuple[int, int]:
    """Integer range of a symmetric signed b-bit quantizer: ``(-2^(b-1), 2^(b-1) - 1)``.

    Args:
        bits: bit width b, an int in [2, 32].

    Returns:
        ``(qmin, qmax)``, e.g. ``(-128, 127)`` for b = 8.

    Raises:
        ValueError: if ``bits`` is out of range.
    """
    _check_bits(bits)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def unsigned_range(bits: int) -> tuple[int, int]:
    """Integer range of an asymmetric unsigned b-bit quantizer: ``(0, 2^b - 1)``.

    Args:
        bits: bit width b, an int in [1, 32].

    Raises:
        ValueError: if ``bits`` is out of range.
    """
    _check_bits(bits, minimum=1)
    return 0, 2**bits - 1


def symmetric_scale(absmax: torch.Tensor, bits: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Step size of a symmetric signed quantizer for the range [-absmax, absmax] (PTQ4Protein eq. 1).

    ``scale = max(absmax, eps) / (2^(b-1) - 1)``, so that ``absmax`` maps to ``qmax = 2^(b-1) - 1``.

    Args:
        absmax: clipping bound(s) r = max(|r_l|, |r_u|), any shape (broadcast against the data), float.
        bits: bit width b >= 2.
        eps: lower bound on ``absmax`` so an all-zero row/tensor gets a finite scale.

    Returns:
        float32 tensor of the same shape as ``absmax``.
    """
    _check_bits(bits)
    return absmax.float().clamp(min=eps) / (2 ** (bits - 1) - 1)


def asymmetric_scale_offset(
    r_l: torch.Tensor, r_u: torch.Tensor, bits: int, eps: float = DEFAULT_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step size and offset of an asymmetric unsigned quantizer for the range [r_l, r_u] (PTQ4Protein eq. 1).

    ``scale = max(r_u - r_l, eps) / (2^b - 1)`` and ``offset = r_l``: ``r_l`` maps to 0, ``r_u`` to ``2^b - 1``.

    Args:
        r_l, r_u: lower and upper clipping bounds (same shape or broadcastable), float.
        bits: bit width b >= 1.
        eps: lower bound on the range width.

    Returns:
        ``(scale, offset)``, float32 tensors.

    Raises:
        ValueError: if any ``r_u < r_l``.
    """
    _check_bits(bits, minimum=1)
    r_l = torch.as_tensor(r_l).float()
    r_u = torch.as_tensor(r_u).float()
    if bool((r_u < r_l).any()):
        raise ValueError("asymmetric range needs r_u >= r_l; got r_u < r_l (swap the bounds)")
    return (r_u - r_l).clamp(min=eps) / (2**bits - 1), r_l


def quantize_affine(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    offset: torch.Tensor | float | None,
    qmin: int,
    qmax: int,
    dtype: torch.dtype | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """Quantize to integers: ``q = clamp(round((x - offset) / scale), qmin, qmax)`` (PTQ4Protein eq. 2-3).

    ``round`` is round-half-to-even (``torch.round``). Values outside the range are clipped.

    Args:
        x: real tensor, any shape and float dtype.
        scale: step size, positive, broadcastable to ``x`` (per tensor, per channel or per token).
        offset: real offset subtracted before rounding (``r_l`` of an asymmetric range); ``None`` or 0 for symmetric.
        qmin, qmax: integer range, ``qmin < qmax``.
        dtype: output dtype; ``None`` gives float32 holding integer values, or e.g. ``torch.int8``.
        clip: ``False`` skips the clamp, for callers whose scale already bounds ``|x / scale|`` by ``qmax`` (the
            absmax scale of :func:`quantize_per_token_absmax`); saves one pass over the data.

    Returns:
        tensor of ``x.shape`` with integer values in [qmin, qmax].

    Raises:
        ValueError: if ``qmin >= qmax``.
    """
    if qmin >= qmax:
        raise ValueError(f"quantize_affine needs qmin < qmax, got qmin={qmin}, qmax={qmax}")
    xf = x.float()
    if offset is not None:
        xf = xf - offset
    q = torch.div(xf, scale).round_()
    if clip:
        q.clamp_(qmin, qmax)
    return q if dtype is None else q.to(dtype)


def dequantize_affine(
    q: torch.Tensor,
    scale: torch.Tensor | float,
    offset: torch.Tensor | float | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Map integers back to reals: ``x_hat = q * scale + offset`` (PTQ4Protein eq. 4).

    Args:
        q: integer-valued tensor (any int or float dtype).
        scale, offset: as given to :func:`quantize_affine`.
        dtype: output float dtype.

    Returns:
        tensor of ``q.shape`` and ``dtype``.
    """
    x = q.float() * scale
    if offset is not None:
        x.add_(offset)
    return x.to(dtype)


class _StraightThrough(torch.autograd.Function):
    """Returns ``x_hat``; passes the incoming gradient to ``x`` unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return x_hat.view_as(x_hat)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _ScaledStraightThrough(torch.autograd.Function):
    """Returns the integer codes ``q``; passes ``grad / scale`` to ``x`` (the STE of ``q ~= x / scale``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return q.view_as(q)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scale,) = ctx.saved_tensors
        return (grad / scale).to(grad.dtype), None, None


def scaled_ste(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator for integer codes: value ``q`` (e.g. ``round(x / scale)``), gradient ``1 / scale``.

    ``q * scale`` with this estimator has exactly the gradient of :func:`ste` on the fake-quantized value, while
    the forward keeps the integers apart from the scale, so a matrix product of codes is computed exactly and
    rescaled once (:func:`ternary_linear`).

    Args:
        x: the tensor whose gradient passes through, any shape.
        q: its integer codes, same shape; detached and cast to ``x.dtype``.
        scale: the step size, broadcastable to ``x`` (detached).
    """
    return _ScaledStraightThrough.apply(x, q.detach().to(x.dtype), scale.detach())


def ste(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: forward value exactly ``x_hat``, gradient w.r.t. ``x`` the identity.

    The same estimator as the BitNet reference's ``x + (x_hat - x).detach()``, written as an autograd function:
    the value is ``x_hat`` bit for bit (that floating-point sum can leave the quantization grid for clipped values,
    in bf16 by up to ~1% of the scale), and no graph is recorded through the rounding, which has zero gradient.

    Args:
        x: the tensor whose gradient passes through.
        x_hat: its quantized (fake-quant) value, same shape; detached and cast to ``x.dtype``.
    """
    return _StraightThrough.apply(x, x_hat.detach().to(x.dtype))


def fake_quantize_affine(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    offset: torch.Tensor | float | None,
    qmin: int,
    qmax: int,
    use_ste: bool = True,
) -> torch.Tensor:
    """Quantize then dequantize (simulated quantization), in the dtype of ``x``.

    Args:
        x: real tensor, any shape and float dtype.
        scale, offset, qmin, qmax: see :func:`quantize_affine`.
        use_ste: wrap with :func:`ste` so gradients flow to ``x`` (QAT); ``False`` gives a plain function.

    Returns:
        tensor of ``x.shape`` and ``x.dtype``; every element is ``q * scale + offset`` for an integer q.
    """
    source = x.detach() if use_ste else x
    x_hat = dequantize_affine(quantize_affine(source, scale, offset, qmin, qmax), scale, offset, dtype=x.dtype)
    return ste(x, x_hat) if use_ste else x_hat


# --- BitNet b1.58 weights: absmean ternary -------------------------------------------------------


def absmean_ternary_scale(w: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Per-tensor ternary scale ``gamma + eps`` with ``gamma = mean(|W|)`` (2Bits of Protein eq. 2).

    Args:
        w: weight tensor, any shape (``[out_features, in_features]`` for a Linear), float.
        eps: the epsilon of eq. 1, added to gamma.

    Returns:
        0-d float32 tensor.
    """
    return w.detach().float().abs().mean() + eps


def quantize_ternary_absmean(w: torch.Tensor, eps: float = DEFAULT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary weights ``W~ = RoundClip(W / (gamma + eps), -1, 1)`` (2Bits of Protein eq. 1-3; BitNet b1.58).

    Args:
        w: weight tensor, float, any shape.
        eps: epsilon of eq. 1.

    Returns:
        ``(w_ternary, scale)``: int8 tensor of ``w.shape`` with values in {-1, 0, 1}, and the 0-d float32 scale
        ``gamma + eps`` such that ``w ~= w_ternary * scale``.
    """
    scale = absmean_ternary_scale(w, eps)
    return quantize_affine(w, scale, None, -1, 1, dtype=torch.int8), scale


def fake_quantize_ternary_absmean(w: torch.Tensor, eps: float = DEFAULT_EPS, use_ste: bool = True) -> torch.Tensor:
    """``W~ * (gamma + eps)`` in the dtype of ``w``, with an STE for QAT (2Bits of Protein eq. 1-3).

    Args:
        w: weight tensor, float, any shape.
        eps: epsilon of eq. 1.
        use_ste: gradient passes straight through to ``w`` when True.

    Returns:
        tensor of ``w.shape`` and ``w.dtype`` whose values are in {-scale, 0, +scale}.
    """
    return fake_quantize_affine(w, absmean_ternary_scale(w, eps), None, -1, 1, use_ste=use_ste)


# --- PTQ weights: symmetric uniform, per tensor or per output channel ------------------------------------


def fake_quantize_weight_symmetric(
    w: torch.Tensor, bits: int, per_channel: bool = True, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Symmetric signed b-bit weight quantization, dequantized (PTQ4Protein eq. 1-4 with r = max|W|).

    Args:
        w: weight ``[out_features, in_features]`` (any float dtype).
        bits: bit width b in [2, 16].
        per_channel: one scale per output channel (row) when True, one per tensor otherwise.
        eps: lower bound on the range.

    Returns:
        tensor of ``w.shape`` and ``w.dtype``, no gradient path (post-training).
    """
    w = w.detach()
    absmax = w.abs().amax(dim=-1, keepdim=True) if per_channel else w.abs().amax()
    qmin, qmax = signed_range(bits)
    return fake_quantize_affine(w, symmetric_scale(absmax, bits, eps), None, qmin, qmax, use_ste=False)


# --- BitNet b1.58 activations: per-token absmax ----------------------------------------------------


def absmax_per_token_scale(x: torch.Tensor, bits: int = 8, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Per-token scale ``max_j |x_j| / (2^(b-1) - 1)`` over the last dimension (BitNet b1.58, eq. 4-5).

    Args:
        x: activations ``[..., features]``, float.
        bits: activation bit width (8 in BitNet b1.58).
        eps: lower bound on the per-token absmax.

    Returns:
        float32 tensor ``[..., 1]``.
    """
    x = x.detach()
    # max |x| = max(max x, -min x): two vectorised reductions, 2-10x faster on CPU than abs().amax() or
    # vector_norm(inf) (which take one pass, but an unvectorised or allocating one)
    absmax = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_())
    return symmetric_scale(absmax, bits, eps)


def quantize_per_token_absmax(
    x: torch.Tensor, bits: int = 8, eps: float = DEFAULT_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric b-bit quantization of activations (BitNet b1.58).

    Args:
        x: activations ``[..., features]``, float.
        bits: bit width, 2..8 for an int8 result.

    Returns:
        ``(x_int, scale)``: int8 tensor ``[..., features]`` in [-2^(b-1), 2^(b-1) - 1] and float32 scale ``[..., 1]``.

    Raises:
        ValueError: if ``bits`` > 8 (the result would not fit int8).
    """
    if bits > 8:
        raise ValueError(f"quantize_per_token_absmax returns int8; bits must be <= 8, got {bits}")
    scale = absmax_per_token_scale(x, bits, eps)
    qmin, qmax = signed_range(bits)
    # |x| <= max|x| = qmax * scale, so x / scale rounds into [-qmax, qmax] and the clamp would be a no-op
    return quantize_affine(x.detach(), scale, None, qmin, qmax, dtype=torch.int8, clip=False), scale


def fake_quantize_per_token_absmax(
    x: torch.Tensor, bits: int = 8, eps: float = DEFAULT_EPS, use_ste: bool = True
) -> torch.Tensor:
    """Fake-quantized per-token absmax activations in the dtype of ``x`` (BitNet b1.58), STE for QAT.

    Args:
        x: activations ``[..., features]``, float.
        bits: bit width (8 in BitNet b1.58).
        eps: lower bound on the per-token absmax.
        use_ste: gradient passes straight through to ``x`` when True.

    Returns:
        tensor of ``x.shape`` and ``x.dtype``.
    """
    qmin, qmax = signed_range(bits)
    return fake_quantize_affine(x, absmax_per_token_scale(x, bits, eps), None, qmin, qmax, use_ste=use_ste)


# --- BitNet b1.58 linear layer: codes multiplied, then rescaled -----------------------------------


def rescale_accumulator(
    acc: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """``acc * scale + bias`` computed in float32 (multiply, then add: two roundings) and returned in ``out_dtype``.

    The one rescale of every ternary matrix product, shared by :func:`ternary_linear` (QAT and fake-quant
    inference) and the integer kernels of :mod:`bitesm.nn.int8_linear`, so both round identically.

    Args:
        acc: ``[..., out]`` product of integer codes (float holding integers, or float32 from an int32 GEMM).
        scale: broadcastable float32 (``s_x * gamma``: ``[..., 1]`` per token times the 0-d weight scale).
        bias: ``[out]`` or ``None``.
        out_dtype: dtype of the result (default ``acc.dtype``).
        inplace: a float32 ``acc`` that nothing else reads (a fresh GEMM output, no autograd graph) is
            overwritten instead of copied; the values are the same.
    """
    out = acc.float()
    out = out.mul_(scale) if inplace or out is not acc else out * scale
    if bias is not None:
        out.add_(bias)
    return out.to(out_dtype or acc.dtype)


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear`` gives for ``x`` here: the autocast dtype when autocast is on for its device."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class _TernaryLinear(torch.autograd.Function):
    """Forward and STE backward of :func:`ternary_linear` with 8-bit-or-less per-token activations, written out so
    no pass is spent on autograd bookkeeping: the backward multiplies by the fake-quantized weight and activations
    directly (``dL/dx = dL/dy W_hat``, ``dL/dW = dL/dy^T x_hat``, ``dL/db = sum dL/dy``). The int8 codes are what is
    saved for the backward (a quarter of the float32 activations)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, bias, bits: int, weight_eps: float, codes_kernel):
        w_codes, w_scale = quantize_ternary_absmean(weight, weight_eps)
        x_codes, x_scale = quantize_per_token_absmax(x, bits)
        if codes_kernel is None:
            acc = F.linear(x_codes.to(x.dtype), w_codes.to(weight.dtype))
            y = rescale_accumulator(acc, x_scale * w_scale, bias, inplace=True)
        else:
            y = codes_kernel(x_codes, x_scale, w_codes, w_scale, bias, _matmul_dtype(x))
        ctx.save_for_backward(x_codes, x_scale, w_codes, w_scale)
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        x_codes, x_scale, w_codes, w_scale = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ (w_codes.float() * w_scale).to(grad.dtype)).to(x_dtype)
        if ctx.needs_input_grad[1]:
            x_hat = (x_codes.float().mul_(x_scale)).to(grad.dtype)
            grad_w = (grad.reshape(-1, grad.shape[-1]).t() @ x_hat.reshape(-1, x_hat.shape[-1])).to(w_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0).to(b_dtype)
        return grad_x, grad_w, grad_b, None, None, None


def ternary_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation_bits: int | None = 8,
    weight_eps: float = DEFAULT_EPS,
    codes_kernel=None,
) -> torch.Tensor:
    """BitNet b1.58 linear layer: ``y = (x_int W~^T) * s_x * (gamma + eps) + b``, with STEs (2Bits of Protein eq. 1-3;
    BitNet b1.58 eq. 4-5).

    ``W~ = RoundClip(W / (gamma + eps), -1, 1)`` (:func:`quantize_ternary_absmean`), ``x_int = clamp(round(x / s_x))``
    with per-token ``s_x = max|x| / (2^(b-1) - 1)`` (:func:`quantize_per_token_absmax`). This equals
    ``F.linear(x_hat, W_hat, b)`` with the fake-quantized ``x_hat = x_int s_x`` and ``W_hat = W~ (gamma + eps)``, but
    multiplies the integer codes (exact in float32 for ``in_features < 2^24 / 2^(b-1)``) and rescales once
    (:func:`rescale_accumulator`), as the packed integer kernels do, so packed and latent models agree bit for bit in
    float32. Gradients (:func:`scaled_ste`) are those of the fake-quant formulation: ``dy/dx = W_hat``,
    ``dy/dW = x_hat`` (straight through the rounding).

    Args:
        x: ``[..., in_features]`` float32 or bfloat16.
        weight: latent ``[out_features, in_features]`` weight.
        bias: ``[out_features]`` or ``None``.
        activation_bits: b in [2, 16], or ``None`` for float activations (weights-only ternary).
        weight_eps: epsilon of eq. 1.
        codes_kernel: with gradients and ``activation_bits <= 8``, an integer GEMM for the forward product:
            ``codes_kernel(x_int, s_x, W~, gamma + eps, bias, out_dtype) -> y`` with int8 ``x_int`` ``[..., in]``,
            float32 ``s_x`` ``[..., 1]``, int8 ``W~`` ``[out, in]`` and a 0-d float32 scale, returning
            ``[..., out]`` of ``out_dtype`` (:func:`bitesm.nn.int8_linear.int8_codes_linear`). ``None`` multiplies
            the codes in float. Both are exact integer products, so the result is the same up to the dtype of the
            accumulator (float32 from an int32 GEMM, the autocast dtype from a float one).

    Returns:
        ``[..., out_features]`` in the dtype of the matrix product (``x.dtype``; bf16 under bf16 autocast).
    """
    if activation_bits is not None and activation_bits <= 8 and torch.is_grad_enabled():
        return _TernaryLinear.apply(x, weight, bias, activation_bits, weight_eps, codes_kernel)
    w_scale = absmean_ternary_scale(weight, weight_eps)
    w_q = scaled_ste(weight, quantize_affine(weight.detach(), w_scale, None, -1, 1), w_scale)
    if activation_bits is None:
        return rescale_accumulator(F.linear(x, w_q), w_scale, bias)
    x_scale = absmax_per_token_scale(x, activation_bits)
    qmin, qmax = signed_range(activation_bits)
    x_q = scaled_ste(x, quantize_affine(x.detach(), x_scale, None, qmin, qmax), x_scale)
    return rescale_accumulator(F.linear(x_q, w_q), x_scale * w_scale, bias)
