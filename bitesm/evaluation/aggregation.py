"""ProteinGym's benchmark summary and its statistics, from per-assay metric values.

ProteinGym (``proteingym/performance_DMS_benchmarks.py``, ``main``, OATML-Markslab/ProteinGym v1.3)
turns the per-assay values of a metric into the leaderboard number in four steps:

1. round every per-assay value to 3 decimals (``performance_all_DMS[metric][var].round(3)``; the
   published ``*_DMS_level.csv`` files hold these rounded values);
2. average the assays of each ``(UniProt_ID, coarse_selection_type)`` pair -- a protein measured in
   two selection types counts once in each (``groupby(['UniProt_ID', "Selection Type"]).mean()``);
3. average those protein means within each coarse selection type (Activity, Binding, Expression,
   OrganismalFitness, Stability): the ``Function_<type>`` columns of the summary;
4. average the selection-type means: ``Average_<metric>``.

Means skip NaN (pandas' default), as in ProteinGym. So a protein with many assays weighs as much as a
protein with one, and each selection type weighs the same whatever its number of proteins. On the
embedded v1.3 files this reproduces the published ``Average_Spearman`` and all five
``Function_*`` columns of every one of the 97 models to the published 3 decimals (tested for
ESM2 (8M) and ESM2 (35M)).

The leaderboard's ``Bootstrap_standard_error_<metric>`` (``compute_bootstrap_standard_error_
functional_categories``) is the standard error of step 4 under a bootstrap stratified by selection
type: 10,000 times, within each selection type resample its ``(UniProt_ID, selection type)`` rows
with replacement and average them, average the per-type means, and take the sample standard
deviation (``ddof=1``) of the 10,000 results. ProteinGym applies it to the differences to the best
model (``subtract(uniprot_function_metric_performance[top_model])``), so the published column is
the standard error of each model's gap to the top model (0 for the top model). The plain
``compute_bootstrap_standard_error`` (resampling assays, no strata) is the ``reference=None`` case
here.

Pure numpy / pandas / scipy; no torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..errors import UserInputError
from .metrics import METRICS

__all__ = [
    "AggregationInputError",
    "REFERENCE_COLUMNS",
    "PairedZTest",
    "aggregate",
    "bootstrap_standard_error",
    "paired_z_test",
]

#: Columns of ProteinGym's ``DMS_substitutions.csv`` that the aggregation needs.
REFERENCE_COLUMNS = ("DMS_id", "UniProt_ID", "coarse_selection_type")

_METRIC_ALIASES = {"top_recall": "recall"}
_ELEMENTS_PER_CHUNK = 1 << 22  # bootstrap work arrays of at most ~32 MB (float64)


class AggregationInputError(UserInputError):
    """A per-assay table, reference file or model series cannot be aggregated as ProteinGym does."""


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _list(items: Sequence[Any], limit: int = 10) -> str:
    items = list(items)
    shown = ", ".join(map(str, items[:limit]))
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def _check_metric(metric: str) -> str:
    name = _METRIC_ALIASES.get(str(metric).lower(), str(metric).lower())
    if name not in METRICS:
        raise AggregationInputError(
            f"Unknown metric {metric!r}. Fix: pass one of {list(METRICS)} (case-insensitive)."
        )
    return name


def _check_reference(reference: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(reference, pd.DataFrame):
        raise AggregationInputError(
            f"reference must be a pandas DataFrame, got {type(reference).__name__}. Fix: "
            "pd.read_csv('DMS_substitutions.csv')."
        )
    missing = [c for c in REFERENCE_COLUMNS if c not in reference.columns]
    if missing:
        raise AggregationInputError(
            f"reference lacks column(s) {missing}. Fix: pass ProteinGym's "
            "reference_files/DMS_substitutions.csv (columns DMS_id, UniProt_ID, "
            "coarse_selection_type; bitesm ships v1.3 at data/proteingym/reference/)."
        )
    ref = reference.loc[:, list(REFERENCE_COLUMNS)]
    duplicated = ref["DMS_id"][ref["DMS_id"].duplicated()].unique()
    if len(duplicated):
        raise AggregationInputError(
            f"reference lists DMS_id(s) {_list(duplicated)} more than once. Fix: one row per assay."
        )
    incomplete = ref["DMS_id"][ref[["UniProt_ID", "coarse_selection_type"]].isna().any(axis=1)]
    if len(incomplete):
        raise AggregationInputError(
            f"reference has no UniProt_ID or coarse_selection_type for {_list(incomplete)}. Fix: "
            "use ProteinGym's DMS_substitutions.csv."
        )
    return ref


def _check_per_assay(
    per_assay: pd.DataFrame, models: Sequence[str] | None, name: str = "per_assay"
) -> pd.DataFrame:
    """``per_assay`` as a float DataFrame indexed by DMS_id with one column per model."""
    if not isinstance(per_assay, pd.DataFrame):
        raise AggregationInputError(
            f"{name} must be a pandas DataFrame (column DMS_id plus one column per model), got "
            f"{type(per_assay).__name__}."
        )
    df = per_assay
    if "DMS_id" not in df.columns:
        if df.index.name == "DMS_id":
            df = df.reset_index()
        else:
            hint = (
                " (ProteinGym's *_DMS_level.csv calls it 'DMS ID': "
                "df.rename(columns={'DMS ID': 'DMS_id'}))" if "DMS ID" in df.columns else ""
            )
            raise AggregationInputError(
                f"{name} has no DMS_id column{hint}. Fix: add a DMS_id column with ProteinGym's "
                "assay ids."
            )
    if models is None:
        models = [c for c in df.columns if c != "DMS_id"]
    else:
        models = list(models)
        absent = [m for m in models if m not in df.columns]
        if absent:
            raise AggregationInputError(
                f"{name} has no column(s) {absent} for the requested models. Fix: pass models= "
                f"from its columns {_list([c for c in df.columns if c != 'DMS_id'])}."
            )
    if not models:
        raise AggregationInputError(f"{name} has no model column besides DMS_id.")
    non_numeric = [m for m in models if not pd.api.types.is_numeric_dtype(df[m])]
    if non_numeric:
        raise AggregationInputError(
            f"{name} column(s) {non_numeric} are not numeric. Fix: pass models= with only the "
            "model columns (e.g. leave out 'Selection Type', 'UniProt ID' of a *_DMS_level.csv)."
        )
    duplicated = df["DMS_id"][df["DMS_id"].duplicated()].unique()
    if len(duplicated):
        raise AggregationInputError(
            f"{name} lists DMS_id(s) {_list(duplicated)} more than once. Fix: one row per assay."
        )
    if len(df) == 0:
        raise AggregationInputError(f"{name} has no rows (no assay).")
    return df.set_index("DMS_id")[models].astype(np.float64)


def _with_groups(values: pd.DataFrame, reference: pd.DataFrame, name: str) -> pd.DataFrame:
    """Join UniProt_ID / coarse_selection_type of ``reference`` to ``values`` (indexed by DMS_id)."""
    ref = _check_reference(reference).set_index("DMS_id")
    unknown = [d for d in values.index if d not in ref.index]
    if unknown:
        raise AggregationInputError(
            f"{name} has assay(s) {_list(unknown)} that are not in the reference (column DMS_id). "
            "Fix: use the DMS_substitutions.csv of the ProteinGym release the assays come from, or "
            "drop those rows."
        )
    return values.join(ref[["UniProt_ID", "coarse_selection_type"]])


def _protein_type_means(values: pd.DataFrame, reference: pd.DataFrame, name: str) -> pd.DataFrame:
    """ProteinGym's ``uniprot_function_metric_performance``: mean per (UniProt_ID, selection type).

    Index: MultiIndex (UniProt_ID, coarse_selection_type); columns: the models (NaN skipped).
    """
    joined = _with_groups(values, reference, name)
    return joined.groupby(["UniProt_ID", "coarse_selection_type"]).mean()


def _summary(values: pd.DataFrame, reference: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.Series]:
    """ProteinGym's ``uniprot_function_level_average`` (rows: selection types) and ``final_average``."""
    by_type = _protein_type_means(values, reference, name).groupby("coarse_selection_type").mean()
    return by_type, by_type.mean()


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------
def aggregate(
    per_assay: pd.DataFrame,
    reference: pd.DataFrame,
    metric: str,
    *,
    models: Sequence[str] | None = None,
    decimals: int | None = 3,
) -> dict[str, dict[str, Any]]:
    """ProteinGym's summary of one metric: per-protein, then per-selection-type, then overall means.

    Steps (module docstring): round each per-assay value to ``decimals``; mean over the assays of
    each ``(UniProt_ID, coarse_selection_type)``; mean of those within each selection type; mean of
    the selection-type means. NaN values are skipped at every step, as pandas (and so ProteinGym)
    does.

    Args:
        per_assay: one row per assay: column ``DMS_id`` (or an index of that name) plus one float
            column per model holding the value of ``metric`` for that assay (unitless: Spearman's rho,
            AUC, MCC, NDCG or recall). NaN allowed (skipped).
        reference: ProteinGym's ``DMS_substitutions.csv`` as a DataFrame (needs ``DMS_id``,
            ``UniProt_ID``, ``coarse_selection_type``; other columns are ignored). It may list more
            assays than ``per_assay``: only the assays in ``per_assay`` are aggregated, as ProteinGym
            does for a partial run.
        metric: one of :data:`bitesm.evaluation.metrics.METRICS` (case-insensitive; ``"top_recall"``
            accepted); used to validate the request and in messages (the values are not changed).
        models: the model columns to aggregate; default every column but ``DMS_id``.
        decimals: round the per-assay values to this many decimals first, as ProteinGym (3); ``None``
            keeps them unrounded.

    Returns:
        ``{model: {"average": float, "by_selection_type": {selection_type: float}, "n_assays": int}}``
        in column order. ``"average"`` is ProteinGym's ``Average_<metric>``, ``"by_selection_type"``
        its ``Function_<type>`` columns (types sorted by name, only those present in ``per_assay``),
        ``"n_assays"`` the number of non-NaN assays of that model. Unrounded: compare to the
        published table after rounding to 3 decimals (``numpy.round``).

    Raises:
        AggregationInputError (a ``ValueError``): unknown metric; ``per_assay`` without ``DMS_id``,
            with duplicate assays, non-numeric model columns or unknown ``models``; ``reference``
            missing a required column or with duplicate / incomplete rows; an assay of
            ``per_assay`` absent from the reference (all such assays are named).

    Source: ``main`` in ``proteingym/performance_DMS_benchmarks.py`` (``uniprot_function_metric_
    performance``, ``uniprot_function_level_average``, ``final_average``).
    """
    _check_metric(metric)
    values = _check_per_assay(per_assay, models)
    if decimals is not None:
        values = values.round(decimals)
    by_type, average = _summary(values, reference, "per_assay")
    counts = values.notna().sum()
    return {
        model: {
            "average": float(average[model]),
            "by_selection_type": {str(t): float(v) for t, v in by_type[model].items()},
            "n_assays": int(counts[model]),
        }
        for model in values.columns
    }


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------
def _bootstrap_replicates(strata: list[np.ndarray], n_resamples: int, seed: int | None) -> np.ndarray:
    """Resample each stratum's rows with replacement; return the mean over strata of their means.

    ``strata``: arrays of shape ``(n_c, M)``. Returns ``(n_resamples, M)``; a replicate whose resampled
    rows of some stratum are all NaN is NaN (as ProteinGym's summed DataFrames).
    """
    rng = np.random.default_rng(seed)
    n_models = strata[0].shape[1]
    total = np.zeros((n_resamples, n_models))
    for rows in strata:
        n = rows.shape[0]
        chunk = max(1, _ELEMENTS_PER_CHUNK // max(1, n * n_models))
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            index = rng.integers(0, n, size=(stop - start, n))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resample -> NaN
                total[start:stop] += np.nanmean(rows[index], axis=1)
    return total / len(strata)


def bootstrap_standard_error(
    per_assay: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    *,
    models: Sequence[str] | None = None,
    baseline: str | None = None,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    decimals: int | None = 3,
) -> dict[str, float]:
    """ProteinGym's non-parametric bootstrap standard error of a model's summary value.

    With ``reference`` (ProteinGym's leaderboard statistic): the per-assay values (rounded to
    ``decimals``) are averaged per ``(UniProt_ID, coarse_selection_type)``; then ``n_resamples`` times,
    within each selection type its protein rows are drawn with replacement (as many as it has) and
    averaged, and the selection-type means are averaged -- the bootstrap replicate of
    :func:`aggregate`'s ``"average"``. Without ``reference``: the assays themselves are drawn with
    replacement and averaged (ProteinGym's plain ``compute_bootstrap_standard_error``). The result is
    the sample standard deviation (``ddof=1``) of the replicates; NaN values are skipped in every mean
    and NaN replicates in the standard deviation, as pandas does in ProteinGym.

    With ``baseline``, every model's per-protein values minus the baseline's are bootstrapped: the
    standard error of the *difference* of the two summaries (ProteinGym's published column uses the
    best model as baseline, so it is 0 for that model). The draws differ from ProteinGym's (pandas
    ``sample`` on numpy's global RNG), so values agree to Monte-Carlo error (relative SD about
    ``1/sqrt(2 * n_resamples)``, 0.7% at 10,000), not digit for digit.

    Args:
        per_assay: column ``DMS_id`` (or index) plus one float column per model (metric values).
        reference: ProteinGym's ``DMS_substitutions.csv`` (``DMS_id``, ``UniProt_ID``,
            ``coarse_selection_type``), or ``None`` for the unstratified bootstrap over assays.
        models: model columns to use (default all but ``DMS_id``); ``baseline`` need not be among
            them.
        baseline: a model column to subtract first, or ``None``.
        n_resamples: bootstrap replicates (ProteinGym: 10,000); at least 2.
        seed: seed of ``numpy.random.default_rng`` (default 0, so results are reproducible); ``None``
            draws fresh entropy.
        decimals: per-assay rounding applied first, as ProteinGym (3); ``None`` for none.

    Returns:
        ``{model: standard_error}`` (float, same units as the metric) in column order.

    Raises:
        AggregationInputError (a ``ValueError``): the input errors of :func:`aggregate`; ``baseline``
            not a column; ``n_resamples < 2``.

    Source: ``compute_bootstrap_standard_error_functional_categories`` (with ``reference``) and
    ``compute_bootstrap_standard_error`` (without), and their use in ``main``, in
    ``proteingym/performance_DMS_benchmarks.py``.
    """
    if n_resamples < 2:
        raise AggregationInputError(f"n_resamples must be >= 2, got {n_resamples}.")
    values = _check_per_assay(per_assay, models)
    columns = list(values.columns)
    if baseline is not None:
        if baseline == "DMS_id" or baseline not in per_assay.columns:
            raise AggregationInputError(
                f"baseline {baseline!r} is not a model column of per_assay. Fix: pass one of "
                f"{_list([c for c in per_assay.columns if c != 'DMS_id'])}."
            )
        if baseline not in values.columns:
            values = values.join(_check_per_assay(per_assay, [baseline]))
    if decimals is not None:
        values = values.round(decimals)
    if reference is not None:
        units = _protein_type_means(values, reference, "per_assay")
        strata_labels = np.asarray(units.index.get_level_values("coarse_selection_type"))
    else:
        units = values
        strata_labels = np.zeros(len(units), dtype=np.int64)
    if baseline is not None:
        units = units.subtract(units[baseline], axis=0)
    matrix = units[columns].to_numpy(dtype=np.float64)
    strata = [matrix[strata_labels == label] for label in pd.unique(strata_labels)]
    replicates = _bootstrap_replicates(strata, n_resamples, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(replicates, axis=0, ddof=1)
    return {model: float(value) for model, value in zip(columns, se)}


# ----------------------------------------------------------------------------------------------
# Paired Z-test
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedZTest:
    """Result of :func:`paired_z_test` (H1: model A scores higher than model B).

    Attributes:
        mean_difference: summary of A minus summary of B (metric units; ProteinGym's hierarchical
            average with a reference, the plain mean over assays without).
        standard_error: bootstrap standard error of ``mean_difference``.
        z: ``mean_difference / standard_error`` (``inf``/``nan`` when the standard error is 0).
        p_value: one-sided ``P(Z >= z)`` under N(0, 1), ``scipy.stats.norm.sf(z)``.
        n_assays: number of paired assays.
    """

    mean_difference: float
    standard_error: float
    z: float
    p_value: float
    n_assays: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)


SeriesLike = Union[pd.Series, Mapping[str, float]]


def _as_series(values: SeriesLike, name: str) -> pd.Series:
    if isinstance(values, Mapping) and not isinstance(values, pd.Series):
        values = pd.Series(dict(values), dtype=np.float64)
    if not isinstance(values, pd.Series):
        raise AggregationInputError(
            f"{name} must be a pandas Series indexed by DMS_id or a mapping DMS_id -> value, got "
            f"{type(values).__name__}."
        )
    if values.index.duplicated().any():
        raise AggregationInputError(
            f"{name} lists assay(s) {_list(values.index[values.index.duplicated()].unique())} more "
            "than once. Fix: one value per assay."
        )
    if not pd.api.types.is_numeric_dtype(values):
        raise AggregationInputError(f"{name} must hold numbers (metric values), got {values.dtype}.")
    nan = values.index[values.isna()]
    if len(nan):
        raise AggregationInputError(
            f"{name} is NaN for assay(s) {_list(nan)}; a paired test needs both models' values. "
            "Fix: drop those assays from both inputs."
        )
    return values.astype(np.float64)


def paired_z_test(
    a: SeriesLike,
    b: SeriesLike,
    reference: pd.DataFrame | None = None,
    *,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    decimals: int | None = 3,
) -> PairedZTest:
    """One-sided paired Z-test that model A beats model B on the same ProteinGym assays.

    ``d`` = per-assay value of A minus that of B (each rounded to ``decimals`` first, as ProteinGym
    rounds per-assay values). ``mean_difference`` is :func:`aggregate`'s ProteinGym average of ``d``
    when ``reference`` is given (equal to A's summary minus B's), else the plain mean of ``d`` over
    assays; ``standard_error`` is :func:`bootstrap_standard_error` of ``d`` (stratified by selection
    type with ``reference``, over assays without). Then ``z = mean_difference / standard_error`` and
    ``p = norm.sf(z)`` (H0: no difference; H1: A better than B), the test of 2Bits of Protein,
    Table 3.

    Args:
        a: model A's metric values, a ``pandas.Series`` indexed by ``DMS_id`` or a mapping
            ``DMS_id -> float`` (unitless metric values, higher = better).
        b: model B's values for exactly the same assays.
        reference: ProteinGym's ``DMS_substitutions.csv`` DataFrame, or ``None`` (see above).
        n_resamples: bootstrap replicates (default 10,000, as ProteinGym).
        seed: bootstrap seed (``numpy.random.default_rng``; default 0, reproducible).
        decimals: per-assay rounding (ProteinGym: 3); ``None`` for none.

    Returns:
        :class:`PairedZTest` (``mean_difference``, ``standard_error``, ``z``, ``p_value``,
        ``n_assays``); ``.as_dict()`` gives a dict. A zero standard error (all differences equal)
        gives ``z = +-inf`` (``p`` 0 or 1), or NaN when the difference is also 0.

    Raises:
        AggregationInputError (a ``ValueError``): ``a`` and ``b`` cover different assays (the
            assays only in one are named); fewer than 2 assays; NaN or duplicate assays; the input
            errors of :func:`aggregate` for ``reference``.

    Source: Z-test of "2Bits of Protein" (Table 3); standard error from
    ``compute_bootstrap_standard_error(_functional_categories)`` in
    ``proteingym/performance_DMS_benchmarks.py``.
    """
    sa, sb = _as_series(a, "a"), _as_series(b, "b")
    only_a = [d for d in sa.index if d not in sb.index]
    only_b = [d for d in sb.index if d not in sa.index]
    if only_a or only_b:
        raise AggregationInputError(
            "a and b must cover the same assays: only in a "
            f"{_list(only_a)}, only in b {_list(only_b)}. Fix: restrict both to the common assays."
        )
    if len(sa) < 2:
        raise AggregationInputError(
            f"A paired Z-test needs at least 2 assays, got {len(sa)}."
        )
    sb = sb.loc[sa.index]
    if decimals is not None:
        sa, sb = sa.round(decimals), sb.round(decimals)
    diff = pd.DataFrame({"DMS_id": sa.index, "difference": (sa - sb).to_numpy()})
    if reference is not None:
        _, average = _summary(_check_per_assay(diff, None), reference, "a/b")
        mean_difference = float(average["difference"])
    else:
        mean_difference = float(diff["difference"].mean())
    standard_error = bootstrap_standard_error(
        diff, reference, n_resamples=n_resamples, seed=seed, decimals=None
    )["difference"]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = float(np.float64(mean_difference) / np.float64(standard_error))
    p_value = float(norm.sf(z)) if not math.isnan(z) else math.nan
    return PairedZTest(
        mean_difference=float(mean_difference),
        standard_error=float(standard_error),
        z=z,
        p_value=p_value,
        n_assays=int(len(sa)),
    )
