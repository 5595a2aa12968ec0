"""Tests for bitesm.evaluation (ProteinGym masked-marginals scoring)."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from transformers import EsmConfig, EsmTokenizer

from bitesm.cli import build_parser
from bitesm.cli import main as bitesm_main
from bitesm.evaluation import (
    MutantMismatchError,
    ProteinGymInputError,
    default_max_residues,
    encode_sequence,
    evaluate_assay,
    evaluate_proteingym,
    get_optimal_window,
    load_assay,
    masked_marginals_scores,
    parse_mutant,
    validate_mutants,
)

from conftest import REPO, tiny_esm

ESM_DIR = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
PG = REPO / "data" / "proteingym"
SUBS = PG / "substitutions"
REF = PG / "reference" / "DMS_substitutions.csv"
CCDB = "CCDB_ECOLI_Adkar_2012"  # 101 residues, 1176 single mutants
TAT = "TAT_HV1BR_Fernandes_2016"  # 86 residues, 1577 single mutants
AA = "ACDEFGHIKLMNPQRSTVWY"


# ----------------------------------------------------------------------------- fixtures / helpers
@pytest.fixture(scope="module")
def tok():
    return EsmTokenizer.from_pretrained(str(ESM_DIR))


def tiny_esm64(max_position_embeddings: int = 1026, seed: int = 0):
    return tiny_esm(max_position_embeddings, seed, hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="module")
def model():
    return tiny_esm64()


@pytest.fixture(scope="module")
def small_ctx_model():
    # max_position_embeddings 66 -> 64-token window (ProteinGym's W) -> 62 residues.
    return tiny_esm64(max_position_embeddings=66, seed=1)


def random_seq(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(AA), size=n))


def pg_get_optimal_window(mutation_position_relative, seq_len_wo_special, model_window):
    """Literal copy of ProteinGym proteingym/utils/scoring_utils.py::get_optimal_window."""
    half_model_window = model_window // 2
    if seq_len_wo_special <= model_window:
        return [0, seq_len_wo_special]
    elif mutation_position_relative < half_model_window:
        return [0, model_window]
    elif mutation_position_relative >= seq_len_wo_special - half_model_window:
        return [seq_len_wo_special - model_window, seq_len_wo_special]
    else:
        return [max(0, mutation_position_relative - half_model_window),
                min(seq_len_wo_special, mutation_position_relative + half_model_window)]


def naive_scores(model, tok, seq, mutants, model_window=None):
    """One forward per substitution, ProteinGym compute_fitness.py style (masked-marginals)."""
    ids = tok(seq, return_tensors="pt")["input_ids"]  # (1, L+2)
    out = []
    for mutant in mutants:
        score = 0.0
        for mutation in mutant.split(":"):
            wt, idx, mt = mutation[0], int(mutation[1:-1]), mutation[-1]
            assert seq[idx - 1] == wt
            i = idx  # token index: +1 for <cls>, -1 for 1-based
            masked = ids.clone()
            masked[0, i] = tok.mask_token_id
            if model_window is not None and ids.size(1) > model_window:
                start, end = pg_get_optimal_window(i, len(seq) + 2, model_window)
                masked = masked[:, start:end]
            else:
                start = 0
            with torch.no_grad():
                lp = torch.log_softmax(model(masked).logits.float(), dim=-1)
            score += (lp[0, i - start, tok.convert_tokens_to_ids(mt)]
                      - lp[0, i - start, tok.convert_tokens_to_ids(wt)]).item()
        out.append(score)
    return np.array(out)


def sample_mutants(seq, positions, seed=0, n_multi=4):
    rng = np.random.default_rng(seed)
    singles = []
    for p in positions:
        mt = rng.choice([a for a in AA if a != seq[p - 1]])
        singles.append(f"{seq[p - 1]}{p}{mt}")
    multis = [":".join(rng.choice(singles, size=2, replace=False)) for _ in range(n_multi)]
    return singles + multis


class FakeMLM(torch.nn.Module):
    """logits[b, t, k] = 0.1 * k + 5 * [k == input_ids[b, t]]: hand-computable scores."""

    def __init__(self, max_position_embeddings=1026):
        super().__init__()
        self.bias = torch.nn.Parameter(0.1 * torch.arange(33, dtype=torch.float32))
        self.config = SimpleNamespace(max_position_embeddings=max_position_embeddings, pad_token_id=1)
        self.shapes = []

    def forward(self, input_ids, attention_mask=None):
        self.shapes.append(tuple(input_ids.shape))
        assert attention_mask is not None and attention_mask.shape == input_ids.shape
        return SimpleNamespace(logits=self.bias + 5.0 * F.one_hot(input_ids, 33).float())


# ----------------------------------------------------------------------------- mutants
def test_parse_mutant():
    assert parse_mutant("A23C") == [("A", 23, "C")]
    assert parse_mutant("A23C:G45W") == [("A", 23, "C"), ("G", 45, "W")]
    assert parse_mutant(" m1k ") == [("M", 1, "K")]
    for bad in ["", "A23", "23C", "A2.3C", "A23C::G45W", "AB23C", "A-3C"]:
        with pytest.raises(ValueError, match="malformed mutant"):
            parse_mutant(bad)


def test_validate_mutants_errors():
    seq = "MKTAYIAKQR"
    validate_mutants(seq, ["M1A", "K2C:R10W", "Q9X"], "OK_ASSAY")  # valid: no error
    with pytest.raises(MutantMismatchError, match=r"(?s)MY_ASSAY.*'A2C'.*wild-type residue 'A' at position 2.*'K'"):
        validate_mutants(seq, ["M1A", "A2C"], "MY_ASSAY")
    with pytest.raises(MutantMismatchError, match=r"(?s)MY_ASSAY.*'M1A:R11W'.*position 11 is outside.*length 10"):
        validate_mutants(seq, ["M1A:R11W"], "MY_ASSAY")
    with pytest.raises(MutantMismatchError, match=r"position 0 is outside"):
        validate_mutants(seq, ["M0A"], "MY_ASSAY")
    with pytest.raises(MutantMismatchError, match=r"(?s)MY_ASSAY.*malformed mutant 'M1'"):
        validate_mutants(seq, ["M1"], "MY_ASSAY")
    with pytest.raises(MutantMismatchError, match=r"mutant residue 'J' is not one of the 20"):
        validate_mutants(seq, ["M1J"], "MY_ASSAY")
    with pytest.raises(MutantMismatchError, match=r"(?s)7 mutant\(s\).*and 2 more"):
        validate_mutants(seq, ["A1C"] * 7, "MY_ASSAY")
    assert issubclass(MutantMismatchError, ValueError)


# ----------------------------------------------------------------------------- window policy
def test_get_optimal_window_hand_values_and_proteingym_copy():
    # 100 residues -> T = 102 tokens, W = 64, half = 32
    assert get_optimal_window(1, 102, 64) == (0, 64)
    assert get_optimal_window(31, 102, 64) == (0, 64)
    assert get_optimal_window(32, 102, 64) == (0, 64)  # max(0, 32-32) .. 32+32
    assert get_optimal_window(50, 102, 64) == (18, 82)
    assert get_optimal_window(69, 102, 64) == (37, 101)
    assert get_optimal_window(70, 102, 64) == (38, 102)  # i >= T - half
    assert get_optimal_window(100, 102, 64) == (38, 102)
    assert get_optimal_window(5, 64, 64) == (0, 64)  # fits: no crop
    assert get_optimal_window(50, 102, 63) == (19, 81)  # odd W: middle window has W - 1 tokens
    for T in (60, 64, 65, 102, 153):
        for W in (63, 64):
            for i in range(T):
                assert get_optimal_window(i, T, W) == tuple(pg_get_optimal_window(i, T, W))


def test_default_max_residues_matches_proteingym_window():
    cfg = EsmConfig.from_pretrained(str(ESM_DIR))
    assert cfg.max_position_embeddings == 1026
    # ProteinGym: model_window = 1024 tokens incl. <cls>/<eos> -> 1022 residues.
    assert default_max_residues(SimpleNamespace(config=cfg)) == 1022
    assert default_max_residues(SimpleNamespace(config=SimpleNamespace())) is None


# ----------------------------------------------------------------------------- scoring
def test_encode_sequence_matches_tokenizer(tok):
    seq = "MKTAYIAKQRXBUZO"
    assert encode_sequence(tok, seq).tolist() == tok(seq)["input_ids"]
    with pytest.raises(ProteinGymInputError, match="'J' at position 3"):
        encode_sequence(tok, "MKJ")


def test_hand_computed_scores_with_fake_model(tok):
    fake = FakeMLM()
    seq = "MAGWKT"  # A=5 G=6 W=22 C=23 K=15 M=20 L=4
    mutants = ["A2C", "A2C:G3W", "M1L", "K5K"]
    scores = masked_marginals_scores(fake, tok, seq, mutants, batch_size=2)
    # masked: log p(mt) - log p(wt) = 0.1 * (id(mt) - id(wt)); an unmasked wt would add -5
    expected = [0.1 * (23 - 5), 0.1 * (23 - 5) + 0.1 * (22 - 6), 0.1 * (4 - 20), 0.0]
    assert scores.dtype == np.float64 and scores.shape == (4,)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    # 4 unique positions (1, 2, 3, 5), batch 2 -> two forwards of (2, L + 2)
    assert fake.shapes == [(2, 8), (2, 8)]


def test_fake_model_window_shapes(tok):
    fake = FakeMLM(max_position_embeddings=15)  # W = 13 tokens = 11 residues; T = 32
    seq = random_seq(30, 3)
    muts = [f"{seq[p - 1]}{p}{'A' if seq[p - 1] != 'A' else 'C'}" for p in (1, 15, 30)]
    scores = masked_marginals_scores(fake, tok, seq, muts, batch_size=8)
    # ends: [0, 13) and [19, 32) (13 tokens, one batch); middle p=15: [9, 21) (12 tokens)
    assert sorted(fake.shapes) == [(1, 12), (2, 13)]
    expected = [0.1 * (tok.convert_tokens_to_ids(m[-1]) - tok.convert_tokens_to_ids(m[0])) for m in muts]
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_matches_naive_reference_no_window(model, tok):
    seq = random_seq(80, 0)
    mutants = sample_mutants(seq, [1, 2, 7, 7, 40, 79, 80], seed=1)
    ref = naive_scores(model, tok, seq, mutants)
    for bs in (1, 3, 32):
        got = masked_marginals_scores(model, tok, seq, mutants, batch_size=bs)
        assert np.max(np.abs(got - ref)) <= 1e-5, bs
    assert np.ptp(ref) > 1e-3  # non-degenerate


def test_window_policy_matches_proteingym_crop(small_ctx_model, tok):
    m = small_ctx_model
    seq = random_seq(150, 2)  # T = 152 > W = 64
    positions = [1, 2, 30, 31, 32, 33, 60, 75, 118, 119, 120, 121, 149, 150]
    mutants = sample_mutants(seq, positions, seed=3, n_multi=6)
    assert default_max_residues(m) == 62
    ref64 = naive_scores(m, tok, seq, mutants, model_window=64)
    got = masked_marginals_scores(m, tok, seq, mutants, batch_size=5)
    assert np.max(np.abs(got - ref64)) <= 1e-5
    # the crop matters: full-length context (rotary model runs on it) gives different scores
    full = masked_marginals_scores(m, tok, seq, mutants, batch_size=5, max_residues=10_000)
    assert np.max(np.abs(full - ref64)) > 1e-3
    assert np.max(np.abs(full - naive_scores(m, tok, seq, mutants))) <= 1e-5
    # odd window (W = 63): middle windows are 62 tokens, ends are 63 -> mixed-length batches
    ref63 = naive_scores(m, tok, seq, mutants, model_window=63)
    got63 = masked_marginals_scores(m, tok, seq, mutants, batch_size=4, max_residues=61)
    assert np.max(np.abs(got63 - ref63)) <= 1e-5


def test_window_boundary(small_ctx_model, tok):
    m = small_ctx_model
    for n in (62, 63):  # 62 residues fit in W = 64 tokens, 63 do not
        seq = random_seq(n, n)
        mutants = sample_mutants(seq, [1, n // 2, n], seed=n)
        ref = naive_scores(m, tok, seq, mutants, model_window=64)
        got = masked_marginals_scores(m, tok, seq, mutants)
        assert np.max(np.abs(got - ref)) <= 1e-5


def test_bf16_model_and_training_mode_restored(tok):
    m32 = tiny_esm64(seed=4)
    seq = random_seq(60, 5)
    mutants = sample_mutants(seq, [3, 20, 21, 59], seed=6)
    s32 = masked_marginals_scores(m32, tok, seq, mutants)
    mbf = tiny_esm64(seed=4).to(torch.bfloat16).train()
    sbf = masked_marginals_scores(mbf, tok, seq, mutants, device="cpu")
    assert sbf.dtype == np.float64 and np.all(np.isfinite(sbf))
    assert mbf.training  # restored
    assert np.max(np.abs(sbf - s32)) < 0.1
    assert np.corrcoef(sbf, s32)[0, 1] > 0.95


def test_scoring_rejects_mismatched_mutant(model, tok):
    with pytest.raises(MutantMismatchError, match=r"(?s)MY_ASSAY.*'K1A'"):
        masked_marginals_scores(model, tok, "MKT", ["K1A"], assay_id="MY_ASSAY")


# ----------------------------------------------------------------------------- real assays
def target_seq(dms_id):
    ref = pd.read_csv(REF)
    return ref.loc[ref.DMS_id == dms_id, "target_seq"].item()


def test_evaluate_assay_real_ccdb(model, tok):
    path = SUBS / f"{CCDB}.csv.gz"
    df = load_assay(path)
    seq = target_seq(CCDB)
    res = evaluate_assay(model, tok, path, seq, CCDB, batch_size=64)
    scores = masked_marginals_scores(model, tok, seq, df.mutant.tolist(), batch_size=64)
    assert res["DMS_id"] == CCDB and res["n_mutants"] == len(df) == 1176 and res["seq_len"] == 101
    assert res["n_positions"] == df.mutant.str[1:-1].nunique()
    assert res["n_windowed_positions"] == 0
    assert math.isclose(res["spearman"], spearmanr(scores, df.DMS_score).statistic, abs_tol=1e-12)
    assert isinstance(res["spearman"], float) and res["seconds"] > 0
    # default assay_id from the file name
    assert evaluate_assay(model, tok, path, seq, batch_size=64)["DMS_id"] == CCDB


@pytest.fixture()
def assay_dir(tmp_path):
    d = tmp_path / "substitutions"
    d.mkdir()
    shutil.copy(SUBS / f"{CCDB}.csv.gz", d / f"{CCDB}.csv.gz")  # gzipped, full
    with gzip.open(SUBS / f"{TAT}.csv.gz", "rt") as f:
        pd.read_csv(f).iloc[::5].to_csv(d / f"{TAT}.csv", index=False)  # plain csv, subset
    (d / "notes.txt").write_text("not an assay")
    return d


def test_evaluate_proteingym_json_and_published(model, tok, assay_dir, tmp_path):
    out = tmp_path / "results" / "pg.json"
    res = evaluate_proteingym(model, tok, assay_dir, REF, output_json=out, batch_size=64,
                              progress=False)
    assert res["strategy"] == "masked-marginals"
    assert [a["DMS_id"] for a in res["assays"]] == [CCDB, TAT]
    assert res["assays"][1]["n_mutants"] == len(pd.read_csv(assay_dir / f"{TAT}.csv"))
    assert math.isclose(res["mean_spearman"], np.mean([a["spearman"] for a in res["assays"]]))
    # published values (default file next to the reference), from assays.csv: -0.006/-0.018, -0.034/-0.008
    assert res["assays"][0]["published_spearman_ESM2_8M"] == pytest.approx(-0.006)
    assert res["assays"][0]["published_spearman_ESM2_35M"] == pytest.approx(-0.018)
    assert res["assays"][1]["published_spearman_ESM2_8M"] == pytest.approx(-0.034)
    assert res["mean_published_spearman_ESM2_8M"] == pytest.approx(-0.02)
    # JSON written atomically and equal to the returned dict
    assert json.loads(out.read_text()) == res
    assert [p.name for p in out.parent.iterdir()] == ["pg.json"]
    # restriction by id, explicit published file
    pub = tmp_path / "pub.csv"
    pd.DataFrame({"DMS ID": [TAT], "ESM2 (8M)": [0.5], "ESM2 (35M)": [0.25]}).to_csv(pub, index=False)
    r2 = evaluate_proteingym(model, tok, assay_dir, REF, assay_ids=f"{TAT}", published_csv=pub,
                             progress=False)
    assert [a["DMS_id"] for a in r2["assays"]] == [TAT]
    assert r2["assays"][0]["spearman"] == pytest.approx(res["assays"][1]["spearman"], abs=1e-12)
    assert r2["assays"][0]["published_spearman_ESM2_8M"] == 0.5
    assert r2["mean_published_spearman_ESM2_35M"] == 0.25


def test_evaluate_proteingym_input_errors(model, tok, assay_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"assays folder .*nowhere does not exist.*--assays"):
        evaluate_proteingym(model, tok, tmp_path / "nowhere", REF, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no .csv or .csv.gz"):
        evaluate_proteingym(model, tok, tmp_path / "empty", REF, progress=False)
    with pytest.raises(ProteinGymInputError, match=r"NOPE_HUMAN.*Available: CCDB_ECOLI_Adkar_2012"):
        evaluate_proteingym(model, tok, assay_dir, REF, assay_ids=["NOPE_HUMAN"], progress=False)
    with pytest.raises(FileNotFoundError, match=r"reference file .*missing.csv does not exist"):
        evaluate_proteingym(model, tok, assay_dir, tmp_path / "missing.csv", progress=False)
    ref = pd.read_csv(REF)
    small_ref = tmp_path / "ref.csv"
    ref[ref.DMS_id == CCDB].to_csv(small_ref, index=False)
    with pytest.raises(ProteinGymInputError, match=rf"{TAT}.*no row in reference"):
        evaluate_proteingym(model, tok, assay_dir, small_ref, progress=False)
    # mismatched mutant in the CSV
    df = pd.read_csv(assay_dir / f"{TAT}.csv")
    wt0 = df.mutant[0]
    bad = ("A" if wt0[0] != "A" else "C") + wt0[1:]
    df.loc[0, "mutant"] = bad
    df.to_csv(assay_dir / f"{TAT}.csv", index=False)
    with pytest.raises(MutantMismatchError, match=rf"(?s)Assay {TAT}.*'{bad}'"):
        evaluate_proteingym(model, tok, assay_dir, REF, assay_ids=[TAT], progress=False)


# ----------------------------------------------------------------------------- CLI (bitesm eval proteingym)
def parse(*argv: str):
    return build_parser().parse_args(["eval", "proteingym", *argv])


def test_cli_defaults(tmp_path):
    from bitesm.cli.evaluate import _assays_and_reference

    a = parse("--model", "some/dir")
    # --assays / --reference left out: the handler resolves them through the library (the embedded assays and the
    # reference next to them), as the parser's defaults did
    assert a.assays is None and a.reference is None and a.output is None
    assert _assays_and_reference(a.assays, a.reference) == (SUBS, REF)
    # a folder of assays: the reference beside it (ProteinGym's layout), else the shipped v1.3 reference
    assert _assays_and_reference(str(tmp_path / "subs"), None) == (tmp_path / "subs", REF)
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "DMS_substitutions.csv").write_text("DMS_id,target_seq\n")
    assert _assays_and_reference(str(tmp_path / "subs"), None) == (
        tmp_path / "subs", tmp_path / "reference" / "DMS_substitutions.csv")
    assert _assays_and_reference("x", "my_ref.csv") == (Path("x"), Path("my_ref.csv"))
    assert a.batch_size == 32 and a.dtype == "float32" and a.device is None and a.assay_ids is None
    assert a.strategy == "masked-marginals"
    with pytest.raises(SystemExit):
        parse("--model", "x", "--dtype", "int8")
    with pytest.raises(SystemExit):
        parse("--model", "x", "--strategy", "pll")


def test_cli_main_end_to_end(model, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)  # no tokenizer files -> ESM-2 tokenizer fallback
    out = tmp_path / "out.json"
    args = ["eval", "proteingym", "--model", str(ckpt), "--assay-ids", TAT, "--output", str(out), "--device", "cpu",
            "--batch-size", "64"]
    assert bitesm_main(args) == 0  # default --assays (repo data) and --reference (<assays>/../reference)
    printed = capsys.readouterr().out
    assert TAT in printed and "mean (1 assays)" in printed and "-0.034" in printed
    res = json.loads(out.read_text())
    assert res["model"] == str(ckpt) and res["assays"][0]["n_mutants"] == 1577
    # same model via the API gives the same Spearman
    tok = EsmTokenizer.from_pretrained(str(ESM_DIR))
    direct = evaluate_assay(model, tok, SUBS / f"{TAT}.csv.gz", target_seq(TAT), batch_size=64)
    assert res["assays"][0]["spearman"] == pytest.approx(direct["spearman"], abs=1e-9)

    command = ["eval", "proteingym", "--model", str(ckpt), "--device", "cpu"]
    assert bitesm_main(command + ["--assay-ids", "NOPE_HUMAN"]) == 2
    assert "bitesm eval proteingym: error: " in (err := capsys.readouterr().err) and "NOPE_HUMAN" in err
    assert bitesm_main(command + ["--assays", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert bitesm_main(["eval", "proteingym", "--model", str(tmp_path / "no_model"), "--device", "cpu"]) == 2
    assert "no_model" in capsys.readouterr().err
    assert bitesm_main(command + ["--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err
