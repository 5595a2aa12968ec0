"""Piecewise-linear post-training quantization (PTQ4Protein eq. 5-6, after PWLQ), on top of the affine core.

Sources
-------
* PTQ4Protein: Peng et al., 2023, "Exploring Post-Training Quantization of Protein Language Models"
  (arXiv 2310.19624). Eq. 1-4 are the uniform (affine) quantizer implemented in :mod:`bitesm.quant.primitives`;
  eq. 5 is piecewise-linear quantization of activations with a highly asymmetric range (before LayerNorm);
  eq. 6 is its breakpoint ``p = ln(m * r + n)`` with ``m = 0.8614``, ``n = 0.6079``.
* PWLQ: Fang et al., 2020, "Post-Training Piecewise Linear Quantization for Deep Neural Networks" (ECCV),
  where eq. 5 and eq. 6 come from: the range [-r, r] is split into a dense centre region R1 = [-p, p] and a sparse
  tail region R2 = [-r, -p) U (p, r], each with the same number of levels, and each region is quantized
  sign-magnitude, ``sign(x) * uni(|x|; 0..p, offset 0)`` in R1 and ``sign(x) * uni(|x|; p..r, offset p)`` in R2
  (PWLQ eq. 2; its reference code, ``quant/pwlq.py`` option 2, uses a signed symmetric centre with the same number
  of codes instead of sign-magnitude).
  The breakpoint ``ln(0.86143114 * r + 0.607901097)`` is PWLQ's linear-regression fit of the MSE-optimal
  breakpoint for a unit-variance Gaussian (reference code ``find_optimal_breakpoint``), i.e. ``r`` and ``p`` are
  in units of the standard deviation; PTQ4Protein writes it without the normalisation. ``std=`` below restores it.

The quantizer implemented here (``b`` = total bits per value, region flag and sign included)
--------------------------------------------------------------------------------------------
For a clipping range [r_l, r_u] with r_l < 0 < r_u and breakpoints r_l <= p_l <= 0 <= p_u <= r_u::

    x_c = clamp(x, r_l, r_u)
    side:  P = p_u, R = r_u      if x_c >= 0           (positive side)
           P = -p_l, R = -r_l    if x_c <  0           (negative side: the mirror image, own bounds)
    k = b - 2                                           (magnitude bits of every piece)
    x_hat = sign(x_c) * uni(|x_c|; k, [0, P], offset 0)   if |x_c| <= P     (dense centre  R1 = [p_l, p_u])
            sign(x_c) * uni(|x_c|; k, [P, R], offset P)   if |x_c| >  P     (sparse tails  R2 = [r_l, p_l) U (p_u, r_u])
    uni(a; k, [lo, hi], offset o) = dequantize_affine(quantize_affine(a, s, o, 0, 2^k - 1), s, o),
                                    s = (hi - lo) / (2^k - 1)   (primitives.asymmetric_scale_offset)

Bit budget: each region's code is ``b - 1`` bits (1 sign bit + ``k = b - 2`` magnitude bits, i.e. a (b-1)-bit
sign-magnitude uniform quantizer of the region), plus 1 region-flag bit = ``b`` bits, 2^b codes, so b-bit
piecewise is compared with b-bit uniform at the same storage. PWLQ counts b per region and puts the region index on
top (its reference code's B-bit option 2 has a 2^B-code centre and two 2^(B-1)-code tails, 2^(B+1) codes), i.e.
PWLQ's "B-bit" scheme is ``bits=B + 1`` here.

Negative side: PWLQ's eq. is for a symmetric range [-r, r]. For PTQ4Protein's asymmetric ranges each side keeps its
own bounds: the negative side is the positive construction applied to ``-x`` with ``|r_l|`` and ``p_l = -p(|r_l|)``
(:func:`piecewise_breakpoints`), so both sides have 2^k levels per piece but their own steps. ``x = 0`` is exact.

Ranges on one side of zero (r_l >= 0 or r_u <= 0, e.g. attention probabilities in [0, 1] or an offset channel):
there is no sign to code, so the anchor ``a`` is the bound nearer zero (``r_l`` if r_l >= 0, else ``r_u``) and the
same two-region construction is applied to the distance from it, with (b-1)-bit pieces (region flag + b-1 bits = b
bits, 2^b codes)::

    R = r_u - r_l,  P = p(R)  (eq. 6 on the range width),  d = |x_c - a|,  k = b - 1
    x_hat = a + dir * uni(d; k, [0, P], offset 0)   if d <= P     (dense region next to the anchor)
            a + dir * uni(d; k, [P, R], offset P)   if d >  P     (sparse tail)

with ``dir = +1`` for r_l >= 0 and ``-1`` for r_u <= 0. This is PWLQ's magnitude quantizer of a folded bell
shape: the one-sided data are read as ``|y|`` of a zero-centred ``y``, so the ``std`` that normalises eq. 6 is the
root-mean-square distance from the anchor, ``sqrt(E[(x - a)^2])`` (for attention probabilities, their RMS), not the
standard deviation about the mean. :func:`piecewise_breakpoints` returns ``(r_l, r_l + P)`` or ``(r_u - P, r_u)``
there, so the dense region is always ``[p_l, p_u]``.

All arithmetic runs in float32 through :func:`~bitesm.quant.primitives.quantize_affine` /
:func:`~bitesm.quant.primitives.dequantize_affine` (the one rounding/clamping implementation of the package);
results are cast back to the input dtype. Bounds may be Python floats, 0-d tensors (per tensor) or tensors that
broadcast against ``x`` (per channel / per token).
"""

