"""FASTA -> Hugging Face ``datasets`` with a deterministic held-out split.

Source: Hugging Face ``datasets`` (``Dataset.from_generator``,
``IterableDataset.from_generator``), https://huggingface.co/docs/datasets.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Iterator

import numpy as np
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    Value,
)
from datasets.exceptions import DatasetGenerationError

from .fasta import FastaFormatError, InvalidResidueError, iter_fasta

__all__ = ["load_fasta_dataset"]

logger = logging.getLogger(__name__)

_FEATURES = Features({"id": Value("string"), "sequence": Value("string")})
_KEY_COLUMN = "_split_key"
_FEATURES_WITH_KEY = Features({**_FEATURES, _KEY_COLUMN: Value("int64")})
_U64 = np.uint64


def _sequence_key(sequence: str) -> int:
    """Seed-free 64-bit hash of a sequence (blake2b, 8-byte digest), as a
    signed int64 (``datasets`` cannot write uint64 values >= 2**63)."""
    return int.from_bytes(
        hashlib.blake2b(sequence.encode("ascii"), digest_size=8).digest(),
        "little",
        signed=True,
    )


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _records(
    path: str, max_sequences: int | None, min_length: int, with_key: bool, **_fingerprint
) -> Iterator[dict]:
    """Generator for ``from_generator``; extra kwargs only bust the cache."""
    n = 0
    for record_id, sequence in iter_fasta(path):
        if max_sequences is not None and n >= max_sequences:
            return
        if len(sequence) < min_length:
            continue
        n += 1
        row = {"id": record_id, "sequence": sequence}
        if with_key:
            row[_KEY_COLUMN] = _sequence_key(sequence)
        yield row


def _check_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


def load_fasta_dataset(
    path: str | os.PathLike,
    validation_fraction: float = 0.01,
    validation_size: int | None = None,
    seed: int = 0,
    max_sequences: int | None = None,
    min_length: int = 1,
    streaming: bool = False,
    *,
    cache_dir: str | os.PathLike | None = None,
    shuffle_buffer_size: int = 10_000,
) -> DatasetDict | IterableDatasetDict:
    """Load a (gzipped) FASTA file as train/validation splits.

    Records are read and validated with :func:`bitesm.data.iter_fasta`.
    Records shorter than ``min_length`` are skipped, then the first
    ``max_sequences`` remaining records (file order) are kept.

    **Non-streaming** (default): rows are written to an Arrow cache with
    ``datasets.Dataset.from_generator`` (memory-mapped, so larger-than-RAM
    files work; the cache key includes the path, file size and mtime, so an
    edited file is re-read). Held-out split: each record gets a key
    ``splitmix64(blake2b64(sequence) XOR splitmix64(seed))``; the validation
    split is the ``n_val`` records with the smallest keys (ties, i.e.
    duplicate sequences, broken by file order), where ``n_val =
    validation_size`` if given, else ``max(1, round(validation_fraction *
    N))``. Hence the split is deterministic given ``seed`` and the records,
    a record's key does not depend on file order or on ``max_sequences``, and
    identical sequences land in the same split (no exact-duplicate leakage),
    except possibly at the cut-off. Both splits keep file order (shuffle in
    the DataLoader).

    **Streaming** (``streaming=True``): ``datasets.IterableDataset.from_generator``
    (nothing cached; the file is re-read each pass). ``validation`` = the first
    ``validation_size`` records (required), ``train`` = the remaining records,
    shuffled with a ``shuffle_buffer_size`` buffer seeded by ``seed`` (set
    ``train.set_epoch(e)`` for a different order per epoch).
    ``validation_fraction`` is ignored. Beware of files sorted in a
    non-random order.

    Args:
        path: ``.fasta`` or ``.fasta.gz`` file.
        validation_fraction: fraction in (0, 1) held out (non-streaming, used
            when ``validation_size`` is None).
        validation_size: exact number of validation records (>= 1, < N);
            required when streaming.
        seed: int >= 0 for the split (non-streaming) / shuffle (streaming).
        max_sequences: keep at most this many records (>= 1) or None for all.
        min_length: skip sequences with fewer residues (>= 1).
        streaming: see above.
        cache_dir: Arrow cache folder (default: the ``datasets`` cache,
            ``~/.cache/huggingface/datasets``).
        shuffle_buffer_size: streaming train shuffle buffer (>= 1).

    Returns:
        ``DatasetDict`` (``IterableDatasetDict`` when streaming) with splits
        ``"train"`` and ``"validation"``, columns ``id`` (str, first token of
        the header) and ``sequence`` (str, upper-case ESM-2 residues).

    Raises:
        ValueError: invalid argument (the message names it), no records left
            after filtering, or ``n_val`` >= the number of records.
        FileNotFoundError: ``path`` does not exist.
        FastaFormatError, InvalidResidueError: bad file content (raised
            eagerly when not streaming, while iterating when streaming).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FASTA file not found: {path!r}. Check the data path.")
    _check_int("validation_size", validation_size, 1, allow_none=True)
    if validation_size is None and not (
        isinstance(validation_fraction, (int, float)) and 0.0 < validation_fraction < 1.0
    ):
        raise ValueError(
            f"validation_fraction must be in (0, 1), got {validation_fraction!r} "
            "(or pass validation_size)."
        )
    _check_int("seed", seed, 0)
    _check_int("max_sequences", max_sequences, 1, allow_none=True)
    _check_int("min_length", min_length, 1)
    _check_int("shuffle_buffer_size", shuffle_buffer_size, 1)
    if max_sequences is not None and validation_size is not None and validation_size >= max_sequences:
        raise ValueError(
            f"validation_size ({validation_size}) must be < max_sequences "
            f"({max_sequences}) so that the train split is not empty."
        )

    stat = os.stat(path)
    gen_kwargs = {
        "path": os.path.abspath(path),
        "max_sequences": max_sequences,
        "min_length": min_length,
        "file_size": stat.st_size,
        "file_mtime_ns": stat.st_mtime_ns,
    }

    if streaming:
        if validation_size is None:
            raise ValueError(
                "validation_size is required when streaming=True (validation = "
                "the first validation_size records); e.g. validation_size=1000."
            )
        stream = IterableDataset.from_generator(
            _records, features=_FEATURES, gen_kwargs={**gen_kwargs, "with_key": False}
        )
        return IterableDatasetDict(
            {
                "train": stream.skip(validation_size).shuffle(
                    seed=seed, buffer_size=shuffle_buffer_size
                ),
                "validation": stream.take(validation_size),
            }
        )

    try:
        full = Dataset.from_generator(
            _records,
            features=_FEATURES_WITH_KEY,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            gen_kwargs={**gen_kwargs, "with_key": True},
        )
    except DatasetGenerationError as err:
        # datasets wraps generator errors; surface ours unchanged.
        cause = err.__cause__
        while cause is not None and not isinstance(
            cause, (FastaFormatError, InvalidResidueError, OSError)
        ):
            cause = cause.__cause__
        if cause is not None:
            raise cause from err
        raise
    except ValueError as err:
        # datasets cannot build a 0-row dataset from a generator
        if "corresponds to no data" not in str(err):
            raise
        full = None

    n_total = 0 if full is None else len(full)
    if n_total == 0:
        raise ValueError(
            f"No records left in {path!r} after filtering with min_length={min_length}; "
            "lower min_length."
        ) from None
    n_val = validation_size if validation_size is not None else max(
        1, round(validation_fraction * n_total)
    )
    if n_val >= n_total:
        raise ValueError(
            f"The validation split ({n_val} records from "
            f"{'validation_size' if validation_size is not None else 'validation_fraction'}) "
            f"must be smaller than the {n_total} records in {path!r}; lower it."
        )

    keys = full.data.column(_KEY_COLUMN).to_numpy().view(np.uint64)
    mixed = _mix64(keys ^ _mix64(np.array([seed], dtype=np.uint64))[0])
    threshold = np.partition(mixed, n_val - 1)[n_val - 1]
    is_val = mixed < threshold
    ties = np.flatnonzero(mixed == threshold)[: n_val - int(is_val.sum())]
    is_val[ties] = True

    full = full.remove_columns(_KEY_COLUMN)
    splits = DatasetDict(
        {
            "train": full.select(np.flatnonzero(~is_val)),
            "validation": full.select(np.flatnonzero(is_val)),
        }
    )
    logger.info(
        "Loaded %s: %d train / %d validation records (seed=%d).",
        path, len(splits["train"]), len(splits["validation"]), seed,
    )
    return splits
