"""Static range observers for post-training calibration: min/max, percentile and MSE-optimal clipping ranges.

An observer sees activation (or weight) tensors batch by batch -- typically from a forward hook during calibration,
under ``torch.no_grad()`` -- and then produces one clipping range ``(r_l, r_u)`` (PTQ4Protein eq. 1) for the
quantizers of :mod:`bitesm.quant.primitives` / :mod:`bitesm.quant.piecewise`. All observers share::

    obs.update(x)               # x: any shape, any float dtype, any device; returns None
    r_l, r_u = obs.compute_range()   # float32 tensors (0-d per tensor; per channel see MinMaxObserver)
    obs.reset()                 # forget everything observed

They are plain Python objects holding tensors on the device of the data they saw (no ``nn.Module``: nothing to
train, nothing to save in a checkpoint; the computed ranges are what gets stored). Memory is bounded whatever the
number of batches: min/max keep O(channels); the percentile and MSE observers keep the most extreme values exactly
plus a uniform random subsample of at most ``max_samples`` values (see :class:`_Reservoir`). Inputs are expected to
be finite.

``make_observer("minmax" | "percentile" | "mse", **kwargs)`` builds one by name.
"""

from __future__ import annotations

import torch

from .piecewise import quantize_piecewise, quantize_uniform

__all__ = [
    "Observer",
    "MinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "OBSERVERS",
    "make_observer",
]


class Observer:
    """Base class: ``update(x)``, ``compute_range() -> (r_l, r_u)``, ``reset()``."""

    def update(self, x: torch.Tensor) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _empty_error(self) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__}.compute_range() called before any update() with data")


class MinMaxObserver(Observer):
    """Running minimum and maximum of everything observed (exact).

    Args:
        per_channel_axis: ``None`` for one range per tensor; an int for one range per index along that axis
            (e.g. ``-1`` for per-feature activations ``[..., features]``, ``0`` for per-output-channel weights
            ``[out, in]``). Every update must then have the same size along that axis.

    ``compute_range()`` returns 0-d float32 tensors per tensor; per channel, tensors shaped to broadcast against the
    last observed input (size C along ``per_channel_axis``, 1 elsewhere, e.g. ``[1, 1, C]`` for ``[B, T, C]``).
    The range is exact, so constant data gives ``r_l == r_u``, which the quantizers reject (they need r_l < r_u).

    Raises:
        ValueError (in ``update``): ``per_channel_axis`` out of range for the input, or the channel count changed.
    """

    def __init__(self, per_channel_axis: int | None = None) -> None:
        bad_type = not isinstance(per_channel_axis, int) or isinstance(per_channel_axis, bool)
        if per_channel_axis is not None and bad_type:
            raise TypeError(f"per_channel_axis must be an int or None, got {per_channel_axis!r}")
        self.per_channel_axis = per_channel_axis
        self.reset()

    def reset(self) -> None:
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None
        self._shape: list[int] | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.numel() == 0:
            return
        x = x.float()
        if self.per_channel_axis is None:
            lo, hi = torch.aminmax(x)
        else:
            if not -x.dim() <= self.per_channel_axis < x.dim():
                raise ValueError(f"per_channel_axis {self.per_channel_axis} is out of range for a {x.dim()}-d tensor")
            axis = self.per_channel_axis % x.dim()
            flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)
            lo, hi = torch.aminmax(flat, dim=1)
            if self.min_val is not None and self.min_val.shape != lo.shape:
                raise ValueError(
                    f"per-channel size changed between updates: {tuple(self.min_val.shape)} -> {tuple(lo.shape)}"
                )
            shape = [1] * x.dim()
            shape[axis] = x.shape[axis]
            self._shape = shape
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = torch.minimum(self.min_val, lo.to(self.min_val.device))
            self.max_val = torch.maximum(self.max_val, hi.to(self.max_val.device))

    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val is None:
            raise self._empty_error()
        if self._shape is None:
            return self.min_val.clone(), self.max_val.clone()
        return self.min_val.reshape(self._shape).clone(), self.max_val.reshape(self._shape).clone()

    def __repr__(self) -> str:
        return f"MinMaxObserver(per_channel_axis={self.per_channel_axis})"


#: Added to the user's seed for the subsampling keys (keys drawn from the same seeded stream as the data would
#: correlate with it and bias the subsample).
_KEY_SEED_OFFSET = 0x5EED_0B5E


