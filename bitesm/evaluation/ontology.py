"""The Gene Ontology for function prediction: OBO loading, true-path propagation, information accretion, CAFA files.

What CAFA does, and what this module implements:

* **The graph** (:func:`load_ontology`): an OBO file is parsed with cafaeval's own parser
  (:func:`cafaeval.parser.obo_parser`, Piovesan et al. 2024, the CAFA-evaluator used by CAFA5), so that bitesm and the
  Fmax it reports see exactly the same graph: live (non-obsolete) terms, one sub-ontology per namespace
  (``biological_process`` / ``cellular_component`` / ``molecular_function``, called ``BPO`` / ``CCO`` / ``MFO`` as in
  CAFA5's ``train_terms.tsv``), parent edges ``is_a`` and ``relationship: part_of`` only, edges that leave the
  namespace dropped, ``alt_id`` s mapped to their canonical term. A gzip OBO (``.obo.gz``) is decompressed once to a
  content-addressed plain file (:func:`plain_obo_path`), because cafaeval opens the OBO by path.
* **Propagation** (:func:`propagate`): the true-path rule (Radivojac et al. 2013, CAFA1; Jiang et al. 2016, CAFA2):
  a protein annotated with a term is annotated with every ancestor of that term (through ``is_a`` / ``part_of``,
  within the namespace). Annotations are never propagated across namespaces.
* **Information accretion** (:func:`information_accretion`): ``IA(t) = -log2 P(t | Pa(t))``, the information a term
  adds once all its parents are known (Clark & Radivojac 2013), estimated from propagated annotations: the proteins
  annotated with ``t`` over the proteins annotated with all parents of ``t``, counted within ``t``'s namespace, with
  one artificial protein annotated with every term added to both counts (the estimator that produced CAFA5's
  ``IA.txt``, ``claradepaolis/InformationAccretion``). Roots have ``IA = 0``. :func:`write_ia` writes cafaeval's
  ``-ia`` file.
* **CAFA5 annotation files** (:func:`read_terms_tsv`): ``EntryID<TAB>term<TAB>aspect`` rows (header optional).

Unknown terms (policy of :func:`read_terms_tsv`): a term that is not a live term of the ontology (obsolete, or from
another release) is **dropped with one warning** that counts them and names the first few (``on_unknown="warn"``, the
default: cafaeval's ground-truth parser drops such terms too, so evaluation is unchanged), or raises
:class:`GoFormatError` (``on_unknown="error"``). An ``alt_id`` is replaced by its canonical term (as cafaeval does). A
row whose aspect disagrees with the term's namespace in the ontology follows the same policy (warn: the ontology's
namespace is used).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from ..errors import UserInputError

__all__ = [
    "ASPECTS",
    "ASPECT_OF_NAMESPACE",
    "ROOTS",
    "GeneOntology",
    "GoDataWarning",
    "GoFormatError",
    "ancestors",
    "annotation_sets",
    "information_accretion",
    "load_ontology",
    "open_text",
    "plain_obo_path",
    "propagate",
    "read_ia",
    "read_terms_tsv",
    "write_ia",
]

#: CAFA5 aspect codes -> OBO namespaces.
ASPECTS: dict[str, str] = {"BPO": "biological_process", "CCO": "cellular_component", "MFO": "molecular_function"}
#: OBO namespaces -> CAFA5 aspect codes.
ASPECT_OF_NAMESPACE: dict[str, str] = {v: k for k, v in ASPECTS.items()}
#: The Gene Ontology's three roots, per aspect.
ROOTS: dict[str, str] = {"BPO": "GO:0008150", "CCO": "GO:0005575", "MFO": "GO:0003674"}

_HEADER = ("EntryID", "term", "aspect")


class GoFormatError(UserInputError):
    """A GO input file (annotations, OBO, IA) is unusable; the message names the file, the line and the fix."""


class GoDataWarning(UserWarning):
    """Annotations were changed while reading (unknown / obsolete terms dropped, aspects corrected)."""


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a text file for reading; a name ending in ``.gz`` is decompressed on the fly (UTF-8).

    Raises:
        FileNotFoundError: no such file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GO input file {path} does not exist. Fix: pass an existing file (.gz allowed).")
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def plain_obo_path(path: str | os.PathLike) -> Path:
    """A plain-text OBO path for tools that open the file themselves (cafaeval).

    Args:
        path: ``.obo`` or ``.obo.gz`` file.

    Returns:
        ``path`` itself when it is not gzipped; else a decompressed copy at
        ``<tempdir>/bitesm-go/<sha256 of the .gz bytes>.obo``, written once (atomically) and reused by later calls.

    Raises:
        FileNotFoundError: no such file. GoFormatError: not a valid gzip file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OBO file {path} does not exist. Fix: pass --obo with a .obo or .obo.gz file.")
    if not path.name.endswith(".gz"):
        return path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = Path(tempfile.gettempdir()) / "bitesm-go" / f"{digest}.obo"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as dst, gzip.open(path, "rb") as src:
            while block := src.read(1 << 20):
                dst.write(block)
        os.replace(tmp, out)
    except (OSError, EOFError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise GoFormatError(f"OBO file {path} is not a valid gzip file ({err}). Fix: pass a .obo or .obo.gz file.")
    return out


class GeneOntology:
    """The live terms of a GO release, split by aspect, with their parents (``is_a`` + ``part_of``).

    Build with :func:`load_ontology` (an OBO file), or directly from dictionaries (tests, other formats).

    Args:
        aspect_of: ``{term: "BPO" | "CCO" | "MFO"}`` for every live term.
        parents: ``{term: parents}``; parents must be terms of the same aspect (others are ignored, as in CAFA).
        names: ``{term: name}`` (optional).
        alt_ids: ``{alt_id: (canonical term, ...)}`` (optional).
        obo_path: the plain-text OBO this graph came from (what cafaeval is given), if any.
        source: the file the user named (may be ``.gz``), if any.

    Raises:
        GoFormatError: an unknown aspect code, or a cycle through the parent edges.
    """

    def __init__(
        self,
        aspect_of: Mapping[str, str],
        parents: Mapping[str, Iterable[str]],
        names: Mapping[str, str] | None = None,
        alt_ids: Mapping[str, Iterable[str]] | None = None,
        obo_path: str | os.PathLike | None = None,
        source: str | os.PathLike | None = None,
    ) -> None:
        bad = {a for a in aspect_of.values() if a not in ASPECTS}
        if bad:
            raise GoFormatError(f"unknown aspect(s) {sorted(bad)}; expected {list(ASPECTS)}")
        self.aspect_of: dict[str, str] = dict(aspect_of)
        self.parents: dict[str, tuple[str, ...]] = {
            t: tuple(dict.fromkeys(p for p in parents.get(t, ()) if self.aspect_of.get(p) == a))
            for t, a in self.aspect_of.items()
        }
        self.names: dict[str, str] = dict(names or {})
        self.alt_ids: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (alt_ids or {}).items()}
        self.obo_path = Path(obo_path) if obo_path is not None else None
        self.source = Path(source) if source is not None else self.obo_path
        self._children: dict[str, list[str]] = defaultdict(list)
        for t, ps in self.parents.items():
            for p in ps:
                self._children[p].append(t)
        self._ancestors: dict[str, frozenset[str]] = {}
        for t in self.aspect_of:  # fills the cache; detects cycles
            self.ancestors(t)

    # -- terms ------------------------------------------------------------------------------
    def __contains__(self, term: object) -> bool:
        return term in self.aspect_of

    def __len__(self) -> int:
        return len(self.aspect_of)

    def __repr__(self) -> str:
        counts = {a: len(self.terms(a)) for a in ASPECTS}
        return f"GeneOntology({self.source or 'in memory'}, {counts})"

    def terms(self, aspect: str | None = None) -> list[str]:
        """Live terms, sorted; only those of ``aspect`` (``"BPO"``, ``"CCO"``, ``"MFO"``) if given."""
        return sorted(t for t, a in self.aspect_of.items() if aspect is None or a == aspect)

    def aspect(self, term: str) -> str:
        """``"BPO"`` / ``"CCO"`` / ``"MFO"`` of a live term. Raises KeyError for an unknown term."""
        return self.aspect_of[term]

    def children(self, term: str) -> tuple[str, ...]:
        """Direct children of ``term`` (through ``is_a`` / ``part_of``, same aspect)."""
        return tuple(self._children.get(term, ()))

    def canonical(self, term: str) -> tuple[str, ...]:
        """``(term,)`` for a live term, its canonical term(s) for an ``alt_id``, ``()`` for anything else."""
        if term in self.aspect_of:
            return (term,)
        return tuple(t for t in self.alt_ids.get(term, ()) if t in self.aspect_of)

    def ancestors(self, term: str, include_self: bool = True) -> frozenset[str]:
        """Every ancestor of ``term`` through ``is_a`` / ``part_of`` within its aspect (the true-path rule).

        Args:
            term: a live term.
            include_self: include ``term`` itself (the set a propagated annotation adds).

        Returns:
            frozenset of term ids (memoised).

        Raises:
            KeyError: ``term`` is not a live term. GoFormatError: the parent edges form a cycle.
        """
        found = self._ancestors.get(term)
        if found is None:
            if term not in self.aspect_of:
                raise KeyError(f"{term} is not a live term of {self!r}")
            # Iterative post-order DFS (no recursion limit on deep graphs).
            stack: list[tuple[str, bool]] = [(term, False)]
            on_path: set[str] = set()
            while stack:
                node, expanded = stack.pop()
                if node in self._ancestors:
                    continue
                if expanded:
                    acc = {node}
                    for p in self.parents[node]:
                        acc |= self._ancestors[p]
                    self._ancestors[node] = frozenset(acc)
                    on_path.discard(node)
                    continue
                if node in on_path:
                    raise GoFormatError(f"the ontology {self.source or ''} has a cycle through {node}")
                on_path.add(node)
                stack.append((node, True))
                for p in self.parents[node]:
                    if p not in self._ancestors:
                        if p in on_path:
                            raise GoFormatError(f"the ontology {self.source or ''} has a cycle through {p}")
                        stack.append((p, False))
            found = self._ancestors[term]
        return found if include_self else found - {term}

    def depth(self, term: str) -> int:
        """Number of ancestors of ``term`` (excluding itself): 0 for a root; an ancestor always has fewer."""
        return len(self.ancestors(term)) - 1

    # -- annotations -------------------------------------------------------------------------
    def propagate(self, annotations: pd.DataFrame) -> pd.DataFrame:
        """See :func:`propagate`."""
        return propagate(annotations, self)


