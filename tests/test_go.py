"""GO function prediction (issue 7, item 2): ontology and propagation, information accretion, CAFA files, the MLP,
the frequency baseline scored by cafaeval (checked against an independent cafaeval run on the full ontology), the
long-protein subset, file-format errors and the ``go`` suite's result cache."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import EsmTokenizer

from bitesm.cli import main as bitesm_main
from bitesm.data import read_fasta
from bitesm.evaluation.cache import ResultCache, model_fingerprint
from bitesm.evaluation.go_prediction import (
    DEFAULT_GO_DATA,
    AspectScores,
    GoClassifier,
    evaluate_go,
    frequency_baseline,
    go_suite,
    run_cafaeval,
    write_predictions,
)
from bitesm.evaluation.ontology import (
    GoDataWarning,
    GoFormatError,
    information_accretion,
    load_ontology,
    propagate,
    read_ia,
    read_terms_tsv,
    write_ia,
)
from bitesm.evaluation.run import EvalSettings

from conftest import REPO, tiny_esm

ESM_DIR = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
GO = REPO / "data" / "go"

# A, B, C, D, E: biological process (D is_a B, part_of C; E regulates D: not a parent); M, N: molecular function
# (N part_of B crosses namespaces: dropped); F is obsolete; GO:0000099 is an alt_id of D.
TOY_OBO = """format-version: 1.2

[Typedef]
id: part_of
name: part of

[Term]
id: GO:0000001
name: A root
namespace: biological_process

[Term]
id: GO:0000002
name: B
namespace: biological_process
is_a: GO:0000001 ! A

[Term]
id: GO:0000003
name: C
namespace: biological_process
is_a: GO:0000001 ! A

[Term]
id: GO:0000004
name: D: two parents
namespace: biological_process
alt_id: GO:0000099
is_a: GO:0000002 ! B
relationship: part_of GO:0000003 ! C

[Term]
id: GO:0000005
name: E
namespace: biological_process
is_a: GO:0000001 ! A
relationship: regulates GO:0000004 ! D

[Term]
id: GO:0000006
name: F obsolete
namespace: biological_process
is_obsolete: true
is_a: GO:0000001 ! A

[Term]
id: GO:0000010
name: M root
namespace: molecular_function

