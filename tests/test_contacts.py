"""Unsupervised contact prediction (bitesm.evaluation.contacts, .structures): precision by hand, ESM's features
against transformers' contact head, attention maps without changing outputs, biotite parsing, end to end, cache."""

from __future__ import annotations

import gzip
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import EsmConfig, EsmTokenizer
from transformers.models.esm.modeling_esm import average_product_correct
from transformers.models.esm.modeling_esm import symmetrize as hf_symmetrize

from bitesm.cli import main as bitesm_main
from bitesm.evaluation.cache import ResultCache
from bitesm.evaluation.contacts import (
    RANGES,
    ContactsInputError,
    apc,
    attention_features,
    contact_precision,
    contacts_suite,
    evaluate_contacts,
    fit_contact_regression,
    symmetrize,
)
from bitesm.evaluation.run import EvalSettings
from bitesm.evaluation.structures import (
    StructureError,
    find_structure_files,
    load_structure_contacts,
)
from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

from conftest import REPO, tiny_esm

ESM_DIR = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
STRUCTURES = REPO / "data" / "structures"
ONE_AE2 = STRUCTURES / "1ae2A00.pdb.gz"  # CATH domain, 86 residues
SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK"


@pytest.fixture(scope="module")
def tok():
    return EsmTokenizer.from_pretrained(str(ESM_DIR))


def tiny_bitesm(quantization: str | None = "ternary", window: int | None = None, seed: int = 0) -> BitEsmForMaskedLM:
    esm = EsmConfig.from_pretrained(str(ESM_DIR), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                    intermediate_size=64)
    torch.manual_seed(seed)
    config = bitesm_config_from_esm(esm, quantization=quantization, attention_window=window)
    return BitEsmForMaskedLM(config).eval()


def _ids(tok, seq=SEQ):
    return torch.tensor([tok(seq)["input_ids"]])


# ----------------------------------------------------------------------------- (1) precision by hand
def _synthetic_case():
    """L = 40; true contacts and scores chosen so the expected precisions can be counted by hand."""
    L = 40
    contacts = np.zeros((L, L), dtype=bool)
    scores = np.zeros((L, L))
    # (pair, is contact, score)
    entries = [
        ((4, 10), True, 0.99),   # short range (|i-j| = 6): outside the long range
        ((3, 39), True, 0.98),   # long range, but residue 39 is invalid in the first checks
        ((0, 30), True, 0.97),
        ((0, 25), False, 0.96),
        ((1, 35), True, 0.95),
        ((6, 36), False, 0.94),
        ((2, 28), True, 0.93),
        ((7, 37), False, 0.92),
        ((5, 33), True, 0.50),
        ((10, 38), True, 0.01),  # just above the zero background
        ((12, 37), True, 0.0),   # a contact ranked with the background (after every pair of rows 0-11)
    ]
    for (i, j), is_contact, score in entries:
        contacts[i, j] = contacts[j, i] = is_contact
        scores[i, j] = scores[j, i] = score
    valid = np.ones(L, dtype=bool)
    valid[39] = False
    return scores, contacts, valid


def test_precision_long_range_counted_by_hand():
    scores, contacts, valid = _synthetic_case()
    # long range, residue 39 invalid. Ranked: (0,30)T (0,25)F (1,35)T (6,36)F (2,28)T (7,37)F (5,33)T (10,38)T,
    # then zeros in row-major order (all false until (12,37), which is beyond the first 40)
    # top 8 (L/5): 5 true; top 20 (L/2): 5; top 40 (L): 5
    assert contact_precision(scores, contacts, valid) == {"P@L": 5 / 40, "P@L/2": 5 / 20, "P@L/5": 5 / 8}
    # all residues valid: (3,39) enters first -> top 8 holds (3,39) (0,30) (0,25) (1,35) (6,36) (2,28) (7,37) (5,33)
    all_valid = np.ones(40, dtype=bool)
    assert contact_precision(scores, contacts, all_valid) == {"P@L": 6 / 40, "P@L/2": 6 / 20, "P@L/5": 5 / 8}
    assert contact_precision(scores, contacts) == contact_precision(scores, contacts, all_valid)
    # torch inputs give the same numbers
    assert contact_precision(torch.tensor(scores), torch.tensor(contacts), torch.tensor(valid)) == \
        contact_precision(scores, contacts, valid)


