"""ProteinGym's per-assay zero-shot metrics: Spearman, AUC, MCC, NDCG and top-10% recall.

Every definition follows ``proteingym/performance_DMS_benchmarks.py`` of OATML-Markslab/ProteinGym
(v1.3, the script that produces the published ``DMS_substitutions_<metric>_DMS_level.csv`` and
``Summary_performance_DMS_substitutions_<metric>.csv`` files), ``main``, ``calc_ndcg`` and
``calc_toprecall``. For one assay with ``N`` mutants, DMS measurements ``y`` (``DMS_score``, higher =
fitter), binary labels ``b`` (``DMS_score_bin``, 1 = fit) and model scores ``s`` (higher = predicted
fitter):

========== ==================================================================================
spearman   ``scipy.stats.spearmanr(y, s)`` (average ranks for ties)
auc        ``sklearn.metrics.roc_auc_score(b, s)``; undefined (ProteinGym: NaN) with one class
mcc        ``sklearn.metrics.matthews_corrcoef(b, s >= median(s))``: model scores binarised at
           their own median, ties at the median counted as fit (1)
ndcg       NDCG@k with linear gains ``(y - min y) / (max y - min y)``, discount
           ``1 / log2(rank + 1)``, ``k = floor(N * 10 / 100)`` (ProteinGym's ``calc_ndcg``)
recall     ``|T & P| / |T|`` with ``T = y > percentile(y, 90)``, ``P = s > percentile(s, 90)``
           (``numpy.percentile``, linear interpolation; strict ``>``); 0 when ``T`` is empty
========== ==================================================================================

Missing values: ProteinGym computes the metrics on all rows of the merged scoring file and states
"We assume no missing value (all models were enforced to score all mutants)"; its released DMS
files have no missing ``DMS_score``. It drops nothing: a NaN propagates to NaN (Spearman, NDCG) or
silently changes the result (MCC maps a NaN score to 0, ``np.percentile`` returns NaN). Here the
per-metric functions raise :class:`ValueError` on NaN input, and :func:`assay_metrics` drops every
row with a NaN in any of its inputs (with a :class:`RuntimeWarning` giving the count) before
computing all five metrics on the same rows; on ProteinGym's data (no NaN) this is identical to
ProteinGym.

Pure numpy / scipy / scikit-learn; no torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Union

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import matthews_corrcoef, ndcg_score, roc_auc_score

__all__ = ["METRICS", "spearman", "auc", "mcc", "ndcg", "top_recall", "assay_metrics"]

#: Metric names, in ProteinGym's order (Spearman, AUC, MCC, NDCG, Top_recall).
METRICS = ("spearman", "auc", "mcc", "ndcg", "recall")

ArrayLike = Union[np.ndarray, Sequence[float]]


def _as_vector(x: ArrayLike, name: str, *, allow_nan: bool = False) -> np.ndarray:
    """``x`` as a 1-D float64 array; raise ``ValueError`` (naming ``name``) when not 1-D or NaN."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per mutant), got shape {arr.shape}.")
    if not allow_nan and np.isnan(arr).any():
        raise ValueError(
            f"{name} has {int(np.isnan(arr).sum())} NaN value(s). ProteinGym assumes no missing "
            "values. Fix: drop those rows first, or use assay_metrics, which drops them."
        )
    return arr


