"""Protein structures as residue contact maps, for the unsupervised contact-precision check (:mod:`.contacts`).

A structure file (PDB ``.pdb``/``.ent``, mmCIF ``.cif``/``.mmcif``, BinaryCIF ``.bcif``, each optionally gzipped,
``.gz``) is read with **biotite** (first model, first alternate location) and reduced to one protein chain:

* **residues**: the chain's amino-acid residues as they appear in the coordinate records (biotite's
  ``filter_amino_acids``: standard and modified residues, e.g. ``MSE``; water, ions and ligands are dropped).
  Residues that are not modelled in the file are absent, so a chain break joins its two ends in :attr:`sequence`.
* **sequence**: one letter per residue from the PDB chemical component dictionary
  (``biotite.structure.info.one_letter_code``): modified residues map to their parent (``MSE`` -> ``M``,
  ``SEP`` -> ``S``), residues without a one-letter code, or with one outside the ESM-2 alphabet, to ``X``.
* **distances**: Cβ–Cβ distances in Å, with Cα for glycine (CASP's and ESM's contact definition). A residue
  without that atom (a non-glycine residue modelled without Cβ) is **invalid**: its row and column are NaN and it
  takes no part in the evaluation.
* **contacts**: distance ``< threshold`` (8 Å) between two valid residues.

References: Rao et al. 2021, "Transformer protein language models are unsupervised structure learners" (ICLR; Cβ
8 Å contacts); the CASP contact definition (Cβ, Cα for Gly, < 8 Å); PTQ4Protein's contact check.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserInputError

__all__ = [
    "STRUCTURE_SUFFIXES",
    "ESM_RESIDUE_LETTERS",
    "StructureError",
    "StructureContacts",
    "find_structure_files",
    "load_structure_contacts",
    "structure_name",
]

#: Recognised structure file suffixes (each also with ``.gz``) -> format.
STRUCTURE_SUFFIXES = {".pdb": "pdb", ".ent": "pdb", ".cif": "cif", ".mmcif": "cif", ".bcif": "bcif"}
#: Residue letters of the ESM-2 vocabulary; any other one-letter code becomes ``X``.
ESM_RESIDUE_LETTERS = frozenset("ACDEFGHIKLMNPQRSTVWYXBZUO")


class StructureError(UserInputError):
    """A structure file cannot be used (unreadable, no protein chain, unknown chain); the message names the file
    and the fix."""


@dataclass
class StructureContacts:
    """One protein chain of a structure file as a contact map (module docstring).

    Attributes:
        sequence: one letter per residue, length ``L``.
        distances: float32 ``[L, L]``, Cβ–Cβ distance in Å (Cα for glycine); NaN in rows/columns of invalid
            residues.
        contacts: bool ``[L, L]``, ``distances < threshold`` between valid residues (symmetric; the diagonal is
            True for valid residues).
        valid: bool ``[L]``, the residue has the atom the distance needs.
        chain: the chain id read (author chain id for mmCIF).
        path: the file read.
        residue_ids: int ``[L]``, the residue numbers of the file (author numbering).
        threshold: contact distance cutoff in Å.
    """

    sequence: str
    distances: np.ndarray
    contacts: np.ndarray
    valid: np.ndarray
    chain: str
    path: str
    residue_ids: np.ndarray
    threshold: float = 8.0

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def name(self) -> str:
        """The file name without its structure suffixes (``1ae2A00.pdb.gz`` -> ``1ae2A00``)."""
        return structure_name(self.path)


def _split_suffix(path: Path) -> tuple[str, str | None, bool]:
    """``(stem, format or None, gzipped)`` of a file name."""
    name = path.name
    gz = name.lower().endswith(".gz")
    if gz:
        name = name[:-3]
    suffix = Path(name).suffix.lower()
    fmt = STRUCTURE_SUFFIXES.get(suffix)
    stem = name[: -len(suffix)] if fmt is not None else name
    return stem, fmt, gz


def structure_name(path: str | os.PathLike) -> str:
    """File name without the structure suffix and ``.gz`` (``data/structures/4N5T.pdb.gz`` -> ``4N5T``)."""
    return _split_suffix(Path(path))[0]


def find_structure_files(paths: str | os.PathLike | list | tuple) -> list[Path]:
    """Structure files named by a folder, a file, or a list of those.

    Args:
        paths: a folder (every file in it whose name ends in one of :data:`STRUCTURE_SUFFIXES`, optionally ``.gz``,
            sorted by name), a structure file, or a list/tuple mixing both (order kept, duplicates dropped).

    Returns:
        The files, as ``Path`` s.

    Raises:
        FileNotFoundError: a path does not exist.
        StructureError: a folder holds no structure file, a file has an unrecognised suffix, or nothing was given.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and _split_suffix(f)[1] is not None)
            if not files:
                raise StructureError(
                    f"structure folder {p} holds no structure file. Fix: put PDB (.pdb, .ent) or mmCIF (.cif, "
                    ".mmcif, .bcif) files there, optionally gzipped (.gz), or pass the files themselves."
                )
            found.extend(files)
        elif p.is_file():
            if _split_suffix(p)[1] is None:
                raise StructureError(
                    f"structure file {p} has an unrecognised suffix. Fix: name it .pdb, .ent, .cif, .mmcif or "
                    ".bcif (optionally + .gz) after its format."
                )
            found.append(p)
        else:
            raise FileNotFoundError(
                f"structure file or folder {p} does not exist. Fix: pass a PDB/mmCIF file or a folder of them "
                "(bitesm ships data/structures/)."
            )
    if not found:
        raise StructureError("no structure file given. Fix: pass a folder of PDB/mmCIF files or the files.")
    return list(dict.fromkeys(found))


