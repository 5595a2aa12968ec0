"""Labelled proteins for sequence-level heads: reading (CSV, or FASTA plus a labels file) and batch collation.

Formats
-------
* **CSV / TSV** (``.csv``, ``.tsv``, ``.txt``; the separator is detected): a header row, one protein per row, with a
  sequence column and a label column (``sequence`` and ``label`` by default); an ``id`` column is used when present.
* **FASTA** (``.fasta``, ``.fa``, ``.faa``, ``.fas``, optionally ``.gz``; read and validated by
  :func:`bitesm.data.fasta.iter_fasta`) plus a **labels file**: a CSV / TSV with an id column (the FASTA record
  ids, the first word of each header) and a label column. Every record needs exactly one label.

Sequences are validated against the ESM-2 alphabet (:func:`bitesm.data.fasta.validate_sequence`). The CSV reader is
pandas (``read_csv``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from .collator import _encode, _residue_lut
from .fasta import iter_fasta, validate_sequence

__all__ = [
    "FASTA_SUFFIXES",
    "LabelledDataError",
    "SequenceLabelCollator",
    "check_labels_used",
    "encode_labels",
    "holdout_split",
    "is_fasta",
    "load_labelled_sequences",
    "read_labels_file",
]

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")


class LabelledDataError(UserInputError):
    """A labelled-protein file is malformed or its labels do not match its sequences; the message names the file,
    the offending rows or ids, and the fix."""


def is_fasta(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as FASTA (by its suffix: :data:`FASTA_SUFFIXES`, optionally ``.gz``)."""
    name = os.fspath(path).lower().removesuffix(".gz")
    return name.endswith(FASTA_SUFFIXES)


def _read_table(path: str, columns: list[str], what: str):
    import pandas as pd

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} not found; check the path")
    try:
        table = pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabelledDataError(f"{what} {path!r} is not a readable CSV/TSV with a header row: {err}") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LabelledDataError(
            f"{what} {path!r} has no column(s) {missing}; its columns are {list(table.columns)}. Rename them or set "
            "head.sequence_column / head.label_column / head.id_column to match"
        )
    return table


def load_labelled_sequences(
    path: str | os.PathLike,
    labels_file: str | os.PathLike | None = None,
    sequence_column: str = "sequence",
    label_column: str = "label",
    id_column: str = "id",
    max_sequences: int | None = None,
    labels: dict[str, str] | None = None,
) -> list[dict[str, str]]:
    """Read labelled proteins from a CSV / TSV, or from a FASTA plus a labels file (see the module docstring).

    Args:
        path: the CSV / TSV or FASTA.
        labels_file: CSV / TSV of ``id_column`` and ``label_column`` for a FASTA (ignored for a CSV).
        sequence_column, label_column, id_column: column names.
        max_sequences: keep only the first N proteins (``None``: all).
        labels: an already read ``{id: label}`` mapping to use instead of ``labels_file`` (e.g. one labels file
            shared by a training and a validation FASTA).

    Returns:
        list of ``{"id", "sequence", "label"}`` in file order: ``sequence`` upper-case ESM-2 residues, ``label`` the
        label text as written (see :func:`encode_labels`).

    Raises:
        FileNotFoundError: a file does not exist.
        LabelledDataError: a missing column, an empty label, a FASTA without labels file, FASTA records without a
            label, duplicate ids in the labels file.
        bitesm.data.fasta.InvalidResidueError, bitesm.data.fasta.FastaFormatError: invalid sequences.
    """
    path = os.fspath(path)
    rows: list[dict[str, str]] = []
    if is_fasta(path):
        if labels is None:
            if labels_file is None:
                raise LabelledDataError(
                    f"{path!r} is a FASTA, which holds no labels; give head.labels_file, a CSV/TSV with columns "
                    f"{id_column!r} (the record ids) and {label_column!r}"
                )
            labels = read_labels_file(labels_file, id_column, label_column)
        missing = []
        for record_id, sequence in iter_fasta(path):
            if max_sequences is not None and len(rows) >= max_sequences:
                break
            if record_id not in labels:
                missing.append(record_id)
                continue
            rows.append({"id": record_id, "sequence": sequence, "label": labels[record_id]})
        if missing:
            raise LabelledDataError(
                f"{len(missing)} record(s) of FASTA {path!r} have no label in "
                f"{os.fspath(labels_file or 'the labels')!r} (first: {missing[:5]}); the labels file must list every "
                f"record id in column {id_column!r} "
                "(the first word of each FASTA header). Add the labels or remove those records"
            )
    else:
        table = _read_table(path, [sequence_column, label_column], "labelled-protein file")
        has_ids = id_column in table.columns
        for i, row in enumerate(table.itertuples(index=False)):
            if max_sequences is not None and len(rows) >= max_sequences:
                break
            values = dict(zip(table.columns, row))
            record_id = values[id_column] if has_ids and values[id_column] else f"row{i + 2}"
            rows.append(
                {
                    "id": record_id,
                    "sequence": validate_sequence(values[sequence_column], record_id, path),
                    "label": values[label_column].strip(),
                }
            )
    if not rows:
        raise LabelledDataError(f"{path!r} holds no labelled proteins")
    for row in rows:
        if not row["sequence"]:
            raise LabelledDataError(f"{path!r}: protein {row['id']!r} has an empty sequence; remove it")
        if row["label"] == "":
            raise LabelledDataError(f"{path!r}: protein {row['id']!r} has an empty label; fill it in or remove it")
    return rows