def _pair(a: ArrayLike, b: ArrayLike, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_vector(a, name_a), _as_vector(b, name_b)
    if x.shape != y.shape:
        raise ValueError(f"{name_a} and {name_b} differ in length: {x.shape[0]} vs {y.shape[0]}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name_a} and {name_b} are empty.")
    return x, y


def _binary_labels(dms_score_bin: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s, b = _pair(scores, dms_score_bin, "scores", "dms_score_bin")
    if not np.isin(b, (0.0, 1.0)).all():
        raise ValueError(
            f"dms_score_bin must hold only 0 and 1 (ProteinGym's DMS_score_bin), got values "
            f"{np.unique(b)[:10].tolist()}."
        )
    return s, b.astype(np.int64)


def spearman(scores: ArrayLike, dms_score: ArrayLike) -> float:
    """Spearman's rank correlation between model scores and DMS measurements.

    Args:
        scores: shape ``(N,)`` float, model scores (e.g. log-likelihood ratios in nats); higher =
            predicted fitter.
        dms_score: shape ``(N,)`` float, ProteinGym ``DMS_score`` (assay units; higher = fitter).

    Returns:
        Spearman's rho in ``[-1, 1]`` (ties get average ranks); NaN if either input is constant.

    Raises:
        ValueError: inputs not 1-D, of different lengths, empty, or containing NaN.

    Source: ``main`` in ``proteingym/performance_DMS_benchmarks.py``
    (``spearmanr(merged_scores['DMS_score'], merged_scores[score])[0]``).
    """
    s, y = _pair(scores, dms_score, "scores", "dms_score")
    if s.shape[0] < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input and returns NaN
        return float(spearmanr(y, s).statistic)


def auc(scores: ArrayLike, dms_score_bin: ArrayLike) -> float:
    """Area under the ROC curve of the model scores for the binary DMS labels.

    Args:
        scores: shape ``(N,)`` float, model scores; higher = predicted fitter.
        dms_score_bin: shape ``(N,)``, ProteinGym ``DMS_score_bin`` (1 = fit, 0 = not fit; ProteinGym
            binarises ``DMS_score`` at the assay's ``DMS_binarization_cutoff``).

    Returns:
        ROC AUC in ``[0, 1]`` (tied scores count one half, as in ``roc_auc_score``).

    Raises:
        ValueError: inputs not 1-D, of different lengths, empty or with NaN; labels other than 0/1;
            only one class in ``dms_score_bin`` (AUC undefined; ProteinGym records NaN, and
            :func:`assay_metrics` returns ``None``).

    Source: ``main`` in ``proteingym/performance_DMS_benchmarks.py``
    (``roc_auc_score(y_true=DMS_score_bin, y_score=score)``; NaN on exception).
    """
    s, b = _binary_labels(dms_score_bin, scores)
    if np.unique(b).size < 2:
        raise ValueError(
            f"dms_score_bin has only one class ({int(b[0])}); ROC AUC is undefined. ProteinGym "
            "reports NaN for such an assay."
        )
    return float(roc_auc_score(b, s))


def mcc(scores: ArrayLike, dms_score_bin: ArrayLike) -> float:
    """Matthews correlation between the DMS labels and the model scores binarised at their median.

    The prediction is ``1`` where ``scores >= median(scores)`` and ``0`` elsewhere, so all scores
    tied with the median are predicted fit.

    Args:
        scores: shape ``(N,)`` float, model scores; higher = predicted fitter.
        dms_score_bin: shape ``(N,)``, ProteinGym ``DMS_score_bin`` (1 = fit, 0 = not fit).

    Returns:
        MCC in ``[-1, 1]``. ``0.0`` when either the labels or the binarised scores hold a single class
        (``sklearn.metrics.matthews_corrcoef``'s convention, which ProteinGym inherits: it does not
        raise there, so ProteinGym records 0, not NaN).

    Raises:
        ValueError: inputs not 1-D, of different lengths, empty or with NaN; labels other than 0/1.

    Source: ``main`` in ``proteingym/performance_DMS_benchmarks.py`` (``median_cutoff =
    merged_scores[score].median()``; ``1 if x >= median_cutoff else 0``; ``matthews_corrcoef``).
    """
    s, b = _binary_labels(dms_score_bin, scores)
    predicted = (s >= np.median(s)).astype(np.int64)
    return float(matthews_corrcoef(b, predicted))


def ndcg(scores: ArrayLike, dms_score: ArrayLike, top_percent: float = 10) -> float:
    """ProteinGym's NDCG@k: how well the model's top-k mutants capture the fittest ones.

    With gains ``g = (y - min y) / (max y - min y)`` (min-max normalised ``DMS_score``, so the least fit
    mutant has gain 0 and the fittest gain 1) and ``k = floor(N * top_percent / 100)``::

        DCG  = sum over the k mutants with the highest model scores, at rank r = 1..k, of g / log2(r + 1)
        IDCG = the same sum over the k mutants with the highest DMS_score
        NDCG = DCG / IDCG

    Computed with ``sklearn.metrics.ndcg_score(g, scores, k=k)``, which is this formula. Tie handling:
    ProteinGym's ``calc_ndcg`` ranks with ``np.argsort(np.argsort(-y_score))``, numpy's default
    *unstable* sort, so among tied model scores the order -- and the NDCG -- depends on the numpy
    version and on the CPU's SIMD sort (checked: numpy 2.4 on an AVX2 machine does not keep index
    order); no implementation can reproduce it in general. scikit-learn (``ignore_ties=False``)
    gives every tied group the average of its gains, i.e. the expected value of ProteinGym's NDCG over
    a uniformly random tie-break, and is deterministic. Without ties among the model scores the two
    are identical (tested against a direct port of ``calc_ndcg``); ties in ``DMS_score`` never change
    the result (IDCG is a sum over the sorted gains).

    Args:
        scores: shape ``(N,)`` float, model scores; higher = predicted fitter.
        dms_score: shape ``(N,)`` float, ProteinGym ``DMS_score`` (higher = fitter).
        top_percent: percentage of the assay in the top-k (ProteinGym: 10).

    Returns:
        NDCG in ``[0, 1]``. ``0.0`` when ``k = 0`` (``N < 100 / top_percent``) or when no model top-k
        mutant has a positive gain (both as ProteinGym); NaN when ``DMS_score`` is constant (gains
        0/0, as ProteinGym).

    Raises:
        ValueError: inputs not 1-D, of different lengths, empty or with NaN; ``top_percent`` not in
            ``(0, 100]``.

    Source: ``calc_ndcg`` (and ``minmax``) in ``proteingym/performance_DMS_benchmarks.py``.
    """
    s, y = _pair(scores, dms_score, "scores", "dms_score")
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}.")
    k = int(np.floor(y.shape[0] * (top_percent / 100)))  # ProteinGym's expression
    if k == 0:
        return 0.0
    y_min, y_max = y.min(), y.max()
    if y_max == y_min:
        return math.nan
    gains = (y - y_min) / (y_max - y_min)
    return float(ndcg_score(gains[None, :], s[None, :], k=k))


def top_recall(scores: ArrayLike, dms_score: ArrayLike, top_percent: float = 10) -> float:
    """Recall of the truly top ``top_percent``% mutants among the model's top ``top_percent``%.

    ``T = dms_score > percentile(dms_score, 100 - top_percent)`` and
    ``P = scores > percentile(scores, 100 - top_percent)`` (``numpy.percentile``, linear
    interpolation, strict ``>``: values tied with the threshold are out); recall ``= |T & P| / |T|``.

    Args:
        scores: shape ``(N,)`` float, model scores; higher = predicted fitter.
        dms_score: shape ``(N,)`` float, ProteinGym ``DMS_score`` (higher = fitter).
        top_percent: percentage defining "top" for both the DMS and the model (ProteinGym: 10).

    Returns:
        Recall in ``[0, 1]``; ``0.0`` when ``T`` is empty (e.g. constant ``DMS_score``), as ProteinGym
        v1.3.

    Raises:
        ValueError: inputs not 1-D, of different lengths, empty or with NaN; ``top_percent`` not in
            ``(0, 100]``.

    Source: ``calc_toprecall`` in ``proteingym/performance_DMS_benchmarks.py``.
    """
    s, y = _pair(scores, dms_score, "scores", "dms_score")
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}.")
    top_true = y > np.percentile(y, 100 - top_percent)
    top_model = s > np.percentile(s, 100 - top_percent)
    n_true = int(top_true.sum())
    if n_true == 0:
        return 0.0
    return float((top_true & top_model).sum() / n_true)