def test_precision_separation_filter():
    scores, contacts, valid = _synthetic_case()
    # |i-j| >= 6: the short-range (4,10) ranks first -> top 8: (4,10)T (0,30)T (0,25)F (1,35)T (6,36)F (2,28)T (7,37)F
    # (5,33)T = 5; (10,38) is 9th; top 20 and 40: 6
    assert contact_precision(scores, contacts, valid, min_separation=6) == \
        {"P@L": 6 / 40, "P@L/2": 6 / 20, "P@L/5": 5 / 8}
    # short range [6, 12): only (4,10) is a contact, ranked first
    lo, hi = RANGES["short"]
    assert contact_precision(scores, contacts, valid, lo, hi) == {"P@L": 1 / 40, "P@L/2": 1 / 20, "P@L/5": 1 / 8}
    # medium range [12, 24): no contact there
    lo, hi = RANGES["medium"]
    assert contact_precision(scores, contacts, valid, lo, hi) == {"P@L": 0.0, "P@L/2": 0.0, "P@L/5": 0.0}
    # only the upper triangle is read: scores below the diagonal do not matter
    lower = np.tril(np.random.default_rng(0).random((40, 40)), -1)
    assert contact_precision(np.triu(scores) + lower, contacts, valid) == contact_precision(scores, contacts, valid)


def test_precision_edge_cases():
    # a perfect ranking of a protein with many contacts: precision 1
    L = 60
    i, j = np.triu_indices(L, 24)
    contacts = np.zeros((L, L), dtype=bool)
    contacts[i[:70], j[:70]] = True
    assert contact_precision(contacts.astype(float), contacts) == {"P@L": 1.0, "P@L/2": 1.0, "P@L/5": 1.0}
    # k is at least 1 (L = 3 -> L/5 = 0 -> k = 1); fewer candidate pairs than k count as wrong
    c = np.zeros((3, 3), dtype=bool)
    c[0, 2] = True
    assert contact_precision(np.ones((3, 3)), c, min_separation=2) == {"P@L": 1 / 3, "P@L/2": 1.0, "P@L/5": 1.0}
    # NaN scores rank last
    p = np.full((30, 30), np.nan)
    p[0, 29] = 0.5
    c = np.zeros((30, 30), dtype=bool)
    c[0, 29] = True
    assert contact_precision(p, c)["P@L/5"] == 1 / 6
    with pytest.raises(ContactsInputError, match=r"\[L, L\]"):
        contact_precision(np.zeros((4, 5)), np.zeros((4, 5), dtype=bool))
    with pytest.raises(ContactsInputError, match="valid"):
        contact_precision(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool), np.ones(3, dtype=bool))
    with pytest.raises(ContactsInputError, match="min_separation"):
        contact_precision(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool), min_separation=0)


# ----------------------------------------------------------------------------- (2) symmetrisation and APC
def test_symmetrize_and_apc_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(symmetrize(x), torch.tensor([[2.0, 5.0], [5.0, 8.0]]))
    # rows 3, 7; columns 4, 6; total 10: x - r c / 10
    assert torch.allclose(apc(x), torch.tensor([[1 - 12 / 10, 2 - 18 / 10], [3 - 28 / 10, 4 - 42 / 10]]))
    # apc(symmetrize(x)): rows = columns = 7, 13; total 20
    assert torch.allclose(apc(symmetrize(x)), torch.tensor([[2 - 49 / 20, 5 - 91 / 20], [5 - 91 / 20, 8 - 169 / 20]]))


def test_features_equal_transformers_functions_on_random_attentions():
    att = torch.rand(2, 3, 4, 12, 12)
    ours = apc(symmetrize(att))
    assert torch.allclose(ours, average_product_correct(hf_symmetrize(att)), atol=1e-6)
    assert torch.allclose(ours, ours.transpose(-1, -2), atol=1e-6)


def test_attention_features_match_esm_contact_head(tok):
    """transformers' predict_contacts (eager attention, ESM's head with random regression weights) equals
    sigmoid(w · attention_features + b)."""
    model = tiny_esm()
    head = model.esm.contact_head
    torch.manual_seed(1)
    head.regression.weight.data.normal_()
    head.regression.bias.data.normal_()
    feats = attention_features(model, tok, SEQ)
    ours = torch.sigmoid(torch.einsum("f,fij->ij", head.regression.weight[0], feats) + head.regression.bias[0])
    ids = _ids(tok)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        theirs = model.predict_contacts(ids, torch.ones_like(ids))[0]
    assert theirs.shape == (len(SEQ), len(SEQ))
    assert torch.allclose(ours, theirs, atol=1e-5)


