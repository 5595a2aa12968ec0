"""Tests for bitesm.data (FASTA, tokenizer, datasets, MLM collator) and data/fetch_uniref50.py."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import itertools
import logging
import random
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from bitesm.data import (
    DEFAULT_TOKENIZER_DIR,
    ESM_RESIDUES,
    STANDARD_AMINO_ACIDS,
    FastaFormatError,
    InvalidResidueError,
    MLMCollator,
    iter_fasta,
    load_fasta_dataset,
    load_tokenizer,
    read_fasta,
    tokenize_residues,
    validate_sequence,
)

from conftest import REPO

SWISSPROT_GZ = REPO / "data" / "pretrain" / "swissprot_2014-01_sample50k.fasta.gz"

MKTAYIAKQR_IDS = [0, 20, 15, 11, 5, 19, 12, 5, 15, 16, 10, 2]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _random_fasta(path: Path, n: int, seed: int = 0, length=(30, 80)) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    records = [
        (f"rec{i}", "".join(rng.choice(STANDARD_AMINO_ACIDS) for _ in range(rng.randint(*length))))
        for i in range(n)
    ]
    _write(path, "".join(f">{i} some description\n{s}\n" for i, s in records))
    return records


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_packaged_ids(tok):
    assert sorted(p.name for p in DEFAULT_TOKENIZER_DIR.iterdir()) == [
        "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"
    ]
    assert type(tok).__name__ == "EsmTokenizer"
    assert tok("MKTAYIAKQR")["input_ids"] == MKTAYIAKQR_IDS
    assert (tok.cls_token_id, tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2, 32)
    assert len(tok) == 33
    # vocab order: residues are ids 4..28 in ESM_RESIDUES order
    assert [tok.convert_tokens_to_ids(c) for c in ESM_RESIDUES] == list(range(4, 29))
    assert tokenize_residues(tok, "mkT") == [20, 15, 11]
    with pytest.raises(ValueError, match=r"'J' at position 2"):
        tokenize_residues(tok, "MJK")


def test_load_tokenizer_from_dir_and_fallback(tmp_path, caplog):
    from_dir = load_tokenizer(str(DEFAULT_TOKENIZER_DIR))  # AutoTokenizer path
    assert from_dir("MKTAYIAKQR")["input_ids"] == MKTAYIAKQR_IDS
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="bitesm.data.tokenizer"):
        fallback = load_tokenizer(ckpt)
    assert "no tokenizer files" in caplog.text
    assert fallback("MKTAYIAKQR")["input_ids"] == MKTAYIAKQR_IDS
    with pytest.raises(OSError, match="Could not load a tokenizer"):
        load_tokenizer(str(tmp_path / "does_not_exist"))


# --------------------------------------------------------------------------- FASTA

SMALL_FASTA = (
    ";comment line\n"
    ">sp|P1|ABC first protein\n"
    "MKTAY\n"
    "iakqr\n"
    "\n"
    ">P2\n"
    "AC DE\n"
    ">P3 x\n"
    "XBUZO\n"
)
SMALL_EXPECTED = [("sp|P1|ABC", "MKTAYIAKQR"), ("P2", "ACDE"), ("P3", "XBUZO")]


@pytest.mark.parametrize("name", ["small.fasta", "small.fasta.gz"])
def test_read_fasta_plain_and_gz(tmp_path, name):
    path = _write(tmp_path / name, SMALL_FASTA)
    assert read_fasta(path) == SMALL_EXPECTED
    it = iter_fasta(str(path))
    assert next(it) == SMALL_EXPECTED[0]  # it is a lazy iterator


@pytest.mark.parametrize(
    "text, error, pattern",
    [
        ("MKT\n>P1\nAAA\n", FastaFormatError, r"bad\.fasta.*line 1 \('MKT'\).*before the first '>' header"),
        ("", FastaFormatError, r"bad\.fasta.*is empty"),
        ("\n;only a comment\n\n", FastaFormatError, r"is empty"),
        (">P1 desc\n>P2\nAAA\n", FastaFormatError, r"bad\.fasta.*record 'P1' \(#1\) has no sequence"),
        (">P1\nAAA\n>P2\n", FastaFormatError, r"record 'P2' \(#2\) has no sequence"),
        (">P1\nAAA\n>\nAAA\n", FastaFormatError, r"record #2 has an empty header"),
        (">ok\nAAA\n>r1 x\nMK1A\n", InvalidResidueError,
         r"Record 'r1' in .*bad\.fasta.*invalid residue '1' at position 3 .*" + ESM_RESIDUES),
        (">r2\nMKT\nA*\n", InvalidResidueError, r"'r2'.*'\*' at position 5"),
    ],
)
def test_fasta_errors(tmp_path, text, error, pattern):
    path = _write(tmp_path / "bad.fasta", text)
    with pytest.raises(error, match=pattern):
        read_fasta(path)


def test_fasta_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fasta"):
        read_fasta(tmp_path / "nope.fasta")
    not_gz = tmp_path / "x.fasta.gz"
    not_gz.write_text(">P1\nAAA\n")
    with pytest.raises(FastaFormatError, match=r"x\.fasta\.gz.*not a valid/complete gzip"):
        read_fasta(not_gz)
    binary = tmp_path / "b.fasta"
    binary.write_bytes(b">P1\nAA\xff\xfe\n")
    with pytest.raises(FastaFormatError, match="not UTF-8 text"):
        read_fasta(binary)
    # both error classes are ValueErrors (callers may catch ValueError)
    assert issubclass(FastaFormatError, ValueError) and issubclass(InvalidResidueError, ValueError)


def test_validate_sequence():
    assert validate_sequence(" mk ta\ny\t", "id") == "MKTAY"
    assert validate_sequence(ESM_RESIDUES.lower(), "id") == ESM_RESIDUES
    with pytest.raises(InvalidResidueError, match=r"Record 'x': invalid residue '-' at position 3"):
        validate_sequence("AC-D", "x")
    with pytest.raises(InvalidResidueError, match=r"in f\.fa.*'j' at position 1"):
        validate_sequence("jA", "x", source="f.fa")


def test_swissprot_sample_all_records():
    t0 = time.perf_counter()
    n, residues, first, last = 0, 0, None, None
    for rid, seq in iter_fasta(SWISSPROT_GZ):
        n += 1
        residues += len(seq)
        first = first or rid
        last = rid
    elapsed = time.perf_counter() - t0
    # counted independently: zcat | grep -c '^>'; zcat | grep -v '^>' | tr -d '\n' | wc -c
    assert (n, residues, first, last) == (50_000, 18_012_118, "A0A320", "Q9ZZX0")
    print(f"iter_fasta: 50,000 Swiss-Prot records in {elapsed:.2f} s")
    assert elapsed < 20


def test_embedded_data_matches_its_checksums():
    """Every embedded data file is the one data/README.md describes (data/SHA256SUMS), and none is unlisted."""
    data = REPO / "data"
    listed = {}
    for line in (data / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    on_disk = {
        str(p.relative_to(data)) for p in data.rglob("*")
        if p.is_file() and p.name not in ("README.md", "SHA256SUMS") and p.suffix != ".py" and "__pycache__" not in p.parts
    }
    assert on_disk == set(listed), sorted(on_disk ^ set(listed))
    for name, digest in listed.items():
        assert hashlib.sha256((data / name).read_bytes()).hexdigest() == digest, name
    # one figure counted independently of the checksums: 15 genuine UniRef50 records
    recs = read_fasta(data / "pretrain" / "uniref50_esm_examples_some_proteins.fasta")
    assert len(recs) == 15 and all(r.startswith("UniRef50_") for r, _ in recs)


# --------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def fasta200(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    path = d / "r200.fasta.gz"
    records = _random_fasta(path, 200)
    return path, records, d / "cache"


def test_dataset_split_deterministic_disjoint(fasta200):
    path, records, cache = fasta200
    ds = load_fasta_dataset(path, seed=0, cache_dir=cache)
    assert set(ds) == {"train", "validation"}
    assert ds["train"].column_names == ["id", "sequence"]
    assert (len(ds["train"]), len(ds["validation"])) == (198, 2)  # round(0.01 * 200)
    again = load_fasta_dataset(path, seed=0, cache_dir=cache)
    assert list(again["validation"]["id"]) == list(ds["validation"]["id"])
    train_ids, val_ids = list(ds["train"]["id"]), list(ds["validation"]["id"])
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == sorted(r for r, _ in records)
    # rows are the file's (id, sequence) pairs, train kept in file order
    by_id = dict(records)
    assert all(by_id[r["id"]] == r["sequence"] for r in ds["train"])
    assert train_ids == [r for r, _ in records if r not in set(val_ids)]

    v20 = [load_fasta_dataset(path, validation_size=20, seed=s, cache_dir=cache) for s in (0, 0, 1)]
    assert (len(v20[0]["train"]), len(v20[0]["validation"])) == (180, 20)
    assert list(v20[0]["validation"]["id"]) == list(v20[1]["validation"]["id"])
    assert set(v20[0]["validation"]["id"]) != set(v20[2]["validation"]["id"])
    # fraction 0.1 and size 20 pick the same records: the 20 smallest keys
    f10 = load_fasta_dataset(path, validation_fraction=0.1, seed=0, cache_dir=cache)
    assert list(f10["validation"]["id"]) == list(v20[0]["validation"]["id"])


def test_dataset_filters_and_subset(fasta200):
    path, records, cache = fasta200
    sub = load_fasta_dataset(path, max_sequences=50, validation_size=10, cache_dir=cache)
    assert (len(sub["train"]), len(sub["validation"])) == (40, 10)
    ids = sorted(list(sub["train"]["id"]) + list(sub["validation"]["id"]))
    assert ids == sorted(r for r, _ in records[:50])
    long_only = load_fasta_dataset(path, min_length=60, validation_size=3, cache_dir=cache)
    expected = sorted(r for r, s in records if len(s) >= 60)
    got = sorted(list(long_only["train"]["id"]) + list(long_only["validation"]["id"]))
    assert got == expected and 0 < len(expected) < 200
    # keys depend only on the sequence: a record among the 10 smallest keys of all
    # 200 records is also among the 10 smallest of the first 50 (max_sequences=50)
    full = load_fasta_dataset(path, validation_size=10, cache_dir=cache)
    full_val_in_first50 = {r for r in full["validation"]["id"] if int(r[3:]) < 50}
    assert len(full_val_in_first50) >= 1
    assert full_val_in_first50 <= set(sub["validation"]["id"])


def test_dataset_duplicate_sequences_same_split(tmp_path):
    rng = random.Random(1)
    recs = [(f"u{i}", "".join(rng.choice("ACDEFGHIK") for _ in range(40))) for i in range(90)]
    recs += [(f"dup{i}", "MKTAYIAKQRQISFVKSHFSRQ") for i in range(10)]
    rng.shuffle(recs)
    seen = set()
    path = _write(tmp_path / "dup.fasta", "".join(f">{r}\n{s}\n" for r, s in recs))
    for seed in range(20):
        ds = load_fasta_dataset(path, validation_fraction=0.2, seed=seed, cache_dir=tmp_path / "c")
        dups_in_val = sum(r.startswith("dup") for r in ds["validation"]["id"])
        assert len(ds["validation"]) == 20 and dups_in_val in (0, 10), (seed, dups_in_val)
        seen.add(dups_in_val)
    assert seen == {0, 10}  # the duplicates went to validation for some seed


def test_dataset_cache_invalidated_when_file_changes(tmp_path):
    path = tmp_path / "c.fasta"
    _random_fasta(path, 20, seed=1)
    a = load_fasta_dataset(path, validation_size=2, cache_dir=tmp_path / "c")
    recs = _random_fasta(path, 30, seed=2)
    b = load_fasta_dataset(path, validation_size=2, cache_dir=tmp_path / "c")
    assert len(a["train"]) == 18 and len(b["train"]) == 28
    assert set(b["train"]["sequence"]) <= {s for _, s in recs}


def test_dataset_swissprot(tmp_path):
    ds = load_fasta_dataset(SWISSPROT_GZ, cache_dir=tmp_path)
    assert (len(ds["train"]), len(ds["validation"])) == (49_500, 500)
    assert ds["train"][0]["id"] == "A0A320"


def test_dataset_argument_errors(fasta200, tmp_path):
    path, _, cache = fasta200
    for kwargs, pattern in [
        ({"validation_fraction": 0.0}, "validation_fraction must be in"),
        ({"validation_fraction": 1.0}, "validation_fraction must be in"),
        ({"validation_size": 0}, "validation_size must be an int >= 1"),
        ({"validation_size": 200}, r"validation split \(200 records from validation_size\).*200 records"),
        ({"max_sequences": 0}, "max_sequences must be"),
        ({"max_sequences": 10, "validation_size": 10}, r"validation_size \(10\) must be < max_sequences"),
        ({"min_length": 0}, "min_length must be"),
        ({"min_length": 10_000}, "No records left.*min_length=10000"),
        ({"seed": -1}, "seed must be"),
        ({"streaming": True}, "validation_size is required when streaming"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            load_fasta_dataset(path, cache_dir=cache, **kwargs)
    with pytest.raises(FileNotFoundError, match="missing.fasta"):
        load_fasta_dataset(tmp_path / "missing.fasta")
    bad = _write(tmp_path / "bad.fasta", ">a\nAAAA\n>b\nAA7A\n")
    with pytest.raises(InvalidResidueError, match="'b'.*'7' at position 3"):
        load_fasta_dataset(bad, validation_size=1, cache_dir=tmp_path / "c")


def test_dataset_streaming(fasta200):
    path, records, _ = fasta200
    ds = load_fasta_dataset(path, streaming=True, validation_size=10, seed=3)
    val = list(ds["validation"])
    assert [(r["id"], r["sequence"]) for r in val] == records[:10]
    train_ids = [r["id"] for r in ds["train"]]
    rest = [r for r, _ in records[10:]]
    assert sorted(train_ids) == sorted(rest) and train_ids != rest  # all of the rest, shuffled
    again = [r["id"] for r in load_fasta_dataset(path, streaming=True, validation_size=10, seed=3)["train"]]
    assert again == train_ids


# --------------------------------------------------------------------------- collator


def _random_examples(n, length, seed=0):
    rng = random.Random(seed)
    lengths = length if isinstance(length, tuple) else (length, length)
    return [
        {"sequence": "".join(rng.choice(STANDARD_AMINO_ACIDS) for _ in range(rng.randint(*lengths)))}
        for _ in range(n)
    ]


def _unmasked(batch):
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


def test_collator_small_batch_exact(tok):
    c = MLMCollator(tok, generator=torch.Generator().manual_seed(0))
    b = c([{"sequence": "MKTAYIAKQR", "id": "x"}, {"sequence": "MK"}])
    assert {k: (tuple(v.shape), v.dtype) for k, v in b.items()} == {
        "input_ids": ((2, 12), torch.long), "attention_mask": ((2, 12), torch.long), "labels": ((2, 12), torch.long)
    }
    assert b["attention_mask"].tolist() == [[1] * 12, [1] * 4 + [0] * 8]
    assert _unmasked(b).tolist() == [MKTAYIAKQR_IDS, [0, 20, 15, 2] + [1] * 8]


def test_collator_masking_statistics(tok):
    c = MLMCollator(tok, max_length=502, generator=torch.Generator().manual_seed(1))
    examples = _random_examples(256, (300, 500))
    b = c(examples)
    ids, labels, att = b["input_ids"], b["labels"], b["attention_mask"]
    lengths = torch.tensor([len(e["sequence"]) for e in examples])
    pos = torch.arange(ids.shape[1])
    residue = (pos >= 1) & (pos <= lengths[:, None])
    selected = labels != -100
    n_res = int(residue.sum())
    assert n_res == int(lengths.sum())
    # never select <cls>, <eos>, <pad>; those tokens are left untouched
    assert not selected[~residue].any()
    assert (ids[:, 0] == 0).all() and (ids[torch.arange(256), lengths + 1] == 2).all()
    assert (ids[att == 0] == 1).all()
    # labels hold the original token ids exactly
    original = torch.full_like(ids, 1)
    for i, e in enumerate(examples):
        original[i, : lengths[i] + 2] = torch.tensor([0, *tokenize_residues(tok, e["sequence"]), 2])
    assert torch.equal(labels[selected], original[selected])
    assert torch.equal(ids[~selected], original[~selected])
    # selection rate 0.15 (n_res ~ 102k -> sd ~ 0.0011)
    rate = selected.sum().item() / n_res
    assert abs(rate - 0.15) < 0.006, rate
    n_sel = selected.sum().item()  # ~15k -> sd(0.8) ~ 0.0033, sd(0.1) ~ 0.0025
    to_mask = (ids == 32) & selected
    changed = selected & (ids != 32) & (ids != original)
    same = selected & (ids == original)
    # a random replacement equals the original with prob 1/20 -> 0.1*19/20 and 0.1 + 0.1/20
    assert abs(to_mask.sum().item() / n_sel - 0.80) < 0.015
    assert abs(changed.sum().item() / n_sel - 0.095) < 0.012
    assert abs(same.sum().item() / n_sel - 0.105) < 0.012
    standard_ids = set(tokenize_residues(tok, STANDARD_AMINO_ACIDS))
    assert set(ids[changed].tolist()) == standard_ids  # all 20, and nothing else


def test_collator_custom_probs(tok):
    c = MLMCollator(tok, mask_rate=0.5, mask_replace_prob=1.0, random_replace_prob=0.0,
                    generator=torch.Generator().manual_seed(2))
    b = c(_random_examples(32, 200))
    selected = b["labels"] != -100
    assert (b["input_ids"][selected] == 32).all() and not (b["input_ids"][~selected] == 32).any()
    assert abs(selected.sum().item() / (32 * 200) - 0.5) < 0.03


def test_collator_crop(tok):
    examples = _random_examples(40, (30, 60), seed=3) + [{"sequence": "ACDEFG"}]
    c = MLMCollator(tok, max_length=12, generator=torch.Generator().manual_seed(4))
    inv = {v: k for k, v in tok.get_vocab().items()}
    b = c(examples)
    assert b["input_ids"].shape == (41, 12)
    orig = _unmasked(b)
    for i, e in enumerate(examples):
        n = min(len(e["sequence"]), 10)
        assert orig[i, 0] == 0 and orig[i, n + 1] == 2
        window = "".join(inv[t] for t in orig[i, 1 : n + 1].tolist())
        assert len(window) == n and window in e["sequence"]
    assert b["attention_mask"][-1].tolist() == [1] * 8 + [0] * 4  # short row padded
    # start is uniform over the 3 valid starts of a 12-residue sequence
    seq = "ACDEFGHIKLMN"
    starts = []
    for _ in range(300):
        w = "".join(inv[t] for t in _unmasked(c([{"sequence": seq}]))[0, 1:11].tolist())
        starts.append(seq.index(w))
    counts = [starts.count(s) for s in range(3)]
    assert sum(counts) == 300 and all(60 <= k <= 140 for k in counts), counts
    # no random crop: the first max_length - 2 residues
    c0 = MLMCollator(tok, max_length=12, random_crop=False, generator=torch.Generator().manual_seed(4))
    b0 = c0(examples)
    for i, e in enumerate(examples[:-1]):
        assert "".join(inv[t] for t in _unmasked(b0)[i, 1:11].tolist()) == e["sequence"][:10]


def test_collator_determinism_and_resume(tok):
    examples = _random_examples(16, (20, 700), seed=5)

    def make(seed):
        return MLMCollator(tok, max_length=128, generator=torch.Generator().manual_seed(seed))

    a, b, other = make(123), make(123), make(124)
    ba, bb, bo = a(examples), b(examples), other(examples)
    assert all(torch.equal(ba[k], bb[k]) for k in ba)
    assert not torch.equal(ba["labels"], bo["labels"])
    # exact resume from a saved generator state
    state = a.generator.get_state()
    next1 = a(examples)
    a.generator.set_state(state)
    next2 = a(examples)
    assert all(torch.equal(next1[k], next2[k]) for k in next1)
    assert not torch.equal(next1["labels"], ba["labels"])
    # generator=None: seeded from the global torch RNG
    torch.manual_seed(7)
    g1 = MLMCollator(tok)(examples)
    torch.manual_seed(7)
    g2 = MLMCollator(tok)(examples)
    assert torch.equal(g1["input_ids"], g2["input_ids"])


def test_collator_errors(tok):
    for kwargs, pattern in [
        ({"mask_rate": 0.0}, "mask_rate must be in"),
        ({"mask_rate": 1.0}, "mask_rate must be in"),
        ({"mask_replace_prob": -0.1}, "mask_replace_prob must be in"),
        ({"random_replace_prob": 1.5}, "random_replace_prob must be in"),
        ({"mask_replace_prob": 0.95, "random_replace_prob": 0.1}, "mask_replace_prob \\+ random_replace_prob"),
        ({"max_length": 2}, "max_length must be an int >= 3"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            MLMCollator(tok, **kwargs)
    c = MLMCollator(tok)
    with pytest.raises(ValueError, match="key 'sequence'"):
        c([{"seq": "MK"}])
    with pytest.raises(ValueError, match="empty batch"):
        c([])
    with pytest.raises(ValueError, match=re.escape("'*' at position 3")):
        c([{"sequence": "MK*"}])


def test_collator_speed(tok):
    c = MLMCollator(tok, max_length=512, generator=torch.Generator().manual_seed(0))
    examples = _random_examples(64, (400, 1200), seed=6)
    c(examples)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        b = c(examples)
        times.append(time.perf_counter() - t0)
    assert b["input_ids"].shape == (64, 512)
    median = sorted(times)[5]
    print(f"collate 64 x 512: {median * 1e3:.1f} ms")
    assert median < 0.05


# --------------------------------------------------------------------------- fetch script


@pytest.fixture(scope="module")
def fetch():
    spec = importlib.util.spec_from_file_location("fetch_uniref50", REPO / "data" / "fetch_uniref50.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_args(fetch):
    args = fetch.parse_args([])
    assert args.url.endswith("/uniref50/uniref50.fasta.gz") and args.max_sequences is None
    assert fetch.parse_args(["--max-sequences", "5", "--out", "x.fasta.gz"]).max_sequences == 5
    for bad in (["--max-sequences", "0"], ["--out", "x.fasta"]):
        with pytest.raises(SystemExit):
            fetch.parse_args(bad)


def test_fetch_subset_from_file_url(fetch, tmp_path):
    out = tmp_path / "sub" / "s.fasta.gz"
    assert fetch.main(["--url", SWISSPROT_GZ.as_uri(), "--out", str(out), "--max-sequences", "5"]) == 0
    assert read_fasta(out) == list(itertools.islice(iter_fasta(SWISSPROT_GZ), 5))
    assert not Path(str(out) + ".part").exists()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = bytes(range(256)) * 400

    def do_GET(self):  # noqa: N802
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
        body = self.payload[start:]
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_fetch_download_resumes(fetch, tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/u.fasta.gz"
        out = tmp_path / "u.fasta.gz"
        Path(str(out) + ".part").write_bytes(_RangeHandler.payload[:1000])
        fetch.download(url, str(out), timeout=10)
        assert out.read_bytes() == _RangeHandler.payload
        assert not Path(str(out) + ".part").exists()
    finally:
        server.shutdown()
        server.server_close()
