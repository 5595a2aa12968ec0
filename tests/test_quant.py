"""Tests for bitesm.quant.primitives: affine quantizer, BitNet b1.58 absmean ternary / per-token absmax, STE."""

from __future__ import annotations

import pytest
import torch

from bitesm.quant.primitives import (
    DEFAULT_EPS,
    absmax_per_token_scale,
    absmean_ternary_scale,
    asymmetric_scale_offset,
    dequantize_affine,
    fake_quantize_affine,
    fake_quantize_per_token_absmax,
    fake_quantize_ternary_absmean,
    quantize_affine,
    quantize_per_token_absmax,
    quantize_ternary_absmean,
    rescale_accumulator,
    signed_range,
    symmetric_scale,
    unsigned_range,
)

# --- affine quantizer ---------------------------------------------------------------------------------


def test_quantize_affine_clips_and_rounds():
    x = torch.tensor([-1.0, -0.26, 0.0, 0.24, 0.5, 2.0])
    # x / 0.5 = [-2, -0.52, 0, 0.48, 1, 4] -> round [-2, -1, 0, 0, 1, 4] -> clamp to [-2, 1]
    q = quantize_affine(x, 0.5, None, -2, 1)
    assert q.dtype == torch.float32
    assert q.tolist() == [-2.0, -1.0, 0.0, 0.0, 1.0, 1.0]
    # dequantize: q * 0.5
    assert dequantize_affine(q, 0.5).tolist() == [-1.0, -0.5, 0.0, 0.0, 0.5, 0.5]
    # fake quant = quantize then dequantize, same values
    assert fake_quantize_affine(x, 0.5, None, -2, 1).tolist() == [-1.0, -0.5, 0.0, 0.0, 0.5, 0.5]


def test_quantize_affine_round_half_to_even():
    x = torch.tensor([0.25, 0.75, -0.25, -0.75, 1.25, -1.25])
    # x / 0.5 = [0.5, 1.5, -0.5, -1.5, 2.5, -2.5] -> half-to-even [0, 2, 0, -2, 2, -2]
    assert quantize_affine(x, 0.5, None, -4, 4).tolist() == [0.0, 2.0, 0.0, -2.0, 2.0, -2.0]


def test_quantize_affine_offset_and_int_dtype():
    x = torch.tensor([1.0, 1.6, 3.0, -5.0])
    # (x - 1) / 0.5 = [0, 1.2, 4, -12] -> round [0, 1, 4, -12] -> clamp [0, 3] -> [0, 1, 3, 0]
    q = quantize_affine(x, 0.5, 1.0, 0, 3, dtype=torch.int8)
    assert q.dtype == torch.int8
    assert q.tolist() == [0, 1, 3, 0]
    # dequantize: q * 0.5 + 1 = [1, 1.5, 2.5, 1]
    assert dequantize_affine(q, 0.5, 1.0).tolist() == [1.0, 1.5, 2.5, 1.0]
    assert dequantize_affine(q, 0.5, 1.0, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_quantize_affine_per_channel_scale_broadcasts():
    x = torch.tensor([[1.0, -3.0], [1.0, -3.0]])
    scale = torch.tensor([[1.0], [2.0]])
    # row 0: [1, -3] -> clamp to [-2, 1] -> [1, -2]; row 1: [0.5, -1.5] -> half-even [0, -2]
    assert quantize_affine(x, scale, None, -2, 1).tolist() == [[1.0, -2.0], [0.0, -2.0]]


def test_asymmetric_scale_offset_literal_and_round_trip():
    scale, offset = asymmetric_scale_offset(torch.tensor(-1.0), torch.tensor(2.0), bits=2)
    # scale = (2 - (-1)) / (2^2 - 1) = 3 / 3 = 1; offset = r_l = -1
    assert scale.item() == 1.0 and offset.item() == -1.0
    assert scale.dtype == torch.float32
    qmin, qmax = unsigned_range(2)
    assert (qmin, qmax) == (0, 3)
    x = torch.tensor([-1.0, 0.4, 0.6, 2.0, 5.0, -3.0])
    # (x + 1) / 1 = [0, 1.4, 1.6, 3, 6, -2] -> round [0, 1, 2, 3, 6, -2] -> clamp [0, 3] -> [0, 1, 2, 3, 3, 0]
    q = quantize_affine(x, scale, offset, qmin, qmax)
    assert q.tolist() == [0.0, 1.0, 2.0, 3.0, 3.0, 0.0]
    # x_hat = q * 1 - 1 = [-1, 0, 1, 2, 2, -1]: r_l and r_u are reproduced exactly
    assert dequantize_affine(q, scale, offset).tolist() == [-1.0, 0.0, 1.0, 2.0, 2.0, -1.0]


def test_symmetric_scale_literal():
    # 2.54 / (2^7 - 1) = 0.02 ; 1.5 / (2^2 - 1) = 0.5
    assert symmetric_scale(torch.tensor(2.54), 8).item() == pytest.approx(0.02, rel=1e-6)
    assert symmetric_scale(torch.tensor(1.5), 3).item() == 0.5
    # all-zero range: absmax is lifted to eps -> 1e-5 / 127
    assert symmetric_scale(torch.tensor(0.0), 8).item() == pytest.approx(1e-5 / 127, rel=1e-6)


def test_signed_unsigned_range():
    assert signed_range(8) == (-128, 127)
    assert signed_range(2) == (-2, 1)
    assert signed_range(4) == (-8, 7)
    assert unsigned_range(1) == (0, 1)
    assert unsigned_range(8) == (0, 255)


@pytest.mark.parametrize("bad", [1, 0, 33, 8.0, True, "8"])
def test_signed_range_rejects_bad_bits(bad):
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 32\]"):
        signed_range(bad)