# ----------------------------------------------------------------------------- (3) attention maps, outputs kept
@pytest.mark.parametrize("make", [tiny_esm, tiny_bitesm], ids=["EsmForMaskedLM", "BitEsmForMaskedLM-ternary"])
def test_attention_features_shape_and_outputs_unchanged(tok, make):
    model = make()
    impl = model.config._attn_implementation
    assert impl == "sdpa"  # the default, which returns no attention maps
    ids = _ids(tok)
    with torch.no_grad():
        before = model(ids).logits
    feats = attention_features(model, tok, SEQ)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert feats.dtype == torch.float32 and feats.shape == (layers * heads, len(SEQ), len(SEQ))
    assert torch.allclose(feats, feats.transpose(-1, -2), atol=1e-6)
    assert torch.isfinite(feats).all()
    # the model is left as it was: same implementation, identical logits
    assert model.config._attn_implementation == impl
    with torch.no_grad():
        after = model(ids).logits
    assert torch.equal(before, after)
    # the eager pass that produced the maps computes the same logits (to float rounding), with or without maps
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        eager = model(ids, output_attentions=True)
        plain = model(ids)
    model.config._attn_implementation = impl
    assert torch.equal(eager.logits, plain.logits)
    assert torch.allclose(eager.logits, before, atol=1e-5)
    # the features are the eager maps, symmetrised and APC-corrected
    maps = torch.stack([a[0] for a in eager.attentions])[..., 1:-1, 1:-1].reshape(layers * heads, len(SEQ), len(SEQ))
    assert torch.allclose(feats, apc(symmetrize(maps)), atol=1e-6)


def test_attention_features_of_a_ptq_model_keep_its_quantized_softmax(tok):
    from bitesm.ptq.convert import quantize_model

    fp = tiny_bitesm(quantization=None)
    quantized = quantize_model(fp, tok, [SEQ, SEQ[::-1]], weight_bits=8, act_bits=8, method="uniform", batch_size=2)
    assert quantized.config._attn_implementation == "bitesm_ptq"
    ids = _ids(tok)
    with torch.no_grad():
        before = quantized(ids).logits
    feats = attention_features(quantized, tok, SEQ)
    assert feats.shape == (3 * 2, len(SEQ), len(SEQ))
    assert quantized.config._attn_implementation == "bitesm_ptq"
    with torch.no_grad():
        assert torch.equal(quantized(ids).logits, before)


def test_attention_features_errors(tok):
    with pytest.raises(ContactsInputError, match="sliding-window attention.*attention_window=16"):
        attention_features(tiny_bitesm(quantization=None, window=16), tok, SEQ)
    short = tiny_esm(max_position_embeddings=34)  # 34 - 2 - 2 = 30 residues per pass
    with pytest.raises(ContactsInputError, match="53 residues is longer than the model's one-pass limit of 30"):
        attention_features(short, tok, SEQ)
    assert attention_features(short, tok, SEQ[:30]).shape == (8, 30, 30)
    with pytest.raises(ContactsInputError, match="empty"):
        attention_features(short, tok, "")
    with pytest.raises(ContactsInputError):
        attention_features(short, tok, "MKT1")


# ----------------------------------------------------------------------------- (4) structures
def _biotite_atoms(path: Path):
    from biotite.structure.io import pdb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gzip.open(path, "rt") as f:
            return pdb.PDBFile.read(f).get_structure(model=1)


def test_structure_parsing_1ae2():
    s = load_structure_contacts(ONE_AE2)
    assert len(s) == 86 and s.chain == "A" and s.name == "1ae2A00"
    assert s.sequence.startswith("MIKVEIKPSQAQFTTRSGVSRQGKPYSLNE")
    assert s.valid.all() and s.distances.dtype == np.float32 and s.distances.shape == (86, 86)
    assert s.contacts.dtype == bool and np.array_equal(s.contacts, s.distances < 8.0)
    assert np.allclose(s.distances, s.distances.T)
    atoms = _biotite_atoms(ONE_AE2)

    def coord(res_id: int, atom: str) -> np.ndarray:
        return atoms.coord[(atoms.res_id == res_id) & (atoms.atom_name == atom)][0]

    # residue 0 (M) and 40: Cβ-Cβ, computed here from biotite's coordinates
    r0, r40 = s.residue_ids[0], s.residue_ids[40]
    assert s.distances[0, 40] == pytest.approx(np.linalg.norm(coord(r0, "CB") - coord(r40, "CB")), abs=1e-4)
    # a glycine uses its Cα
    g = s.sequence.index("G")
    assert g == 17
    rg = s.residue_ids[g]
    assert s.distances[0, g] == pytest.approx(np.linalg.norm(coord(r0, "CB") - coord(rg, "CA")), abs=1e-4)
    # a looser threshold gives more contacts
    assert load_structure_contacts(ONE_AE2, threshold=12.0).contacts.sum() > s.contacts.sum()