from __future__ import annotations

import torch

from .primitives import (
    asymmetric_scale_offset,
    dequantize_affine,
    quantize_affine,
    signed_range,
    ste,
    symmetric_scale,
    unsigned_range,
)

__all__ = [
    "PWLQ_M",
    "PWLQ_N",
    "piecewise_breakpoint",
    "piecewise_breakpoints",
    "quantize_piecewise",
    "fake_quantize_piecewise",
    "quantize_uniform",
    "fake_quantize_uniform",
]

#: Slope ``m`` of the breakpoint fit p = ln(m * r + n) (PTQ4Protein eq. 6; PWLQ's 0.86143114 rounded).
PWLQ_M = 0.8614
#: Intercept ``n`` of the breakpoint fit p = ln(m * r + n) (PTQ4Protein eq. 6; PWLQ's 0.607901097 rounded).
PWLQ_N = 0.6079

_MAX_BITS = 24  # float32 holds integers exactly up to 2^24


def _check_bits(bits: int, minimum: int, what: str) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not (minimum <= bits <= _MAX_BITS):
        raise ValueError(f"{what} needs bits to be an int in [{minimum}, {_MAX_BITS}], got {bits!r}")


def _as_bound(value: torch.Tensor | float, name: str) -> torch.Tensor:
    t = torch.as_tensor(value).detach()
    if not torch.is_floating_point(t):
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    return t.float()


def _check_range(r_l: torch.Tensor, r_u: torch.Tensor) -> None:
    if not bool((r_l < r_u).all()):
        raise ValueError("clipping range needs r_l < r_u everywhere (got r_l >= r_u; swap the bounds or widen them)")


def _straddles_zero(r_l: torch.Tensor, r_u: torch.Tensor) -> torch.Tensor:
    return (r_l < 0) & (r_u > 0)