def test_unsigned_range_rejects_bad_bits():
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 32\], got 0"):
        unsigned_range(0)
    with pytest.raises(ValueError, match=r"bits must be an int"):
        symmetric_scale(torch.tensor(1.0), 1)


def test_asymmetric_rejects_reversed_range():
    with pytest.raises(ValueError, match=r"r_u >= r_l"):
        asymmetric_scale_offset(torch.tensor(2.0), torch.tensor(-1.0), bits=4)
    # one bad entry in a per-channel range is enough
    with pytest.raises(ValueError, match=r"r_u >= r_l"):
        asymmetric_scale_offset(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]), bits=4)
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 32\]"):
        asymmetric_scale_offset(torch.tensor(0.0), torch.tensor(1.0), bits=0)


@pytest.mark.parametrize("qmin,qmax", [(1, 1), (2, -2)])
def test_quantize_affine_rejects_empty_range(qmin, qmax):
    with pytest.raises(ValueError, match=rf"qmin < qmax, got qmin={qmin}, qmax={qmax}"):
        quantize_affine(torch.zeros(3), 1.0, None, qmin, qmax)


# --- absmean ternary (2Bits of Protein eq. 1-3) ---------------------------------------------------------


def test_ternary_absmean_literal():
    w = torch.tensor([[0.5, -1.5], [0.25, -0.25]])
    # gamma = (0.5 + 1.5 + 0.25 + 0.25) / 4 = 0.625 ; scale = gamma + eps = 0.62501
    # w / 0.62501 = [[0.79999, -2.39996], [0.39999, -0.39999]] -> round/clip -> [[1, -1], [0, 0]]
    q, scale = quantize_ternary_absmean(w)
    assert q.dtype == torch.int8
    assert q.tolist() == [[1, -1], [0, 0]]
    assert scale.dim() == 0 and scale.dtype == torch.float32
    assert scale.item() == pytest.approx(0.62501, rel=1e-7)
    assert absmean_ternary_scale(w).item() == pytest.approx(0.62501, rel=1e-7)
    w_hat = fake_quantize_ternary_absmean(w, use_ste=False)
    torch.testing.assert_close(w_hat, torch.tensor([[0.62501, -0.62501], [0.0, 0.0]]), rtol=0, atol=1e-7)


def test_ternary_eps_enters_scale_and_ties_round_to_even():
    w = torch.tensor([[0.5, -1.5], [0.25, -0.25]])
    # eps = 0.375 -> scale = 0.625 + 0.375 = 1.0 exactly;
    # w / 1 = [0.5 -> 0 (tie, even), -1.5 -> -2 -> clip -1, 0.25 -> 0, -0.25 -> 0]
    q, scale = quantize_ternary_absmean(w, eps=0.375)
    assert scale.item() == 1.0
    assert q.tolist() == [[0, -1], [0, 0]]
    assert fake_quantize_ternary_absmean(w, eps=0.375).tolist() == [[0.0, -1.0], [0.0, 0.0]]


def test_ternary_all_zero_weight_is_finite():
    q, scale = quantize_ternary_absmean(torch.zeros(3, 4))
    assert scale.item() == pytest.approx(DEFAULT_EPS)
    assert q.abs().sum().item() == 0
    assert torch.isfinite(fake_quantize_ternary_absmean(torch.zeros(3, 4))).all()