def test_structure_missing_cb_is_invalid_and_mmcif_reads_the_same(tmp_path):
    from biotite.structure.io import pdb, pdbx

    atoms = _biotite_atoms(ONE_AE2)
    res5 = sorted(set(atoms.res_id.tolist()))[5]
    assert atoms.res_name[atoms.res_id == res5][0] != "GLY"
    cut = atoms[~((atoms.res_id == res5) & (atoms.atom_name == "CB"))]
    out = pdb.PDBFile()
    out.set_structure(cut)
    out.write(str(tmp_path / "cut.pdb"))
    s = load_structure_contacts(tmp_path / "cut.pdb")
    assert len(s) == 86 and not s.valid[5] and s.valid.sum() == 85
    assert np.isnan(s.distances[5]).all() and not s.contacts[5].any() and not s.contacts[:, 5].any()
    ref = load_structure_contacts(ONE_AE2)
    keep = np.arange(86) != 5
    assert np.allclose(s.distances[keep][:, keep], ref.distances[keep][:, keep])
    # the same structure written as mmCIF (and gzipped) reads to the same residues and distances
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    text = io.StringIO()
    cif.write(text)
    (tmp_path / "x.cif").write_text(text.getvalue())
    with gzip.open(tmp_path / "y.cif.gz", "wt") as f:
        f.write(text.getvalue())
    for name in ("x.cif", "y.cif.gz"):
        c = load_structure_contacts(tmp_path / name)
        assert c.sequence == ref.sequence and np.allclose(c.distances, ref.distances, atol=1e-3)


def test_structure_chains_and_nonstandard_residues():
    a = load_structure_contacts(STRUCTURES / "4N5T.pdb.gz")
    assert a.chain == "A" and len(a) == 90
    # chain B, the stapled peptide: 0EH and 2JH have no one-letter code -> X, MK8 -> its parent L;
    # 0EH has no Cβ -> invalid
    b = load_structure_contacts(STRUCTURES / "4N5T.pdb.gz", chain="B")
    assert b.sequence == "LTFXEYWAQXLSAA"
    assert b.valid.tolist() == [i != 3 for i in range(14)]