[Term]
id: GO:0000011
name: N
namespace: molecular_function
is_a: GO:0000010 ! M
relationship: part_of GO:0000002 ! B
"""
A, B, C, D, E, F, M, N, ALT = (f"GO:00000{i:02d}" for i in (1, 2, 3, 4, 5, 6, 10, 11, 99))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.obo"
    path.write_text(TOY_OBO)
    return load_ontology(path)


@pytest.fixture(scope="module")
def go2014():
    return load_ontology(GO / "go_2014-01_metastudent.obo.gz")


def toy_annotations() -> pd.DataFrame:
    return pd.DataFrame({"EntryID": ["p1", "p1", "p2", "p3", "p4"], "term": [D, M, B, E, N],
                         "aspect": ["BPO", "MFO", "BPO", "BPO", "MFO"]})


# ----------------------------------------------------------------------------- (2) ontology, propagation, IA
def test_toy_ontology_ancestors(toy):
    assert set(toy.terms("BPO")) == {A, B, C, D, E} and set(toy.terms("MFO")) == {M, N}
    assert F not in toy  # obsolete
    assert toy.ancestors(D) == {D, B, C, A}  # is_a + part_of
    assert toy.ancestors(D, include_self=False) == {B, C, A}
    assert toy.ancestors(E) == {E, A}  # regulates is not followed
    assert toy.ancestors(N) == {N, M}  # part_of into another namespace dropped
    assert toy.ancestors(A) == {A}
    assert toy.canonical(ALT) == (D,) and toy.canonical(F) == ()
    assert set(toy.children(A)) == {B, C, E} and toy.depth(D) == 3


def test_toy_propagation(toy):
    prop = propagate(toy_annotations(), toy)
    got = {(p, t, a) for p, t, a in zip(prop.EntryID, prop.term, prop.aspect)}
    assert got == {("p1", t, "BPO") for t in (A, B, C, D)} | {("p1", M, "MFO"), ("p2", A, "BPO"),
                                                              ("p2", B, "BPO"), ("p3", A, "BPO"), ("p3", E, "BPO"),
                                                              ("p4", M, "MFO"), ("p4", N, "MFO")}
    again = propagate(prop, toy)  # idempotent
    assert set(map(tuple, again.values)) == set(map(tuple, prop.values))


def test_toy_information_accretion(toy, tmp_path):
    # BPO proteins p1, p2, p3 (+1 artificial protein annotated with everything); MFO p1, p4 (+1).
    ia = information_accretion(toy_annotations(), toy)
    expected = {A: 0.0, B: math.log2(4 / 3), C: 1.0, D: 0.0, E: 1.0, M: 0.0, N: math.log2(3 / 2)}
    assert ia == pytest.approx(expected, abs=1e-12)
    ia_raw = information_accretion(toy_annotations(), toy, pseudocount=False)
    assert ia_raw == pytest.approx({A: 0.0, B: math.log2(1.5), C: math.log2(3), D: 0.0, E: math.log2(3), M: 0.0,
                                    N: 1.0}, abs=1e-12)
    from cafaeval.parser import ia_parser

    path = write_ia(ia, tmp_path / "IA.txt")
    assert ia_parser(str(path)) == ia == read_ia(path)


# ----------------------------------------------------------------------------- (4) file formats
def test_terms_tsv_reads_gz_and_errors_name_file_and_line(toy, tmp_path):
    good = tmp_path / "terms.tsv.gz"
    with gzip.open(good, "wt") as f:
        f.write(f"EntryID\tterm\taspect\np1\t{D}\tBPO\np1\t{D}\tBPO\np2\t{ALT}\tBPO\n\np3\t{N}\tMFO\n")
    df = read_terms_tsv(good, toy)
    assert list(df.itertuples(index=False, name=None)) == [("p1", D, "BPO"), ("p2", D, "BPO"), ("p3", N, "MFO")]

    cases = {
        "fields.tsv": (f"EntryID\tterm\taspect\np1\t{D}\tBPO\np2\t{D}\n", "line 3", None),
        "extra.tsv": (f"p1\t{D}\tBPO\tx\n", "line 1", toy),
        "aspect.tsv": (f"p1\t{D}\tBPO\np2\t{D}\tBP\n", "line 2", toy),
        "empty.tsv": (f"p1\t{D}\tBPO\n\t{D}\tBPO\n", "line 2", toy),
    }
    for name, (text, where, onto) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(GoFormatError) as err:
            read_terms_tsv(tmp_path / name, onto)
        assert str(tmp_path / name) in str(err.value) and where in str(err.value) and "Fix" in str(err.value)

    unknown = tmp_path / "unknown.tsv"
    unknown.write_text(f"p1\t{D}\tBPO\np2\t{F}\tBPO\np3\tGO:1234567\tMFO\np4\t{N}\tBPO\n")
    with pytest.raises(GoFormatError, match=r"unknown\.tsv, line 2: term GO:0000006"):
        read_terms_tsv(unknown, toy, on_unknown="error")
    with pytest.warns(GoDataWarning, match=r"dropped 2 .*GO:0000006 \(line 2\).*1 annotation\(s\) take their aspect"):
        df = read_terms_tsv(unknown, toy)
    assert list(df.itertuples(index=False, name=None)) == [("p1", D, "BPO"), ("p4", N, "MFO")]

    bad_ia = tmp_path / "IA.txt"
    bad_ia.write_text(f"{A}\t0.5\n{B}\tabc\n")
    with pytest.raises(GoFormatError, match=r"IA\.txt, line 2"):
        read_ia(bad_ia)
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        read_terms_tsv(tmp_path / "missing.tsv")


def test_cli_errors_are_reported(tmp_path, capsys):
    assert bitesm_main(["eval", "go", "--model", str(tmp_path / "no-model"), "--output", str(tmp_path / "out")]) == 2
    assert "bitesm eval go: error: cannot load model" in capsys.readouterr().err
    assert bitesm_main(["eval", "go", "--model", "x", "--output", str(tmp_path), "--train-terms",
                        str(tmp_path / "t.tsv")]) == 2
    assert "bitesm eval go: error: --train-terms" in capsys.readouterr().err
    assert bitesm_main(["eval", "go", "--model", "x", "--output", str(tmp_path), "--min-count", "0"]) == 2
    assert "bitesm eval go: error: --min-count must be >= 1, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- CAFA prediction files
def test_write_predictions_consistent_top_n(toy, tmp_path):
    preds = {"BPO": AspectScores(["p1", "p2"], [D, E, B], np.array([[0.9, 0.2, 0.1], [0.005, 0.3, 0.6]], np.float32))}
    write_predictions(tmp_path / "p.tsv", preds, toy, top_n=3)
    rows = [line.split("\t") for line in (tmp_path / "p.tsv").read_text().splitlines()]
    got = {(p, t): float(s) for p, t, s in rows}
    # p1: D 0.9 pushes 0.9 to B, C, A (ancestors); top 3 by score, ties shallower first: A, B, C (D cut).
    assert [(p, t) for p, t, _ in rows if p == "p1"] == [("p1", A), ("p1", B), ("p1", C)]
    assert got[("p1", A)] == pytest.approx(0.9) and got[("p1", B)] == pytest.approx(0.9)
    # p2: D below min_score (dropped); B 0.6, A max(0.6, 0.3) = 0.6, E 0.3; C gets D's 0.005 < 0.01: dropped.
    assert {t: s for (p, t), s in got.items() if p == "p2"} == pytest.approx({A: 0.6, B: 0.6, E: 0.3})


# ----------------------------------------------------------------------------- (3) the MLP
def clusters(n_per: int, seed: int, dim: int = 16):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(0, 1, (3, dim)) * 3
    labels = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]], np.float32)  # cluster -> 4 targets
    k = np.repeat(np.arange(3), n_per)
    x = centers[k] + rng.normal(0, 1, (len(k), dim))
    return x.astype(np.float32), labels[k], k


def test_mlp_learns_clusters_and_is_deterministic():
    x, y, _ = clusters(60, 0)
    xt, yt, _ = clusters(40, 1)
    clf = GoClassifier(hidden=(32,), max_epochs=60, patience=5, seed=3).fit(x, y)
    p = clf.predict_proba(xt)
    assert p.shape == (120, 4) and p.dtype == np.float32
    assert ((p > 0.5) == (yt > 0.5)).mean() > 0.97
    again = GoClassifier(hidden=(32,), max_epochs=60, patience=5, seed=3).fit(x, y).predict_proba(xt)
    np.testing.assert_array_equal(p, again)


def test_early_stopping_restores_best_epoch():
    x, y, _ = clusters(60, 0)
    xv, yv, _ = clusters(20, 2)
    yv = 1 - yv  # validation labels contradict training: validation loss rises as the fit improves
    clf = GoClassifier(hidden=(32,), lr=1e-2, max_epochs=50, patience=3, seed=0).fit(x, y, xv, yv)
    losses = [h["val_loss"] for h in clf.history]
    assert clf.best_epoch == int(np.argmin(losses)) + 1
    assert len(clf.history) == clf.best_epoch + 3 < 50  # stopped after `patience` epochs without improvement
    with torch.inference_mode():
        restored = float(torch.nn.functional.binary_cross_entropy_with_logits(
            clf.model(torch.as_tensor(xv)), torch.as_tensor(yv)))
    assert restored == pytest.approx(clf.best_val_loss, abs=1e-6) and clf.best_val_loss == min(losses)


# ----------------------------------------------------------------------------- (3) + (5) evaluate_go on a toy case
def toy_split():
    """Clusters -> terms of the toy ontology; every 4th validation protein is 'long' (2,000 residues)."""
    cl_terms = [[D], [E], [B, E]]
    mf_terms = [[N], [M], [N]]
    x, _, k = clusters(40, 0)
    xv, _, kv = clusters(8, 5)
    def table(prefix, ks):
        rows = []
        for i, c in enumerate(ks):
            rows += [(f"{prefix}{i}", t, "BPO") for t in cl_terms[c]]
            rows += [(f"{prefix}{i}", t, "MFO") for t in mf_terms[c]]
        return pd.DataFrame(rows, columns=["EntryID", "term", "aspect"])
    train = table("t", k)
    valid = table("v", kv)
    lengths = {f"v{i}": (2000 if i % 4 == 0 else 300) for i in range(len(kv))}
    return ([f"t{i}" for i in range(len(k))], x), ([f"v{i}" for i in range(len(kv))], xv), train, valid, lengths


def test_evaluate_go_toy_long_subset(toy, tmp_path):
    tr, va, train, valid, lengths = toy_split()
    res = evaluate_go(tr, va, train, valid, toy, tmp_path, lengths=lengths, ia="compute", min_count=5,
                      classifier={"hidden": [32], "max_epochs": 40}, n_cpu=1)
    long_ids = [p for p, n in lengths.items() if n > 1024]
    assert res["n_valid_long"] == len(long_ids) == 6
    assert res["n_proteins"] == {"all": {"BPO": 24, "CCO": 0, "MFO": 24}, "long": {"BPO": 6, "CCO": 0, "MFO": 6}}
    for method in ("mlp", "frequency"):
        assert set(res["results"][method]["long"]) == {"BPO", "MFO"}
    # The long subset is cafaeval on the long proteins' ground truth only.
    gt = tmp_path / "long_gt.tsv"
    valid[valid.EntryID.isin(long_ids)][["EntryID", "term"]].to_csv(gt, sep="\t", header=False, index=False)
    direct = run_cafaeval(toy.obo_path, tmp_path / "predictions", gt, tmp_path / "IA.txt")
    for method in ("mlp", "frequency"):
        assert direct[method] == res["results"][method]["long"]
    # Separable clusters: the MLP is (nearly) perfect, the frequency baseline is not.
    assert res["summary"]["fmax_BPO"] > 0.95 and res["summary"]["fmax_MFO"] > 0.95
    assert res["summary"]["fmax_BPO_long"] > 0.95
    assert res["summary"]["baseline_fmax_BPO"] < 0.9
    assert res["training"]["BPO"]["best_epoch"] >= 1
    assert (tmp_path / "go.json").is_file() and "| MLP | BPO |" in (tmp_path / "go.md").read_text()
    # An annotated protein without an embedding is an error.
    with pytest.raises(GoFormatError, match="no valid embedding"):
        evaluate_go(tr, (va[0][1:], va[1][1:]), train, valid, toy, tmp_path / "x", methods=["frequency"])


# ----------------------------------------------------------------------------- (1) frequency baseline vs cafaeval
@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_frequency_baseline_equals_independent_cafaeval(go2014, tmp_path):
    from cafaeval.evaluation import cafa_eval

    rng = np.random.default_rng(0)
    train = read_terms_tsv(DEFAULT_GO_DATA["train_terms"], go2014)
    valid = read_terms_tsv(DEFAULT_GO_DATA["valid_terms"], go2014)
    train_ids = sorted(rng.choice(train.EntryID.unique(), 4000, replace=False))
    valid_ids = sorted(rng.choice(valid.EntryID.unique(), 150, replace=False))
    train = train[train.EntryID.isin(train_ids)]
    valid = valid[valid.EntryID.isin(valid_ids)]
    zeros = lambda ids: (list(ids), np.zeros((len(ids), 2), np.float32))  # noqa: E731 (the baseline ignores them)
    res = evaluate_go(zeros(train_ids), zeros(valid_ids), train, valid, go2014, tmp_path, ia="compute",
                      methods=["frequency"], n_cpu=1)
    # Independent run: cafaeval itself on the full 2014 GO (not bitesm's evaluation sub-ontology).
    df, best = cafa_eval(str(go2014.obo_path), str(tmp_path / "predictions"), str(tmp_path / "ground_truth/all.tsv"),
                         ia=str(tmp_path / "IA.txt"), n_cpu=1)
    names = {"biological_process": "BPO", "cellular_component": "CCO", "molecular_function": "MFO"}
    ours = res["results"]["frequency"]["all"]
    assert len(best["f"]) == 3
    for (fname, ns, tau), row in best["f"].iterrows():
        rec = ours[names[ns]]
        assert fname == "frequency.tsv"
        assert rec["fmax"] == float(row["f"]) and rec["threshold"] == tau  # exact
        assert rec["coverage"] == float(row["cov"]) and rec["precision"] == float(row["pr"])
    for (fname, ns, tau), row in best["f_w"].iterrows():
        assert ours[names[ns]]["wfmax"] == pytest.approx(float(row["f_w"]), rel=1e-12, abs=0)
    # The frequency baseline itself: fraction of the aspect's training proteins, 300 terms per aspect.
    base = frequency_baseline(train, go2014)
    assert all(len(f) == 300 for f in base.frequencies.values())
    assert base.frequencies["BPO"]["GO:0008150"] == 1.0
    pred = pd.read_csv(tmp_path / "predictions/frequency.tsv", sep="\t", header=None)
    written = sum(v >= 0.01 for f in base.frequencies.values() for v in f.values())  # lower scores never count
    assert pred[0].nunique() == 150 and len(pred) == 150 * written


# ----------------------------------------------------------------------------- (6) the go suite and its cache
def write_subset(tmp_path: Path, n_train: int, n_valid: int) -> dict[str, str]:
    out = {}
    for split, n in (("train", n_train), ("valid", n_valid)):
        records = read_fasta(DEFAULT_GO_DATA[f"{split}_fasta"])
        # Proteins of 60-200 residues, plus two longer than 1,024 residues in valid (cheap for a tiny model).
        short = [r for r in records if 60 <= len(r[1]) <= 200][:n]
        long = [r for r in records if 1024 < len(r[1]) < 1200][:2] if split == "valid" else []
        chosen = short + long
        fasta = tmp_path / f"{split}.fasta"
        fasta.write_text("".join(f">{i}\n{s}\n" for i, s in chosen))
        terms = pd.read_csv(DEFAULT_GO_DATA[f"{split}_terms"], sep="\t")
        terms = terms[terms.EntryID.isin({i for i, _ in chosen})]
        terms.to_csv(tmp_path / f"{split}_terms.tsv", sep="\t", index=False)
        out[f"{split}_fasta"], out[f"{split}_terms"] = str(fasta), str(tmp_path / f"{split}_terms.tsv")
    return out


def test_go_suite_caches_result(tmp_path, monkeypatch):
    files = write_subset(tmp_path, 150, 40)
    tok = EsmTokenizer.from_pretrained(str(ESM_DIR))
    model = tiny_esm()
    options = {**files, "min_count": 10, "classifier": {"hidden": [16], "max_epochs": 5},
               "output_dir": str(tmp_path / "out"), "n_cpu": 1}
    settings = EvalSettings(extra={"go": options})
    cache = ResultCache(tmp_path / "cache")
    h = model_fingerprint(model)
    first = go_suite(model, tok, settings, cache, h, False)
    assert first["cached"] is False and cache.misses == 1 and cache.hits == 0
    assert first["n_valid_long"] == 2 and first["embedding"]["hidden_size"] == 32
    for key in ("fmax_BPO", "fmax_CCO", "fmax_MFO", "fmax_BPO_long", "baseline_fmax_MFO", "wfmax_CCO"):
        assert isinstance(first["summary"][key], float), key
    assert (tmp_path / "out" / "predictions" / "mlp.tsv").is_file()

    def no_embedding(*args, **kwargs):
        raise AssertionError("a cache hit must not embed")

    monkeypatch.setattr("bitesm.evaluation.go_prediction.embed_sequences", no_embedding)
    second = go_suite(model, tok, settings, cache, h, False)
    assert cache.hits == 1 and second["cached"] is True
    assert second["summary"] == first["summary"] and second["results"] == first["results"]
    # A setting that changes numbers misses (and would embed).
    changed = EvalSettings(extra={"go": {**options, "min_count": 11}})
    with pytest.raises(AssertionError, match="must not embed"):
        go_suite(model, tok, changed, cache, h, False)
    with pytest.raises(GoFormatError, match="unknown go suite option"):
        go_suite(model, tok, EvalSettings(extra={"go": {"min_cont": 3}}), cache, h, False)