def test_ternary_random_values_are_ternary_multiples_of_scale():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(17, 33, generator=g) * 0.05
    q, scale = quantize_ternary_absmean(w)
    assert set(q.unique().tolist()) == {-1, 0, 1}
    assert scale.item() == pytest.approx(w.abs().mean().item() + 1e-5, rel=1e-6)
    torch.testing.assert_close(fake_quantize_ternary_absmean(w, use_ste=False), q.float() * scale, rtol=0, atol=0)


# --- per-token absmax 8-bit (BitNet b1.58) ----------------------------------------------------------------


def test_per_token_absmax_literal_rows():
    x = torch.tensor(
        [
            [127.0, -2.5, 3.5, 0.4],  # absmax 127 -> scale 1: [127, -2 (tie->even), 4 (tie->even), 0]
            [-63.5, 10.25, 0.0, 1.5],  # absmax 63.5 -> scale 0.5: x/0.5 = [-127, 20.5, 0, 3] -> [-127, 20, 0, 3]
            [0.0, 0.0, 0.0, 0.0],  # absmax 0 -> lifted to eps: scale 1e-5/127, all q = 0
        ]
    )
    q, scale = quantize_per_token_absmax(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 1) and scale.dtype == torch.float32
    assert q.tolist() == [[127, -2, 4, 0], [-127, 20, 0, 3], [0, 0, 0, 0]]
    assert scale[:2, 0].tolist() == [1.0, 0.5]
    assert scale[2, 0].item() == pytest.approx(1e-5 / 127, rel=1e-6)
    # x_hat = q * scale: row 1 -> [-63.5, 10.0, 0, 1.5]
    assert fake_quantize_per_token_absmax(x).tolist() == [
        [127.0, -2.0, 4.0, 0.0],
        [-63.5, 10.0, 0.0, 1.5],
        [0.0, 0.0, 0.0, 0.0],
    ]
    # rows are independent: each row alone gives the same result
    for i in range(3):
        qi, si = quantize_per_token_absmax(x[i : i + 1])
        assert torch.equal(qi, q[i : i + 1]) and torch.equal(si, scale[i : i + 1])


def test_per_token_absmax_4bit_and_3d():
    x = torch.tensor([[[7.0, 3.5, -2.5, 0.2]], [[-0.7, 0.35, 0.0, 0.1]]])
    # bits=4: qmax 7. row 0: scale 7/7 = 1 -> [7, 4 (tie), -2 (tie), 0]
    # row 1: scale 0.7/7 = 0.1 -> x/0.1 = [-7, 3.5, 0, 1] -> [-7, 4, 0, 1]
    q, scale = quantize_per_token_absmax(x, bits=4)
    assert scale.shape == (2, 1, 1)
    assert q.tolist() == [[[7, 4, -2, 0]], [[-7, 4, 0, 1]]]
    assert absmax_per_token_scale(x, bits=4)[0, 0, 0].item() == 1.0


def test_per_token_absmax_maps_row_max_to_127():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 48, generator=g) * torch.logspace(-3, 3, 64).unsqueeze(1)
    q, scale = quantize_per_token_absmax(x)
    idx = x.abs().argmax(dim=-1, keepdim=True)
    # the absmax element of each row maps to +-127 with the sign of x
    assert torch.equal(q.gather(-1, idx).long(), 127 * x.gather(-1, idx).sign().long())
    assert torch.allclose(scale, x.abs().amax(-1, keepdim=True) / 127, rtol=1e-6, atol=0)
    assert q.min().item() >= -127  # a symmetric range never reaches -128


def test_per_token_absmax_takes_the_larger_of_max_and_minus_min():
    # max |x| is the negative entry in row 0 and the positive one in row 1
    x = torch.tensor([[1.0, -12.7, 2.0], [-0.5, 0.25, 1.27]])
    assert absmax_per_token_scale(x).view(-1).tolist() == pytest.approx([0.1, 0.01], rel=1e-6)
    assert quantize_per_token_absmax(x)[0].tolist() == [[10, -127, 20], [-50, 25, 127]]


def test_quantize_affine_clip_false_skips_only_the_clamp():
    x = torch.tensor([-3.0, -1.5, 0.5, 2.5, 9.0])
    assert quantize_affine(x, 1.0, None, -2, 2).tolist() == [-2, -2, 0, 2, 2]
    assert quantize_affine(x, 1.0, None, -2, 2, clip=False).tolist() == [-3, -2, 0, 2, 9]


