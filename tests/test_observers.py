"""Tests for bitesm.quant.observers: min/max, percentile and MSE range observers for PTQ calibration."""

from __future__ import annotations

import pytest
import torch

from bitesm.quant.observers import (
    OBSERVERS,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _student_t3(n: int, seed: int) -> torch.Tensor:
    """Heavy-tailed Student-t (3 degrees of freedom): z / sqrt(chi2_3 / 3)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g)
    chi2 = torch.randn(n, 3, generator=g).pow(2).sum(1)
    return z / (chi2 / 3).sqrt()


# --- min/max ----------------------------------------------------------------------------------------------


def test_minmax_exact_on_literal_batches():
    obs = MinMaxObserver()
    obs.update(torch.tensor([[1.0, -2.0, 3.0]]))
    obs.update(torch.tensor([0.5, 4.0, -1.0]).to(torch.bfloat16))
    obs.update(torch.tensor([]))  # empty batches are ignored
    r_l, r_u = obs.compute_range()
    assert (r_l.item(), r_u.item()) == (-2.0, 4.0)
    assert r_l.dtype == torch.float32 and r_l.dim() == 0
    obs.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        obs.compute_range()


def test_minmax_per_channel():
    # activations [batch, tokens, features], per feature (axis -1)
    obs = MinMaxObserver(per_channel_axis=-1)
    obs.update(torch.tensor([[[1.0, -2.0, 3.0], [0.0, 5.0, -1.0]]]))
    obs.update(torch.tensor([[[-4.0, 1.0, 2.0]]]))
    r_l, r_u = obs.compute_range()
    assert r_l.shape == (1, 1, 3)
    assert r_l.flatten().tolist() == [-4.0, -2.0, -1.0]
    assert r_u.flatten().tolist() == [1.0, 5.0, 3.0]
    # weights [out, in], per output channel (axis 0)
    w_obs = MinMaxObserver(per_channel_axis=0)
    w_obs.update(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -0.75]]))
    r_l, r_u = w_obs.compute_range()
    assert r_l.shape == (2, 1)
    assert r_l.flatten().tolist() == [-2.0, -0.75] and r_u.flatten().tolist() == [3.0, 0.5]
    with pytest.raises(ValueError, match="per-channel size"):
        w_obs.update(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="out of range"):
        MinMaxObserver(per_channel_axis=2).update(torch.zeros(3, 3))


# --- percentile -------------------------------------------------------------------------------------------


def test_percentile_close_to_true_quantile():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1_000_000, generator=g)
    # N(0, 1) quantiles: 99.9% -> 3.090232, 95% -> 1.644854
    for percentile, true_q, tol in [(99.9, 3.090232, 0.03), (95.0, 1.644854, 0.03)]:
        obs = PercentileObserver(percentile, max_samples=2**16)  # 1M values through a 65k subsample + 4096 tails
        for batch in x.chunk(8):
            obs.update(batch)
        r_l, r_u = obs.compute_range()
        empirical = torch.quantile(x[::2], torch.tensor([1 - percentile / 100, percentile / 100]))  # 500k, quantile cap
        assert float(r_u) == pytest.approx(true_q, abs=tol), (percentile, float(r_u))
        assert float(r_l) == pytest.approx(-true_q, abs=tol), (percentile, float(r_l))
        assert float(r_u) == pytest.approx(float(empirical[1]), abs=tol)
        assert float(r_l) == pytest.approx(float(empirical[0]), abs=tol)
    # 99.9 lies within the exact tails (rank 1000 <= 4096 from each end): the empirical order statistic
    obs = PercentileObserver(99.9, max_samples=2**16)
    for batch in x.chunk(8):
        obs.update(batch)
    top = torch.topk(x, 1001).values
    assert float(top[-1]) <= float(obs.compute_range()[1]) <= float(top[-2])


def test_percentile_memory_bounded_and_exact_on_small_data():
    obs = PercentileObserver(99.0, max_samples=1024, tail_samples=32)
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        obs.update(torch.randn(4096, generator=g))
    res = obs._reservoir
    assert res.values.numel() == 1024 and res.top.numel() == 32 and res.bottom.numel() == 32 and res.count == 50 * 4096
    # while everything fits, the estimate is the exact empirical quantile (Hazen positions (i + 0.5) / N)
    small = PercentileObserver(90.0)
    small.update(torch.arange(10, dtype=torch.float32))  # 0..9: positions 0.05..0.95 -> q = 0.9 at 8.5
    r_l, r_u = small.compute_range()
    assert (float(r_l), float(r_u)) == pytest.approx((0.5, 8.5))
    full = PercentileObserver(100.0)
    full.update(torch.tensor([-3.0, 1.0, 7.0]))
    assert tuple(float(v) for v in full.compute_range()) == (-3.0, 7.0)
    constant = PercentileObserver(99.0)
    constant.update(torch.full((100,), 2.0))
    r_l, r_u = constant.compute_range()
    assert float(r_l) < float(r_u)
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(40.0)


# --- MSE --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, bits", [("uniform", 4), ("uniform", 8), ("piecewise", 4), ("piecewise", 6)])
def test_mse_observer_range_and_error(method, bits):
    x = _student_t3(200_000, seed=2)  # heavy tails: min/max -66.5 / 150.0, 99% of the mass within +-6.0
    obs = MSEObserver(bits, method, grid=100, max_samples=2**14)  # 200k values through a 16k subsample + 1024 tails
    for batch in x.chunk(4):
        obs.update(batch)
    r_l, r_u = obs.compute_range()
    lo, hi = float(x.min()), float(x.max())
    assert lo <= float(r_l) < float(r_u) <= hi  # never wider than min/max
    mse_obs = obs.quantization_mse(x, r_l, r_u)  # measured on all the data, not the subsample
    mse_minmax = obs.quantization_mse(x, torch.tensor(lo), torch.tensor(hi))
    assert mse_obs < mse_minmax, (method, bits, mse_obs, mse_minmax)
    # measured mse_obs / mse_minmax: uniform 4-bit 0.013, 8-bit 0.67; piecewise 4-bit 0.76, 6-bit 0.86
    if (method, bits) == ("uniform", 4):
        assert mse_obs < 0.1 * mse_minmax  # clipping pays off hugely at low bits (measured 0.013)


def test_mse_observer_one_sided_and_constant():
    g = torch.Generator().manual_seed(4)
    x = 5.0 + torch.rand(10_000, generator=g).pow(4) * 3.0  # all in [5, 8], dense near 5
    obs = MSEObserver(4, "piecewise", grid=20)
    obs.update(x)
    r_l, r_u = obs.compute_range()
    assert float(x.min()) <= float(r_l) < float(r_u) <= float(x.max())
    const = MSEObserver(8)
    const.update(torch.full((10,), -1.0))
    r_l, r_u = const.compute_range()
    assert float(r_l) < -1.0 < float(r_u)
    with pytest.raises(RuntimeError):
        MSEObserver(8).compute_range()


def test_mse_observer_argument_errors():
    with pytest.raises(ValueError, match="method"):
        MSEObserver(8, "log")
    with pytest.raises(ValueError, match="bits"):
        MSEObserver(2, "piecewise")
    with pytest.raises(ValueError, match="grid"):
        MSEObserver(8, grid=0)


# --- factory ----------------------------------------------------------------------------------------------


def test_make_observer():
    assert set(OBSERVERS) == {"minmax", "percentile", "mse"}
    assert isinstance(make_observer("minmax"), MinMaxObserver)
    assert make_observer("minmax", per_channel_axis=-1).per_channel_axis == -1
    assert make_observer("percentile", percentile=99.9).percentile == 99.9
    obs = make_observer("mse", bits=6, method="piecewise", grid=10)
    assert isinstance(obs, MSEObserver) and obs.bits == 6 and obs.method == "piecewise"
    with pytest.raises(ValueError, match="unknown observer 'histogram'.*minmax.*mse.*percentile"):
        make_observer("histogram")
    with pytest.raises(ValueError, match="unknown observer"):
        make_observer(None)
    with pytest.raises(TypeError):
        make_observer("minmax", bits=8)


def test_observers_work_in_forward_hooks():
    layer = torch.nn.Linear(8, 4)
    observers = {"minmax": make_observer("minmax"), "percentile": make_observer("percentile", percentile=99.0)}

    def hook(module, inputs, output):
        for obs in observers.values():
            obs.update(output)

    handle = layer.register_forward_hook(hook)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        outputs = [layer(torch.randn(16, 8, generator=g)) for _ in range(3)]
    handle.remove()
    everything = torch.cat(outputs)
    r_l, r_u = observers["minmax"].compute_range()
    assert (float(r_l), float(r_u)) == (float(everything.min()), float(everything.max()))
    p_l, p_u = observers["percentile"].compute_range()
    assert float(r_l) <= float(p_l) < float(p_u) <= float(r_u)