def _read_atoms(path: Path):
    """First model of a structure file as a biotite ``AtomArray`` (first altloc)."""
    from biotite.structure.io import pdb, pdbx

    _, fmt, gz = _split_suffix(path)
    if fmt is None:
        raise StructureError(
            f"structure file {path} has an unrecognised suffix. Fix: name it .pdb, .ent, .cif, .mmcif or .bcif "
            "(optionally + .gz) after its format."
        )
    opener = gzip.open if gz else open
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # biotite warns when it guesses elements from atom names
            if fmt == "bcif":
                with opener(path, "rb") as f:
                    data = io.BytesIO(f.read())
                return pdbx.get_structure(pdbx.BinaryCIFFile.read(data), model=1)
            with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                text = io.StringIO(f.read())
            if fmt == "pdb":
                return pdb.PDBFile.read(text).get_structure(model=1)
            return pdbx.get_structure(pdbx.CIFFile.read(text), model=1)
    except Exception as err:  # biotite raises many types on malformed input (InvalidFileError, ValueError, ...)
        kind = {"pdb": "PDB", "cif": "mmCIF", "bcif": "BinaryCIF"}[fmt] + (" (gzipped)" if gz else "")
        raise StructureError(
            f"cannot read {path} as {kind}: {type(err).__name__}: {err}. Fix: check the file is a complete "
            f"{kind} file with ATOM records, named after its format."
        ) from err


def _one_letter(res_name: str) -> str:
    from biotite.structure.info import one_letter_code

    try:
        letter = one_letter_code(str(res_name))
    except Exception:  # noqa: BLE001 - a name absent from the CCD
        letter = None
    return letter if letter is not None and letter in ESM_RESIDUE_LETTERS else "X"


def load_structure_contacts(
    path: str | os.PathLike, chain: str | None = None, threshold: float = 8.0
) -> StructureContacts:
    """Read one protein chain of a PDB or mmCIF file (gzipped or not) as residues, Cβ distances and contacts.

    Args:
        path: ``.pdb``/``.ent``/``.cif``/``.mmcif``/``.bcif`` file, optionally ``.gz``; the first model is read.
        chain: chain id (author id for mmCIF); default the first chain (file order) with amino-acid residues.
        threshold: contact cutoff in Å (8 Å: CASP, Rao et al. 2021); a pair is a contact when its distance is
            strictly below it.

    Returns:
        :class:`StructureContacts` (``distances`` float32 ``[L, L]`` in Å, ``contacts`` bool ``[L, L]``,
        ``valid`` bool ``[L]``; see the module docstring for residues, letters and invalid residues).

    Raises:
        FileNotFoundError: no such file.
        StructureError: unrecognised suffix or unreadable file; no amino-acid chain; ``chain`` not in the file
            (the message lists the protein chains there); ``threshold`` not positive.
    """
    import biotite.structure as struc

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"structure file {path} does not exist. Fix: pass a PDB/mmCIF file (bitesm ships data/structures/)."
        )
    if not threshold > 0:
        raise StructureError(f"contact threshold must be > 0 Å, got {threshold!r}")
    atoms = _read_atoms(path)
    atoms = atoms[struc.filter_amino_acids(atoms)] if atoms.array_length() else atoms
    chains = list(dict.fromkeys(str(c) for c in atoms.chain_id))
    if not chains:
        raise StructureError(
            f"{path} has no protein chain (no amino-acid residues in its first model). Fix: pass a protein "
            "structure."
        )
    if chain is None:
        chain = chains[0]
    elif chain not in chains:
        raise StructureError(
            f"{path} has no protein chain {chain!r}; its protein chains are {chains}. Fix: pass one of those "
            "(author chain ids), or no chain for the first."
        )
    atoms = atoms[atoms.chain_id == chain]
    starts = struc.get_residue_starts(atoms, add_exclusive_stop=True)
    letters, coords, ids = [], [], []
    for begin, end in zip(starts[:-1], starts[1:]):
        letter = _one_letter(atoms.res_name[begin])
        wanted = "CA" if letter == "G" else "CB"
        hit = np.flatnonzero(atoms.atom_name[begin:end] == wanted)
        letters.append(letter)
        ids.append(int(atoms.res_id[begin]))
        coords.append(atoms.coord[begin + hit[0]] if hit.size else np.full(3, np.nan))
    xyz = np.asarray(coords, dtype=np.float64)
    valid = ~np.isnan(xyz).any(axis=1)
    distances = np.sqrt(((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        contacts = (distances < threshold) & valid[:, None] & valid[None, :]
    return StructureContacts(
        sequence="".join(letters), distances=distances, contacts=contacts, valid=valid, chain=chain,
        path=str(path), residue_ids=np.asarray(ids, dtype=np.int64), threshold=float(threshold),
    )