def test_structure_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pdb does not exist"):
        load_structure_contacts(tmp_path / "nope.pdb")
    with pytest.raises(StructureError, match=r"no protein chain 'Z'; its protein chains are \['A', 'B'\]"):
        load_structure_contacts(STRUCTURES / "4N5T.pdb.gz", chain="Z")
    (tmp_path / "junk.pdb").write_text("this is not a structure\n")
    with pytest.raises(StructureError, match="cannot read .*junk.pdb as PDB"):
        load_structure_contacts(tmp_path / "junk.pdb")
    (tmp_path / "junk.cif").write_text("this is not a structure\n")
    with pytest.raises(StructureError, match="cannot read .*junk.cif as mmCIF"):
        load_structure_contacts(tmp_path / "junk.cif")
    (tmp_path / "notgz.pdb.gz").write_text("plain text\n")
    with pytest.raises(StructureError, match=r"cannot read .*notgz.pdb.gz as PDB \(gzipped\)"):
        load_structure_contacts(tmp_path / "notgz.pdb.gz")
    (tmp_path / "water.pdb").write_text(
        "HETATM    1  O   HOH A   1      10.000  10.000  10.000  1.00  0.00           O\nEND\n")
    with pytest.raises(StructureError, match="water.pdb has no protein chain"):
        load_structure_contacts(tmp_path / "water.pdb")
    (tmp_path / "x.xyz").write_text("")
    with pytest.raises(StructureError, match="unrecognised suffix"):
        load_structure_contacts(tmp_path / "x.xyz")
    with pytest.raises(StructureError, match="unrecognised suffix"):
        find_structure_files(tmp_path / "x.xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StructureError, match="holds no structure file"):
        find_structure_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_structure_files([ONE_AE2, tmp_path / "missing"])


def test_shipped_structures():
    files = find_structure_files(STRUCTURES)
    assert len(files) == 12 and all(f.name.endswith(".pdb.gz") for f in files)
    assert sum(f.stat().st_size for f in files) < 400_000
    assert find_structure_files([ONE_AE2, ONE_AE2, STRUCTURES])[0] == ONE_AE2  # order kept, duplicates dropped


# ----------------------------------------------------------------------------- regression
def test_regression_recovers_an_informative_feature():
    """A feature that carries the contacts (plus noise) gets the weight; precision is then near 1."""
    rng = np.random.default_rng(0)
    structures = [load_structure_contacts(STRUCTURES / f"{n}.pdb.gz") for n in ("1ae2A00", "2ah5A02", "1a2oA01")]
    feats = []
    for s in structures:
        L = len(s)
        signal = s.contacts + 0.3 * rng.standard_normal((L, L))
        noise = rng.standard_normal((2, L, L))
        f = np.stack([noise[0], signal, noise[1]]) * 1e-3  # tiny raw values, as APC attention features
        feats.append((f + f.transpose(0, 2, 1)) / 2)
    reg = fit_contact_regression(feats[:2], [s.contacts for s in structures[:2]], [s.valid for s in structures[:2]])
    assert abs(reg.coef[1]) > 10 * max(abs(reg.coef[0]), abs(reg.coef[2]))
    probs = reg.predict(feats[2])
    assert probs.dtype == np.float32 and probs.shape == (133, 133) and np.allclose(probs, probs.T)
    assert contact_precision(probs, structures[2].contacts, structures[2].valid)["P@L/5"] > 0.9
    # predict is the classifier's predict_proba on standardised pair features
    i, j = np.triu_indices(133, 6)
    x = (feats[2][:, i, j].T - reg.mean) / reg.scale
    assert np.allclose(probs[i, j], reg.classifier.predict_proba(x)[:, 1], atol=1e-5)
    with pytest.raises(ContactsInputError, match="features"):
        reg.predict(np.zeros((4, 10, 10)))
    with pytest.raises(ContactsInputError, match="no contact"):
        fit_contact_regression([np.zeros((1, 10, 10))], [np.zeros((10, 10), dtype=bool)])
    with pytest.raises(ContactsInputError, match="do not match"):
        fit_contact_regression([np.zeros((1, 10, 10))], [np.zeros((9, 9), dtype=bool)])


# ----------------------------------------------------------------------------- (5) end to end
def test_evaluate_contacts_end_to_end(tok, tmp_path):
    model = tiny_esm()
    out = evaluate_contacts(model, tok, STRUCTURES, n_train=3, seed=1, output_dir=tmp_path)
    assert out["n_structures"] == 12 and out["n_train"] == 3 and out["n_test"] == 9 and not out["skipped"]
    assert len(out["structures"]) == 12 and set(out["train"]).isdisjoint(out["test"])
    for row in out["structures"]:
        for name in RANGES:
            assert set(row["precision"][name]) == {"P@L", "P@L/2", "P@L/5"}
            assert all(0.0 <= v <= 1.0 for v in row["precision"][name].values())
    assert set(out["summary"]) == {"precision_at_L", "precision_at_L2", "precision_at_L5"}
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out["summary"].values())
    test_rows = [r for r in out["structures"] if r["split"] == "test"]
    expected = np.mean([r["precision"]["long"]["P@L"] for r in test_rows])
    assert out["summary"]["precision_at_L"] == pytest.approx(expected)
    assert len(out["regression"]["coef"]) == 2 and len(out["regression"]["coef"][0]) == 4  # [layers][heads]
    assert 0 < out["chance"]["long"] < 0.1
    written = json.loads((tmp_path / "contacts.json").read_text())
    assert written["summary"] == out["summary"]
    maps = np.load(tmp_path / "predictions.npz")
    assert maps["1ae2A00"].shape == (86, 86)
    # the same seed gives the same result; another seed another split
    again = evaluate_contacts(model, tok, STRUCTURES, n_train=3, seed=1)
    assert again["summary"] == out["summary"] and again["train"] == out["train"]
    assert evaluate_contacts(model, tok, STRUCTURES, n_train=3, seed=2)["train"] != out["train"]