def read_labels_file(path: str | os.PathLike, id_column: str = "id", label_column: str = "label") -> dict[str, str]:
    """``{id: label}`` from a CSV / TSV labels file.

    Raises:
        FileNotFoundError: no file at ``path``.
        LabelledDataError: a missing column, or an id listed twice (the message names it).
    """
    path = os.fspath(path)
    table = _read_table(path, [id_column, label_column], "labels file")
    ids = table[id_column].str.strip()
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise LabelledDataError(
            f"labels file {path!r} lists id(s) {duplicated[:5]} more than once; keep one label per record"
        )
    return dict(zip(ids, table[label_column].str.strip()))


def check_labels_used(labels: dict[str, str], rows: list[dict], labels_file: str | os.PathLike) -> None:
    """Raise when a labels file names ids that none of the FASTA records has (a labels file of another FASTA).

    Raises:
        LabelledDataError: naming the unused ids.
    """
    unused = sorted(set(labels) - {row["id"] for row in rows})
    if unused:
        raise LabelledDataError(
            f"labels file {os.fspath(labels_file)!r} has {len(unused)} id(s) that match no FASTA record (first: "
            f"{unused[:5]}); it does not belong to these FASTA files, or the ids differ (ids are the first word of "
            "each FASTA header)"
        )


def encode_labels(
    rows: list[dict], task: str, label_names: list[str] | None = None, source: str = "the labels"
) -> tuple[list[dict], list[str] | None]:
    """Turn label text into model targets.

    Args:
        rows: :func:`load_labelled_sequences` rows.
        task: ``"classification"`` (class indices) or ``"regression"`` (floats).
        label_names: classification classes in index order (``None``: the sorted distinct labels of ``rows``,
            numerically when they are all numbers).
        source: how error messages name the data.

    Returns:
        ``(rows with "label" an int class index or a float, label_names)``; ``label_names`` is None for regression.

    Raises:
        LabelledDataError: a regression label that is not a finite number, or a classification label outside
            ``label_names`` (the message names the protein and the known classes).
    """
    out = []
    if task == "regression":
        for row in rows:
            try:
                value = float(row["label"])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise LabelledDataError(
                    f"{source}: protein {row['id']!r} has label {row['label']!r}, not a finite number; regression "
                    "needs numeric labels (or use head.task: classification)"
                )
            out.append({**row, "label": value})
        return out, None
    if task != "classification":
        raise ValueError(f"task={task!r}; use 'classification' or 'regression'")
    if label_names is None:
        distinct = set(row["label"] for row in rows)
        try:
            label_names = sorted(distinct, key=float)
        except ValueError:
            label_names = sorted(distinct)
    index = {name: i for i, name in enumerate(label_names)}
    for row in rows:
        if row["label"] not in index:
            raise LabelledDataError(
                f"{source}: protein {row['id']!r} has label {row['label']!r}, not one of the training classes "
                f"{label_names[:20]}"
            )
        out.append({**row, "label": index[row["label"]]})
    return out, list(label_names)


