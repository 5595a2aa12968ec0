"""Evaluation beyond ESM-2's 1,022 residues: windowed embeddings and ProteinGym scoring of long proteins (Long ESM-2)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import EsmConfig, EsmTokenizer

from bitesm.cli import main as bitesm_main
from bitesm.data import InvalidResidueError
from bitesm.evaluation import (
    ProteinEmbedding,
    attention_window,
    embed_protein,
    embedding_windows,
    evaluate_proteingym,
    masked_marginals_scores,
    parse_mutant,
    scoring_window,
)
from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

from conftest import REPO

ESM_DIR = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
PG = REPO / "data" / "proteingym"
REF = PG / "reference" / "DMS_substitutions.csv"
#: The embedded assays whose proteins exceed ESM-2's 1,022 residues: DMS_id -> residues.
LONG_ASSAYS = {"BRCA1_HUMAN_Findlay_2018": 1863, "SCN5A_HUMAN_Glazer_2019": 2016, "POLG_HCVJF_Qi_2014": 3033}
AA = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def tok():
    return EsmTokenizer.from_pretrained(str(ESM_DIR))


def tiny(window: int | None = None, max_position_embeddings: int = 1026, seed: int = 0) -> BitEsmForMaskedLM:
    """Full-precision bitesm model (hidden 32, 2 layers); ``window`` set = a long model (sliding-window attention)."""
    esm = EsmConfig.from_pretrained(
        str(ESM_DIR), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(seed)
    return BitEsmForMaskedLM(bitesm_config_from_esm(esm, quantization=None, attention_window=window)).eval()


def random_seq(n: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list(AA), size=n))


class PositionStub(torch.nn.Module):
    """Encoder stub: hidden state of token ``t`` of a window = ``(token id, t)``; records every input."""

    def __init__(self, max_position_embeddings: int | None = None, window: int | None = None):
        super().__init__()
        self.config = SimpleNamespace(
            max_position_embeddings=max_position_embeddings, attention_window=window, pad_token_id=1
        )
        self.inputs: list[torch.Tensor] = []

    def forward(self, input_ids, attention_mask):
        self.inputs.append(input_ids.clone())
        pos = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return SimpleNamespace(last_hidden_state=torch.stack([input_ids.float(), pos.float()], -1))


# --- windows -----------------------------------------------------------------------------------------------------


def test_embedding_windows_by_hand():
    assert embedding_windows(10, 4) == [(0, 4), (4, 8), (6, 10)]  # last window end-aligned: 6, 7 covered twice
    assert embedding_windows(8, 4) == [(0, 4), (4, 8)]  # m divides n: no overlap
    assert embedding_windows(9, 4) == [(0, 4), (4, 8), (5, 9)]
    assert embedding_windows(4, 4) == [(0, 4)]
    assert embedding_windows(3, 4) == [(0, 3)]
    assert embedding_windows(3000, None) == [(0, 3000)]
    # ESM-2's 1,022 residues on the longest embedded assay (POLG, 3,033): 3 windows, the last one end-aligned.
    assert embedding_windows(3033, 1022) == [(0, 1022), (1022, 2044), (2011, 3033)]
    for n in range(1, 40):
        for m in range(1, 12):
            w = embedding_windows(n, m)
            covered = np.zeros(n, dtype=int)
            for s, e in w:
                assert e - s == min(n, m)
                covered[s:e] += 1
            assert covered.min() >= 1 and covered.max() <= 2 and len(w) == -(-n // m)


@pytest.mark.parametrize("n, m", [(0, 4), (-1, 4), (5, 0), (5, -2), (5, 2.0), (5, True)])
def test_embedding_windows_errors(n, m):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        embedding_windows(n, m)


# --- embed_protein: per-position averaging, checked by hand on the stub --------------------------------------------


def test_averaging_by_hand(tok):
    # max_position_embeddings 8 -> 4 residues per pass; 10 residues -> windows (0,4) (4,8) (6,10).
    stub = PositionStub(max_position_embeddings=8)
    seq = "ACDEFGHIKL"
    emb = embed_protein(stub, tok, seq, batch_size=2)
    assert isinstance(emb, ProteinEmbedding) and emb.windows == ((0, 4), (4, 8), (6, 10))
    # token position inside each window (<cls> = 0): residues 6, 7 are tokens 3, 4 of window 2 and 1, 2 of window 3
    assert emb.per_residue[:, 1].tolist() == [1, 2, 3, 4, 1, 2, 2, 3, 3, 4]
    vocab = tok.get_vocab()
    assert emb.per_residue[:, 0].tolist() == [vocab[a] for a in seq]  # same token in both windows: unchanged
    assert emb.per_residue.dtype == torch.float32 and emb.per_residue.shape == (10, 2)
    assert emb.mean.dtype == torch.float32 and emb.mean.shape == (2,)
    assert emb.mean[1].item() == pytest.approx(25 / 10)  # each residue weighs once
    assert torch.allclose(emb.mean, emb.per_residue.mean(0))
    # batched 2 + 1 windows of 4 residues, each its own protein <cls> ... <eos>
    assert [tuple(x.shape) for x in stub.inputs] == [(2, 6), (1, 6)]
    rows = torch.cat(stub.inputs)
    assert (rows[:, 0] == tok.cls_token_id).all() and (rows[:, -1] == tok.eos_token_id).all()
    ids = torch.tensor([vocab[a] for a in seq])
    for row, (s, e) in zip(rows, emb.windows):
        assert torch.equal(row[1:-1], ids[s:e])
    unbatched = embed_protein(PositionStub(max_position_embeddings=8), tok, seq, batch_size=1)
    assert torch.equal(unbatched.per_residue, emb.per_residue)


def test_averaging_when_windows_tile_and_when_protein_fits(tok):
    emb = embed_protein(PositionStub(max_position_embeddings=8), tok, "ACDEFGHI")
    assert emb.per_residue[:, 1].tolist() == [1, 2, 3, 4] * 2 and emb.windows == ((0, 4), (4, 8))
    stub = PositionStub(max_position_embeddings=8)
    emb = embed_protein(stub, tok, "acd e\nf")  # whitespace removed, upper-cased; 5 > 4 -> (0,4) (1,5)
    assert emb.windows == ((0, 4), (1, 5))
    assert emb.per_residue[:, 1].tolist() == [1, 1.5, 2.5, 3.5, 4]
    stub = PositionStub(max_position_embeddings=8)
    emb = embed_protein(stub, tok, "ACD")
    assert emb.windows == ((0, 3),) and [tuple(x.shape) for x in stub.inputs] == [(1, 5)]
    assert emb.per_residue[:, 1].tolist() == [1, 2, 3]


def test_long_model_one_pass_when_asked_standard_model_refuses(tok):
    seq = random_seq(10, 0)
    long_stub = PositionStub(max_position_embeddings=8, window=16)
    assert len(embed_protein(long_stub, tok, seq).windows) == 3  # beyond its declared max: windows
    long_stub.inputs.clear()
    emb = embed_protein(long_stub, tok, seq, max_residues=len(seq))  # any length in one pass
    assert emb.windows == ((0, 10),) and [tuple(x.shape) for x in long_stub.inputs] == [(1, 12)]
    with pytest.raises(ValueError, match=r"max_residues=10 exceeds the model's maximum of 4 residues"):
        embed_protein(PositionStub(max_position_embeddings=8), tok, seq, max_residues=10)
    # no max_position_embeddings: no limit known, one pass
    assert embed_protein(PositionStub(), tok, seq).windows == ((0, 10),)


def test_embedding_errors(tok):
    stub = PositionStub(max_position_embeddings=8)
    with pytest.raises(InvalidResidueError, match=r"Record 'P1'.*invalid residue '1' at position 5"):
        embed_protein(stub, tok, "ACDE1G", record_id="P1")
    with pytest.raises(InvalidResidueError, match="invalid residue '-' at position 3"):
        embed_protein(stub, tok, "AC-DE")
    with pytest.raises(ValueError, match="'x' has no residues"):
        embed_protein(stub, tok, " \n", record_id="x")
    with pytest.raises(TypeError, match="must be a str"):
        embed_protein(stub, tok, b"ACD")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        embed_protein(stub, tok, "ACD", batch_size=0)
    with pytest.raises(ValueError, match="max_residues must be an int >= 1"):
        embed_protein(stub, tok, "ACD", max_residues=0)
    with pytest.raises(ValueError, match="has no cls_token_id"):
        embed_protein(stub, SimpleNamespace(cls_token_id=None, eos_token_id=2), "ACD")
    bad = PositionStub(max_position_embeddings=8)
    bad.forward = lambda input_ids, attention_mask: SimpleNamespace(last_hidden_state=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"returned hidden states of shape \(1, 3\)"):
        embed_protein(bad, tok, "ACD")
    assert not stub.inputs  # every error before any forward pass


# --- embed_protein on real models --------------------------------------------------------------------------------


def _direct(model, tok, seq: str) -> torch.Tensor:
    ids = torch.tensor([[tok.cls_token_id, *tok.convert_tokens_to_ids(list(seq)), tok.eos_token_id]])
    with torch.inference_mode():
        return model.esm(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, 1:-1].float()


def test_standard_model_windows_equal_manual_average(tok):
    model = tiny(max_position_embeddings=14)  # 10 residues per pass
    seq = random_seq(25, 1)
    emb = embed_protein(model, tok, seq, batch_size=2)
    assert emb.windows == ((0, 10), (10, 20), (15, 25))
    w1, w2, w3 = (_direct(model, tok, seq[s:e]) for s, e in emb.windows)
    expected = torch.cat([w1, w2[:5], (w2[5:] + w3[:5]) / 2, w3[5:]])
    assert torch.allclose(emb.per_residue, expected, atol=1e-5)
    assert torch.allclose(emb.mean, expected.mean(0), atol=1e-5)
    short = random_seq(8, 2)
    assert torch.allclose(embed_protein(model, tok, short).per_residue, _direct(model, tok, short), atol=1e-5)
    assert model.training is False


def test_long_model_embeds_full_sequence_in_one_pass(tok):
    model = tiny(window=16)  # sliding window 16 tokens, max_position_embeddings 1026
    assert attention_window(model) == 16
    seq = random_seq(300, 3)  # far wider than the band: local attention, one pass
    emb = embed_protein(model, tok, seq)
    assert emb.windows == ((0, 300),)
    assert torch.allclose(emb.per_residue, _direct(model, tok, seq), atol=1e-5)
    # beyond its declared maximum: windows; or one pass on request
    small = tiny(window=16, max_position_embeddings=104)  # 100 residues per pass
    assert embed_protein(small, tok, seq).windows == ((0, 100), (100, 200), (200, 300))
    one = embed_protein(small, tok, seq, max_residues=300)
    assert one.windows == ((0, 300),) and torch.allclose(one.per_residue, _direct(small, tok, seq), atol=1e-5)


def test_bf16_model_gives_float32(tok):
    model = tiny(window=16).to(torch.bfloat16)
    emb = embed_protein(model, tok, random_seq(40, 4))
    assert emb.per_residue.dtype == torch.float32 and emb.per_residue.shape == (40, 32)
    assert torch.isfinite(emb.per_residue).all()


# --- ProteinGym: the window rule -----------------------------------------------------------------------------------


def test_scoring_window_rule():
    assert scoring_window(tiny(window=16)) == ("full", None)
    assert scoring_window(tiny()) == ("optimal", 1024)
    assert scoring_window(tiny(window=16), max_residues=1022) == ("optimal", 1024)  # explicit: ProteinGym's crop
    assert scoring_window(SimpleNamespace(config=SimpleNamespace())) == ("full", None)
    with pytest.raises(ValueError, match="max_residues must be >= 1"):
        scoring_window(tiny(), max_residues=0)


@pytest.fixture(scope="module")
def long_assays(tmp_path_factory) -> Path:
    """The three long assays, each cut to the mutants at 5 positions spread over the protein (ends included)."""
    out = tmp_path_factory.mktemp("long_assays")
    for dms_id in LONG_ASSAYS:
        df = pd.read_csv(PG / "substitutions" / f"{dms_id}.csv.gz")
        pos = df["mutant"].map(lambda m: parse_mutant(m)[0][1])
        keep = np.unique(pos)[np.linspace(0, pos.nunique() - 1, 5).round().astype(int)]
        df[pos.isin(keep)].to_csv(out / f"{dms_id}.csv.gz", index=False)
    return out


def _record_lengths(model) -> tuple[list[int], object]:
    lengths: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    return lengths, handle


def test_long_model_scores_long_assays_uncropped(tok, long_assays, tmp_path):
    model = tiny(window=64)
    lengths, handle = _record_lengths(model)
    res = evaluate_proteingym(
        model, tok, long_assays, REF, output_json=tmp_path / "pg.json", batch_size=8, progress=False
    )
    handle.remove()
    assert sorted(set(lengths)) == sorted(n + 2 for n in LONG_ASSAYS.values())  # whole <cls> seq <eos>, any length
    saved = json.loads((tmp_path / "pg.json").read_text())
    assert saved["attention_window"] == 64 and saved["n_assays"] == 3
    for r in saved["assays"]:
        assert r["seq_len"] == LONG_ASSAYS[r["DMS_id"]]
        assert r["scoring_window"] == "full" and r["model_window"] is None
        assert r["max_forward_tokens"] == r["seq_len"] + 2
        assert r["n_windowed_positions"] == 0 and r["n_positions"] == 5
    assert res["assays"][0]["scoring_window"] == "full"


def test_standard_model_scores_long_assays_with_proteingym_window(tok, long_assays):
    model = tiny()
    lengths, handle = _record_lengths(model)
    res = evaluate_proteingym(model, tok, long_assays, REF, batch_size=8, progress=False)
    handle.remove()
    assert lengths and set(lengths) == {1024}  # every one of these proteins is cropped to W = 1024 tokens
    assert res["attention_window"] is None
    for r in res["assays"]:
        assert r["scoring_window"] == "optimal" and r["model_window"] == 1024
        assert r["max_forward_tokens"] == 1024 and r["n_windowed_positions"] == r["n_positions"] == 5


def test_long_model_scores_equal_full_sequence_reference(tok):
    model = tiny(window=64, seed=2)
    seq = random_seq(1500, 5)
    mutants = [f"{seq[0]}1A", f"{seq[749]}750W:{seq[1499]}1500C", f"{seq[1200]}1201G"]
    got = masked_marginals_scores(model, tok, seq, mutants, batch_size=2)
    ids = torch.tensor([tok.cls_token_id, *tok.convert_tokens_to_ids(list(seq)), tok.eos_token_id])
    vocab = tok.get_vocab()

    def lp(pos: int) -> torch.Tensor:  # full sequence, one position masked, no crop
        x = ids.clone()
        x[pos] = tok.mask_token_id
        with torch.inference_mode():
            return torch.log_softmax(model(input_ids=x[None]).logits[0, pos].float(), -1)

    ref = [sum(float(lp(p)[vocab[mt]] - lp(p)[vocab[wt]]) for wt, p, mt in parse_mutant(m)) for m in mutants]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    cropped = masked_marginals_scores(model, tok, seq, mutants, batch_size=2, max_residues=1022)
    assert not np.allclose(cropped, got)  # explicit max_residues applies ProteinGym's crop to a long model too


def test_cli_scores_long_model_without_cropping(tok, long_assays, tmp_path, capsys):
    model_dir = tmp_path / "long_model"
    tiny(window=64).save_pretrained(model_dir)
    out = tmp_path / "cli.json"
    assert bitesm_main([
        "eval", "proteingym", "--model", str(model_dir), "--assays", str(long_assays), "--reference", str(REF),
        "--output", str(out), "--assay-ids", "SCN5A_HUMAN_Glazer_2019", "--batch-size", "8", "--device", "cpu",
    ]) == 0
    res = json.loads(out.read_text())
    (r,) = res["assays"]
    assert (r["scoring_window"], r["model_window"], r["max_forward_tokens"]) == ("full", None, 2018)
    assert res["attention_window"] == 64
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("SCN5A_HUMAN_Glazer_2019"))
    assert " full " in line
