"""Tests for ProteinGym's per-assay metrics, summary aggregation, bootstrap and paired Z-test.

Hand-computed numbers are derived in the comments; ``_pg_*`` functions are independent ports of the
formulas of ``proteingym/performance_DMS_benchmarks.py`` (OATML-Markslab/ProteinGym) written with
plain numpy, used to check the library implementations on random data without ties.
"""

from __future__ import annotations

import importlib.util
import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from bitesm.evaluation.aggregation import (
    AggregationInputError,
    PairedZTest,
    aggregate,
    bootstrap_standard_error,
    paired_z_test,
)
from bitesm.evaluation.metrics import (
    METRICS,
    assay_metrics,
    auc,
    mcc,
    ndcg,
    spearman,
    top_recall,
)

from conftest import REPO

REFERENCE_DIR = REPO / "data" / "proteingym" / "reference"
LOG2_3 = math.log2(3)


# ----------------------------------------------------------------------------------------------
# Independent ports of ProteinGym's formulas (numpy only; valid without ties in the scores)
# ----------------------------------------------------------------------------------------------
def _pg_ndcg(y_true: np.ndarray, y_score: np.ndarray, top: float = 10) -> float:
    """``calc_ndcg``: rank by argsort of argsort, keep ranks <= k, drop zero gains."""
    k = int(np.floor(y_true.shape[0] * (top / 100)))
    gains = (y_true - y_true.min()) / (y_true.max() - y_true.min())
    ranks = np.argsort(np.argsort(-y_score)) + 1
    keep = (ranks <= k) & (gains != 0)
    if not keep.any():
        return 0.0
    dcg = np.sum(gains[keep] / np.log2(ranks[keep] + 1))
    ideal = np.argsort(np.argsort(-gains)) + 1
    ikeep = (ideal <= k) & (gains != 0)
    return float(dcg / np.sum(gains[ikeep] / np.log2(ideal[ikeep] + 1)))


def _pg_recall(y_true: np.ndarray, y_score: np.ndarray, top: float = 10) -> float:
    """``calc_toprecall``."""
    t = y_true > np.percentile(y_true, 100 - top)
    p = y_score > np.percentile(y_score, 100 - top)
    return float((t & p).sum() / t.sum()) if t.sum() > 0 else 0.0


def _pg_mcc(b: np.ndarray, s: np.ndarray) -> float:
    """Median binarisation then the confusion-matrix formula of the MCC."""
    pred = (s >= np.median(s)).astype(int)
    tp = np.sum((pred == 1) & (b == 1))
    tn = np.sum((pred == 0) & (b == 0))
    fp = np.sum((pred == 1) & (b == 0))
    fn = np.sum((pred == 0) & (b == 1))
    den = math.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    return float((tp * tn - fp * fn) / den) if den else 0.0


