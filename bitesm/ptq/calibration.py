"""Calibration-set sampling for post-training quantization (PTQ4Protein).

PTQ4Protein (Peng et al., 2023, arXiv 2310.19624, Table V) calibrates the activation ranges of a quantized
ESM-2 on a small set of proteins drawn from the pre-training distribution, and compares four ways of drawing
it; sampling "uniformly across sequence lengths" works best. :func:`sample_calibration_set` implements the
four modes (:data:`CALIBRATION_MODES`) over the records of a FASTA file:

================  ==============================================================================================
mode              how ``num_sequences`` records are drawn (all without replacement, from the *eligible* records,
                  i.e. ``min_length <= L <= max_length``, ``L`` = residues)
================  ==============================================================================================
``random``        uniformly over records: every eligible record is equally likely (the set's length
                  distribution follows the file's).
``prefer-short``  successive weighted draws with weight ``1 / L``: each draw picks a not-yet-drawn record with
                  probability proportional to ``1 / L``. For a small set the expected mean length is the
                  harmonic mean of the file's lengths (191 vs. an arithmetic mean of 360 residues on the
                  bundled Swiss-Prot sample).
``prefer-long``   the same with weight ``L`` (length-biased sampling): expected mean ``E[L^2] / E[L]``
                  (632 residues on the Swiss-Prot sample).
``uniform``       uniformly over sequence length: the eligible lengths are split into ``num_bins`` (default 16)
                  equal-width bins of **log** length spanning ``[min L, max L]`` (``log_bins=False``: of linear
                  length); each draw picks one of the bins that still has undrawn records uniformly at random,
                  then a record uniformly within that bin. The set's length histogram over those bins is flat
                  (``num_sequences / num_bins`` per bin) except where a bin holds fewer records than its share;
                  its shortfall is spread over the other bins. Log bins because protein lengths are
                  right-skewed (4 to 9,439 residues on the Swiss-Prot sample): linear bins would put 85% of
                  the records in the first bin and give the rare giants most of the set.
================  ==============================================================================================

``max_length`` *excludes* longer records rather than cropping them: a crop would pile the set up at
``max_length`` and distort the length distribution the modes are defined on. (To calibrate a model with a
1,024-token context, pass ``max_length=1022``.) ``min_length`` excludes shorter records.

Memory: the file is streamed once with :func:`bitesm.data.iter_fasta`, keeping each eligible record's index
and length (16 bytes per record) and, while the eligible residues total at most :data:`CACHE_MAX_RESIDUES`
(50 M characters, ~50 MB), the ids and sequences too. If the file is larger the cache is dropped and a second
pass fetches only the drawn records (stopping once all are found). Either way the result is identical.

The result is deterministic for a given file, arguments and ``seed`` (a :func:`numpy.random.default_rng`
stream), and is returned in draw order.
"""

from __future__ import annotations

import os
import statistics
from array import array
from typing import Iterable

import numpy as np

from ..data import iter_fasta

__all__ = [
    "CACHE_MAX_RESIDUES",
    "CALIBRATION_MODES",
    "DEFAULT_NUM_BINS",
    "length_bin_edges",
    "length_histogram",
    "length_summary",
    "sample_calibration_set",
]

#: The calibration-set sampling modes of PTQ4Protein Table V.
CALIBRATION_MODES = ("random", "prefer-short", "prefer-long", "uniform")
#: Default number of length bins of the ``uniform`` mode.
DEFAULT_NUM_BINS = 16
#: Eligible residues (characters) held in memory during the first pass; above this the sampler re-reads the
#: file to fetch the drawn records instead.
CACHE_MAX_RESIDUES = 50_000_000


def _check_int(name: str, value, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}). {hint}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}. {hint}")
    return int(value)


