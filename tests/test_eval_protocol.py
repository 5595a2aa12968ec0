"""ProteinGym's whole protocol in bitesm: the three scoring strategies against an independent implementation
(tests/reference_scoring.py), multi-mutants and long windows, the summary against ProteinGym's aggregation, the
result cache (hits, invalidation), ``bitesm eval run`` / ``watch`` / ``compare``."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import EsmForMaskedLM, EsmTokenizer

from bitesm.cli import main as bitesm_main
from bitesm.evaluation import (
    STRATEGIES,
    MutantMismatchError,
    ProteinGymInputError,
    evaluate_assay,
    evaluate_proteingym,
    overlapping_windows,
    score_mutants,
)
from bitesm.evaluation.cache import ResultCache, model_fingerprint
from bitesm.evaluation.compare import CompareInputError, compare, markdown_table
from bitesm.evaluation.run import EvalInputError, EvalSettings, checkpoint_models, parse_suites, run_evaluation, watch

from conftest import REPO, tiny_esm

sys.path.insert(0, str(Path(__file__).parent))
import reference_scoring as ref  # noqa: E402

ESM_DIR = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
SUBS = REPO / "data" / "proteingym" / "substitutions"
REF = REPO / "data" / "proteingym" / "reference" / "DMS_substitutions.csv"
TAT = "TAT_HV1BR_Fernandes_2016"  # 86 residues
CCDB = "CCDB_ECOLI_Adkar_2012"  # 101 residues
AA = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def tok():
    return EsmTokenizer.from_pretrained(str(ESM_DIR))


def target_seq(dms_id: str) -> str:
    table = pd.read_csv(REF)
    return table.loc[table.DMS_id == dms_id, "target_seq"].item()


def random_case(length: int, n: int, seed: int = 0) -> tuple[str, list[str]]:
    rng = np.random.default_rng(seed)
    seq = "".join(rng.choice(list(AA), length))
    mutants = []
    for p in rng.choice(length, n, replace=False):
        mt = rng.choice([a for a in AA if a != seq[p]])
        mutants.append(f"{seq[p]}{p + 1}{mt}")
    mutants += [f"{mutants[0]}:{mutants[1]}", f"{mutants[2]}:{mutants[3]}:{mutants[4]}"]  # multi-mutants
    return seq, mutants


# ----------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("max_positions", [1026, 66])  # whole sequence / ProteinGym's windows (W = 64 < 152 tokens)
def test_strategies_equal_independent_implementation(tok, strategy, max_positions):
    model = tiny_esm(max_positions)
    seq, mutants = random_case(150, 12 if strategy == "pseudo-ppl" else 30)
    scores, info = score_mutants(model, tok, seq, mutants, strategy=strategy, batch_size=7)
    window = None if max_positions == 1026 else 64
    expected = ref.STRATEGIES[strategy](model, tok, seq, mutants, window)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert info["strategy"] == strategy and info["model_window"] == max_positions - 2
    if window:
        assert info["n_windowed_positions"] > 0 and info["max_forward_tokens"] == 64
    # multi-mutant = sum of its substitutions for the marginal strategies
    if strategy != "pseudo-ppl":
        assert scores[-2] == pytest.approx(scores[0] + scores[1], abs=1e-9)


def test_strategies_differ_and_pseudo_ppl_batches_across_sequences(tok):
    model = tiny_esm()
    seq, mutants = random_case(40, 6)
    mm = score_mutants(model, tok, seq, mutants, strategy="masked-marginals")[0]
    wt = score_mutants(model, tok, seq, mutants, strategy="wt-marginals")[0]
    pll, info = score_mutants(model, tok, seq, mutants, strategy="pseudo-ppl", batch_size=64)
    assert not np.allclose(mm, wt) and not np.allclose(mm, pll)
    # 1 wild type + 8 distinct mutants, 40 masked copies each, 64 copies per pass
    assert info["n_forward_sequences"] == 9 * 40 and info["n_forward_batches"] == -(-9 * 40 // 64)


def test_overlapping_windows_match_proteingym_constants():
    windows, weights = overlapping_windows(3035, 1024)
    # ProteinGym, T = 3035: left windows step 511 from 0, right windows from the end, until they cross
    assert windows[:4] == [(0, 1024), (2011, 3035), (511, 1535), (1500, 2524)]
    assert all(e - s == 1024 for s, e in windows)
    assert weights[0] == 1 and weights[1023] == 1 and weights[512] == 1
    assert weights[128].item() == pytest.approx(0.5) and weights[894].item() == pytest.approx(0.5)
    covered = torch.zeros(3035)
    for s, e in windows:
        covered[s:e] += 1
    assert bool((covered > 0).all())
    with pytest.raises(ValueError, match="n_tokens"):
        overlapping_windows(1000, 1024)


def test_unknown_strategy_and_mutated_sequence_mismatch(tok, tmp_path):
    model = tiny_esm()
    with pytest.raises(ValueError, match="strategy must be one of"):
        score_mutants(model, tok, "MKT", ["M1A"], strategy="pll")
    df = pd.read_csv(SUBS / f"{TAT}.csv.gz").head(20)
    df.loc[3, "mutated_sequence"] = "M" * len(df.loc[3, "mutated_sequence"])
    df.to_csv(tmp_path / f"{TAT}.csv", index=False)
    with pytest.raises(ProteinGymInputError, match=rf"{TAT}: row 3 .*mutated_sequence.*Fix"):
        evaluate_assay(model, tok, tmp_path / f"{TAT}.csv", target_seq(TAT))
    with pytest.raises(MutantMismatchError, match="does not match"):
        score_mutants(model, tok, "MKT", ["A1C"], strategy="wt-marginals")


@pytest.mark.parametrize("strategy", ["masked-marginals", "wt-marginals"])
def test_real_assay_spearman_equals_transformers_and_scipy(tok, strategy):
    model = tiny_esm()
    res = evaluate_assay(model, tok, SUBS / f"{TAT}.csv.gz", target_seq(TAT), strategy=strategy, batch_size=64)
    df = pd.read_csv(SUBS / f"{TAT}.csv.gz")
    expected = ref.STRATEGIES[strategy](model, tok, target_seq(TAT), df.mutant.tolist(), 1024)
    assert res["spearman"] == pytest.approx(ref.spearman(expected, df.DMS_score), abs=1e-6)
    np.testing.assert_allclose(res["scores"], expected, atol=1e-5)
    assert set(res) >= {"auc", "mcc", "ndcg", "recall"} and 0 <= res["auc"] <= 1


def test_summary_is_proteingyms_aggregation(tok):
    model = tiny_esm()
    ids = [TAT, CCDB, "SUMO1_HUMAN_Weile_2017", "REV_HV1H2_Fernandes_2016"]
    out = evaluate_proteingym(model, tok, SUBS, REF, assay_ids=ids, progress=False, n_bootstrap=500)
    per_assay = {a["DMS_id"]: a["spearman"] for a in out["assays"]}
    reference = pd.read_csv(REF)
    assert out["summary"]["spearman"] == pytest.approx(ref.proteingym_summary(per_assay, reference), abs=1e-12)
    # three selection types here, so the summary is not the plain mean
    assert out["summary"]["spearman"] != pytest.approx(out["mean_spearman"], abs=1e-4)
    assert out["summary"]["spearman_bootstrap_se"] > 0
    published = {a["DMS_id"]: a["published_spearman_ESM2_8M"] for a in out["assays"]}
    assert out["published_summary"]["ESM2_8M"]["spearman"] == pytest.approx(
        ref.proteingym_summary(published, reference), abs=1e-12)


# ----------------------------------------------------------------------------- cache and eval run
def small_settings(**kw) -> EvalSettings:
    return EvalSettings(assay_ids=f"{TAT},{CCDB}", batch_size=64, n_bootstrap=200, **kw)


@pytest.fixture()
def model_dir(tmp_path, tok):
    path = tmp_path / "model"
    tiny_esm().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_eval_run_second_run_is_cached_and_identical(model_dir, tmp_path):
    cache = ResultCache(tmp_path / "cache")
    t0 = time.perf_counter()
    first = run_evaluation(model_dir, "proteingym", tmp_path / "a", small_settings(), cache, progress=False)
    t1 = time.perf_counter()
    second = run_evaluation(model_dir, "proteingym", tmp_path / "b", small_settings(), ResultCache(tmp_path / "cache"),
                            progress=False)
    t2 = time.perf_counter()
    assert first["suites"]["proteingym"]["cache_misses"] == 2 and second["suites"]["proteingym"]["cache_hits"] == 2
    a = json.loads((tmp_path / "a" / "proteingym.json").read_text())
    b = json.loads((tmp_path / "b" / "proteingym.json").read_text())
    assert [x["scores"] for x in a["assays"]] == [x["scores"] for x in b["assays"]]
    assert a["summary"] == b["summary"] and a["model_hash"] == b["model_hash"]
    assert (t2 - t1) < (t1 - t0)  # the ratio on full runs is in benchmarks/README.md
    manifest = json.loads((tmp_path / "b" / "run.json").read_text())
    assert manifest["model_hash"] == a["model_hash"] and manifest["suites"]["proteingym"]["cache_hits"] == 2


def test_cache_invalidated_by_one_weight_a_setting_or_an_assay_file(model_dir, tmp_path, tok):
    cache = ResultCache(tmp_path / "cache")
    run_evaluation(model_dir, "proteingym", tmp_path / "a", small_settings(), cache, progress=False)
    model = EsmForMaskedLM.from_pretrained(model_dir)
    before = model_fingerprint(model)
    with torch.no_grad():
        model.esm.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-3
    assert model_fingerprint(model) != before
    changed = tmp_path / "changed"
    model.save_pretrained(changed)
    tok.save_pretrained(changed)
    out = run_evaluation(changed, "proteingym", tmp_path / "b", small_settings(), cache, progress=False)
    assert out["suites"]["proteingym"]["cache_misses"] == 2
    out = run_evaluation(model_dir, "proteingym", tmp_path / "c", small_settings(strategy="wt-marginals"), cache,
                         progress=False)
    assert out["suites"]["proteingym"]["cache_misses"] == 2
    # one assay file edited: only that assay is rescored
    assays = tmp_path / "assays"
    assays.mkdir()
    for dms in (TAT, CCDB):
        shutil.copy(SUBS / f"{dms}.csv.gz", assays)
    settings = EvalSettings(assays=str(assays), reference=str(REF), assay_ids=f"{TAT},{CCDB}", n_bootstrap=200)
    out = run_evaluation(model_dir, "proteingym", tmp_path / "d", settings, cache, progress=False)
    assert out["suites"]["proteingym"]["cache_hits"] == 2
    df = pd.read_csv(assays / f"{TAT}.csv.gz").head(100)
    with gzip.open(assays / f"{TAT}.csv.gz", "wt") as f:
        df.to_csv(f, index=False)
    out = run_evaluation(model_dir, "proteingym", tmp_path / "e", settings, cache, progress=False)
    assert (out["suites"]["proteingym"]["cache_hits"], out["suites"]["proteingym"]["cache_misses"]) == (1, 1)
    # --no-cache recomputes
    out = run_evaluation(model_dir, "proteingym", tmp_path / "f", settings, ResultCache(tmp_path / "cache", False),
                         progress=False)
    assert out["suites"]["proteingym"]["cache_hits"] == 0


def test_suite_errors(model_dir, tmp_path):
    assert parse_suites("proteingym,proteingym") == ["proteingym"]
    with pytest.raises(EvalInputError, match=r"unknown suite\(s\) \['nope'\]; available: \[.*'proteingym'"):
        parse_suites("proteingym,nope")
    assert bitesm_main(["eval", "run", "--model", str(model_dir), "--output", str(tmp_path / "o"),
                        "--suite", "nope"]) == 2
    assert bitesm_main(["eval", "run", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2


def test_eval_run_with_several_suites(model_dir, tmp_path):
    cache = ResultCache(tmp_path / "cache")
    out = run_evaluation(model_dir, "proteingym,contacts", tmp_path / "o", small_settings(), cache, progress=False)
    assert set(out["results"]) == {"proteingym", "contacts"}
    assert (tmp_path / "o" / "contacts.json").is_file() and "precision_at_L" in out["results"]["contacts"]["summary"]
    again = run_evaluation(model_dir, "proteingym,contacts", tmp_path / "o", small_settings(), cache, progress=False)
    assert again["suites"]["contacts"]["cache_hits"] == 1 and again["suites"]["proteingym"]["cache_hits"] == 2
    assert again["results"]["contacts"]["summary"] == out["results"]["contacts"]["summary"]


def test_cli_eval_run(model_dir, tmp_path, capsys):
    args = ["eval", "run", "--model", str(model_dir), "--output", str(tmp_path / "o"), "--assay-ids", TAT,
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "64"]
    assert bitesm_main(args) == 0
    assert "1 computed" in capsys.readouterr().out
    assert bitesm_main(args) == 0
    assert "1 cached" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "proteingym.json").read_text())["n_assays"] == 1


# ----------------------------------------------------------------------------- watch and compare
def fake_run(tmp_path: Path, tok, steps=(10, 20)) -> Path:
    run = tmp_path / "run"
    for k, step in enumerate(steps):
        ckpt = run / "checkpoints" / f"checkpoint-{step:08d}"
        tiny_esm(seed=k).save_pretrained(ckpt / "model")
        tok.save_pretrained(ckpt / "model")
        (ckpt / "trainer_state.json").write_text(json.dumps({"step": step}))
    return run


def test_watch_evaluates_each_checkpoint_once_and_stops_at_the_final_model(tmp_path, tok):
    run = fake_run(tmp_path, tok)
    assert [(n, s) for n, s, _ in checkpoint_models(run)] == [("checkpoint-00000010", 10), ("checkpoint-00000020", 20)]
    cache = ResultCache(tmp_path / "cache")
    settings = EvalSettings(assay_ids=TAT, batch_size=64, n_bootstrap=100)
    first = watch(run, "proteingym", settings, cache, once=True, progress=False, log=lambda s: None)
    assert [e["step"] for e in first] == [10, 20]
    assert watch(run, "proteingym", settings, cache, once=True, progress=False, log=lambda s: None) == []
    final = run / "model"
    tiny_esm(seed=5).save_pretrained(final)
    (final / "trainer_state.json").write_text(json.dumps({"step": 30}))
    # not --once: returns by itself because the final model was evaluated
    last = watch(run, "proteingym", settings, cache, interval=0.01, timeout=600, progress=False, log=lambda s: None)
    assert [e["name"] for e in last] == ["final"]
    history = [json.loads(x) for x in (run / "eval" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [10, 20, 30]
    assert (run / "eval" / "checkpoint-00000020" / "proteingym.json").is_file()
    assert list((run / "tensorboard" / "eval").glob("events.out.tfevents.*"))
    assert len({h["model_hash"] for h in history}) == 3
    with pytest.raises(EvalInputError, match="does not exist"):
        watch(tmp_path / "nope", once=True)


def test_compare_table_statistics_and_plots(tmp_path, tok, model_dir, capsys):
    cache = ResultCache(tmp_path / "cache")
    ids = f"{TAT},{CCDB},SUMO1_HUMAN_Weile_2017"
    for name, seed in (("a", 0), ("b", 1)):
        path = tmp_path / f"model_{name}"
        tiny_esm(seed=seed).save_pretrained(path)
        tok.save_pretrained(path)
        run_evaluation(path, "proteingym", tmp_path / name, EvalSettings(assay_ids=ids, n_bootstrap=200), cache,
                       progress=False)
    result = compare([tmp_path / "a", tmp_path / "b" / "proteingym.json"], REF, labels=["A", "B"], n_bootstrap=500)
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"A", "B", "ESM-2 8M (published)", "ESM-2 35M (published)"}
    per_assay = result["per_assay"]
    reference = pd.read_csv(REF)
    assert rows["B"]["spearman"] == pytest.approx(ref.proteingym_summary(per_assay["B"].to_dict(), reference))
    test = rows["B"]["z_test"]
    assert test["mean_difference"] == pytest.approx(rows["B"]["spearman"] - rows["A"]["spearman"], abs=1e-12)
    assert test["z"] == pytest.approx(test["mean_difference"] / test["standard_error"])
    assert rows["A"]["z_test"] is None
    table = markdown_table(result)
    assert "| A |" in table and f"| {TAT} |" in table and "p |" in table
    assert bitesm_main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output",
                        str(tmp_path / "cmp")]) == 0
    for name in ("compare.md", "spearman_scatter.png", "spearman_bars.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    assert (tmp_path / "cmp" / "spearman_scatter.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(CompareInputError, match="at least two"):
        compare([tmp_path / "a"], REF)
    with pytest.raises(CompareInputError, match="no ProteinGym results"):
        compare([tmp_path / "a", tmp_path / "nothing"], REF)