def test_evaluate_contacts_skips_and_errors(tok, tmp_path):
    (tmp_path / "junk.pdb").write_text("not a structure\n")
    short = tiny_esm(max_position_embeddings=104)  # 100 residues per pass
    files = [ONE_AE2, STRUCTURES / "2ah5A02.pdb.gz", STRUCTURES / "1a2oA01.pdb.gz", tmp_path / "junk.pdb"]
    out = evaluate_contacts(short, tok, files, n_train=1)
    reasons = {s["file"]: s["reason"] for s in out["skipped"]}
    assert "133 residues > the model's one-pass limit of 100" in reasons["1a2oA01.pdb.gz"]
    assert "cannot read" in reasons["junk.pdb"]
    assert out["n_structures"] == 2 and out["n_test"] == 1
    with pytest.raises(ContactsInputError, match="leaves none to evaluate"):
        evaluate_contacts(short, tok, files, n_train=2)
    with pytest.raises(ContactsInputError, match="n_train must be >= 1"):
        evaluate_contacts(short, tok, files, n_train=0)
    with pytest.raises(ContactsInputError, match="sliding-window"):
        evaluate_contacts(tiny_bitesm(quantization=None, window=16), tok, files, n_train=1)


# ----------------------------------------------------------------------------- (6) suite and cache
def test_contacts_suite_caches(tok, tmp_path):
    model = tiny_esm()
    cache = ResultCache(tmp_path / "cache")
    files = [str(STRUCTURES / f"{n}.pdb.gz") for n in ("1ae2A00", "2ah5A02", "4N5T", "CCDB_ECOLI_Adkar_2012")]
    settings = EvalSettings(extra={"contacts": {"structures": files, "n_train": 2}})
    first = contacts_suite(model, tok, settings, cache, "hash-a", False)
    assert not first["cached"] and cache.misses == 1 and cache.hits == 0
    assert first["model_hash"] == "hash-a" and first["n_test"] == 2
    second = contacts_suite(model, tok, settings, cache, "hash-a", False)
    assert second["cached"] and cache.hits == 1
    assert second["summary"] == first["summary"] and second["structures"] == first["structures"]
    # another option, another model hash, or a changed structure file recompute
    contacts_suite(model, tok, EvalSettings(extra={"contacts": {"structures": files, "n_train": 3}}), cache,
                   "hash-a", False)
    contacts_suite(model, tok, settings, cache, "hash-b", False)
    assert cache.hits == 1 and cache.misses == 3
    copy = tmp_path / "1ae2A00.pdb"
    copy.write_bytes(gzip.decompress(ONE_AE2.read_bytes()))
    edited = [str(copy)] + files[1:]
    contacts_suite(model, tok, EvalSettings(extra={"contacts": {"structures": edited, "n_train": 2}}), cache,
                   "hash-a", False)
    assert cache.misses == 4
    copy.write_text(copy.read_text() + "\n")  # one more byte: another fingerprint
    contacts_suite(model, tok, EvalSettings(extra={"contacts": {"structures": edited, "n_train": 2}}), cache,
                   "hash-a", False)
    assert cache.misses == 5
    with pytest.raises(ContactsInputError, match="unknown contacts option"):
        contacts_suite(model, tok, EvalSettings(extra={"contacts": {"n_trian": 2}}), cache, "hash-a", False)


# ----------------------------------------------------------------------------- CLI (bitesm eval contacts)
def test_cli_writes_json_and_prints_a_table(tok, tmp_path, capsys):
    model = tiny_esm()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "contacts.json"
    assert bitesm_main([
        "eval", "contacts", "--model", str(tmp_path / "model"), "--structures", str(ONE_AE2),
        str(STRUCTURES / "2ah5A02.pdb.gz"), str(STRUCTURES / "4N5T.pdb.gz"), "--n-train", "1", "--output", str(out),
    ]) == 0
    printed = capsys.readouterr().out
    assert "1ae2A00" in printed and "P@L/5" in printed and "mean (2 test, long range)" in printed
    result = json.loads(out.read_text())
    assert result["n_test"] == 2 and result["model"] == str(tmp_path / "model")


def test_cli_errors(tmp_path, capsys):
    command = ["eval", "contacts", "--output", str(tmp_path / "o.json")]
    assert bitesm_main(command + ["--model", str(tmp_path / "no-model")]) == 2
    assert "bitesm eval contacts: error: cannot load model" in capsys.readouterr().err
    assert bitesm_main(command + ["--model", "x", "--structures", str(tmp_path / "none")]) == 2
    assert "bitesm eval contacts: error: structure file or folder" in capsys.readouterr().err
    assert bitesm_main(command + ["--model", "x", "--n-train", "0"]) == 2
    assert "--n-train must be >= 1" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert bitesm_main(["eval", "contacts", "--model", "x", "--output", str(tmp_path / "a_file" / "o.json")]) == 2
    assert "bitesm eval contacts: error: --output " in (err := capsys.readouterr().err) and "a_file" in err