def test_rescale_accumulator_inplace_only_when_asked():
    acc = torch.tensor([[2.0, -4.0], [6.0, 8.0]])
    scale, bias = torch.tensor([[0.5], [0.25]]), torch.tensor([1.0, -1.0])
    expected = [[2.0, -3.0], [2.5, 1.0]]
    out = rescale_accumulator(acc, scale, bias)
    assert out.tolist() == expected and acc.tolist() == [[2.0, -4.0], [6.0, 8.0]]
    out = rescale_accumulator(acc, scale, bias, out_dtype=torch.bfloat16, inplace=True)
    assert out.dtype == torch.bfloat16 and out.float().tolist() == expected
    assert acc.tolist() == expected  # overwritten
    acc16 = torch.tensor([[2.0, -4.0]], dtype=torch.bfloat16)
    assert rescale_accumulator(acc16, scale[:1], None, inplace=True).tolist() == [[1.0, -2.0]]
    assert acc16.tolist() == [[2.0, -4.0]]  # a bf16 accumulator is converted, never overwritten


def test_per_token_absmax_rejects_more_than_8_bits():
    with pytest.raises(ValueError, match=r"bits must be <= 8, got 9"):
        quantize_per_token_absmax(torch.ones(2, 3), bits=9)


# --- straight-through estimator ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, **kw: fake_quantize_affine(x, 0.5, None, -2, 1, **kw),
        lambda x, **kw: fake_quantize_affine(x, 0.3, -1.0, 0, 7, **kw),
        lambda x, **kw: fake_quantize_ternary_absmean(x, **kw),
        lambda x, **kw: fake_quantize_per_token_absmax(x, **kw),
    ],
    ids=["affine_sym", "affine_asym", "ternary", "per_token"],
)
def test_ste_gradient_is_identity(fn):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 7, generator=g) * 3).requires_grad_()  # includes values far outside the ranges
    fn(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # without the STE the quantizer is piecewise constant: round() passes no gradient
    x2 = x.detach().clone().requires_grad_()
    fn(x2, use_ste=False).sum().backward()
    assert torch.equal(x2.grad, torch.zeros_like(x2))


def test_ste_gradient_scales_with_upstream():
    x = torch.tensor([0.1, -3.0, 0.7], requires_grad=True)
    (fake_quantize_affine(x, 0.5, None, -2, 1) * torch.tensor([2.0, -1.0, 0.5])).sum().backward()
    assert x.grad.tolist() == [2.0, -1.0, 0.5]


def test_ste_value_equals_plain_value_in_range():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 40, generator=g)
    # per-token absmax never clips; STE form must give exactly the plain fake-quant value
    assert torch.equal(fake_quantize_per_token_absmax(x), fake_quantize_per_token_absmax(x, use_ste=False))
    xin = x.clamp(-0.9, 0.9)  # inside [-4 * 0.25, 3 * 0.25] up to half a step
    assert torch.equal(
        fake_quantize_affine(xin, 0.25, None, -4, 3), fake_quantize_affine(xin, 0.25, None, -4, 3, use_ste=False)
    )


def test_ste_value_is_exact_for_clipped_values():
    x = torch.tensor([1e8, -1e8, 0.3])
    # clamp(round(x / 1), -1, 1) * 1 = [1, -1, 0]
    assert fake_quantize_affine(x, 1.0, None, -1, 1, use_ste=False).tolist() == [1.0, -1.0, 0.0]
    assert fake_quantize_affine(x, 1.0, None, -1, 1).tolist() == [1.0, -1.0, 0.0]


# --- property tests: error bound inside the range, clipping outside -------------------------------------


def test_symmetric_error_bound_and_clipping_property():
    g = torch.Generator().manual_seed(4)
    for trial in range(60):
        bits = [2, 3, 4, 8][trial % 4]
        shape = [(7,), (3, 11), (2, 5, 9), (64,)][trial % 4]
        absmax = torch.tensor(10 ** (torch.rand((), generator=g).item() * 6 - 3))
        x = (torch.rand(shape, generator=g) * 2 - 1) * absmax * 2  # half of the values beyond the range
        scale = symmetric_scale(absmax, bits)
        qmin, qmax = signed_range(bits)
        q = quantize_affine(x, scale, None, qmin, qmax)
        x_hat = fake_quantize_affine(x, scale, None, qmin, qmax, use_ste=False)
        assert torch.equal(q, q.round()) and q.min() >= qmin and q.max() <= qmax
        lo, hi = qmin * scale, qmax * scale
        inside = (x >= lo) & (x <= hi)
        tol = 1e-6 * absmax
        assert ((x - x_hat).abs()[inside] <= scale / 2 + tol).all(), (trial, bits)
        above, below = x > hi + scale * 0.5001, x < lo - scale * 0.5001
        assert (q[above] == qmax).all() and (q[below] == qmin).all()
        assert (x_hat[above] == (qmax * scale).to(x.dtype)).all() and (x_hat[below] == (qmin * scale)).all()
        # the STE form agrees with the plain one up to float rounding of |x|
        x_ste = fake_quantize_affine(x, scale, None, qmin, qmax)
        torch.testing.assert_close(x_ste, x_hat, rtol=0, atol=float(4 * tol))