class _Reservoir:
    """Bounded-memory weighted sample of a stream of values: exact tails plus a uniform random subsample.

    * ``values``: bottom-k ("priority") sample -- every observed value gets an i.i.d. U(0, 1) key and the
      ``max_samples`` values with the smallest keys are kept, a uniform sample without replacement of everything
      seen, whatever the batch sizes. Per update only the batch values whose key beats the current k-th smallest
      key are merged (O(batch) time, O(k) memory). Keys are drawn from a generator seeded with ``seed``.
    * ``top`` / ``bottom``: the ``tail_samples`` largest / smallest values seen, exactly, and the exact min/max.

    :meth:`weighted_sample` combines them into a stratified sample ``(v, w)`` with ``sum(w) = 1`` such that
    ``sum(w * g(v))`` estimates the mean of ``g`` over all N observed values: the 2m extreme values with weight
    1/N each, the subsample values strictly between the tails with weight (N - 2m) / (N * k_mid). It is exact
    while N <= max_samples (everything is kept). The exact tails matter for clipping: the quantization error of a
    clipped range is dominated by the few extreme values that a uniform subsample would mostly miss.
    """

    def __init__(self, max_samples: int, seed: int, tail_samples: int | None = None) -> None:
        if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 16:
            raise ValueError(f"max_samples must be an int >= 16, got {max_samples!r}")
        self.max_samples = max_samples
        self.tail_samples = min(max_samples // 16, 8192) if tail_samples is None else int(tail_samples)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.values: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None
        self.top: torch.Tensor | None = None
        self.bottom: torch.Tensor | None = None
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None
        self.count = 0
        self._gen: torch.Generator | None = None

    @staticmethod
    def _merge_extreme(kept: torch.Tensor | None, v: torch.Tensor, m: int, largest: bool) -> torch.Tensor:
        if kept is not None and kept.numel() >= m:  # full: only values beyond the current m-th extreme can enter
            v = v[v > kept.min()] if largest else v[v < kept.max()]
            v = torch.cat([kept, v.to(kept.device)])
        elif kept is not None:
            v = torch.cat([kept, v.to(kept.device)])
        if v.numel() > m:
            v = torch.topk(v, m, largest=largest, sorted=False).values
        return v

    def update(self, x: torch.Tensor) -> None:
        v = x.detach().reshape(-1).float()
        if v.numel() == 0:
            return
        if self._gen is None or self._gen.device != v.device:
            self._gen = torch.Generator(device=v.device)
            # offset so that the keys are not the very stream a user's torch.manual_seed(seed) produced the data from
            self._gen.manual_seed(_KEY_SEED_OFFSET + self.seed)
        lo, hi = torch.aminmax(v)
        self.min_val = lo if self.min_val is None else torch.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else torch.maximum(self.max_val, hi)
        self.count += v.numel()
        self.top = self._merge_extreme(self.top, v, self.tail_samples, largest=True)
        self.bottom = self._merge_extreme(self.bottom, v, self.tail_samples, largest=False)
        keys = torch.rand(v.numel(), generator=self._gen, device=v.device)
        if self.values is None:
            values_all, keys_all = v, keys
        else:
            if self.values.numel() >= self.max_samples:  # full: only keys below the current threshold can enter
                keep = keys < self.keys.max()
                v, keys = v[keep], keys[keep]
            values_all = torch.cat([self.values, v.to(self.values.device)])
            keys_all = torch.cat([self.keys, keys.to(self.keys.device)])
        if values_all.numel() > self.max_samples:
            keys_all, idx = torch.topk(keys_all, self.max_samples, largest=False, sorted=False)
            values_all = values_all[idx]
        self.values, self.keys = values_all, keys_all

    def weighted_sample(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(values, weights)`` with weights summing to 1 (see the class docstring), or None before any data."""
        if self.values is None:
            return None
        n_all = self.count
        if n_all <= self.max_samples or self.tail_samples == 0:
            k = self.values.numel()
            return self.values, torch.full_like(self.values, 1.0 / k)
        lo_thr, hi_thr = self.bottom.max(), self.top.min()
        middle = self.values[(self.values > lo_thr) & (self.values < hi_thr)]
        n_tails = self.top.numel() + self.bottom.numel()
        if middle.numel() == 0 or n_all <= n_tails:  # degenerate (heavy ties): plain uniform subsample
            k = self.values.numel()
            return self.values, torch.full_like(self.values, 1.0 / k)
        w_tail = 1.0 / n_all
        w_mid = (n_all - n_tails) / (n_all * middle.numel())
        values = torch.cat([self.bottom, middle, self.top])
        weights = torch.cat(
            [
                torch.full_like(self.bottom, w_tail),
                torch.full_like(middle, w_mid),
                torch.full_like(self.top, w_tail),
            ]
        )
        return values, weights


def _weighted_quantile(values: torch.Tensor, weights: torch.Tensor, qs: list[float]) -> torch.Tensor:
    """Quantiles ``qs`` (in [0, 1]) of a weighted sample, float32 tensor of ``len(qs)``.

    Sorted value i sits at cumulative position ``sum(w[:i]) + w[i] / 2`` (the Hazen plotting positions
    ``(i + 0.5) / N`` for equal weights); linear interpolation between positions, constant beyond the ends.
    """
    order = torch.argsort(values)
    v, w = values[order].double(), weights[order].double()
    if v.numel() == 1:
        return v.float().expand(len(qs)).clone()
    w = w / w.sum()
    pos = torch.cumsum(w, 0) - w / 2
    qt = torch.tensor(qs, dtype=torch.float64, device=v.device)
    idx = torch.searchsorted(pos, qt).clamp(1, v.numel() - 1)
    lo_pos, hi_pos = pos[idx - 1], pos[idx]
    frac = ((qt - lo_pos) / (hi_pos - lo_pos).clamp(min=1e-300)).clamp(0.0, 1.0)
    return (v[idx - 1] + frac * (v[idx] - v[idx - 1])).float()


class _ReservoirObserver(Observer):
    """An observer whose statistics come from a bounded :class:`_Reservoir` of the values seen."""

    _reservoir: _Reservoir

    def reset(self) -> None:
        self._reservoir.reset()

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        self._reservoir.update(x)


class PercentileObserver(_ReservoirObserver):
    """Clipping range at the ``(100 - percentile)``-th and ``percentile``-th percentiles of the observed values.

    Estimator: weighted quantiles (:func:`_weighted_quantile`, linear interpolation between Hazen positions) of the
    bounded stratified sample of :class:`_Reservoir` -- the ``tail_samples`` smallest and largest values seen, exactly,
    plus a uniform random subsample of at most ``max_samples`` of all values. Memory is bounded across any number of
    batches and the estimate does not depend on how the data was batched. It is the exact empirical quantile while
    at most ``max_samples`` values were seen, and also for extreme percentiles whose rank from the nearer end,
    (1 - percentile/100) * N, is within ``tail_samples`` (e.g. 99.99 with N <= 8192 / 1e-4 = 82M values at the
    default sizes). Between those, the subsample gives a standard error ~ sqrt(q (1 - q) / k) / f(x_q) for k kept
    values and data density f (e.g. 0.003 for the 90th percentile of N(0, 1) with k = 2^18). The range always lies
    within [min, max] of the data.

    Args:
        percentile: upper percentile in (50, 100]; the lower bound uses ``100 - percentile``. 100 gives min/max.
        max_samples: uniform subsample size (default 2^20 values: 8 MiB with its keys).
        tail_samples: exact extreme values kept per side (default ``min(max_samples // 16, 8192)``).
        seed: seed of the subsampling keys.
    """

    def __init__(
        self, percentile: float = 99.99, max_samples: int = 2**20, tail_samples: int | None = None, seed: int = 0
    ) -> None:
        if not (50.0 < float(percentile) <= 100.0):
            raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
        self.percentile = float(percentile)
        self._reservoir = _Reservoir(max_samples, seed, tail_samples)


    @torch.no_grad()
    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self._reservoir.weighted_sample()
        if sample is None:
            raise self._empty_error()
        res = self._reservoir
        if self.percentile == 100.0:
            lo, hi = res.min_val, res.max_val
        else:
            lo, hi = _weighted_quantile(*sample, [1.0 - self.percentile / 100.0, self.percentile / 100.0])
            lo, hi = torch.maximum(lo, res.min_val), torch.minimum(hi, res.max_val)
        if not bool(lo < hi):  # (near-)constant data: fall back to min/max, widened if needed so that r_l < r_u
            lo, hi = res.min_val, res.max_val
            if not bool(lo < hi):
                lo, hi = lo - 0.5, hi + 0.5
        return lo.clone(), hi.clone()

    def __repr__(self) -> str:
        return f"PercentileObserver(percentile={self.percentile}, max_samples={self._reservoir.max_samples})"


class MSEObserver(_ReservoirObserver):
    """Clipping range minimising the quantization MSE of the chosen b-bit quantizer on the observed data.

    Candidates shrink the observed [min, max] towards an anchor ``a`` by factors on a grid,
    ``[a + t (min - a), a + t (max - a)]`` for ``t = i / grid``, ``i = 1..grid``, with ``a = 0`` when
    min < 0 < max (activations around zero; the shrunk range keeps its asymmetry) and ``a = (min + max) / 2``
    otherwise. The best ``t`` is then refined one side at a time (lower factor with the upper bound fixed, then the
    upper), so asymmetric tails can be clipped differently -- 3 * grid evaluations in total. The error of a candidate
    is the mean of ``(Q(x) - x)^2`` over everything observed (clipping error included), estimated on the bounded
    stratified sample of :class:`_Reservoir` (the ``tail_samples`` most extreme values per side exactly -- they carry
    the clipping error -- plus a uniform subsample of at most ``max_samples`` values; exact while N <= max_samples),
    with Q = :func:`~bitesm.quant.piecewise.quantize_uniform` (``symmetric`` flag) or
    :func:`~bitesm.quant.piecewise.quantize_piecewise` (breakpoints from eq. 6 of the candidate range). Ties keep the
    widest range. The result is never wider than the min/max range (t = 1 is a candidate).

    Args:
        bits: bit width of the quantizer being calibrated (>= 2 uniform, >= 3 piecewise).
        method: ``"uniform"`` or ``"piecewise"``.
        grid: number of shrink factors (>= 1).
        symmetric: for ``method="uniform"``: symmetric signed (True) or asymmetric unsigned (False, default).
        max_samples: uniform subsample size for the MSE (default 2^16).
        tail_samples: exact extreme values kept per side (default ``min(max_samples // 16, 8192)``).
        seed: seed of the subsampling keys.
    """

    def __init__(
        self,
        bits: int,
        method: str = "uniform",
        grid: int = 100,
        symmetric: bool = False,
        max_samples: int = 2**16,
        tail_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if method not in ("uniform", "piecewise"):
            raise ValueError(f"method must be 'uniform' or 'piecewise', got {method!r}")
        min_bits = 3 if method == "piecewise" else 2
        if not isinstance(bits, int) or isinstance(bits, bool) or not (min_bits <= bits <= 24):
            raise ValueError(f"bits must be an int in [{min_bits}, 24] for method={method!r}, got {bits!r}")
        if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1:
            raise ValueError(f"grid must be a positive int, got {grid!r}")
        self.bits, self.method, self.grid, self.symmetric = bits, method, grid, bool(symmetric)
        self._reservoir = _Reservoir(max_samples, seed, tail_samples)


    def quantization_mse(self, x: torch.Tensor, r_l: torch.Tensor, r_u: torch.Tensor, weights=None) -> float:
        """(Weighted) mean squared error of this observer's quantizer on ``x`` with the range [r_l, r_u]."""
        if self.method == "piecewise":
            x_hat = quantize_piecewise(x, r_l, r_u, self.bits)
        else:
            x_hat = quantize_uniform(x, r_l, r_u, self.bits, self.symmetric)
        err = (x_hat - x) ** 2
        return float(err.mean() if weights is None else (err * weights).sum())

    def _best(self, sample, candidates: list[tuple[torch.Tensor, torch.Tensor]]):
        best, best_err = candidates[0], float("inf")
        for r_l, r_u in candidates:  # ordered widest first, so ties keep the widest range
            if not bool(r_l < r_u):
                continue
            err = self.quantization_mse(sample[0], r_l, r_u, sample[1])
            if err < best_err:
                best, best_err = (r_l, r_u), err
        return best

    @torch.no_grad()
    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self._reservoir.weighted_sample()
        if sample is None:
            raise self._empty_error()
        lo, hi = self._reservoir.min_val, self._reservoir.max_val
        if not bool(lo < hi):  # constant data: nothing to search
            return (lo - 0.5).clone(), (hi + 0.5).clone()
        anchor = torch.zeros_like(lo) if bool((lo < 0) & (hi > 0)) else (lo + hi) / 2
        factors = [i / self.grid for i in range(self.grid, 0, -1)]  # 1.0 (min/max) first
        joint = [(anchor + t * (lo - anchor), anchor + t * (hi - anchor)) for t in factors]
        r_l, r_u = self._best(sample, joint)
        r_l, _ = self._best(sample, [(anchor + t * (lo - anchor), r_u) for t in factors])
        _, r_u = self._best(sample, [(r_l, anchor + t * (hi - anchor)) for t in factors])
        return r_l.clone(), r_u.clone()

    def __repr__(self) -> str:
        return (
            f"MSEObserver(bits={self.bits}, method={self.method!r}, grid={self.grid}, symmetric={self.symmetric}, "
            f"max_samples={self._reservoir.max_samples})"
        )


#: Observer classes by name, for :func:`make_observer` and configuration files.
OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def make_observer(name: str, **kwargs) -> Observer:
    """Build an observer by name: ``"minmax"``, ``"percentile"`` or ``"mse"`` (keyword arguments go to its class).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for keyword arguments the class does not take.
    """
    try:
        cls = OBSERVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown observer {name!r}; expected one of {sorted(OBSERVERS)}") from None
    return cls(**kwargs)