def load_ontology(path: str | os.PathLike) -> GeneOntology:
    """Parse an OBO file (``.obo`` or ``.obo.gz``) with cafaeval's parser into a :class:`GeneOntology`.

    cafaeval (:func:`cafaeval.parser.obo_parser`, ``valid_rel=("is_a", "part_of")``) keeps live terms with a namespace
    and one graph per namespace, drops edges that leave the namespace and records ``alt_id`` s; this function keeps its
    terms, parent edges and alternative ids (and drops its dense adjacency matrices, ~0.7 GB for the 2014 GO). Results
    are memoised per (resolved path, size, modification time), the two most recent files: loading the same file twice
    costs nothing (treat the result as read-only).

    Args:
        path: OBO file; gzip is decompressed once to a temporary plain file (:func:`plain_obo_path`).

    Returns:
        :class:`GeneOntology` (``obo_path`` = the plain file to give to cafaeval).

    Raises:
        FileNotFoundError: no such file.
        GoFormatError: no term in any of the three GO namespaces (not a GO OBO file), or a cycle.

    Cost: about 6 s and 0.8 GB peak for the 2014 GO (40k terms) on one CPU core.

    Source: cafaeval 1.3.0 (Piovesan et al. 2024, "CAFA-evaluator: a Python tool for benchmarking ontological
    classification methods", Bioinformatics Advances).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OBO file {path} does not exist. Fix: pass --obo with a .obo or .obo.gz file.")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _ONTOLOGY_CACHE:
        return _ONTOLOGY_CACHE[key]
    from cafaeval.parser import obo_parser

    plain = plain_obo_path(path)
    try:
        graphs = obo_parser(str(plain), ("is_a", "part_of"), None, True)
    except UnicodeDecodeError as err:
        raise GoFormatError(f"OBO file {path} is not UTF-8 text ({err}). Fix: pass a .obo or .obo.gz file.")
    aspect_of: dict[str, str] = {}
    parents: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    alt: dict[str, list[str]] = defaultdict(list)
    for namespace, graph in graphs.items():
        aspect = ASPECT_OF_NAMESPACE.get(namespace)
        if aspect is None:  # a non-GO namespace (cafaeval is generic)
            continue
        for entry in graph.terms_list:
            term = entry["id"]
            aspect_of[term] = aspect
            parents[term] = [graph.terms_list[j]["id"] for j in sorted(entry["adj"])]
            names[term] = entry["name"]
        for a_id, canon in graph.terms_dict_alt.items():
            alt[a_id].extend(sorted(canon))
    del graphs
    if not aspect_of:
        raise GoFormatError(
            f"OBO file {path} has no live term in the namespaces {list(ASPECTS.values())}. Fix: pass a Gene Ontology "
            "OBO file (e.g. data/go/go_2014-01_metastudent.obo.gz)."
        )
    onto = GeneOntology(aspect_of, parents, names, alt, obo_path=plain, source=path)
    while len(_ONTOLOGY_CACHE) >= 2:  # keep the two most recent (a GO release is ~100 MB of Python objects)
        _ONTOLOGY_CACHE.pop(next(iter(_ONTOLOGY_CACHE)))
    _ONTOLOGY_CACHE[key] = onto
    return onto


_ONTOLOGY_CACHE: dict[tuple[str, int, int], GeneOntology] = {}


def ancestors(ontology: GeneOntology, term: str, include_self: bool = True) -> frozenset[str]:
    """:meth:`GeneOntology.ancestors` as a function (true-path rule: ``is_a`` / ``part_of`` within the aspect)."""
    return ontology.ancestors(term, include_self)


# ----------------------------------------------------------------------------------------------
# Annotations
# ----------------------------------------------------------------------------------------------
def _empty_annotations() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=str) for c in _HEADER})


def read_terms_tsv(
    path: str | os.PathLike, ontology: GeneOntology | None = None, on_unknown: str = "warn"
) -> pd.DataFrame:
    """Read CAFA5-style annotations: ``EntryID<TAB>term<TAB>aspect`` (``train_terms.tsv``), ``.gz`` allowed.

    The header line ``EntryID	term	aspect`` is optional. Blank lines are skipped. With an ontology, a two-column
    file (``EntryID<TAB>term``, cafaeval's ground-truth format) is accepted too: the aspect comes from the ontology.

    Args:
        path: the TSV file.
        ontology: check terms against it (module docstring: ``alt_id`` s are replaced by their canonical terms;
            unknown/obsolete terms and aspect mismatches follow ``on_unknown``). ``None``: rows are kept as read.
        on_unknown: ``"warn"`` (default: drop unknown terms, use the ontology's aspect, one :class:`GoDataWarning`
            with counts and examples), ``"ignore"`` (the same, silently) or ``"error"`` (raise).

    Returns:
        DataFrame with string columns ``EntryID``, ``term``, ``aspect`` (``"BPO"`` / ``"CCO"`` / ``"MFO"``),
        duplicates removed, file order kept.

    Raises:
        FileNotFoundError: no such file.
        GoFormatError: a row without 3 tab-separated fields (2 allowed with an ontology), an empty field, an aspect
            other than BPO/CCO/MFO, or (``on_unknown="error"``) a term not in the ontology / an aspect mismatch. The
            message names the file, the 1-based line and the fix.
        ValueError: an invalid ``on_unknown``.
    """
    if on_unknown not in ("warn", "ignore", "error"):
        raise ValueError(f"on_unknown must be 'warn', 'ignore' or 'error', got {on_unknown!r}")
    path = Path(path)
    rows: list[tuple[str, str, str]] = []
    unknown: list[tuple[int, str]] = []
    mismatched: list[tuple[int, str, str, str]] = []
    n_alt = 0
    fix = (f"Fix: write one annotation per line as EntryID<TAB>term<TAB>aspect with aspect in {list(ASPECTS)} "
           "(CAFA5 train_terms.tsv format).")
    try:
        with open_text(path) as handle:
            for lineno, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if lineno == 1 and fields[0].strip() == _HEADER[0]:
                    continue
                if len(fields) == 2 and ontology is not None:
                    fields = [*fields, ""]
                if len(fields) != 3:
                    raise GoFormatError(
                        f"{path}, line {lineno}: expected 3 tab-separated fields (EntryID, term, aspect), got "
                        f"{len(fields)}: {line[:80]!r}. {fix}"
                    )
                entry, term, aspect = (f.strip() for f in fields)
                if not entry or not term:
                    raise GoFormatError(f"{path}, line {lineno}: empty EntryID or term in {line[:80]!r}. {fix}")
                if aspect and aspect not in ASPECTS:
                    raise GoFormatError(
                        f"{path}, line {lineno}: unknown aspect {aspect!r} (expected one of {list(ASPECTS)}). {fix}"
                    )
                if ontology is None:
                    rows.append((entry, term, aspect))
                    continue
                canon = ontology.canonical(term)
                if not canon:
                    if on_unknown == "error":
                        raise GoFormatError(
                            f"{path}, line {lineno}: term {term} is not a live term of the ontology "
                            f"{ontology.source} (obsolete, or from another GO release). Fix: use the OBO the "
                            "annotations were made with, or read with on_unknown='warn' to drop such terms."
                        )
                    unknown.append((lineno, term))
                    continue
                if canon != (term,):
                    n_alt += 1
                for t in canon:
                    a = ontology.aspect(t)
                    if aspect and aspect != a:
                        if on_unknown == "error":
                            raise GoFormatError(
                                f"{path}, line {lineno}: term {t} has aspect {aspect} in the file but {a} "
                                f"({ASPECTS[a]}) in the ontology {ontology.source}. Fix: use the OBO the annotations "
                                "were made with, or read with on_unknown='warn' to take the ontology's aspect."
                            )
                        mismatched.append((lineno, t, aspect, a))
                    rows.append((entry, t, a))
    except UnicodeDecodeError as err:
        raise GoFormatError(f"{path} is not UTF-8 text ({err}). {fix}")
    except (gzip.BadGzipFile, EOFError) as err:
        raise GoFormatError(f"{path} is not a valid/complete gzip file ({err}). {fix}")
    if on_unknown == "warn" and (unknown or mismatched):
        parts = []
        if unknown:
            shown = ", ".join(f"{t} (line {n})" for n, t in unknown[:5])
            parts.append(f"dropped {len(unknown)} annotation(s) with terms not in the ontology {ontology.source}: "
                         f"{shown}{', ...' if len(unknown) > 5 else ''}")
        if mismatched:
            shown = ", ".join(f"{t} {fa}->{oa} (line {n})" for n, t, fa, oa in mismatched[:5])
            parts.append(f"{len(mismatched)} annotation(s) take their aspect from the ontology: {shown}")
        warnings.warn(f"{path}: " + "; ".join(parts) + ". Fix: use the OBO the annotations were made with.",
                      GoDataWarning, stacklevel=2)
    if not rows:
        return _empty_annotations()
    df = pd.DataFrame(rows, columns=list(_HEADER)).drop_duplicates(ignore_index=True)
    return df


def annotation_sets(annotations: pd.DataFrame) -> dict[str, dict[str, set[str]]]:
    """``{aspect: {EntryID: {term, ...}}}`` from an annotation table (``EntryID``, ``term``, ``aspect`` columns)."""
    out: dict[str, dict[str, set[str]]] = {a: {} for a in ASPECTS}
    for entry, term, aspect in zip(annotations["EntryID"], annotations["term"], annotations["aspect"]):
        out.setdefault(aspect, {}).setdefault(entry, set()).add(term)
    return out


def propagate(annotations: pd.DataFrame, ontology: GeneOntology) -> pd.DataFrame:
    """True-path rule: add every ancestor (``is_a`` / ``part_of``, same aspect) of every annotated term.

    Args:
        annotations: DataFrame with columns ``EntryID``, ``term`` (live terms of ``ontology``, e.g. from
            :func:`read_terms_tsv` with the same ontology) and ``aspect``.
        ontology: the graph.

    Returns:
        DataFrame ``EntryID``, ``term``, ``aspect`` of the propagated annotations: per protein (in order of first
        appearance) and aspect, the union of the ancestor sets of its terms (each pair once, terms sorted). Already
        propagated input comes back unchanged as a set (idempotent).

    Raises:
        KeyError: a term is not in ``ontology`` (read the file with ``ontology`` to drop or map such terms).

    Source: CAFA's true-path rule (Radivojac et al. 2013; Jiang et al. 2016); the edges cafaeval propagates
    ground truth through (``is_a``, ``part_of``).
    """
    sets: dict[tuple[str, str], set[str]] = {}
    for entry, term in zip(annotations["EntryID"], annotations["term"]):
        if term not in ontology:
            raise KeyError(f"term {term} (protein {entry}) is not a live term of {ontology!r}; read the annotations "
                           "with read_terms_tsv(path, ontology) to drop or map it")
        aspect = ontology.aspect(term)
        sets.setdefault((entry, aspect), set()).update(ontology.ancestors(term))
    entries, terms, aspects = [], [], []
    for (entry, aspect), ts in sets.items():
        for t in sorted(ts):
            entries.append(entry)
            terms.append(t)
            aspects.append(aspect)
    if not entries:
        return _empty_annotations()
    return pd.DataFrame({"EntryID": entries, "term": terms, "aspect": aspects})


# ----------------------------------------------------------------------------------------------
# Information accretion
# ----------------------------------------------------------------------------------------------
def information_accretion(
    annotations: pd.DataFrame, ontology: GeneOntology, propagated: bool = False, pseudocount: bool = True
) -> dict[str, float]:
    """Information accretion of every live term, from (training) annotations.

    ``IA(t) = -log2 P(t | Pa(t))``, with ``P`` estimated within ``t``'s aspect as ``n(t) / n(Pa(t))``: ``n(t)``
    proteins annotated with ``t`` (after propagation, which implies its parents), ``n(Pa(t))`` proteins annotated with
    every parent of ``t`` (all proteins annotated in the aspect for a root). With ``pseudocount`` one artificial
    protein annotated with every term is added to both counts (no division by zero; a term never seen below seen
    parents gets ``log2(n(Pa(t)) + 1)``). Values are >= 0; roots get 0; ``n(t) == n(Pa(t))`` gives exactly 0.

    Args:
        annotations: ``EntryID``, ``term``, ``aspect`` table (live terms of ``ontology``).
        ontology: the graph (parents through ``is_a`` / ``part_of``).
        propagated: the table is already propagated (skips :func:`propagate`; it must have been done with this
            ontology, else IA can be wrong).
        pseudocount: add the artificial all-terms protein (CAFA5's ``IA.txt`` estimator).

    Returns:
        ``{term: IA in bits}`` for every live term of the ontology (float; 0.0 where undefined without
        pseudocount, e.g. a term whose parents are never annotated).

    Raises:
        KeyError: a term is not in ``ontology``.

    Source: Clark & Radivojac 2013 ("Information-theoretic evaluation of predicted ontological annotations",
    Bioinformatics 29:i53); the estimator (pseudocount protein, per-aspect counts) of
    ``claradepaolis/InformationAccretion``, which produced CAFA5's ``IA.txt``.
    """
    prop = annotations if propagated else propagate(annotations, ontology)
    by_term: dict[str, set[str]] = defaultdict(set)
    proteins_in: dict[str, set[str]] = defaultdict(set)
    for entry, term, aspect in zip(prop["EntryID"], prop["term"], prop["aspect"]):
        by_term[term].add(entry)
        proteins_in[ontology.aspect(term)].add(entry)
    extra = 1 if pseudocount else 0
    ia: dict[str, float] = {}
    for term, aspect in ontology.aspect_of.items():
        n_t = len(by_term.get(term, ())) + extra
        parents = ontology.parents[term]
        if not parents:
            n_pa = len(proteins_in.get(aspect, ())) + extra
        else:
            sets = sorted((by_term.get(p, set()) for p in parents), key=len)
            common = sets[0].intersection(*sets[1:]) if sets[0] else set()
            n_pa = len(common) + extra
        if n_t == 0 or n_pa == 0 or n_t >= n_pa:
            ia[term] = 0.0
        else:
            ia[term] = -math.log2(n_t / n_pa)
    return ia


def write_ia(ia: Mapping[str, float], path: str | os.PathLike) -> Path:
    """Write an IA table as cafaeval's ``-ia`` file: ``term<TAB>IA`` per line, no header, terms sorted.

    Values are written with 17 significant digits (round-trip exact). cafaeval ignores terms with IA 0 in the
    weighted metrics. Written atomically; the folder is created.

    Returns:
        ``Path(path)``.
    """
    from ..io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, "".join(f"{t}\t{float(v):.17g}\n" for t, v in sorted(ia.items())))
    return path


def read_ia(path: str | os.PathLike) -> dict[str, float]:
    """Read an IA file (``term`` and ``IA`` separated by whitespace, one per line; ``.gz`` allowed).

    Raises:
        FileNotFoundError: no such file.
        GoFormatError: a line without exactly two fields or a non-numeric / negative IA (names file and line).
    """
    path = Path(path)
    out: dict[str, float] = {}
    with open_text(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            fields = raw.split()
            try:
                if len(fields) != 2:
                    raise ValueError
                value = float(fields[1])
            except ValueError:
                raise GoFormatError(f"{path}, line {lineno}: expected 'term<TAB>IA' (a number), got "
                                    f"{raw.strip()[:80]!r}. Fix: an IA file as CAFA5's IA.txt, or --ia compute.")
            if not value >= 0:
                raise GoFormatError(f"{path}, line {lineno}: IA must be >= 0, got {value}.")
            out[fields[0]] = value
    return out

