"""Parsing and validation of ProteinGym substitution mutants.

ProteinGym (Notin et al., NeurIPS 2023; https://github.com/OATML-Markslab/ProteinGym) writes a
substitution mutant as ``<wt><pos><mt>``, e.g. ``A23C``: wild-type residue ``A`` at 1-based
position 23 of the assay's ``target_seq`` mutated to ``C``. Multi-mutants join single
substitutions with ``:``, e.g. ``A23C:G45W``. This mirrors ``get_mutated_sequence`` in
``proteingym/utils/scoring_utils.py`` and ``label_row`` in
``proteingym/baselines/esm/compute_fitness.py`` (which assert that the listed wild type matches the
sequence and that the mutant residue is one of the 20 standard amino acids).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..data.fasta import ESM_RESIDUES, STANDARD_AMINO_ACIDS
from ..errors import UserInputError

__all__ = [
    "ALLOWED_MUTANT_RESIDUES",
    "MutantMismatchError",
    "apply_mutant",
    "parse_mutant",
    "validate_mutants",
]

#: Residues accepted as the mutant (``mt``) residue: the 25 letters of the ESM-2 vocabulary.
ALLOWED_MUTANT_RESIDUES = frozenset(ESM_RESIDUES)

_SINGLE_RE = re.compile(r"^([A-Za-z])([0-9]+)([A-Za-z])$")
_MAX_REPORTED = 5


class MutantMismatchError(UserInputError):
    """A mutant string does not fit its assay's reference sequence, or is malformed.

    Raised by :func:`validate_mutants` (and therefore by the ProteinGym scoring functions). The
    message names the assay and the offending mutant(s).
    """


def parse_mutant(mutant: str) -> list[tuple[str, int, str]]:
    """Parse a ProteinGym mutant string into substitutions.

    Args:
        mutant: ``"A23C"`` or a ``":"``-joined multi-mutant such as ``"A23C:G45W"``. Surrounding
            whitespace is ignored; letters are upper-cased.

    Returns:
        One ``(wt, pos, mt)`` tuple per substitution, in the order written, with ``pos`` the
        **1-based** position on the reference sequence, e.g.
        ``parse_mutant("A23C:G45W") == [("A", 23, "C"), ("G", 45, "W")]``.

    Raises:
        ValueError: the string is empty, not a string, or a part is not ``<letter><digits><letter>``
            (e.g. ``"A23"``, ``"23C"``, ``"A2.3C"``, ``"A23C::G45W"``).

    Source: format of ProteinGym's ``mutant`` column; parsed like ``label_row`` in
    ``proteingym/baselines/esm/compute_fitness.py`` (``mutation[0], int(mutation[1:-1]),
    mutation[-1]`` for each ``":"``-separated part), but strict about malformed input.
    """
    if not isinstance(mutant, str) or not mutant.strip():
        raise ValueError(
            f"malformed mutant {mutant!r}: expected a string like 'A23C' or 'A23C:G45W'"
        )
    out: list[tuple[str, int, str]] = []
    for part in mutant.strip().split(":"):
        m = _SINGLE_RE.match(part.strip())
        if m is None:
            raise ValueError(
                f"malformed mutant {mutant!r}: part {part!r} is not <wt><1-based position><mt> "
                "(expected e.g. 'A23C' or 'A23C:G45W')"
            )
        out.append((m.group(1).upper(), int(m.group(2)), m.group(3).upper()))
    return out


def _problem(target_seq: str, mutant: object) -> str | None:
    """Return a description of what is wrong with ``mutant``, or ``None`` if it is valid."""
    try:
        subs = parse_mutant(mutant)  # type: ignore[arg-type]
    except ValueError as err:
        return str(err)
    n = len(target_seq)
    for wt, pos, mt in subs:
        if not 1 <= pos <= n:
            return (
                f"mutant {mutant!r}: position {pos} is outside the target sequence "
                f"(length {n}, positions are 1-based)"
            )
        if target_seq[pos - 1] != wt:
            return (
                f"mutant {mutant!r}: wild-type residue {wt!r} at position {pos} does not match "
                f"target_seq, which has {target_seq[pos - 1]!r} there"
            )
        if mt not in ALLOWED_MUTANT_RESIDUES:
            return (
                f"mutant {mutant!r}: mutant residue {mt!r} is not one of the 20 standard amino "
                f"acids ({STANDARD_AMINO_ACIDS}) or an ESM-2 residue letter ({ESM_RESIDUES})"
            )
    return None


def validate_mutants(target_seq: str, mutants: Iterable[str], assay_id: str = "<assay>") -> None:
    """Check that every mutant is well formed and consistent with ``target_seq``.

    For each substitution ``wt, pos, mt`` of each mutant: ``1 <= pos <= len(target_seq)``,
    ``target_seq[pos - 1] == wt`` (1-based positions, as in ProteinGym), and ``mt`` is one of the
    20 standard amino acids or an ESM-2 residue token (``X B U Z O``).

    Args:
        target_seq: reference (wild-type) sequence of the assay, one letter per residue; compared
            upper-cased, as ProteinGym upper-cases ``target_seq``.
        mutants: mutant strings such as ``"A23C"`` / ``"A23C:G45W"``.
        assay_id: assay name used in the error message (e.g. the ProteinGym ``DMS_id``).

    Returns:
        ``None`` when everything is valid.

    Raises:
        MutantMismatchError: (a ``ValueError``) naming the assay, the number of bad mutants and
            up to five of them with the reason, and the usual fix (the assay file and
            ``target_seq`` must come from the same ProteinGym release).

    Source: the assertions in ``get_mutated_sequence`` (``proteingym/utils/scoring_utils.py``) and
    ``label_row`` (``proteingym/baselines/esm/compute_fitness.py``).
    """
    seq = target_seq.upper()
    problems: list[str] = []
    n_bad = 0
    for mutant in mutants:
        p = _problem(seq, mutant)
        if p is not None:
            n_bad += 1
            if len(problems) < _MAX_REPORTED:
                problems.append(p)
    if n_bad:
        more = f" (and {n_bad - len(problems)} more)" if n_bad > len(problems) else ""
        raise MutantMismatchError(
            f"Assay {assay_id}: {n_bad} mutant(s) do not fit target_seq (length {len(seq)}):\n  "
            + "\n  ".join(problems)
            + more
            + "\nFix: make sure the assay CSV and the reference target_seq come from the same "
            "ProteinGym release (e.g. DMS_substitutions.csv of v1.3 with the v1.3 substitution "
            "files), and that mutants are written as <wt><1-based position><mt>, joined by ':'."
        )


def apply_mutant(target_seq: str, mutant: str) -> str:
    """The mutated sequence: ``target_seq`` with every substitution of ``mutant`` applied.

    Mirrors ``get_mutated_sequence`` in ``proteingym/utils/scoring_utils.py`` (multi-mutants too).

    Args:
        target_seq: wild-type sequence, length ``L``.
        mutant: ``"A23C"`` or ``"A23C:G45W"`` (1-based positions).

    Returns:
        The mutated sequence, length ``L``.

    Raises:
        MutantMismatchError: the mutant is malformed, out of range, or its wild-type residue does not match.
    """
    problem = _problem(target_seq, mutant)
    if problem is not None:
        raise MutantMismatchError(f"{problem[0].upper()}{problem[1:]}. Fix: use mutants written on this target_seq.")
    residues = list(target_seq)
    for _, pos, mt in parse_mutant(mutant):
        residues[pos - 1] = mt.upper()
    return "".join(residues)