@dataclass(eq=False)
class SequenceLabelCollator:
    """Crop, tokenize and pad proteins with one label each.

    Args:
        tokenizer: ESM-2 tokenizer.
        max_length: tokens per row including ``<cls>`` and ``<eos>`` (>= 3); longer proteins are cropped.
        random_crop: crop a window starting uniformly at random (training); ``False`` keeps the first residues.
        generator: CPU ``torch.Generator`` for the crops (one draw per row, always); ``None``: a new one seeded from
            the global RNG. Its state is what a checkpoint stores for exact resume.
        regression: float labels (``True``) or class indices (``False``).

    Call:
        ``collator(examples)`` with dicts holding ``"sequence"`` (str) and ``"label"`` (int or float).

    Returns:
        dict with ``input_ids`` LongTensor ``[B, T]`` (``<cls>`` residues ``<eos>`` then ``<pad>``),
        ``attention_mask`` LongTensor ``[B, T]`` (1 = token), ``labels`` LongTensor ``[B]`` (classification) or
        float32 ``[B]`` (regression).

    Raises:
        ValueError: ``max_length < 3``, an empty batch, an example without ``sequence`` / ``label``.
    """

    tokenizer: Any
    max_length: int = 1024
    random_crop: bool = True
    generator: torch.Generator | None = None
    regression: bool = False
    _lut: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, (int, np.integer)) or self.max_length < 3:
            raise ValueError(f"max_length must be an int >= 3 (it counts <cls> and <eos>), got {self.max_length!r}")
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self._lut = _residue_lut(self.tokenizer)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("SequenceLabelCollator got an empty batch")
        try:
            seqs = [ex["sequence"] for ex in examples]
            labels = [ex["label"] for ex in examples]
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"SequenceLabelCollator expects dicts with 'sequence' and 'label', got {str(examples[0])[:80]}"
            ) from err
        n_res = self.max_length - 2
        u = torch.rand(len(seqs), generator=self.generator, dtype=torch.float64).tolist()
        tok = self.tokenizer
        rows = []
        for s, draw in zip(seqs, u):
            starts = max(len(s) - n_res + 1, 1)
            start = min(int(draw * starts), starts - 1) if self.random_crop else 0
            rows.append(_encode(self._lut, s[start : start + n_res]))
        width = max(len(r) for r in rows) + 2
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, 0] = tok.cls_token_id
            ids[i, 1 : len(r) + 1] = torch.from_numpy(r)
            ids[i, len(r) + 1] = tok.eos_token_id
            mask[i, : len(r) + 2] = 1
        dtype = torch.float32 if self.regression else torch.long
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(labels, dtype=dtype)}

    def for_validation(self) -> SequenceLabelCollator:
        """A copy that keeps every protein's first residues (no random crop, no generator use)."""
        return dataclasses.replace(self, random_crop=False, generator=torch.Generator().manual_seed(0))


def holdout_split(rows: list, validation_size: int, seed: int, source: str = "the data") -> tuple[list, list]:
    """``(train, validation)``: ``validation_size`` rows drawn with a seeded permutation, both in file order.

    Raises:
        LabelledDataError: ``validation_size`` leaves no training row.
    """
    if validation_size >= len(rows):
        raise LabelledDataError(
            f"data.validation_size={validation_size} holds out all {len(rows)} proteins of {source}; lower it or give "
            "head.validation_file"
        )
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:validation_size])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]

