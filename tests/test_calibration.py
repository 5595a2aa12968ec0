"""Calibration-set sampling (PTQ4Protein Table V): determinism, sizes, length filters, errors on a small
synthetic FASTA; the length bias of each mode on the bundled 50k-record Swiss-Prot sample."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from bitesm.data import iter_fasta
from bitesm.ptq import calibration
from bitesm.ptq.calibration import (
    CALIBRATION_MODES,
    length_bin_edges,
    length_histogram,
    length_summary,
    sample_calibration_set,
)

from conftest import REPO

SWISSPROT = REPO / "data" / "pretrain" / "swissprot_2014-01_sample50k.fasta.gz"
N_SYNTH = 600


@pytest.fixture(scope="module")
def synth_fasta(tmp_path_factory):
    """600 records, right-skewed (log-normal) lengths 5..2000, gzip-compressed, 60-column wrapped."""
    rng = np.random.default_rng(123)
    lengths = np.clip(np.exp(rng.normal(np.log(250), 0.8, N_SYNTH)), 5, 2000).astype(int)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    path = tmp_path_factory.mktemp("calib") / "synth.fasta.gz"
    with gzip.open(path, "wt") as fh:
        for i, n in enumerate(lengths):
            seq = "".join(rng.choice(letters, n))
            fh.write(f">seq{i} synthetic\n")
            fh.writelines(seq[j : j + 60] + "\n" for j in range(0, n, 60))
    return path, dict(iter_fasta(path))


@pytest.mark.parametrize("mode", CALIBRATION_MODES)
def test_deterministic_exact_size_and_real_records(synth_fasta, mode):
    path, records = synth_fasta
    a = sample_calibration_set(path, 50, mode=mode, seed=7)
    assert a == sample_calibration_set(path, 50, mode=mode, seed=7)
    assert a != sample_calibration_set(path, 50, mode=mode, seed=8)
    assert len(a) == 50 and len({rid for rid, _ in a}) == 50  # no replacement
    assert all(records[rid] == seq for rid, seq in a)


def test_default_mode_is_uniform(synth_fasta):
    path, _ = synth_fasta
    assert sample_calibration_set(path, 20) == sample_calibration_set(path, 20, mode="uniform", seed=0)


@pytest.mark.parametrize("mode", CALIBRATION_MODES)
def test_length_filters_exclude_and_whole_eligible_set(synth_fasta, mode):
    path, records = synth_fasta
    eligible = {rid for rid, s in records.items() if 50 <= len(s) <= 300}
    got = sample_calibration_set(path, len(eligible), mode=mode, min_length=50, max_length=300)
    assert {rid for rid, _ in got} == eligible  # excluded, not cropped: exactly the eligible records
    assert all(records[rid] == seq for rid, seq in got)


@pytest.mark.parametrize("mode", CALIBRATION_MODES)
def test_second_pass_matches_in_memory_path(synth_fasta, monkeypatch, mode):
    path, _ = synth_fasta
    cached = sample_calibration_set(path, 40, mode=mode, seed=3, max_length=1000)
    monkeypatch.setattr(calibration, "CACHE_MAX_RESIDUES", 1000)  # forces the two-pass path
    assert sample_calibration_set(path, 40, mode=mode, seed=3, max_length=1000) == cached


def test_uniform_linear_bins_and_num_bins(synth_fasta):
    path, _ = synth_fasta
    got = sample_calibration_set(path, 60, mode="uniform", num_bins=6, log_bins=False, seed=1)
    assert len(got) == 60
    assert got != sample_calibration_set(path, 60, mode="uniform", num_bins=6, log_bins=True, seed=1)


def test_errors(synth_fasta, tmp_path):
    path, records = synth_fasta
    with pytest.raises(ValueError, match=r"mode='shortest' is not a calibration mode; choose one of 'random'"):
        sample_calibration_set(path, 10, mode="shortest")
    with pytest.raises(ValueError, match=r"num_sequences must be >= 1, got 0\. Pass the number"):
        sample_calibration_set(path, 0)
    with pytest.raises(TypeError, match=r"num_sequences must be an int, got float"):
        sample_calibration_set(path, 10.0)
    with pytest.raises(ValueError, match=rf"num_sequences={N_SYNTH + 1} exceeds the {N_SYNTH} eligible records"):
        sample_calibration_set(path, N_SYNTH + 1)
    n_short = sum(len(s) <= 100 for s in records.values())
    with pytest.raises(ValueError, match=rf"exceeds the {n_short} eligible .* Lower num_sequences or relax max_length"):
        sample_calibration_set(path, n_short + 1, max_length=100)
    with pytest.raises(ValueError, match=r"No record .* has a length within min_length=3000, max_length=None"):
        sample_calibration_set(path, 1, min_length=3000)
    with pytest.raises(ValueError, match=r"max_length must be >= 10, got 5"):
        sample_calibration_set(path, 1, min_length=10, max_length=5)
    with pytest.raises(ValueError, match=r"min_length must be >= 1"):
        sample_calibration_set(path, 1, min_length=0)
    empty = tmp_path / "empty.fasta"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"is empty .* at least one record"):
        sample_calibration_set(empty, 1)
    with pytest.raises(FileNotFoundError):
        sample_calibration_set(tmp_path / "missing.fasta", 1)


def test_length_summary_and_bins():
    assert length_summary(["AAAA", "A", "AA"]) == {"n": 3, "min": 1, "median": 2.0, "mean": 7 / 3, "max": 4}
    assert length_summary([("a", "AAA"), ("b", "A")]) == {"n": 2, "min": 1, "median": 2.0, "mean": 2.0, "max": 3}
    with pytest.raises(ValueError, match="no sequences"):
        length_summary([])
    edges = length_bin_edges([1, 10, 100], num_bins=2)
    np.testing.assert_allclose(edges, [1, 10, 100])
    assert length_histogram([1, 5, 10, 99, 100], edges).tolist() == [2, 3]
    np.testing.assert_allclose(length_bin_edges([2, 12], num_bins=5, log=False), [2, 4, 6, 8, 10, 12])


# --- the bundled Swiss-Prot sample (50,000 records; ~0.8 s per pass) --------------------------------------


@pytest.fixture(scope="module")
def swissprot_sets():
    """The four modes at n=128, seed 0, plus every record length of the file."""
    sets = {mode: sample_calibration_set(SWISSPROT, 128, mode=mode, seed=0) for mode in CALIBRATION_MODES}
    all_lengths = np.array([len(s) for _, s in iter_fasta(SWISSPROT)])
    return sets, all_lengths


def test_swissprot_mode_length_bias(swissprot_sets):
    sets, all_lengths = swissprot_sets
    assert all_lengths.size == 50_000
    mean = {mode: length_summary(s)["mean"] for mode, s in sets.items()}
    # Measured (seed 0): prefer-short 191.5 < random 359.6 < prefer-long 639.1; file mean 360.2,
    # harmonic mean 190.1 (expected for weight 1/L), E[L^2]/E[L] 631.7 (expected for weight L).
    assert mean["prefer-short"] < 0.7 * mean["random"]
    assert mean["prefer-long"] > 1.4 * mean["random"]
    assert abs(mean["random"] - all_lengths.mean()) < 0.2 * all_lengths.mean()


def test_swissprot_uniform_histogram_flatter_than_random(swissprot_sets):
    sets, all_lengths = swissprot_sets
    edges = length_bin_edges(all_lengths, calibration.DEFAULT_NUM_BINS)  # the bins the sampler uses
    assert length_histogram(all_lengths, edges).min() >= 8  # every bin can hold its 128/16 share

    def cv(sample):
        counts = length_histogram([len(s) for _, s in sample], edges)
        return counts.std() / counts.mean()

    # Measured: CV over the 16 log-length bins, uniform ~0.3 (multinomial noise), random ~1.5.
    assert cv(sets["uniform"]) < 0.5
    assert cv(sets["random"]) > 3 * cv(sets["uniform"])
    lengths = [len(s) for _, s in sets["uniform"]]
    assert min(lengths) < 10 and max(lengths) > 5000  # covers the whole length range