def test_asymmetric_error_bound_and_clipping_property():
    g = torch.Generator().manual_seed(5)
    for trial in range(60):
        bits = [1, 2, 4, 8][trial % 4]
        shape = [(13,), (4, 6), (3, 2, 8)][trial % 3]
        mag = 10 ** (torch.rand((), generator=g).item() * 4 - 2)
        r_l = (torch.rand((), generator=g) * 2 - 1.5) * mag
        r_u = r_l + (torch.rand((), generator=g) + 0.05) * mag
        scale, offset = asymmetric_scale_offset(r_l, r_u, bits)
        qmin, qmax = unsigned_range(bits)
        width = r_u - r_l
        x = r_l + (torch.rand(shape, generator=g) * 2 - 0.5) * width  # [r_l - w/2, r_u + w/2]
        q = quantize_affine(x, scale, offset, qmin, qmax)
        x_hat = fake_quantize_affine(x, scale, offset, qmin, qmax, use_ste=False)
        tol = 1e-5 * max(abs(r_l.item()), abs(r_u.item()))
        inside = (x >= r_l) & (x <= r_u)
        assert ((x - x_hat).abs()[inside] <= scale / 2 + tol).all(), (trial, bits)
        above, below = x > r_u + scale * 0.5001, x < r_l - scale * 0.5001
        assert (q[above] == qmax).all() and (q[below] == qmin).all()
        assert (x_hat[below] == offset).all()  # q = 0 -> x_hat = r_l exactly
        assert torch.allclose(x_hat[above], r_u.expand_as(x_hat[above]), rtol=0, atol=tol)
        # every output lies on the grid offset + k * scale
        k = (x_hat - offset) / scale
        assert torch.allclose(k, k.round(), rtol=0, atol=1e-3)


# --- bf16 ---------------------------------------------------------------------------------------------


def test_bf16_per_token_and_affine_match_fp32_cast():
    g = torch.Generator().manual_seed(6)
    for trial in range(20):
        xb = (torch.randn(6, 40, generator=g) * 10 ** (trial / 4 - 2)).bfloat16()
        out = fake_quantize_per_token_absmax(xb)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, fake_quantize_per_token_absmax(xb.float(), use_ste=False).bfloat16())
        scale = xb.float().abs().max() / 7
        out = fake_quantize_affine(xb, scale, None, -8, 7)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, fake_quantize_affine(xb.float(), scale, None, -8, 7, use_ste=False).bfloat16())
        # integer codes are computed from the same fp32 values
        assert torch.equal(quantize_per_token_absmax(xb)[0], quantize_per_token_absmax(xb.float())[0])


def test_bf16_ternary_without_ste_matches_fp32_cast():
    w = torch.tensor([[0.01, 3.0], [-0.02, 0.05]]).bfloat16()
    out = fake_quantize_ternary_absmean(w, use_ste=False)
    assert out.dtype == torch.bfloat16
    # bf16 inputs are [0.010009765625, 3.0, -0.02001953125, 0.050048828125]; gamma = 3.080078125 / 4 = 0.77001953125
    # scale = 0.77002953125 -> bf16 (step 2^-8 in [0.5, 1)): 197 * 2^-8 = 0.76953125 ; codes [[0, 1], [0, 0]]
    assert out.float().tolist() == [[0.0, 0.76953125], [0.0, 0.0]]


def test_bf16_ternary_with_ste_matches_fp32_cast():
    w = torch.tensor([[0.01, 3.0], [-0.02, 0.05]]).bfloat16()
    out = fake_quantize_ternary_absmean(w)  # default use_ste=True, as BitLinear uses it
    assert out.dtype == torch.bfloat16
    assert out.float().tolist() == [[0.0, 0.76953125], [0.0, 0.0]]
