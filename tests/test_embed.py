"""``bitesm embed``: many proteins of any length, windows batched across proteins, safetensors storage."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from transformers import EsmConfig, EsmTokenizer

from bitesm.cli import main as bitesm_main
from bitesm.data import InvalidResidueError
from bitesm.evaluation.embeddings import embed_protein, embed_sequences, load_embeddings, save_embeddings
from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

from conftest import REPO

ESM_DIR = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
AA = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def tok():
    return EsmTokenizer.from_pretrained(str(ESM_DIR))


def tiny(window: int | None = None, max_position_embeddings: int = 66, quantization=None) -> BitEsmForMaskedLM:
    esm = EsmConfig.from_pretrained(str(ESM_DIR), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=max_position_embeddings)
    torch.manual_seed(0)
    return BitEsmForMaskedLM(bitesm_config_from_esm(esm, quantization=quantization, attention_window=window)).eval()


def proteins(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"P{i}", "".join(rng.choice(list(AA), n))) for i, n in enumerate(lengths)]


@pytest.mark.parametrize("quantization", [None, "ternary"])
def test_batched_embeddings_equal_one_protein_at_a_time(tok, quantization):
    model = tiny(quantization=quantization)  # 62 residues per pass
    records = proteins([5, 62, 63, 150, 30, 200])
    out = embed_sequences(model, tok, records, per_residue=True, max_tokens=300)
    assert out.ids == [r for r, _ in records] and out.mean.shape == (6, 32) and out.mean.dtype == torch.float32
    for k, (_, seq) in enumerate(records):
        single = embed_protein(model, tok, seq)
        assert out.per_residue[k].shape == (len(seq), 32)  # one vector per residue, beyond the 62-residue limit
        torch.testing.assert_close(out.per_residue[k], single.per_residue, atol=2e-5, rtol=0)
        torch.testing.assert_close(out.mean[k], single.mean, atol=2e-5, rtol=0)


def test_long_model_embeds_whole_proteins_and_layers(tok):
    model = tiny(window=16)
    records = proteins([300, 40])
    out = embed_sequences(model, tok, records, per_residue=True)
    assert out.metadata["max_residues"] == "none" and out.per_residue[0].shape == (300, 32)
    torch.testing.assert_close(out.per_residue[0], embed_protein(model, tok, records[0][1], max_residues=300).per_residue,
                               atol=2e-5, rtol=0)
    first = embed_sequences(model, tok, records, layer=0)
    assert not torch.allclose(first.mean, out.mean)
    with pytest.raises(ValueError, match="layer=7 is out of range"):
        embed_sequences(model, tok, records, layer=7)


def test_save_load_round_trip_and_cli(tok, tmp_path, capsys):
    model = tiny()
    records = proteins([10, 100, 3])
    out = embed_sequences(model, tok, records, per_residue=True)
    save_embeddings(out, tmp_path / "e.safetensors")
    back = load_embeddings(tmp_path / "e.safetensors")
    assert back.ids == out.ids and torch.equal(back.mean, out.mean)
    assert all(torch.equal(a, b) for a, b in zip(back.per_residue, out.per_residue))
    ckpt = tmp_path / "model"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    fasta = tmp_path / "p.fasta.gz"
    with gzip.open(fasta, "wt") as f:
        f.write("".join(f">{i}\n{s}\n" for i, s in records))
    assert bitesm_main(["embed", "--model", str(ckpt), "--fasta", str(fasta), "--output",
                        str(tmp_path / "cli.safetensors"), "--per-residue"]) == 0
    cli = load_embeddings(tmp_path / "cli.safetensors")
    assert cli.ids == ["P0", "P1", "P2"] and [len(r) for r in cli.per_residue] == [10, 100, 3]
    torch.testing.assert_close(cli.mean, out.mean, atol=2e-5, rtol=0)
    bad = tmp_path / "bad.fasta"
    bad.write_text(">x\nMKT1A\n")
    assert bitesm_main(["embed", "--model", str(ckpt), "--fasta", str(bad), "--output", str(tmp_path / "x")]) == 2
    assert "bitesm embed: error" in capsys.readouterr().err
    with pytest.raises(InvalidResidueError):
        embed_sequences(model, tok, [("x", "MKJ*")])
    with pytest.raises(ValueError, match="not a bitesm embeddings file"):
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        load_embeddings(tmp_path / "other.safetensors")