def _pg_auc(b: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney: fraction of (positive, negative) pairs ordered correctly (no ties)."""
    pos, neg = s[b == 1], s[b == 0]
    return float((pos[:, None] > neg[None, :]).mean())


def _pg_spearman(y: np.ndarray, s: np.ndarray) -> float:
    """Pearson correlation of the ranks (no ties)."""
    return float(np.corrcoef(np.argsort(np.argsort(y)), np.argsort(np.argsort(s)))[0, 1])


# ----------------------------------------------------------------------------------------------
# Per-assay metrics: hand-computed values
# ----------------------------------------------------------------------------------------------
def test_spearman_hand_computed():
    # ranks y = 1..5, s ranks 2,1,4,3,5: d = -1,1,-1,1,0, sum d^2 = 4 -> 1 - 6*4/(5*24) = 0.8
    assert spearman([2, 1, 4, 3, 5], [1, 2, 3, 4, 5]) == pytest.approx(0.8)
    assert spearman([5, 4, 3, 2, 1], [1, 2, 3, 4, 5]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # constant scores


def test_auc_and_mcc_hand_computed():
    b = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.1, 0.3, 0.2, 0.5])
    # AUC: positives 0.9, 0.8, 0.2 vs negatives 0.1, 0.3, 0.5: 0.9 and 0.8 beat all 3, 0.2 beats
    # 0.1 only -> 7 of 9 pairs.
    assert auc(s, b) == pytest.approx(7 / 9)
    # MCC: median(s) = (0.3 + 0.5) / 2 = 0.4 -> predicted 1,1,0,0,0,1: TP=2 FN=1 FP=1 TN=2
    # (2*2 - 1*1) / sqrt(3*3*3*3) = 3/9.
    assert mcc(s, b) == pytest.approx(1 / 3)


def test_mcc_ties_at_median_count_as_fit():
    # s = 1,1,1,0: median 1, so the three tied scores are predicted 1 (ProteinGym's ">=").
    # b = 1,0,1,0: TP=2 FP=1 TN=1 FN=0 -> (2*1 - 1*0) / sqrt(3*2*2*1) = 2/sqrt(12).
    assert mcc([1, 1, 1, 0], [1, 0, 1, 0]) == pytest.approx(2 / math.sqrt(12))


def test_mcc_single_class_is_zero_as_proteingym():
    # sklearn's matthews_corrcoef returns 0 (no exception), so ProteinGym records 0, not NaN.
    assert mcc([0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1]) == 0.0


def test_auc_single_class_raises():
    with pytest.raises(ValueError, match="only one class"):
        auc([0.1, 0.2, 0.3], [1, 1, 1])


def test_ndcg_hand_computed():
    # N = 20 -> k = floor(20 * 10 / 100) = 2. y = 0..19, gains y / 19.
    y = np.arange(20, dtype=float)
    s = y.copy()
    s[10], s[19] = 100.0, 50.0  # the model ranks mutant 10 first, mutant 19 second
    # DCG = (10/19)/log2(2) + (19/19)/log2(3); IDCG = 1/log2(2) + (18/19)/log2(3)
    expected = (10 / 19 + 1 / LOG2_3) / (1 + (18 / 19) / LOG2_3)  # = 0.72431...
    assert ndcg(s, y) == pytest.approx(expected)
    assert expected == pytest.approx(0.724310, abs=1e-6)
    assert ndcg(y, y) == pytest.approx(1.0)


def test_ndcg_edge_cases_follow_proteingym():
    # k = floor(9 * 0.1) = 0: ProteinGym returns 0 (no rank within the top k).
    assert ndcg(np.arange(9.0), np.arange(9.0)) == 0.0
    # the model's top-2 are the two least fit mutants: one has gain 0, the other 1/19 -> not 0
    y = np.arange(20, dtype=float)
    assert ndcg(-y, y) == pytest.approx((1 / 19) / LOG2_3 / (1 + (18 / 19) / LOG2_3))
    # top-k mutants all of gain 0 -> 0
    y0 = np.array([0.0] * 18 + [1.0, 2.0])
    s0 = np.arange(20.0)[::-1]  # ranks the first two (gain 0) on top
    assert ndcg(s0, y0) == 0.0
    # constant DMS score: gains 0/0 -> NaN in ProteinGym
    assert math.isnan(ndcg(np.arange(20.0), np.ones(20)))


def test_ndcg_ties_are_averaged():
    # N = 20, k = 2; gains y/19. The model ties mutants 19, 18, 17 at the top: each of the two
    # top-k positions gets the mean gain (19 + 18 + 17) / 3 / 19 = 18/19, the expected value over
    # the 3! orders of the tie. DCG = (18/19)(1 + 1/log2 3); IDCG = 1 + (18/19)/log2 3.
    y = np.arange(20, dtype=float)
    s = np.arange(20, dtype=float)
    s[17:] = 100.0
    expected = (18 / 19) * (1 + 1 / LOG2_3) / (1 + (18 / 19) / LOG2_3)
    assert ndcg(s, y) == pytest.approx(expected)


def test_top_recall_hand_computed():
    # N = 20, y = 0..19: percentile(y, 90) = 0.9 * 19 = 17.1 -> true top = {18, 19}.
    y = np.arange(20, dtype=float)
    s = np.zeros(20)
    s[19], s[5] = 2.0, 1.0  # the model's top: percentile(s, 90) = 0 -> {19, 5}
    assert top_recall(s, y) == pytest.approx(0.5)  # 19 found, 18 missed
    # values tied with the threshold are excluded (strict >): constant DMS -> empty top -> 0
    assert top_recall(s, np.ones(20)) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [57, 300])
def test_metrics_equal_proteingym_port_on_random_data(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    s = 0.5 * y + rng.normal(size=n)  # continuous: no ties
    b = (y > np.quantile(y, 0.4)).astype(int)
    assert ndcg(s, y) == pytest.approx(_pg_ndcg(y, s), abs=1e-12)
    assert top_recall(s, y) == pytest.approx(_pg_recall(y, s), abs=1e-12)
    assert mcc(s, b) == pytest.approx(_pg_mcc(b, s), abs=1e-12)
    assert auc(s, b) == pytest.approx(_pg_auc(b, s), abs=1e-12)
    assert spearman(s, y) == pytest.approx(_pg_spearman(y, s), abs=1e-12)
    for top in (5, 20):
        assert ndcg(s, y, top_percent=top) == pytest.approx(_pg_ndcg(y, s, top), abs=1e-12)
        assert top_recall(s, y, top_percent=top) == pytest.approx(_pg_recall(y, s, top), abs=1e-12)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="NaN"):
        spearman([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="differ in length"):
        ndcg([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        mcc([1.0, 2.0, 3.0], [0, 1, 2])
    with pytest.raises(ValueError, match="1-D"):
        top_recall(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="top_percent"):
        ndcg([1.0, 2.0], [1.0, 2.0], top_percent=0)


def test_assay_metrics_keys_none_and_nan_rows():
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    s = y + rng.normal(size=200)
    b = (y > 0).astype(float)
    out = assay_metrics(s, y, b)
    assert tuple(out) == METRICS
    assert out["auc"] == pytest.approx(auc(s, b)) and out["mcc"] == pytest.approx(mcc(s, b))
    no_bin = assay_metrics(s, y)
    assert no_bin["auc"] is None and no_bin["mcc"] is None
    assert no_bin["spearman"] == pytest.approx(out["spearman"])
    one_class = assay_metrics(s, y, np.ones(200))
    assert one_class["auc"] is None and one_class["mcc"] == 0.0
    # rows with a NaN in any input are dropped (with a warning); the rest are scored as usual
    s_nan, y_nan = s.copy(), y.copy()
    s_nan[0], y_nan[1] = np.nan, np.nan
    with pytest.warns(RuntimeWarning, match="dropped 2 of 200"):
        dropped = assay_metrics(s_nan, y_nan, b)
    assert dropped == pytest.approx(assay_metrics(s[2:], y[2:], b[2:]))


def test_assay_metrics_on_embedded_assays_with_oracle_scores():
    substitutions = REPO / "data" / "proteingym" / "substitutions"
    df = pd.read_csv(substitutions / "BLAT_ECOLX_Stiffler_2015.csv.gz")
    assert not df["DMS_score"].isna().any()  # ProteinGym's files have no missing DMS_score
    out = assay_metrics(df["DMS_score"], df["DMS_score"], df["DMS_score_bin"])
    assert out["spearman"] == pytest.approx(1.0)
    assert out["ndcg"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(1.0)
    assert out["auc"] == pytest.approx(1.0)  # DMS_score_bin is DMS_score thresholded
    # CCDB_ECOLI_Adkar_2012: 178 of 1,176 mutants share the maximum DMS_score (-1.0), so the 90th
    # percentile is the maximum and ProteinGym's strict ">" leaves no "true top" mutant: the recall
    # is 0 for every model, even a perfect one.
    ccdb = pd.read_csv(substitutions / "CCDB_ECOLI_Adkar_2012.csv.gz")
    y = ccdb["DMS_score"].to_numpy()
    assert np.percentile(y, 90) == y.max()
    assert top_recall(y, y) == 0.0 == _pg_recall(y, y)


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------
def _toy_reference() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "DMS_id": ["A1", "A2", "A3", "A4", "A5"],
            "UniProt_ID": ["P1", "P1", "P2", "P3", "P1"],
            "coarse_selection_type": ["Stability", "Stability", "Stability", "Activity", "Activity"],
            "target_seq": ["M"] * 5,  # extra columns are ignored
        }
    )


def _toy_per_assay() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "DMS_id": ["A1", "A2", "A3", "A4", "A5"],
            "m": [0.1, 0.3, 0.5, 0.9, 0.7],
            "n": [0.2, 0.2, 0.2, 0.2, np.nan],
        }
    )


def test_aggregate_nested_means_by_hand():
    out = aggregate(_toy_per_assay(), _toy_reference(), "spearman")
    # Stability: (P1, Stability) = mean(A1, A2) = 0.2, (P2, Stability) = 0.5 -> 0.35
    # Activity:  (P1, Activity) = A5 = 0.7, (P3, Activity) = A4 = 0.9 -> 0.8
    # average = (0.35 + 0.8) / 2 = 0.575
    m = out["m"]
    assert m["by_selection_type"] == pytest.approx({"Activity": 0.8, "Stability": 0.35})
    assert m["average"] == pytest.approx(0.575)
    assert m["n_assays"] == 5
    # differs from the plain mean (2.5 / 5 = 0.5) and from grouping by UniProt_ID alone
    # (P1 = mean(0.1, 0.3, 0.7) = 11/30 in both types: Stability (11/30 + 0.5)/2, Activity (11/30 + 0.9)/2)
    assert m["average"] != pytest.approx(0.5)
    uniprot_only = ((11 / 30 + 0.5) / 2 + (11 / 30 + 0.9) / 2) / 2
    assert m["average"] != pytest.approx(uniprot_only)
    # NaN skipped: n has A5 missing -> Activity = mean over P3 only = 0.2
    assert out["n"]["average"] == pytest.approx(0.2) and out["n"]["n_assays"] == 4


def test_aggregate_rounds_per_assay_values_like_proteingym():
    per_assay = pd.DataFrame({"DMS_id": ["A1", "A3"], "m": [0.12345, 0.5]})
    ref = _toy_reference()
    assert aggregate(per_assay, ref, "auc")["m"]["average"] == pytest.approx((0.123 + 0.5) / 2)
    assert aggregate(per_assay, ref, "auc", decimals=None)["m"]["average"] == pytest.approx(
        (0.12345 + 0.5) / 2
    )


def test_aggregate_errors_name_input_and_fix():
    ref = _toy_reference()
    bad = pd.concat([_toy_per_assay(), pd.DataFrame({"DMS_id": ["ZZZ_9"], "m": [0.1], "n": [0.1]})])
    with pytest.raises(AggregationInputError, match="ZZZ_9.*not in the reference") as err:
        aggregate(bad, ref, "spearman")
    assert isinstance(err.value, ValueError)
    missing_column = r"reference lacks column\(s\) \['coarse_selection_type'\]"
    with pytest.raises(AggregationInputError, match=missing_column):
        aggregate(_toy_per_assay(), ref.drop(columns="coarse_selection_type"), "spearman")
    with pytest.raises(AggregationInputError, match="DMS ID"):
        aggregate(_toy_per_assay().rename(columns={"DMS_id": "DMS ID"}), ref, "spearman")
    with pytest.raises(AggregationInputError, match="Unknown metric"):
        aggregate(_toy_per_assay(), ref, "pearson")
    with pytest.raises(AggregationInputError, match="more than once"):
        aggregate(pd.concat([_toy_per_assay()] * 2), ref, "spearman")
    with pytest.raises(AggregationInputError, match="not numeric"):
        aggregate(_toy_per_assay().assign(label="x"), ref, "spearman")


def _published() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    reference = pd.read_csv(REFERENCE_DIR / "DMS_substitutions.csv")
    dms_level = pd.read_csv(REFERENCE_DIR / "DMS_substitutions_Spearman_DMS_level.csv")
    summary = pd.read_csv(REFERENCE_DIR / "Summary_performance_DMS_substitutions_Spearman.csv")
    return reference, dms_level.rename(columns={"DMS ID": "DMS_id"}), summary.set_index("Model_name")


@pytest.mark.parametrize("model", ["ESM2 (8M)", "ESM2 (35M)"])
def test_aggregate_reproduces_published_proteingym_summary(model):
    reference, dms_level, summary = _published()
    assert len(dms_level) == 217 and len(reference) == 217
    out = aggregate(dms_level, reference, "spearman", models=[model])[model]
    row = summary.loc[model]
    assert np.round(out["average"], 3) == row["Average_Spearman"]
    for selection_type, value in out["by_selection_type"].items():
        assert np.round(value, 3) == row[f"Function_{selection_type}"], selection_type
    assert set(out["by_selection_type"]) == {
        "Activity", "Binding", "Expression", "OrganismalFitness", "Stability"
    }
    # the plain mean over assays does not reproduce it
    assert np.round(dms_level[model].mean(), 3) != row["Average_Spearman"]


def test_aggregate_reproduces_every_published_average_and_top_model():
    reference, dms_level, summary = _published()
    models = [c for c in dms_level.columns if c in summary.index]
    assert len(models) > 90
    out = aggregate(dms_level, reference, "spearman", models=models)
    mismatches = {
        m: (out[m]["average"], summary.loc[m, "Average_Spearman"])
        for m in models
        if np.round(out[m]["average"], 3) != summary.loc[m, "Average_Spearman"]
    }
    assert not mismatches
    # ProteinGym's top model (the bootstrap baseline, standard error 0.0 in the table)
    top = max(models, key=lambda m: out[m]["average"])
    assert summary.loc[top, "Bootstrap_standard_error_Spearman"] == 0.0


def test_bootstrap_reproduces_published_standard_error():
    reference, dms_level, summary = _published()
    models = ["ESM2 (8M)", "ESM2 (35M)"]
    se = bootstrap_standard_error(
        dms_level, reference, models=models, baseline="AIDO Protein-RAG (16B)"
    )
    for model in models:
        published = summary.loc[model, "Bootstrap_standard_error_Spearman"]  # 0.015
        assert abs(se[model] - published) <= 0.0006, (model, se[model], published)


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------
def test_bootstrap_close_to_analytic_standard_error():
    rng = np.random.default_rng(7)
    n = 2000
    values = rng.normal(0.3, 0.2, size=n)
    per_assay = pd.DataFrame({"DMS_id": [f"D{i}" for i in range(n)], "m": values})
    se = bootstrap_standard_error(per_assay, decimals=None)["m"]
    analytic = values.std(ddof=1) / math.sqrt(n)
    assert se == pytest.approx(analytic, rel=0.04)


def test_stratified_bootstrap_close_to_analytic_standard_error():
    # two selection types, one assay per protein: SE = (1/2) sqrt(s1^2/n1 + s2^2/n2)
    rng = np.random.default_rng(8)
    n1, n2 = 800, 400
    v1, v2 = rng.normal(0, 0.1, n1), rng.normal(0, 0.3, n2)
    ids = [f"D{i}" for i in range(n1 + n2)]
    reference = pd.DataFrame(
        {
            "DMS_id": ids,
            "UniProt_ID": [f"P{i}" for i in range(n1 + n2)],
            "coarse_selection_type": ["Stability"] * n1 + ["Activity"] * n2,
        }
    )
    per_assay = pd.DataFrame({"DMS_id": ids, "m": np.concatenate([v1, v2])})
    se = bootstrap_standard_error(per_assay, reference, decimals=None)["m"]
    analytic = 0.5 * math.sqrt(v1.var(ddof=1) / n1 + v2.var(ddof=1) / n2)
    assert se == pytest.approx(analytic, rel=0.04)


def test_bootstrap_is_seeded_and_baseline_has_zero_error():
    per_assay = _toy_per_assay().assign(n=[0.2, 0.4, 0.1, 0.3, 0.6])
    ref = _toy_reference()
    a = bootstrap_standard_error(per_assay, ref, n_resamples=500)
    assert a == bootstrap_standard_error(per_assay, ref, n_resamples=500)
    assert a != bootstrap_standard_error(per_assay, ref, n_resamples=500, seed=1)
    diff = bootstrap_standard_error(per_assay, ref, baseline="m", n_resamples=500)
    assert diff["m"] == 0.0 and diff["n"] > 0
    with pytest.raises(AggregationInputError, match="baseline 'x'"):
        bootstrap_standard_error(per_assay, ref, baseline="x")


# ----------------------------------------------------------------------------------------------
# Paired Z-test
# ----------------------------------------------------------------------------------------------
def _pair(n: int = 150, shift: float = 0.05, seed: int = 11) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    ids = [f"D{i}" for i in range(n)]
    b = pd.Series(rng.uniform(0, 0.5, n), index=ids)
    a = b + shift + rng.normal(0, 0.05, n)
    return a, b


def test_paired_z_test_sign_and_p_value():
    a, b = _pair()
    better = paired_z_test(a, b)
    assert isinstance(better, PairedZTest) and better.n_assays == 150
    assert better.mean_difference == pytest.approx((a.round(3) - b.round(3)).mean())
    assert better.z == pytest.approx(better.mean_difference / better.standard_error)
    assert better.p_value == pytest.approx(norm.sf(better.z))
    assert better.z > 5 and better.p_value < 1e-6
    worse = paired_z_test(b, a)
    assert worse.z == pytest.approx(-better.z)
    assert worse.p_value == pytest.approx(1 - better.p_value) and worse.p_value > 0.99
    # the standard error is that of the mean of the differences, ~ sd / sqrt(n)
    d = a.round(3) - b.round(3)
    assert better.standard_error == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)), rel=0.05)
    assert set(better.as_dict()) == {"mean_difference", "standard_error", "z", "p_value", "n_assays"}


def test_paired_z_test_no_difference_is_not_significant():
    a, b = _pair(shift=0.0, seed=12)
    result = paired_z_test(a, b)
    assert abs(result.z) < 3 and 0.001 < result.p_value < 0.999
    same = paired_z_test(a, a)  # all differences 0 -> SE 0 -> z undefined
    assert same.mean_difference == 0.0 and same.standard_error == 0.0 and math.isnan(same.z)


def test_paired_z_test_with_reference_uses_proteingym_average():
    ref = _toy_reference()
    a = {"A1": 0.1, "A2": 0.3, "A3": 0.5, "A4": 0.9, "A5": 0.7}
    b = {"A1": 0.0, "A2": 0.2, "A3": 0.5, "A4": 0.5, "A5": 0.6}
    result = paired_z_test(a, b, ref, n_resamples=2000)
    per_assay = pd.DataFrame({"DMS_id": list(a), "a": list(a.values()), "b": list(b.values())})
    summary = aggregate(per_assay, ref, "spearman")
    assert result.mean_difference == pytest.approx(summary["a"]["average"] - summary["b"]["average"])
    assert result.standard_error == pytest.approx(
        bootstrap_standard_error(per_assay, ref, baseline="b", n_resamples=2000)["a"]
    )


def test_paired_z_test_errors():
    a, b = _pair(n=5)
    with pytest.raises(AggregationInputError, match=r"only in a \[D4\].*only in b \[X9\]"):
        paired_z_test(a, b.rename({"D4": "X9"}))
    with pytest.raises(AggregationInputError, match="at least 2 assays"):
        paired_z_test(a.iloc[:1], b.iloc[:1])
    with pytest.raises(AggregationInputError, match="NaN for assay"):
        paired_z_test(a.where(a.index != "D0"), b)
    with pytest.raises(AggregationInputError, match="ZZ.*not in the reference"):
        paired_z_test({"ZZ": 0.1, "A1": 0.2}, {"ZZ": 0.0, "A1": 0.1}, _toy_reference())


# ----------------------------------------------------------------------------------------------
# data/fetch_proteingym.py (offline: a fake downloader)
# ----------------------------------------------------------------------------------------------
def _load_fetch_script():
    spec = importlib.util.spec_from_file_location("fetch_proteingym", REPO / "data" / "fetch_proteingym.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_script_help_exits_zero(capsys):
    fetch = _load_fetch_script()
    with pytest.raises(SystemExit) as exit_info:
        fetch.main(["--help"])
    assert exit_info.value.code == 0
    assert "--output" in capsys.readouterr().out
    args = fetch.parse_args([])
    assert args.output == "data/proteingym/full"
    assert args.zip_url == (
        "https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.3/DMS_ProteinGym_substitutions.zip"
    )
    with pytest.raises(SystemExit):
        fetch.parse_args(["--sha256", "xyz"])


def test_fetch_script_with_fake_downloader(tmp_path, capsys):
    fetch = _load_fetch_script()
    calls = []

    def fake_download(url: str, out: str, timeout: float) -> None:
        calls.append(url)
        if url.endswith(".zip"):
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as z:
                z.writestr("DMS_ProteinGym_substitutions/A_1.csv", "mutant,DMS_score\nM1A,0.1\n")
                z.writestr("DMS_ProteinGym_substitutions/B_2.csv", "mutant,DMS_score\nM1C,0.2\n")
                z.writestr("__MACOSX/DMS_ProteinGym_substitutions/._A_1.csv", "junk")
            Path(out).write_bytes(buffer.getvalue())
        else:
            Path(out).write_text("DMS_id,UniProt_ID,coarse_selection_type\nA_1,P,Activity\n")

    out_dir = tmp_path / "full"
    assert fetch.main(["--output", str(out_dir)], downloader=fake_download) == 0
    assays = out_dir / "DMS_ProteinGym_substitutions"
    assert sorted(p.name for p in assays.iterdir()) == ["A_1.csv", "B_2.csv"]
    assert (out_dir / "DMS_substitutions.csv").is_file()
    assert (out_dir / "DMS_substitutions_Spearman_DMS_level.csv").is_file()  # published values, read beside it
    assert not list(out_dir.glob("*.zip")) and not list(out_dir.glob(".extract-*"))
    printed = capsys.readouterr().out
    assert f"--assays {assays}" in printed and f"--reference {out_dir / 'DMS_substitutions.csv'}" in printed
    assert len(calls) == 3 and any(c.endswith("DMS_substitutions_Spearman_DMS_level.csv") for c in calls)
    # rerun: everything present, nothing downloaded
    assert fetch.main(["--output", str(out_dir)], downloader=fake_download) == 0
    assert len(calls) == 3
    # a wrong --sha256 stops before extracting
    other = tmp_path / "other"
    with pytest.raises(OSError, match="SHA-256"):
        fetch.main(["--output", str(other), "--sha256", "0" * 64], downloader=fake_download)
    assert not (other / "DMS_ProteinGym_substitutions").exists()
