"""Validated FASTA reading for protein pre-training data.

Parsing is done by :class:`biotite.sequence.io.fasta.FastaFile` (``read_iter``,
which streams line by line); this module only adds opening of plain/gzip files,
checks biotite does not do in streaming mode, and residue validation against
the ESM-2 vocabulary.

Sources
-------
* FASTA format: https://www.ncbi.nlm.nih.gov/genbank/fastaformat/
* ESM-2 vocabulary (``vocab.txt`` of ``facebook/esm2_t6_8M_UR50D``), Lin et al.,
  "Evolutionary-scale prediction of atomic-level protein structure with a
  language model", Science 2023.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from typing import Iterator

from biotite.file import InvalidFileError
from biotite.sequence.io.fasta import FastaFile

from ..errors import UserInputError

__all__ = [
    "ESM_RESIDUES",
    "STANDARD_AMINO_ACIDS",
    "FastaFormatError",
    "InvalidResidueError",
    "iter_fasta",
    "read_fasta",
    "validate_sequence",
]

#: The 20 standard amino acids (ProteinGym ``AA_vocab``); the ESM-2 tokens a random MLM replacement draws from.
STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: The 25 residue letters of the ESM-2 vocabulary (20 standard amino acids plus
#: X (unknown), B (D/N), U (selenocysteine), Z (E/Q), O (pyrrolysine)), in
#: vocabulary order (token ids 4..28).
ESM_RESIDUES: str = "LAGVSERTIDPKQNFYMHWCXBUZO"

# Case-insensitive: the first character that is not an ESM-2 residue letter.
_INVALID_RESIDUE_RE = re.compile(f"[^{ESM_RESIDUES}]", re.IGNORECASE)
_WHITESPACE_RE = re.compile(r"\s+")


class FastaFormatError(UserInputError):
    """A FASTA file is malformed (no header, text before the first header,
    a record without sequence, not a (gzip) text file, ...)."""


class InvalidResidueError(UserInputError):
    """A sequence contains a character that is not an ESM-2 residue letter."""


def validate_sequence(sequence: str, record_id: str, source: str = "") -> str:
    """Clean and validate one protein sequence.

    All whitespace is removed and the sequence is upper-cased.

    Args:
        sequence: raw residue string (any case, may contain whitespace).
        record_id: record identifier, used in error messages.
        source: file the record came from, used in error messages (optional).

    Returns:
        The cleaned, upper-case sequence; every character is in
        :data:`ESM_RESIDUES`. May be empty if ``sequence`` is empty/whitespace
        (emptiness is checked by :func:`iter_fasta`, not here).

    Raises:
        InvalidResidueError: a character is not one of the 25 ESM-2 residue
            letters; the message names the record, the 1-based residue position
            (counted after whitespace removal), the character and the alphabet.
    """
    cleaned = _WHITESPACE_RE.sub("", sequence)
    bad = _INVALID_RESIDUE_RE.search(cleaned)
    if bad is not None:
        where = f" in {source}" if source else ""
        raise InvalidResidueError(
            f"Record {record_id!r}{where}: invalid residue {bad.group()!r} at "
            f"position {bad.start() + 1} (1-based). Allowed residues "
            f"(case-insensitive) are the 25 ESM-2 letters {ESM_RESIDUES}. "
            "Fix: replace unknown/non-standard residues with 'X' and remove "
            "gap ('-', '.') and stop ('*') characters, or drop the record."
        )
    return cleaned.upper()


def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open ``path`` as text; ``*.gz`` is decompressed on the fly."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"FASTA file not found: {path!r}. Check the path.")
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"FASTA path {path!r} is a directory; pass a .fasta or .fasta.gz file."
        )
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "rt", encoding="utf-8")


def _check_starts_with_header(handle: io.TextIOBase, path: str) -> None:
    """Raise if the first data line of ``handle`` is not a '>' header.

    biotite's ``FastaFile.read_iter`` silently drops lines before the first
    header (``FastaFile.read`` raises ``InvalidFileError`` instead), so this is
    checked explicitly; the handle is rewound afterwards.
    """
    for lineno, line in enumerate(iter(handle.readline, ""), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] == ";":  # biotite skips these too
            continue
        if stripped[0] != ">":
            raise FastaFormatError(
                f"Malformed FASTA file {path!r}: line {lineno} ({stripped[:40]!r}) "
                "comes before the first '>' header. Every record must start with "
                "a header line such as '>record_id description'."
            )
        break
    else:
        raise FastaFormatError(
            f"FASTA file {path!r} is empty (no '>' header found). "
            "Provide a file with at least one record."
        )
    handle.seek(0)


def iter_fasta(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Stream validated records from a ``.fasta`` or ``.fasta.gz`` file.

    Uses ``biotite.sequence.io.fasta.FastaFile.read_iter``, which reads line by
    line: memory use is one record, not the file. Multi-line (wrapped)
    sequences are joined; blank lines and ';' comment lines are ignored.

    Args:
        path: path to a FASTA file; names ending in ``.gz`` are read with gzip.

    Yields:
        ``(record_id, sequence)``: ``record_id`` is the first
        whitespace-separated token of the header (without '>'); ``sequence``
        is upper-case, whitespace-free and only contains :data:`ESM_RESIDUES`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FastaFormatError: the file is empty, has text before the first header,
            has an empty header or a record without sequence, is not valid
            UTF-8 text or not valid gzip (raised lazily, while iterating).
        InvalidResidueError: a sequence contains a non-ESM-2 character (see
            :func:`validate_sequence`).
    """
    source = os.fspath(path)
    with _open_text(source) as handle:
        try:
            _check_starts_with_header(handle, source)
            for n, (header, raw_seq) in enumerate(FastaFile.read_iter(handle), 1):
                tokens = header.split()
                if not tokens:
                    raise FastaFormatError(
                        f"Malformed FASTA file {source!r}: record #{n} has an "
                        "empty header line ('>' with no identifier). Give every "
                        "record an identifier, e.g. '>seq1'."
                    )
                record_id = tokens[0]
                sequence = validate_sequence(raw_seq, record_id, source)
                if not sequence:
                    raise FastaFormatError(
                        f"Malformed FASTA file {source!r}: record {record_id!r} "
                        f"(#{n}) has no sequence. Remove the record or add its "
                        "residues on the lines after the header."
                    )
                yield record_id, sequence
        except InvalidFileError as err:  # defensive: read() path of biotite
            raise FastaFormatError(f"Malformed FASTA file {source!r}: {err}") from err
        except UnicodeDecodeError as err:
            raise FastaFormatError(
                f"FASTA file {source!r} is not UTF-8 text ({err}). Is it a binary "
                "or differently compressed file? Only .fasta and .fasta.gz are "
                "supported."
            ) from err
        except (gzip.BadGzipFile, EOFError) as err:
            raise FastaFormatError(
                f"FASTA file {source!r} is not a valid/complete gzip file ({err}). "
                "Re-download it or decompress it and pass the plain .fasta file."
            ) from err


def read_fasta(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read all validated records of a FASTA file into memory.

    Same contract (yielded values, errors) as :func:`iter_fasta`; use that for
    large files.

    Returns:
        list of ``(record_id, sequence)`` in file order.
    """
    return list(iter_fasta(path))