def piecewise_breakpoint(
    r: torch.Tensor | float,
    m: float = PWLQ_M,
    n: float = PWLQ_N,
    std: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Breakpoint ``p = ln(m * r + n)`` for a range bound ``r > 0`` (PTQ4Protein eq. 6, from PWLQ), clamped to [0, r].

    With ``std`` given, PWLQ's normalised form ``p = std * ln(m * r / std + n)`` is used instead (eq. 6 is a fit for
    a unit-variance Gaussian, so ``r`` is really ``r / std``); ``std=None`` is PTQ4Protein's formula as written.

    Why clamp: ``ln(m r + n) < 0`` whenever ``m r + n < 1``, i.e. ``r < (1 - n) / m = 0.4552`` for the default
    constants, which would put the breakpoint on the wrong side of zero; it is clamped to 0 (the whole side is then
    tail region). With the default constants ``ln(m r + n) < r`` for every r >= 0 (``ln(m r + n) - r`` peaks at
    -0.443 at r = 0.294), but other constants (``n > 1``) give ``p > r`` for small r, which would leave the range;
    it is clamped to ``r`` (the whole side is then centre region).

    Args:
        r: positive range bound(s) (the magnitude of one side of the clipping range), float or tensor of any shape
            (per tensor or per channel).
        m, n: slope and intercept of the fit (defaults 0.8614 and 0.6079).
        std: optional standard deviation(s) of the data, broadcastable to ``r``, > 0.

    Returns:
        float32 tensor of the broadcast shape of ``r`` (and ``std``), with values in [0, r].

    Raises:
        ValueError: if any ``r`` is negative or not finite, or ``std`` is not positive.
    """
    r_t = _as_bound(r, "r")
    if bool((r_t < 0).any()):
        raise ValueError("piecewise_breakpoint needs r >= 0 (pass the magnitude |r_l| for the negative side)")
    if std is None:
        p = torch.log(m * r_t + n)
    else:
        s = _as_bound(std, "std")
        if not bool((s > 0).all()):
            raise ValueError("std must be > 0")
        p = s * torch.log(m * r_t / s + n)
    # clamp(min=0) also turns the -inf/NaN of ln(<=0) for odd constants into a valid breakpoint
    p = torch.nan_to_num(p, nan=0.0, neginf=0.0)
    return torch.minimum(p.clamp(min=0.0), r_t)


def piecewise_breakpoints(
    r_l: torch.Tensor | float,
    r_u: torch.Tensor | float,
    m: float = PWLQ_M,
    n: float = PWLQ_N,
    std: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Breakpoints ``(p_l, p_u)`` of a clipping range [r_l, r_u] (PTQ4Protein eq. 6; the dense region is [p_l, p_u]).

    * r_l < 0 < r_u: ``p_u = p(r_u)``, ``p_l = -p(|r_l|)`` with ``p`` from :func:`piecewise_breakpoint`, so the
      dense region straddles zero and each side's breakpoint follows its own bound.
    * r_l >= 0: ``(r_l, r_l + p(r_u - r_l))``; r_u <= 0: ``(r_u - p(r_u - r_l), r_u)`` -- one dense region next to
      the bound nearer zero, one tail (module docstring, one-sided ranges).

    Args:
        r_l, r_u: lower/upper bounds, floats or broadcastable tensors, ``r_l < r_u``.
        m, n, std: see :func:`piecewise_breakpoint` (for one-sided ranges ``std`` is the RMS distance from the
            anchor bound).

    Returns:
        ``(p_l, p_u)``: float32 tensors of the broadcast shape, ``r_l <= p_l <= p_u <= r_u``.

    Raises:
        ValueError: if any ``r_l >= r_u`` or a bound is not finite.
    """
    rl, ru = _as_bound(r_l, "r_l"), _as_bound(r_u, "r_u")
    _check_range(rl, ru)
    rl, ru = torch.broadcast_tensors(rl, ru)
    straddle = _straddles_zero(rl, ru)
    p_u = piecewise_breakpoint(ru.clamp(min=0.0), m, n, std)
    p_l = -piecewise_breakpoint((-rl).clamp(min=0.0), m, n, std)
    width = piecewise_breakpoint(ru - rl, m, n, std)
    above = rl >= 0  # one-sided, anchored at r_l; otherwise (r_u <= 0) anchored at r_u
    one_l = torch.where(above, rl, ru - width)
    one_u = torch.where(above, rl + width, ru)
    return torch.where(straddle, p_l, one_l), torch.where(straddle, p_u, one_u)


def _uniform_asymmetric(xc: torch.Tensor, rl: torch.Tensor, ru: torch.Tensor, bits: int) -> torch.Tensor:
    scale, offset = asymmetric_scale_offset(rl, ru, bits)
    qmin, qmax = unsigned_range(bits)
    return dequantize_affine(quantize_affine(xc, scale, offset, qmin, qmax), scale, offset)