def assay_metrics(
    scores: ArrayLike, dms_score: ArrayLike, dms_score_bin: ArrayLike | None = None
) -> dict[str, float | None]:
    """All five ProteinGym metrics of one assay.

    Rows with a NaN in ``scores``, ``dms_score`` or ``dms_score_bin`` are dropped first (a
    :class:`RuntimeWarning` gives the count); ProteinGym's files have none, so on them this equals
    ProteinGym (see the module docstring).

    Args:
        scores: shape ``(N,)`` float, model scores; higher = predicted fitter.
        dms_score: shape ``(N,)`` float, ProteinGym ``DMS_score``.
        dms_score_bin: shape ``(N,)`` 0/1 ``DMS_score_bin``, or ``None`` when the assay has no
            binarised labels.

    Returns:
        ``{"spearman": float, "auc": float | None, "mcc": float | None, "ndcg": float,
        "recall": float}`` (keys in :data:`METRICS` order). ``auc`` and ``mcc`` are ``None`` without
        ``dms_score_bin``; ``auc`` is ``None`` when the (kept) labels hold one class (ProteinGym:
        NaN), while ``mcc`` is then ``0.0`` as in ProteinGym (:func:`mcc`).

    Raises:
        ValueError: inputs not 1-D or of different lengths; no row left after dropping NaN; labels
            other than 0/1.

    Source: the per-assay loop of ``main`` in ``proteingym/performance_DMS_benchmarks.py``.
    """
    s = _as_vector(scores, "scores", allow_nan=True)
    y = _as_vector(dms_score, "dms_score", allow_nan=True)
    columns = [("scores", s), ("dms_score", y)]
    if dms_score_bin is not None:
        b = _as_vector(dms_score_bin, "dms_score_bin", allow_nan=True)
        columns.append(("dms_score_bin", b))
    lengths = {name: arr.shape[0] for name, arr in columns}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"Inputs differ in length: {lengths}.")
    keep = np.ones(s.shape[0], dtype=bool)
    for _, arr in columns:
        keep &= ~np.isnan(arr)
    if not keep.all():
        warnings.warn(
            f"assay_metrics: dropped {int((~keep).sum())} of {keep.size} rows with NaN "
            "(ProteinGym assumes no missing values).",
            RuntimeWarning,
            stacklevel=2,
        )
    if not keep.any():
        raise ValueError("No row left: every row has a NaN in scores, dms_score or dms_score_bin.")
    s, y = s[keep], y[keep]
    result: dict[str, float | None] = {
        "spearman": spearman(s, y),
        "auc": None,
        "mcc": None,
        "ndcg": ndcg(s, y),
        "recall": top_recall(s, y),
    }
    if dms_score_bin is not None:
        b = b[keep]
        result["mcc"] = mcc(s, b)
        result["auc"] = auc(s, b) if np.unique(b).size == 2 else None
    return {name: result[name] for name in METRICS}