def length_bin_edges(lengths: Iterable[int], num_bins: int = DEFAULT_NUM_BINS, log: bool = True) -> np.ndarray:
    """Edges of ``num_bins`` equal-width bins spanning ``[min(lengths), max(lengths)]``.

    Args:
        lengths: sequence lengths (>= 1).
        num_bins: number of bins.
        log: equal width in ``log(length)`` (default) instead of in length.

    Returns:
        ``num_bins + 1`` increasing float edges (in residues, not log), first = min, last = max. Bin ``b`` is
        ``[edges[b], edges[b + 1])``; the last bin also contains ``max(lengths)`` (see :func:`length_histogram`).
    """
    num_bins = _check_int("num_bins", num_bins, 1, "Pass the number of length bins, e.g. 16.")
    arr = np.asarray(list(lengths) if not isinstance(lengths, np.ndarray) else lengths, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("lengths is empty; pass at least one sequence length.")
    if arr.min() < 1:
        raise ValueError(f"lengths must all be >= 1, got a minimum of {arr.min():g}.")
    lo, hi = float(arr.min()), float(arr.max())
    if log:
        edges = np.exp(np.linspace(np.log(lo), np.log(hi), num_bins + 1))
        # exp(log(10)) = 10.000000000000002: snap round-off back onto integers, so integer lengths at an edge
        # fall in the bin that starts there.
        rounded = np.round(edges)
        edges = np.where(np.abs(edges - rounded) <= 1e-9 * edges, rounded, edges)
        edges[0], edges[-1] = lo, hi
        return edges
    return np.linspace(lo, hi, num_bins + 1)


def _assign_bins(lengths: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each length (``[edges[b], edges[b+1])``; values >= the last edge go in the last bin)."""
    num_bins = len(edges) - 1
    idx = np.searchsorted(edges[1:-1], np.asarray(lengths, dtype=np.float64), side="right")
    return np.clip(idx, 0, num_bins - 1)


def length_histogram(lengths: Iterable[int], edges: np.ndarray) -> np.ndarray:
    """Number of ``lengths`` in each bin defined by ``edges`` (from :func:`length_bin_edges`).

    Lengths below ``edges[0]`` count in the first bin and lengths at or above ``edges[-1]`` in the last.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError("edges must be a 1-D array of at least 2 bin edges (see length_bin_edges).")
    arr = np.asarray(list(lengths) if not isinstance(lengths, np.ndarray) else lengths, dtype=np.float64)
    return np.bincount(_assign_bins(arr, edges), minlength=edges.size - 1)


def length_summary(seqs: Iterable[str] | Iterable[tuple[str, str]]) -> dict:
    """Length statistics (residues) of a set of sequences.

    Args:
        seqs: sequences, or ``(id, sequence)`` pairs as returned by :func:`sample_calibration_set`.

    Returns:
        ``{"n", "min", "median", "mean", "max"}`` (``median`` and ``mean`` are floats).
    """
    lengths = [len(s if isinstance(s, str) else s[1]) for s in seqs]
    if not lengths:
        raise ValueError("length_summary() got no sequences; pass a non-empty list.")
    return {
        "n": len(lengths),
        "min": min(lengths),
        "median": float(statistics.median(lengths)),
        "mean": float(statistics.fmean(lengths)),
        "max": max(lengths),
    }


def _draw(
    lengths: np.ndarray, num_sequences: int, mode: str, rng: np.random.Generator, num_bins: int, log_bins: bool
) -> np.ndarray:
    """Positions (into ``lengths``) of the drawn records, in draw order."""
    k = lengths.size
    if mode == "random":
        return rng.choice(k, size=num_sequences, replace=False)
    if mode in ("prefer-short", "prefer-long"):
        weights = 1.0 / lengths if mode == "prefer-short" else lengths.astype(np.float64)
        # Successive sampling: each draw is proportional to the weight among the not-yet-drawn records.
        return rng.choice(k, size=num_sequences, replace=False, p=weights / weights.sum())
    # uniform over length bins
    bins = _assign_bins(lengths, length_bin_edges(lengths, num_bins, log=log_bins))
    members = [rng.permutation(np.flatnonzero(bins == b)) for b in range(num_bins)]
    used = [0] * num_bins
    chosen = np.empty(num_sequences, dtype=np.int64)
    for i in range(num_sequences):
        open_bins = [b for b in range(num_bins) if used[b] < members[b].size]
        b = open_bins[int(rng.integers(len(open_bins)))]
        chosen[i] = members[b][used[b]]
        used[b] += 1
    return chosen


def sample_calibration_set(
    fasta: str | os.PathLike,
    num_sequences: int,
    mode: str = "uniform",
    seed: int = 0,
    max_length: int | None = None,
    min_length: int = 1,
    *,
    num_bins: int = DEFAULT_NUM_BINS,
    log_bins: bool = True,
) -> list[tuple[str, str]]:
    """Draw a PTQ calibration set of ``num_sequences`` records from a FASTA file (PTQ4Protein Table V).

    See the module docstring for the exact definition of each mode.

    Args:
        fasta: ``.fasta`` or ``.fasta.gz`` file (read with :func:`bitesm.data.iter_fasta`, which validates it).
        num_sequences: size of the set (distinct records, no replacement).
        mode: one of :data:`CALIBRATION_MODES`: ``"random"``, ``"prefer-short"``, ``"prefer-long"``,
            ``"uniform"`` (uniform over log-length bins; the paper's best).
        seed: seed of the :func:`numpy.random.default_rng` stream; same seed, same set.
        max_length: records longer than this many residues are excluded (not cropped); ``None``: no limit.
        min_length: records shorter than this many residues are excluded.
        num_bins: number of length bins of the ``uniform`` mode (ignored by the other modes).
        log_bins: ``uniform`` mode bins are equal-width in log length (default) or, if ``False``, in length.

    Returns:
        ``[(record_id, sequence), ...]`` of length ``num_sequences``, in draw order.

    Raises:
        ValueError: unknown ``mode``; ``num_sequences`` < 1 or more than the eligible records;
            ``min_length`` < 1 or ``max_length`` < ``min_length``; no record passes the length filter; the
            file is empty or malformed (:class:`bitesm.data.FastaFormatError`, a ``ValueError``).
        TypeError: a count/seed argument is not an int.
        FileNotFoundError: ``fasta`` does not exist.
    """
    if mode not in CALIBRATION_MODES:
        raise ValueError(
            f"mode={mode!r} is not a calibration mode; choose one of {', '.join(map(repr, CALIBRATION_MODES))}."
        )
    num_sequences = _check_int(
        "num_sequences", num_sequences, 1, "Pass the number of calibration sequences to draw, e.g. 128."
    )
    seed = _check_int("seed", seed, 0, "Pass a non-negative integer seed, e.g. 0.")
    min_length = _check_int("min_length", min_length, 1, "Pass a minimum length in residues, e.g. 1.")
    if max_length is not None:
        max_length = _check_int(
            "max_length", max_length, min_length, "Pass max_length >= min_length (residues), or None for no limit."
        )
    num_bins = _check_int("num_bins", num_bins, 1, "Pass the number of length bins, e.g. 16.")

    source = os.fspath(fasta)
    record_index = array("q")  # file position (0-based record number) of each eligible record
    lengths = array("q")
    cache_ids: list[str] = []
    cache_seqs: list[str] = []
    cached, cached_residues, n_records = True, 0, 0
    cache_limit = CACHE_MAX_RESIDUES
    for i, (record_id, seq) in enumerate(iter_fasta(source)):
        n_records += 1
        length = len(seq)
        if length < min_length or (max_length is not None and length > max_length):
            continue
        record_index.append(i)
        lengths.append(length)
        if cached:
            cached_residues += length
            if cached_residues > cache_limit:
                cached = False
                cache_ids, cache_seqs = [], []
            else:
                cache_ids.append(record_id)
                cache_seqs.append(seq)

    n_eligible = len(lengths)
    limits = f"min_length={min_length}, max_length={max_length}"
    if n_eligible == 0:
        raise ValueError(
            f"No record of {source!r} ({n_records} records) has a length within {limits}. "
            "Relax max_length/min_length."
        )
    if num_sequences > n_eligible:
        raise ValueError(
            f"num_sequences={num_sequences} exceeds the {n_eligible} eligible records of {source!r} "
            f"({n_records} records, {n_records - n_eligible} excluded by {limits}). Lower num_sequences or "
            "relax max_length/min_length."
        )

    rng = np.random.default_rng(seed)
    chosen = _draw(np.frombuffer(lengths, dtype=np.int64), num_sequences, mode, rng, num_bins, log_bins)

    if cached:
        return [(cache_ids[j], cache_seqs[j]) for j in chosen]

    # Second pass: fetch the drawn records by their position in the file.
    wanted = {int(record_index[j]): (slot, int(lengths[j])) for slot, j in enumerate(chosen)}
    result: list[tuple[str, str] | None] = [None] * num_sequences
    remaining = len(wanted)
    for i, (record_id, seq) in enumerate(iter_fasta(source)):
        hit = wanted.get(i)
        if hit is None:
            continue
        slot, length = hit
        if len(seq) != length:
            break
        result[slot] = (record_id, seq)
        remaining -= 1
        if remaining == 0:
            break
    if remaining:
        raise RuntimeError(f"FASTA file {source!r} changed while the calibration set was being drawn; retry.")
    return result  # type: ignore[return-value]