def quantize_piecewise(
    x: torch.Tensor,
    r_l: torch.Tensor | float,
    r_u: torch.Tensor | float,
    bits: int,
    p_l: torch.Tensor | float | None = None,
    p_u: torch.Tensor | float | None = None,
    m: float = PWLQ_M,
    n: float = PWLQ_N,
    std: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """b-bit piecewise-linear quantize-dequantize of ``x`` on [r_l, r_u] (PTQ4Protein eq. 5; PWLQ eq. 2).

    ``x`` is clipped to [r_l, r_u]; values in the dense centre region [p_l, p_u] and in the sparse tails
    [r_l, p_l) U (p_u, r_u] are quantized sign-magnitude with (b-2)-bit magnitudes per piece (a (b-1)-bit code per
    region + 1 region-flag bit = b bits); ranges on one side of zero use two (b-1)-bit pieces along the distance
    from the bound nearer zero. See the module docstring for the formulas and the negative side. No straight-through estimator: use
    :func:`fake_quantize_piecewise` for gradients.

    Args:
        x: real tensor, any shape, any float dtype.
        r_l, r_u: clipping range, floats or tensors broadcastable to ``x`` (per tensor / per channel), r_l < r_u.
        bits: total bits per value b, an int in [3, 24] (b = 3: 2 levels per piece).
        p_l, p_u: breakpoints, broadcastable to ``x``; ``None`` computes them with :func:`piecewise_breakpoints`
            (eq. 6) from ``r_l``, ``r_u``, ``m``, ``n``, ``std``. Given ones must satisfy
            ``r_l <= p_l <= 0 <= p_u <= r_u`` where the range straddles zero and ``r_l <= p_l <= p_u <= r_u``
            elsewhere (there only ``p_u`` is used when r_l >= 0, ``p_l`` when r_u <= 0).
        m, n, std: breakpoint constants / normalisation, see :func:`piecewise_breakpoint`.

    Returns:
        tensor of ``x.shape`` (broadcast with the bounds) and ``x.dtype``; at most 2^b distinct values per
        range (2^b - 3 where the range straddles zero: 0 and +-p are shared between pieces; 2^b - 1 on one side).

    Raises:
        ValueError: if ``bits`` is out of range, any ``r_l >= r_u``, bounds are not finite, or breakpoints are
            out of order.
    """
    _check_bits(bits, 3, "quantize_piecewise")
    rl, ru = _as_bound(r_l, "r_l"), _as_bound(r_u, "r_u")
    _check_range(rl, ru)
    auto_l, auto_u = piecewise_breakpoints(rl, ru, m, n, std) if (p_l is None or p_u is None) else (None, None)
    pl = auto_l if p_l is None else _as_bound(p_l, "p_l")
    pu = auto_u if p_u is None else _as_bound(p_u, "p_u")
    straddle = _straddles_zero(rl, ru)
    if p_l is not None or p_u is not None:
        ok = (rl <= pl) & (pl <= pu) & (pu <= ru) & (~straddle | ((pl <= 0) & (pu >= 0)))
        if not bool(ok.all()):
            raise ValueError("breakpoints must satisfy r_l <= p_l <= 0 <= p_u <= r_u (where r_l < 0 < r_u)")

    xc = torch.maximum(torch.minimum(x.float(), ru), rl)  # clip to [r_l, r_u]
    any_straddle, all_straddle = bool(straddle.any()), bool(straddle.all())

    out = None
    if any_straddle:
        # Bounds of the non-straddling entries are replaced by a dummy valid range; their result is discarded below.
        one = torch.ones((), dtype=torch.float32)
        rl_s, ru_s = torch.where(straddle, rl, -one), torch.where(straddle, ru, one)
        pl_s, pu_s = torch.where(straddle, pl, -one / 2), torch.where(straddle, pu, one / 2)
        neg = xc < 0
        mag = xc.abs()
        big_p = torch.where(neg, -pl_s, pu_s)  # breakpoint magnitude of this element's side
        big_r = torch.where(neg, -rl_s, ru_s)  # range bound magnitude of this element's side
        k = bits - 2
        qmin, qmax = unsigned_range(k)
        # dense centre: uni(|x|; k, [0, P], offset 0) -- the (b-1)-bit signed symmetric quantizer of absmax P
        s_c = symmetric_scale(big_p, k + 1)
        centre = dequantize_affine(quantize_affine(mag, s_c, None, qmin, qmax), s_c)
        # sparse tail: uni(|x|; k, [P, R], offset P)
        s_t, o_t = asymmetric_scale_offset(big_p, big_r, k)
        tail = dequantize_affine(quantize_affine(mag, s_t, o_t, qmin, qmax), s_t, o_t)
        out = torch.sign(xc) * torch.where(mag > big_p, tail, centre)
    if not all_straddle:
        # one side of zero: two pieces of (b-1) bits along the distance from the anchor bound
        above = rl >= 0
        anchor = torch.where(above, rl, ru)
        width = ru - rl
        big_p = torch.where(above, pu - rl, ru - pl).clamp(min=0.0)
        dist = (xc - anchor).abs()
        k = bits - 1
        qmin, qmax = unsigned_range(k)
        zero = torch.zeros((), dtype=torch.float32)
        s_c, o_c = asymmetric_scale_offset(zero, big_p, k)
        centre = dequantize_affine(quantize_affine(dist, s_c, o_c, qmin, qmax), s_c, o_c)
        s_t, o_t = asymmetric_scale_offset(big_p, torch.maximum(width, big_p), k)
        tail = dequantize_affine(quantize_affine(dist, s_t, o_t, qmin, qmax), s_t, o_t)
        one_sided = anchor + torch.where(above, 1.0, -1.0) * torch.where(dist > big_p, tail, centre)
        out = one_sided if out is None else torch.where(straddle, out, one_sided)
    return out.to(x.dtype)


def fake_quantize_piecewise(
    x: torch.Tensor,
    r_l: torch.Tensor | float,
    r_u: torch.Tensor | float,
    bits: int,
    p_l: torch.Tensor | float | None = None,
    p_u: torch.Tensor | float | None = None,
    m: float = PWLQ_M,
    n: float = PWLQ_N,
    std: torch.Tensor | float | None = None,
    use_ste: bool = True,
) -> torch.Tensor:
    """:func:`quantize_piecewise` with a straight-through estimator (``primitives.ste``): d x_hat / d x = 1.

    Same arguments, return value and errors as :func:`quantize_piecewise`; ``use_ste=False`` returns the plain
    (zero-gradient almost everywhere) function.
    """
    source = x.detach() if use_ste else x
    x_hat = quantize_piecewise(source, r_l, r_u, bits, p_l=p_l, p_u=p_u, m=m, n=n, std=std)
    return ste(x, x_hat) if use_ste else x_hat


def quantize_uniform(
    x: torch.Tensor,
    r_l: torch.Tensor | float,
    r_u: torch.Tensor | float,
    bits: int,
    symmetric: bool,
) -> torch.Tensor:
    """b-bit uniform quantize-dequantize of ``x`` clipped to [r_l, r_u] (PTQ4Protein eq. 1-4), no STE.

    * ``symmetric=True``: signed, offset 0, ``scale = max(|r_l|, |r_u|) / (2^(b-1) - 1)``, q in [-2^(b-1), 2^(b-1)-1]
      (:func:`~bitesm.quant.primitives.symmetric_scale`, :func:`~bitesm.quant.primitives.signed_range`);
    * ``symmetric=False``: unsigned, offset r_l, ``scale = (r_u - r_l) / (2^b - 1)``, q in [0, 2^b - 1]
      (:func:`~bitesm.quant.primitives.asymmetric_scale_offset`, :func:`~bitesm.quant.primitives.unsigned_range`).

    Args:
        x: real tensor, any shape and float dtype.
        r_l, r_u: clipping range (floats or tensors broadcastable to ``x``), r_l < r_u.
        bits: bit width b, int in [2, 24].
        symmetric: which of the two quantizers.

    Returns:
        tensor of ``x.shape`` and ``x.dtype``.

    Raises:
        ValueError: if ``bits`` is out of range or any ``r_l >= r_u``.
    """
    _check_bits(bits, 2, "quantize_uniform")
    rl, ru = _as_bound(r_l, "r_l"), _as_bound(r_u, "r_u")
    _check_range(rl, ru)
    xc = torch.maximum(torch.minimum(x.float(), ru), rl)
    if symmetric:
        scale = symmetric_scale(torch.maximum(rl.abs(), ru.abs()), bits)
        qmin, qmax = signed_range(bits)
        out = dequantize_affine(quantize_affine(xc, scale, None, qmin, qmax), scale)
    else:
        out = _uniform_asymmetric(xc, rl, ru, bits)
    return out.to(x.dtype)


def fake_quantize_uniform(
    x: torch.Tensor,
    r_l: torch.Tensor | float,
    r_u: torch.Tensor | float,
    bits: int,
    symmetric: bool,
    use_ste: bool = True,
) -> torch.Tensor:
    """Uniform counterpart of :func:`fake_quantize_piecewise` for a fair comparison at the same bits and range.

    :func:`quantize_uniform` (symmetric signed with offset 0, or asymmetric unsigned with offset r_l) wrapped in the
    straight-through estimator ``primitives.ste`` when ``use_ste`` is True. Same arguments, return value and errors
    as :func:`quantize_uniform`.
    """
    source = x.detach() if use_ste else x
    x_hat = quantize_uniform(source, r_l, r_u, bits, symmetric)
    return ste(x, x_hat) if use_ste else x_hat

