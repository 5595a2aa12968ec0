"""GO function prediction from protein embeddings, scored CAFA-style by cafaeval: ``bitesm eval go``.

The protocol (CAFA5-shaped data; Long ESM-2, de Oliveira, Pedrini & Dias 2024, arXiv 2501.07747, which trained
AutoKeras classifiers on mean-pooled ESM-2 embeddings; here a small, regularised MLP per ontology):

1. **Embeddings**: each protein's mean over its residues of the model's final representation
   (:func:`bitesm.evaluation.embeddings.embed_sequences`; proteins longer than the model's window are embedded from
   windows, so every residue counts).
2. **Labels**: training annotations propagated by the true-path rule (:func:`bitesm.evaluation.ontology.propagate`);
   per aspect (BPO, CCO, MFO) the terms with at least ``min_count`` annotated training proteins. A protein is a
   training example of an aspect only if it has an annotation there (CAFA: no annotation means unknown, not negative).
3. **Classifier** (:class:`GoClassifier`): standardised input -> hidden layer(s) with GELU and dropout -> one logit
   per term; binary cross-entropy, AdamW (weight decay), minibatches, early stopping on the validation loss with the
   best epoch restored. **Model selection** (``selection``): ``"valid"`` (default; the issue's and the paper's
   protocol "train on train, select on valid, report valid": early stopping reads the validation proteins' loss, so
   the reported numbers are slightly optimistic) or ``"train-split"`` (early stopping on 10% of the training
   proteins, seeded; the validation set is never seen before scoring).
4. **Baseline** (:func:`frequency_baseline`): CAFA's naive predictor: every protein gets, for every term, the fraction
   of training proteins of the aspect annotated with it (propagated), the ``top_k`` most frequent terms per aspect.
5. **Predictions** are written in CAFA format (:func:`write_predictions`: ``EntryID<TAB>term<TAB>score``, scores in
   ``(0, 1]``, made consistent by taking the max over descendants, at most ``top_n`` terms per protein and aspect,
   scores below ``min_score = 0.01`` left out: cafaeval's lowest threshold is 0.01, so they never count).
6. **Scores** by cafaeval (:func:`run_cafaeval`, Piovesan et al. 2024; CAFA's protein-centric Fmax with the ``cafa``
   normalisation: precision over proteins with a prediction at the threshold, recall over all proteins with ground
   truth in the aspect, thresholds 0.01..0.99, roots included as in CAFA5's Kaggle evaluation): Fmax, the
   information-accretion-weighted Fmax and S-min (with IA, Clark & Radivojac 2013), coverage, per aspect, **overall**
   and on the **proteins longer than 1,024 residues** (cafaeval run on the ground truth of those proteins only).

cafaeval is given an **evaluation ontology** (:func:`write_evaluation_obo`): the terms of the ground truth and of the
predictions with all their ancestors, parents as in the full graph. Terms outside it have neither ground truth nor
predictions, so they add nothing to any true/false positive/negative count (weighted or not) and the metrics are
identical to cafaeval on the full OBO (tests/test_go.py checks this against an independent cafaeval run); it only
saves cafaeval's dense per-term work (25,571 biological-process terms in the 2014 GO, ~5,000 in the ground truth).

Reference: the frequency baseline (top-300 terms) on the shipped data with the 2014 GO gives Fmax BPO 0.485,
CCO 0.665, MFO 0.431 (``../shared/data/PROVENANCE.md``; reproduced by ``benchmarks/go_quickstart.py``).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from ..errors import UserInputError
from ..io import atomic_write_json, atomic_write_text
from .embeddings import embed_sequences
from .ontology import (
    ASPECTS,
    GeneOntology,
    GoFormatError,
    annotation_sets,
    information_accretion,
    load_ontology,
    propagate,
    read_ia,
    read_terms_tsv,
    write_ia,
)

__all__ = [
    "GO_VERSION",
    "DEFAULT_GO_DATA",
    "SELECTIONS",
    "AspectScores",
    "FrequencyBaseline",
    "GoClassifier",
    "GoFileNotFoundError",
    "GoInputError",
    "evaluate_go",
    "frequency_baseline",
    "go_suite",
    "label_matrix",
    "markdown_table",
    "run_cafaeval",
    "select_terms",
    "write_evaluation_obo",
    "write_ground_truth",
    "write_predictions",
]

#: Version of the GO evaluation's numbers; part of the result cache key (bump when results change).
GO_VERSION = "1"

_REPO_ROOT = Path(__file__).resolve().parents[2]
_DATA = _REPO_ROOT / "data" / "go"
#: The GO data shipped in ``data/go`` (CAFA5-style split of Swiss-Prot 2014-01 and the matching GO release).
DEFAULT_GO_DATA: dict[str, Path] = {
    "train_fasta": _DATA / "train_sequences.fasta.gz",
    "train_terms": _DATA / "train_terms.tsv.gz",
    "valid_fasta": _DATA / "valid_sequences.fasta.gz",
    "valid_terms": _DATA / "valid_terms.tsv.gz",
    "obo": _DATA / "go_2014-01_metastudent.obo.gz",
}
#: Model selection (early stopping) of the MLP: on the validation proteins, or on 10% of the training proteins.
SELECTIONS = ("valid", "train-split")
_METHODS = ("mlp", "frequency")
_LONG = 1024
#: cafaeval namespace names -> aspect codes.
ASPECT_NAMES = {v: k for k, v in ASPECTS.items()}


class GoInputError(UserInputError):
    """A GO evaluation option or input is unusable (an option out of range, too few proteins, duplicate ids); the
    message names it and the fix. Malformed GO files raise :class:`~bitesm.evaluation.ontology.GoFormatError`."""


class GoFileNotFoundError(GoInputError, FileNotFoundError):
    """A GO input file does not exist; the message names it and the fix (also a ``FileNotFoundError``)."""


class AspectScores(NamedTuple):
    """Scores of one aspect: ``scores[i, j]`` is protein ``ids[i]``'s score for ``terms[j]``.

    Attributes:
        ids: protein ids (``N``).
        terms: GO terms of one aspect (``T``).
        scores: ``numpy.float32`` ``[N, T]`` in ``[0, 1]``.
    """

    ids: list[str]
    terms: list[str]
    scores: np.ndarray


# ----------------------------------------------------------------------------------------------
# Labels and the frequency baseline
# ----------------------------------------------------------------------------------------------
def select_terms(propagated_sets: Mapping[str, set[str]], min_count: int) -> list[str]:
    """Terms annotated (after propagation) to at least ``min_count`` proteins, sorted by id.

    Args:
        propagated_sets: ``{protein: {term, ...}}`` of one aspect, propagated.
        min_count: minimum number of proteins (>= 1).

    Returns:
        Sorted term ids. Ancestor-closed: an ancestor is annotated wherever its descendant is.

    Raises:
        GoInputError: ``min_count < 1``.
    """
    if min_count < 1:
        raise GoInputError(f"min_count must be >= 1, got {min_count}")
    counts: dict[str, int] = defaultdict(int)
    for terms in propagated_sets.values():
        for t in terms:
            counts[t] += 1
    return sorted(t for t, c in counts.items() if c >= min_count)


def label_matrix(propagated_sets: Mapping[str, set[str]], ids: Sequence[str], terms: Sequence[str]) -> np.ndarray:
    """Binary targets: ``float32 [len(ids), len(terms)]``, 1 where the protein is annotated with the term.

    Proteins missing from ``propagated_sets`` get a row of zeros.
    """
    col = {t: j for j, t in enumerate(terms)}
    y = np.zeros((len(ids), len(terms)), dtype=np.float32)
    for i, p in enumerate(ids):
        for t in propagated_sets.get(p, ()):
            j = col.get(t)
            if j is not None:
                y[i, j] = 1.0
    return y


class FrequencyBaseline(NamedTuple):
    """CAFA's naive predictor (:func:`frequency_baseline`).

    Attributes:
        frequencies: ``{aspect: {term: fraction of the aspect's training proteins annotated with term}}``, the
            ``top_k`` most frequent terms of each aspect (values in ``(0, 1]``).
        n_proteins: ``{aspect: training proteins with an annotation in the aspect}``.
    """

    frequencies: dict[str, dict[str, float]]
    n_proteins: dict[str, int]

    def predict(self, ids: Sequence[str]) -> dict[str, AspectScores]:
        """The same scores for every protein: ``{aspect: AspectScores(ids, terms, float32 [N, top_k])}``."""
        out = {}
        for aspect, freq in self.frequencies.items():
            terms = list(freq)
            row = np.array([freq[t] for t in terms], dtype=np.float32)
            out[aspect] = AspectScores(list(ids), terms, np.tile(row, (len(ids), 1)))
        return out


def frequency_baseline(
    train_annotations: pd.DataFrame, ontology: GeneOntology, top_k: int | None = 300, propagated: bool = False
) -> FrequencyBaseline:
    """CAFA's naive term-frequency predictor from training annotations.

    ``score(t) = n(t) / n(aspect)``: the training proteins annotated with ``t`` after true-path propagation over the
    training proteins with any annotation in ``t``'s aspect; the same for every target protein.

    Args:
        train_annotations: ``EntryID``, ``term``, ``aspect`` table (live terms of ``ontology``).
        ontology: the graph used for propagation.
        top_k: keep the ``top_k`` most frequent terms per aspect (ties by term id); ``None`` keeps all. 300 is the
            setting of the reference numbers in PROVENANCE (Fmax BPO 0.485 / CCO 0.665 / MFO 0.431 on the shipped
            validation set).
        propagated: the table is already propagated with ``ontology``.

    Returns:
        :class:`FrequencyBaseline`.

    Raises:
        KeyError: a term not in ``ontology``. GoInputError: ``top_k < 1``.

    Source: the "Naive" baseline of CAFA (Radivojac et al. 2013; Jiang et al. 2016).
    """
    if top_k is not None and top_k < 1:
        raise GoInputError(f"top_k must be >= 1 or None, got {top_k}")
    prop = train_annotations if propagated else propagate(train_annotations, ontology)
    sets = annotation_sets(prop)
    freqs: dict[str, dict[str, float]] = {}
    n_prot: dict[str, int] = {}
    for aspect in ASPECTS:
        proteins = sets.get(aspect, {})
        n = len(proteins)
        n_prot[aspect] = n
        if n == 0:
            continue
        counts: dict[str, int] = defaultdict(int)
        for terms in proteins.values():
            for t in terms:
                counts[t] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if top_k is not None:
            ranked = ranked[:top_k]
        freqs[aspect] = {t: c / n for t, c in ranked}
    return FrequencyBaseline(freqs, n_prot)


# ----------------------------------------------------------------------------------------------
# The MLP
# ----------------------------------------------------------------------------------------------
class _MLP(torch.nn.Module):
    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, dropout: float, mean, scale) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        layers: list[torch.nn.Module] = [torch.nn.Dropout(dropout / 2)] if dropout > 0 else []
        width = n_in
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.GELU(), torch.nn.Dropout(dropout)]
            width = h
        layers.append(torch.nn.Linear(width, n_out))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale)


def _as_float_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to("cpu", torch.float32)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n_proteins, n_features/terms], got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return t


class GoClassifier:
    """Multi-label MLP from protein embeddings to GO terms (one per aspect), early-stopped on a validation loss.

    Standardised input (training mean and standard deviation), input dropout ``dropout / 2``, hidden layers
    ``Linear -> GELU -> Dropout(dropout)``, a linear output with one logit per term; trained with binary
    cross-entropy (mean over proteins and terms) and AdamW (``lr``, decoupled ``weight_decay``) on shuffled
    minibatches; after every epoch the validation loss is measured, training stops after ``patience`` epochs without
    an improvement of more than ``min_delta`` (or at ``max_epochs``), and the weights of the best epoch are restored.
    Deterministic for a given ``seed`` (own RNG state; the global torch RNG is left as it was) on a given machine
    and thread count.

    Args:
        hidden: hidden layer widths (``()`` = a linear model).
        dropout: dropout after each hidden layer (input: half of it).
        lr, weight_decay: AdamW settings.
        batch_size: proteins per step.
        max_epochs, patience, min_delta: early stopping.
        validation_fraction: share of the fitting proteins held out (seeded) when :meth:`fit` gets no validation
            set.
        seed: RNG seed (split, initialisation, shuffling, dropout).

    Attributes (after :meth:`fit`):
        terms: the output columns' names (``list[str]``; ``None`` when not given).
        history: ``[{"epoch", "train_loss", "val_loss"}, ...]`` (1-based epochs).
        best_epoch, best_val_loss: the restored epoch and its validation loss.

    Source: the classifier stage of Long ESM-2 (arXiv 2501.07747), which searched AutoKeras models on mean-pooled
    embeddings; a fixed, regularised MLP is used here (CPU-fast, deterministic).
    """

    def __init__(
        self,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.3,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 5,
        min_delta: float = 0.0,
        validation_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        if not 0 <= dropout < 1:
            raise GoInputError(f"dropout must be in [0, 1), got {dropout}")
        if batch_size < 1 or max_epochs < 1 or patience < 1:
            raise GoInputError("batch_size, max_epochs and patience must be >= 1")
        if not 0 < validation_fraction < 1:
            raise GoInputError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.validation_fraction = float(validation_fraction)
        self.seed = int(seed)
        self.model: _MLP | None = None
        self.terms: list[str] | None = None
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.best_val_loss = math.inf

    def options(self) -> dict[str, Any]:
        """The constructor arguments (JSON-ready)."""
        return {"hidden": list(self.hidden), "dropout": self.dropout, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size, "max_epochs": self.max_epochs,
                "patience": self.patience, "min_delta": self.min_delta,
                "validation_fraction": self.validation_fraction, "seed": self.seed}

    def fit(self, x: Any, y: Any, x_val: Any = None, y_val: Any = None, terms: Sequence[str] | None = None,
            progress: bool = False) -> "GoClassifier":
        """Train on ``x`` -> ``y`` with early stopping on ``(x_val, y_val)`` (default: a seeded split of ``x``).

        Args:
            x: embeddings, float ``[N, H]`` (numpy or torch).
            y: targets in {0, 1}, ``[N, T]``.
            x_val, y_val: validation set ``[M, H]`` / ``[M, T]``; both or neither. Neither: the last
                ``validation_fraction`` of a seeded permutation of ``x`` is held out (at least 1 protein).
            terms: names of the ``T`` output columns (kept in :attr:`terms`).
            progress: print a line every 10 epochs and at the end.

        Returns:
            ``self``.

        Raises:
            GoInputError: no terms, fewer than 2 proteins (or none left on one side of the split).
            ValueError: mismatched shapes, non-finite values, or only one of ``x_val``/``y_val``.
        """
        x_t, y_t = _as_float_tensor(x, "x"), _as_float_tensor(y, "y")
        if x_t.shape[0] != y_t.shape[0]:
            raise ValueError(f"x has {x_t.shape[0]} rows but y has {y_t.shape[0]}")
        if y_t.shape[1] == 0:
            raise GoInputError("y has no columns (no GO term to learn). Fix: a lower min_count, or more training "
                               "proteins")
        if terms is not None and len(terms) != y_t.shape[1]:
            raise ValueError(f"{len(terms)} terms for {y_t.shape[1]} columns of y")
        if (x_val is None) != (y_val is None):
            raise ValueError("give both x_val and y_val, or neither")
        gen = torch.Generator().manual_seed(self.seed)
        if x_val is None:
            if x_t.shape[0] < 2:
                raise GoInputError("need at least 2 training proteins to hold out a validation split")
            perm = torch.randperm(x_t.shape[0], generator=gen)
            n_val = max(1, int(round(self.validation_fraction * x_t.shape[0])))
            val_idx, fit_idx = perm[-n_val:].sort().values, perm[:-n_val].sort().values
            xv, yv, x_t, y_t = x_t[val_idx], y_t[val_idx], x_t[fit_idx], y_t[fit_idx]
        else:
            xv, yv = _as_float_tensor(x_val, "x_val"), _as_float_tensor(y_val, "y_val")
            if xv.shape[1] != x_t.shape[1] or yv.shape[1] != y_t.shape[1] or xv.shape[0] != yv.shape[0]:
                raise ValueError(f"validation shapes {tuple(xv.shape)}/{tuple(yv.shape)} do not match "
                                 f"training {tuple(x_t.shape)}/{tuple(y_t.shape)}")
        if x_t.shape[0] < 1 or xv.shape[0] < 1:
            raise GoInputError("need at least one training and one validation protein")
        mean = x_t.mean(0)
        scale = x_t.std(0, unbiased=False).clamp_min(1e-6)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = _MLP(x_t.shape[1], self.hidden, y_t.shape[1], self.dropout, mean, scale)
            opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = torch.nn.BCEWithLogitsLoss()
            best_state = copy.deepcopy(model.state_dict())
            self.history, self.best_epoch, self.best_val_loss = [], 0, math.inf
            bad = 0
            n = x_t.shape[0]
            for epoch in range(1, self.max_epochs + 1):
                model.train()
                order = torch.randperm(n, generator=gen)
                total = 0.0
                for b in range(0, n, self.batch_size):
                    idx = order[b : b + self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x_t[idx]), y_t[idx])
                    loss.backward()
                    opt.step()
                    total += loss.detach().item() * len(idx)
                model.eval()
                with torch.inference_mode():
                    val_loss = float(loss_fn(model(xv), yv))
                self.history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss})
                if val_loss < self.best_val_loss - self.min_delta:
                    self.best_val_loss, self.best_epoch, bad = val_loss, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                stop = bad >= self.patience or epoch == self.max_epochs
                if progress and (epoch % 10 == 0 or stop):
                    print(f"  epoch {epoch:3d}: train loss {total / n:.5f}, validation loss {val_loss:.5f}"
                          + (f"; stopped, best epoch {self.best_epoch}" if stop else ""), flush=True)
                if stop:
                    break
            model.load_state_dict(best_state)
            model.eval()
        self.model = model
        self.terms = list(terms) if terms is not None else None
        return self

    def predict_proba(self, x: Any, batch_size: int = 4096) -> np.ndarray:
        """Sigmoid scores, ``numpy.float32 [N, T]`` in ``[0, 1]``.

        Raises:
            RuntimeError: called before :meth:`fit`. ValueError: wrong feature count or non-finite input.
        """
        if self.model is None:
            raise RuntimeError("GoClassifier.predict_proba called before fit")
        x_t = _as_float_tensor(x, "x")
        if x_t.shape[1] != self.model.mean.shape[0]:
            raise ValueError(f"x has {x_t.shape[1]} features, the classifier was fitted on {self.model.mean.shape[0]}")
        out = []
        with torch.inference_mode():
            for b in range(0, x_t.shape[0], batch_size):
                out.append(torch.sigmoid(self.model(x_t[b : b + batch_size])))
        if not out:
            return np.zeros((0, self.model.net[-1].out_features), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# CAFA files
# ----------------------------------------------------------------------------------------------
def _propagate_scores(scores: np.ndarray, terms: Sequence[str], ontology: GeneOntology) -> tuple[np.ndarray, list[str]]:
    """Columns for every missing ancestor added; each column set to the max over itself and its descendants."""
    terms = list(terms)
    have = set(terms)
    extra = sorted({a for t in terms for a in ontology.ancestors(t)} - have)
    if extra:
        scores = np.concatenate([scores, np.zeros((scores.shape[0], len(extra)), dtype=scores.dtype)], axis=1)
        terms = terms + extra
    else:
        scores = scores.copy()
    col = {t: j for j, t in enumerate(terms)}
    # A descendant has strictly more ancestors than its ancestor: deepest first pushes maxima all the way up.
    for t in sorted(terms, key=lambda t: (-ontology.depth(t), t)):
        j = col[t]
        parents = [col[p] for p in ontology.parents[t]]
        if parents:
            scores[:, parents] = np.maximum(scores[:, parents], scores[:, j : j + 1])
    return scores, terms


def write_predictions(
    path: str | os.PathLike,
    predictions: Mapping[str, AspectScores],
    ontology: GeneOntology,
    top_n: int | None = 500,
    min_score: float = 0.01,
) -> set[str]:
    """Write predictions as a CAFA/cafaeval file: ``EntryID<TAB>term<TAB>score`` per line, no header.

    Per protein and aspect: scores are made consistent (each term gets the max of its own and its descendants'
    scores, ancestors missing from ``terms`` are added), then the ``top_n`` highest with ``score >= min_score`` are
    written (ties: the shallower term first, so the written set stays closed under ancestors), with 6 significant
    digits. cafaeval's thresholds start at 0.01, so with ``min_score = 0.01`` dropping lower scores changes nothing.

    Args:
        path: output file (folder created; written atomically).
        predictions: ``{aspect: AspectScores}`` (scores float ``[N, T]`` in ``[0, 1]``).
        ontology: the graph (for the max over descendants).
        top_n: terms per protein and aspect (``None``: all).
        min_score: smallest score written (> 0: cafaeval's propagation fails on all-zero rows).

    Returns:
        The set of terms written (with their ancestors, for :func:`write_evaluation_obo`).

    Raises:
        GoInputError: ``min_score <= 0`` or ``top_n < 1``. ValueError: scores outside ``[0, 1]`` or a shape
            mismatch. KeyError: a term not in the ontology.
    """
    if not min_score > 0:
        raise GoInputError(f"min_score must be > 0, got {min_score}")
    if top_n is not None and top_n < 1:
        raise GoInputError(f"top_n must be >= 1 or None, got {top_n}")
    lines: list[str] = []
    written: set[str] = set()
    for aspect, pred in predictions.items():
        scores = np.asarray(pred.scores, dtype=np.float64)
        if scores.shape != (len(pred.ids), len(pred.terms)):
            raise ValueError(f"{aspect}: scores {scores.shape} for {len(pred.ids)} ids x {len(pred.terms)} terms")
        if scores.size and (not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1):
            raise ValueError(f"{aspect}: scores must be in [0, 1]")
        if not pred.ids or not pred.terms:
            continue
        scores, terms = _propagate_scores(scores, pred.terms, ontology)
        depth = np.array([ontology.depth(t) for t in terms])
        order = np.lexsort((np.broadcast_to(depth, scores.shape), -scores), axis=-1)
        if top_n is not None:
            order = order[:, :top_n]
        terms_arr = np.array(terms, dtype=object)
        for i, protein in enumerate(pred.ids):
            idx = order[i]
            s = scores[i, idx]
            keep = idx[s >= min_score]
            if keep.size == 0:
                continue
            written.update(terms_arr[keep])
            lines.extend(f"{protein}\t{t}\t{v:.6g}\n" for t, v in zip(terms_arr[keep], scores[i, keep]))
    atomic_write_text(path, "".join(lines))
    return written


def write_ground_truth(path: str | os.PathLike, annotations: pd.DataFrame, ids: Sequence[str] | None = None) -> int:
    """Write cafaeval's ground truth: ``EntryID<TAB>term`` per annotation (no header; cafaeval propagates it).

    Args:
        path: output file (written atomically).
        annotations: ``EntryID``, ``term`` table (raw or propagated: cafaeval propagates with the same graph).
        ids: keep only these proteins (e.g. the long ones); ``None``: all.

    Returns:
        Number of proteins written.
    """
    df = annotations if ids is None else annotations[annotations["EntryID"].isin(set(ids))]
    atomic_write_text(path, "".join(f"{p}\t{t}\n" for p, t in zip(df["EntryID"], df["term"])))
    return int(df["EntryID"].nunique())


def write_evaluation_obo(ontology: GeneOntology, terms: set[str] | Sequence[str], path: str | os.PathLike) -> int:
    """Write the sub-ontology of ``terms`` and all their ancestors as an OBO file for cafaeval.

    Each term keeps its name, namespace and every parent (``is_a`` / ``part_of`` are written as ``is_a``: cafaeval
    treats both alike). With ``terms`` = every ground-truth and predicted term, cafaeval's metrics on this file equal
    those on the full ontology (module docstring).

    Returns:
        Number of terms written.

    Raises:
        KeyError: a term not in ``ontology``.
    """
    closure: set[str] = set()
    for t in terms:
        closure |= ontology.ancestors(t)
    parts = ["format-version: 1.2\nremark: bitesm evaluation sub-ontology of "
             f"{ontology.source} (terms of the ground truth and predictions, with all ancestors)\n"]
    for t in sorted(closure):
        name = ontology.names.get(t, t)
        parts.append(f"\n[Term]\nid: {t}\nname: {name}\nnamespace: {ASPECTS[ontology.aspect(t)]}\n")
        parts.extend(f"is_a: {p}\n" for p in ontology.parents[t])
    atomic_write_text(path, "".join(parts))
    return len(closure)


def run_cafaeval(
    obo: str | os.PathLike, pred_dir: str | os.PathLike, gt_file: str | os.PathLike,
    ia_file: str | os.PathLike | None = None, n_cpu: int = 1,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Score every prediction file of ``pred_dir`` with :func:`cafaeval.evaluation.cafa_eval` (CAFA5 settings).

    Settings: ``norm="cafa"``, ``prop="max"``, ``th_step=0.01``, roots included (``no_orphans=False``), no
    ``max_terms``: cafaeval's defaults, those of CAFA5's evaluation.

    Args:
        obo: plain-text OBO (the full one, or :func:`write_evaluation_obo`'s).
        pred_dir: folder of prediction files (every file in it is scored; the method name is the file name without
            its extension).
        gt_file: ground truth (``EntryID<TAB>term``).
        ia_file: information accretion (``term<TAB>IA``) for the weighted metrics, or ``None``.
        n_cpu: cafaeval's threads.

    Returns:
        ``{method: {aspect: {"fmax", "threshold", "precision", "recall", "coverage" (share of ground-truth proteins
        with a prediction >= threshold), "coverage_max", "n_covered", "fmax_micro", "smin_unweighted" (S-min from
        term counts), with IA also "wfmax", "wthreshold", "wprecision", "wrecall", "smin" (IA-weighted: CAFA's
        S-min, in bits), "smin_threshold"}}}``; aspects without ground truth or predictions are absent. Values are
        Python floats taken from cafaeval's tables.

    Source: cafaeval 1.3.0 (Piovesan et al. 2024); Fmax and S-min as in CAFA (Radivojac et al. 2013;
    Jiang et al. 2016; Clark & Radivojac 2013).
    """
    from cafaeval.evaluation import cafa_eval

    if os.path.getsize(gt_file) == 0:
        return {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="cafaeval")  # pandas deprecations inside cafaeval
        df, best = cafa_eval(str(obo), str(pred_dir), str(gt_file), ia=None if ia_file is None else str(ia_file),
                             no_orphans=False, norm="cafa", prop="max", max_terms=None, th_step=0.01, n_cpu=n_cpu)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if df is None or "f" not in best:
        return out
    for (fname, ns, tau), row in best["f"].iterrows():
        method = Path(fname).stem
        rec = out.setdefault(method, {}).setdefault(ASPECT_NAMES.get(ns, ns), {})
        rec.update({"fmax": float(row["f"]), "threshold": float(tau), "precision": float(row["pr"]),
                    "recall": float(row["rc"]), "coverage": float(row["cov"]), "coverage_max": float(row["cov_max"]),
                    "n_covered": int(row["n"])})
    for (fname, ns, tau), row in best.get("f_micro", pd.DataFrame()).iterrows():
        out.setdefault(Path(fname).stem, {}).setdefault(ASPECT_NAMES.get(ns, ns), {})["fmax_micro"] = float(
            row["f_micro"])
    for (fname, ns, tau), row in best.get("s", pd.DataFrame()).iterrows():
        out.setdefault(Path(fname).stem, {}).setdefault(ASPECT_NAMES.get(ns, ns), {})["smin_unweighted"] = float(
            row["s"])
    for (fname, ns, tau), row in best.get("f_w", pd.DataFrame()).iterrows():
        out.setdefault(Path(fname).stem, {}).setdefault(ASPECT_NAMES.get(ns, ns), {}).update(
            {"wfmax": float(row["f_w"]), "wthreshold": float(tau), "wprecision": float(row["pr_w"]),
             "wrecall": float(row["rc_w"])})
    if "s_w" in df.columns:
        idx = df.groupby(level=["filename", "ns"])["s_w"].idxmin()
        for (fname, ns, tau) in idx:
            rec = out.setdefault(Path(fname).stem, {}).setdefault(ASPECT_NAMES.get(ns, ns), {})
            rec.update({"smin": float(df.loc[(fname, ns, tau), "s_w"]), "smin_threshold": float(tau)})
    return out


# ----------------------------------------------------------------------------------------------
# The evaluation
# ----------------------------------------------------------------------------------------------
def _embedding_table(emb: Any, name: str) -> tuple[list[str], np.ndarray]:
    if hasattr(emb, "ids") and hasattr(emb, "mean"):
        ids, mat = list(emb.ids), emb.mean
    elif isinstance(emb, tuple) and len(emb) == 2:
        ids, mat = list(emb[0]), emb[1]
    else:
        raise TypeError(f"{name} must be an EmbeddingSet or an (ids, [N, H] array) pair, got {type(emb).__name__}")
    mat = mat.detach().cpu().numpy() if isinstance(mat, torch.Tensor) else np.asarray(mat)
    mat = mat.astype(np.float32, copy=False)
    if mat.ndim != 2 or mat.shape[0] != len(ids):
        raise ValueError(f"{name}: {len(ids)} ids but embeddings of shape {mat.shape}")
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise GoInputError(f"{name}: duplicate protein ids (e.g. {duplicates[:3]}). Fix: give every FASTA record a "
                           "distinct id")
    return ids, mat


def _annotations(terms: Any, ontology: GeneOntology, name: str) -> pd.DataFrame:
    if isinstance(terms, pd.DataFrame):
        missing = {"EntryID", "term", "aspect"} - set(terms.columns)
        if missing:
            raise GoFormatError(f"{name} lacks column(s) {sorted(missing)}; it needs EntryID, term and aspect")
        unknown = [t for t in terms["term"].unique() if t not in ontology]
        if unknown:
            raise GoFormatError(f"{name} has {len(unknown)} term(s) not in the ontology (e.g. {unknown[:3]}). "
                                "Fix: read the file with read_terms_tsv(path, ontology).")
        return terms
    return read_terms_tsv(terms, ontology)


def _check_embedded(annotated: Sequence[str], ids: set[str], name: str) -> None:
    missing = [p for p in annotated if p not in ids]
    if missing:
        raise GoFormatError(
            f"{len(missing)} protein(s) annotated in the {name} terms have no {name} embedding (e.g. "
            f"{missing[:3]}). Fix: embed the FASTA file that goes with the annotation file."
        )


def _resolve_ia(ia: Any, train_prop: pd.DataFrame, ontology: GeneOntology, out_dir: Path) -> tuple[Path | None, str]:
    if ia is None:
        return None, "none"
    if isinstance(ia, str) and ia == "compute":
        path = write_ia(information_accretion(train_prop, ontology, propagated=True), out_dir / "IA.txt")
        return path, "computed from the training annotations"
    if isinstance(ia, Mapping):
        return write_ia(ia, out_dir / "IA.txt"), "given"
    values = read_ia(ia)  # validates
    return write_ia(values, out_dir / "IA.txt"), str(ia)


def evaluate_go(
    train_embeddings: Any,
    valid_embeddings: Any,
    train_terms: pd.DataFrame | str | os.PathLike,
    valid_terms: pd.DataFrame | str | os.PathLike,
    obo: GeneOntology | str | os.PathLike,
    output_dir: str | os.PathLike,
    lengths: Mapping[str, int] | None = None,
    ia: Any = None,
    *,
    methods: Sequence[str] = _METHODS,
    selection: str = "valid",
    min_count: int = 50,
    top_n: int | None = 500,
    baseline_top_k: int | None = 300,
    long_threshold: int = _LONG,
    classifier: Mapping[str, Any] | None = None,
    seed: int = 0,
    n_cpu: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """GO function prediction from embeddings, scored by cafaeval: MLP per aspect and the frequency baseline.

    Args:
        train_embeddings, valid_embeddings: :class:`~bitesm.evaluation.embeddings.EmbeddingSet` (``ids``, ``mean``
            float32 ``[N, H]``) or ``(ids, [N, H] array)``; every annotated protein needs one.
        train_terms, valid_terms: CAFA5 annotation files (``EntryID<TAB>term<TAB>aspect``, ``.gz`` allowed) or tables
            from :func:`~bitesm.evaluation.ontology.read_terms_tsv` with the same ontology; not propagated (they are
            propagated here; cafaeval propagates the ground truth itself).
        obo: the ontology (:class:`~bitesm.evaluation.ontology.GeneOntology`) or its OBO file (``.gz`` allowed).
        output_dir: folder for ``go.json``, ``go.md``, ``predictions/<method>.tsv``, ``ground_truth/{all,long}.tsv``,
            ``IA.txt`` and the evaluation ontology (created; existing prediction files of other methods are removed).
        lengths: ``{protein id: residues}`` of the validation proteins; those longer than ``long_threshold`` form
            the ``"long"`` subset. ``None``: no long subset.
        ia: ``None`` (no weighted metrics), ``"compute"`` (IA from the training annotations,
            :func:`~bitesm.evaluation.ontology.information_accretion`), a ``{term: IA}`` dict, or an IA file path.
        methods: any of ``"mlp"``, ``"frequency"``.
        selection: ``"valid"`` (early stopping on the validation proteins: the issue's protocol) or ``"train-split"``
            (on 10% of the training proteins, seeded).
        min_count: an MLP predicts the terms with at least this many (propagated) training proteins.
        top_n: terms per protein and aspect in the MLP's prediction file.
        baseline_top_k: terms of the frequency baseline per aspect (300: PROVENANCE's reference setting).
        long_threshold: residues; proteins strictly longer are "long" (1,024: Long ESM-2's threshold).
        classifier: :class:`GoClassifier` options (``hidden``, ``dropout``, ``lr``, ...); ``seed`` overrides its seed.
        seed: seed of the classifiers.
        n_cpu: cafaeval threads (default ``min(4, os.cpu_count())``).
        progress: print progress lines.

    Returns:
        JSON-ready dict: ``{"go_version", "protocol": {...}, "ontology", "ia", "n_train", "n_valid", "n_valid_long",
        "n_proteins": {"all"|"long": {aspect: ground-truth proteins}}, "terms": {aspect: MLP output terms},
        "training": {aspect: {"best_epoch", "epochs", "best_val_loss", "n_train", "n_val"}}, "results": {method:
        {"all"|"long": {aspect: :func:`run_cafaeval` record}}}, "summary": {"fmax_BPO", ..., "fmax_BPO_long", ...,
        "wfmax_BPO", ..., "baseline_fmax_BPO", ...} (floats), "seconds": {...}}``.

    Raises:
        GoFormatError: malformed annotation / IA / OBO file, an annotated protein without an embedding.
        FileNotFoundError: a missing file. GoInputError: bad options (unknown ``methods``, ``selection`` or
            ``classifier`` keys, ``min_count < 1``), embeddings of different widths, duplicate protein ids.

    Sources: CAFA (Radivojac et al. 2013; Jiang et al. 2016); cafaeval (Piovesan et al. 2024); IA (Clark & Radivojac
    2013); protocol of Long ESM-2 (arXiv 2501.07747).
    """
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in _METHODS]
    if bad or not methods:
        raise GoInputError(f"methods must be a non-empty subset of {list(_METHODS)}, got {methods}")
    if selection not in SELECTIONS:
        raise GoInputError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    if min_count < 1:
        raise GoInputError(f"min_count must be >= 1, got {min_count}")
    unknown = sorted(set(classifier or {}) - set(GoClassifier().options()))
    if unknown:
        raise GoInputError(f"unknown classifier option(s) {unknown}; valid: {sorted(GoClassifier().options())}")
    log = (lambda msg: print(f"[go] {msg}", flush=True)) if progress else (lambda msg: None)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    ontology = obo if isinstance(obo, GeneOntology) else load_ontology(obo)
    train_df = _annotations(train_terms, ontology, "train_terms")
    valid_df = _annotations(valid_terms, ontology, "valid_terms")
    train_ids, train_x = _embedding_table(train_embeddings, "train_embeddings")
    valid_ids, valid_x = _embedding_table(valid_embeddings, "valid_embeddings")
    if train_x.shape[1] != valid_x.shape[1]:
        raise GoInputError(f"train embeddings have {train_x.shape[1]} features, valid {valid_x.shape[1]}; embed both "
                           "with the same model and layer")
    _check_embedded(list(dict.fromkeys(train_df["EntryID"])), set(train_ids), "train")
    _check_embedded(list(dict.fromkeys(valid_df["EntryID"])), set(valid_ids), "valid")
    seconds["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    train_prop = propagate(train_df, ontology)
    valid_prop = propagate(valid_df, ontology)
    train_sets, valid_sets = annotation_sets(train_prop), annotation_sets(valid_prop)
    ia_path, ia_source = _resolve_ia(ia, train_prop, ontology, out_dir)
    seconds["propagate"] = time.perf_counter() - t

    pred_dir = out_dir / "predictions"
    if pred_dir.is_dir():
        shutil.rmtree(pred_dir)
    pred_dir.mkdir(parents=True)
    predicted_terms: set[str] = set()
    result: dict[str, Any] = {"go_version": GO_VERSION}
    result["protocol"] = {
        "selection": selection, "min_count": min_count, "top_n": top_n, "baseline_top_k": baseline_top_k,
        "long_threshold": long_threshold, "seed": seed, "methods": methods,
        "classifier": GoClassifier(**{**(classifier or {}), "seed": seed}).options(),
        "cafaeval": {"norm": "cafa", "prop": "max", "th_step": 0.01, "no_orphans": False},
    }
    result["ontology"] = str(ontology.source)
    result["ia"] = ia_source
    result["n_train"] = len(train_df["EntryID"].unique())
    result["n_valid"] = len(valid_df["EntryID"].unique())

    if "frequency" in methods:
        t = time.perf_counter()
        baseline = frequency_baseline(train_prop, ontology, top_k=baseline_top_k, propagated=True)
        predicted_terms |= write_predictions(pred_dir / "frequency.tsv", baseline.predict(valid_ids), ontology,
                                             top_n=None)
        seconds["frequency"] = time.perf_counter() - t

    if "mlp" in methods:
        t = time.perf_counter()
        train_row = {p: i for i, p in enumerate(train_ids)}
        valid_row = {p: i for i, p in enumerate(valid_ids)}
        preds: dict[str, AspectScores] = {}
        result["terms"], result["training"] = {}, {}
        for aspect in ASPECTS:
            proteins = [p for p in train_ids if p in train_sets.get(aspect, {})]
            terms = select_terms(train_sets.get(aspect, {}), min_count)
            result["terms"][aspect] = len(terms)
            if not proteins or not terms:
                log(f"{aspect}: no term with >= {min_count} training proteins; no MLP")
                continue
            x = train_x[[train_row[p] for p in proteins]]
            y = label_matrix(train_sets[aspect], proteins, terms)
            clf = GoClassifier(**{**(classifier or {}), "seed": seed})
            if selection == "valid":
                vprot = [p for p in valid_ids if p in valid_sets.get(aspect, {})]
                if not vprot:
                    raise GoFormatError(f"no validation protein is annotated in {aspect}; cannot select on valid. "
                                        "Fix: selection='train-split'.")
                xv = valid_x[[valid_row[p] for p in vprot]]
                yv = label_matrix(valid_sets[aspect], vprot, terms)
                log(f"{aspect}: MLP on {len(proteins)} proteins x {len(terms)} terms, early stopping on "
                    f"{len(vprot)} validation proteins")
                clf.fit(x, y, xv, yv, terms=terms, progress=progress)
                n_val = len(vprot)
            else:
                log(f"{aspect}: MLP on {len(proteins)} proteins x {len(terms)} terms, early stopping on "
                    f"{clf.validation_fraction:.0%} of them")
                clf.fit(x, y, terms=terms, progress=progress)
                n_val = max(1, int(round(clf.validation_fraction * len(proteins))))
            result["training"][aspect] = {"best_epoch": clf.best_epoch, "epochs": len(clf.history),
                                          "best_val_loss": clf.best_val_loss, "n_train": len(proteins) - (
                                              n_val if selection == "train-split" else 0), "n_val": n_val}
            preds[aspect] = AspectScores(valid_ids, terms, clf.predict_proba(valid_x))
        predicted_terms |= write_predictions(pred_dir / "mlp.tsv", preds, ontology, top_n=top_n)
        seconds["mlp"] = time.perf_counter() - t

    # Ground truth: all validation proteins, and the long ones.
    t = time.perf_counter()
    gt_dir = out_dir / "ground_truth"
    long_ids: list[str] | None = None
    if lengths is not None:
        annotated = list(dict.fromkeys(valid_df["EntryID"]))
        no_length = [p for p in annotated if p not in lengths]
        if no_length:
            raise GoFormatError(f"{len(no_length)} validation protein(s) have no length (e.g. {no_length[:3]}). "
                                "Fix: pass lengths for every protein of the validation FASTA.")
        long_ids = [p for p in annotated if lengths[p] > long_threshold]
    write_ground_truth(gt_dir / "all.tsv", valid_df)
    subsets = {"all": gt_dir / "all.tsv"}
    if long_ids is not None:
        write_ground_truth(gt_dir / "long.tsv", valid_df, long_ids)
        subsets["long"] = gt_dir / "long.tsv"
    result["n_valid_long"] = None if long_ids is None else len(long_ids)
    result["n_proteins"] = {}
    for subset, ids in (("all", None), ("long", long_ids)):
        if subset == "long" and ids is None:
            continue
        keep = None if ids is None else set(ids)
        result["n_proteins"][subset] = {a: sum(1 for p in valid_sets.get(a, {}) if keep is None or p in keep)
                                        for a in ASPECTS}
    eval_obo = out_dir / "evaluation_ontology.obo"
    write_evaluation_obo(ontology, predicted_terms | set(valid_prop["term"]), eval_obo)
    n_cpu = n_cpu or min(4, os.cpu_count() or 1)
    result["results"] = {m: {} for m in methods}
    for subset, gt_file in subsets.items():
        log(f"cafaeval on {subset} validation proteins")
        scores = run_cafaeval(eval_obo, pred_dir, gt_file, ia_path, n_cpu=n_cpu)
        for m in methods:
            result["results"][m][subset] = scores.get(m, {})
    seconds["cafaeval"] = time.perf_counter() - t

    summary: dict[str, float] = {}
    for m, prefix in (("mlp", ""), ("frequency", "baseline_")):
        if m not in methods:
            continue
        for subset, suffix in (("all", ""), ("long", "_long")):
            for aspect, rec in result["results"][m].get(subset, {}).items():
                summary[f"{prefix}fmax_{aspect}{suffix}"] = rec["fmax"]
                if "wfmax" in rec:
                    summary[f"{prefix}wfmax_{aspect}{suffix}"] = rec["wfmax"]
    result["summary"] = summary
    seconds["total"] = time.perf_counter() - t0
    result["seconds"] = seconds
    atomic_write_json(out_dir / "go.json", result)
    atomic_write_text(out_dir / "go.md", markdown_table(result) + "\n")
    return result


def _fmt(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and x is not None and not math.isnan(x) else "-"


def markdown_table(result: Mapping[str, Any]) -> str:
    """The results of :func:`evaluate_go` as a markdown table: one row per method and aspect.

    Columns: Fmax, weighted Fmax and S-min (IA-weighted, bits) and coverage at Fmax over all validation proteins,
    then Fmax and weighted Fmax over the proteins longer than the threshold, and the ground-truth protein counts.
    """
    thr = result.get("protocol", {}).get("long_threshold", _LONG)
    has_long = result.get("n_valid_long") is not None
    head = ["method", "aspect", "Fmax", "wFmax", "S-min", "coverage", "n"]
    if has_long:
        head += [f"Fmax >{thr:,}", f"wFmax >{thr:,}", f"n >{thr:,}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    names = {"mlp": "MLP", "frequency": "frequency baseline"}
    for method, subsets in result.get("results", {}).items():
        for aspect in ASPECTS:
            a = subsets.get("all", {}).get(aspect, {})
            row = [names.get(method, method), aspect, _fmt(a.get("fmax")), _fmt(a.get("wfmax")),
                   _fmt(a.get("smin"), 2), _fmt(a.get("coverage"), 2),
                   str(result.get("n_proteins", {}).get("all", {}).get(aspect, "-"))]
            if has_long:
                b = subsets.get("long", {}).get(aspect, {})
                row += [_fmt(b.get("fmax")), _fmt(b.get("wfmax")),
                        str(result.get("n_proteins", {}).get("long", {}).get(aspect, "-"))]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Suite (bitesm eval run --suite go) and CLI (bitesm eval go)
# ----------------------------------------------------------------------------------------------
#: Options of the ``go`` suite (``settings.extra["go"]``) and their defaults.
SUITE_DEFAULTS: dict[str, Any] = {
    **{k: str(v) for k, v in DEFAULT_GO_DATA.items()},
    "ia": "compute",
    "layer": None,
    "max_tokens": 16_384,
    "max_residues": None,
    "selection": "valid",
    "min_count": 50,
    "top_n": 500,
    "baseline_top_k": 300,
    "long_threshold": _LONG,
    "seed": 0,
    "classifier": None,
    "max_train": None,
    "max_valid": None,
    "output_dir": None,
    "n_cpu": None,
}
# Options that cannot change the numbers (left out of the cache key).
_NOT_IN_KEY = ("output_dir", "n_cpu")
_FILE_OPTIONS = ("train_fasta", "train_terms", "valid_fasta", "valid_terms", "obo")


def _subset(records: list[tuple[str, str]], limit: int | None, seed: int) -> list[tuple[str, str]]:
    if limit is None or limit >= len(records):
        return records
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(records), size=int(limit), replace=False))
    return [records[i] for i in keep]


def _suite_options(settings: Any) -> dict[str, Any]:
    extra = getattr(settings, "extra", None) or {}
    given = dict(extra.get("go", {}) or {})
    unknown = sorted(set(given) - set(SUITE_DEFAULTS))
    if unknown:
        raise GoFormatError(f"unknown go suite option(s) {unknown}; valid: {sorted(SUITE_DEFAULTS)}")
    opts = {**SUITE_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    if opts["max_residues"] is None:
        opts["max_residues"] = getattr(settings, "max_residues", None)
    return opts


def run_go(
    model: torch.nn.Module,
    tokenizer: Any,
    options: Mapping[str, Any],
    output_dir: str | os.PathLike,
    progress: bool = False,
) -> dict[str, Any]:
    """Embed the train and validation FASTA files with ``model`` and run :func:`evaluate_go` (no cache).

    Args:
        model, tokenizer: a masked LM (or encoder) in eval mode on its device, and its ESM-2 tokenizer.
        options: :data:`SUITE_DEFAULTS` keys (files, ``ia``, ``layer``, ``max_tokens``, ``max_residues``,
            ``selection``, ``min_count``, ``top_n``, ``baseline_top_k``, ``long_threshold``, ``seed``,
            ``classifier``, ``max_train`` / ``max_valid`` (a seeded random subset of the FASTA records), ``n_cpu``).
        output_dir: as in :func:`evaluate_go`.

    Returns:
        :func:`evaluate_go`'s dict, with ``"seconds"["embed_train"]`` / ``["embed_valid"]``, ``"embedding"``
        (layer, residues per pass) and ``"data"`` (the files).

    Raises:
        GoFileNotFoundError: an input file does not exist. GoInputError: an option out of range (``max_train`` /
            ``max_valid`` < 1, ``max_tokens`` < 1, ``layer`` out of range...). GoFormatError,
            bitesm.data.FastaFormatError, bitesm.data.InvalidResidueError: a malformed file.
    """
    from ..data.fasta import read_fasta

    opts = {**SUITE_DEFAULTS, **options}
    for k in _FILE_OPTIONS:
        if not Path(opts[k]).is_file():
            raise GoFileNotFoundError(f"GO {k.replace('_', ' ')} file {opts[k]} does not exist. Fix: pass an "
                                      f"existing file (default: {DEFAULT_GO_DATA[k]}).")
    for k in ("max_train", "max_valid"):
        if opts[k] is not None and int(opts[k]) < 1:
            raise GoInputError(f"{k} must be >= 1 (proteins to keep) or None (all), got {opts[k]}")
    if int(opts["max_tokens"]) < 1:
        raise GoInputError(f"max_tokens must be >= 1, got {opts['max_tokens']}")
    ontology = load_ontology(opts["obo"])
    seed = int(opts["seed"])
    train_records = _subset(read_fasta(opts["train_fasta"]), opts["max_train"], seed)
    valid_records = _subset(read_fasta(opts["valid_fasta"]), opts["max_valid"], seed + 1)
    train_df = read_terms_tsv(opts["train_terms"], ontology)
    valid_df = read_terms_tsv(opts["valid_terms"], ontology)
    read_ids = {"train": set(train_df["EntryID"]), "valid": set(valid_df["EntryID"])}
    train_keep = {r[0] for r in train_records}
    valid_keep = {r[0] for r in valid_records}
    train_df = train_df[train_df["EntryID"].isin(train_keep)].reset_index(drop=True)
    valid_df = valid_df[valid_df["EntryID"].isin(valid_keep)].reset_index(drop=True)
    # Embed only the annotated proteins (others cannot train or be scored).
    train_annotated, valid_annotated = set(train_df["EntryID"]), set(valid_df["EntryID"])
    train_records = [r for r in train_records if r[0] in train_annotated]
    valid_records = [r for r in valid_records if r[0] in valid_annotated]
    for split, records in (("train", train_records), ("valid", valid_records)):
        if not records:
            ids = sorted(read_ids[split])
            raise GoFormatError(
                f"no protein of the {split} FASTA file {opts[split + '_fasta']} has a usable annotation in the {split} "
                f"terms file {opts[split + '_terms']} ({len(ids)} protein id(s) with a known GO term read there"
                + (f", e.g. {ids[:3]}" if ids else "") + "). Fix: pass the FASTA and the EntryID<TAB>term<TAB>aspect "
                "file of the same proteins (same EntryIDs)."
            )
    kw = {"layer": opts["layer"], "max_residues": opts["max_residues"], "max_tokens": int(opts["max_tokens"]),
          "progress": progress}
    t = time.perf_counter()
    train_emb = embed_sequences(model, tokenizer, train_records, per_residue=False, **kw)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    valid_emb = embed_sequences(model, tokenizer, valid_records, per_residue=False, **kw)
    t_valid = time.perf_counter() - t
    lengths = {rid: len(seq) for rid, seq in valid_records}
    result = evaluate_go(
        train_emb, valid_emb, train_df, valid_df, ontology, output_dir, lengths=lengths, ia=opts["ia"],
        selection=opts["selection"], min_count=int(opts["min_count"]), top_n=opts["top_n"],
        baseline_top_k=opts["baseline_top_k"], long_threshold=int(opts["long_threshold"]),
        classifier=opts["classifier"], seed=seed, n_cpu=opts["n_cpu"], progress=progress,
    )
    result["seconds"].update({"embed_train": t_train, "embed_valid": t_valid})
    result["embedding"] = {"layer": opts["layer"], "max_residues": opts["max_residues"],
                           "pooling": "mean over residues", "hidden_size": int(train_emb.mean.shape[1])}
    result["data"] = {k: str(opts[k]) for k in _FILE_OPTIONS}
    atomic_write_json(Path(output_dir) / "go.json", result)
    return result


def go_suite(model: torch.nn.Module, tokenizer: Any, settings: Any, cache: Any, model_hash: str,
             progress: bool = False) -> dict[str, Any]:
    """The ``go`` suite of ``bitesm eval run`` / ``watch``: :func:`run_go` with a result cache.

    Options come from ``settings.extra["go"]`` (keys of :data:`SUITE_DEFAULTS`; default: the data shipped in
    ``data/go``, IA computed from the training annotations, selection on valid). The result is cached
    (``cache.get/put("go", key)``) under ``{"go_version", "model": model_hash, "dtype", "device_type", "files":
    {option: SHA-256 of the file}, "options": the options that change numbers}``; a hit returns the stored result
    (``"cached": True``) without embedding anything.

    Args:
        model, tokenizer: a masked LM in eval mode on its device, and its tokenizer.
        settings: a :class:`bitesm.evaluation.run.EvalSettings` (``extra``, ``max_residues``).
        cache: a :class:`bitesm.evaluation.cache.ResultCache`.
        model_hash: :func:`bitesm.evaluation.cache.model_fingerprint` of ``model``.
        progress: progress bars and lines.

    Returns:
        :func:`run_go`'s dict plus ``"cached"`` (bool) and ``"model_hash"``; ``"summary"`` holds ``fmax_BPO``,
        ``fmax_CCO``, ``fmax_MFO``, their ``_long`` variants, ``wfmax_*`` and ``baseline_*`` (floats).

    Raises:
        GoFormatError: unknown option or malformed file; GoFileNotFoundError: a missing file; as :func:`run_go`.
    """
    from .cache import file_fingerprint

    opts = _suite_options(settings)
    files = {k: file_fingerprint(opts[k]) for k in _FILE_OPTIONS if Path(opts[k]).is_file()}
    missing = [k for k in _FILE_OPTIONS if k not in files]
    if missing:
        k = missing[0]
        raise GoFileNotFoundError(f"GO {k.replace('_', ' ')} file {opts[k]} does not exist. Fix: set "
                                  f"settings.extra['go']['{k}'] (default: {DEFAULT_GO_DATA[k]}).")
    if opts["ia"] not in (None, "compute"):
        files["ia"] = file_fingerprint(opts["ia"])
    param = next(model.parameters(), None)
    key = {"go_version": GO_VERSION, "model": model_hash,
           "dtype": str(param.dtype) if param is not None else None,
           "device_type": param.device.type if param is not None else "cpu", "files": files,
           "options": {k: v for k, v in opts.items() if k not in _NOT_IN_KEY and k not in _FILE_OPTIONS
                       and k != "ia"} | {"ia": opts["ia"] if opts["ia"] in (None, "compute") else "file"}}
    hit = cache.get("go", key)
    if hit is not None:
        return {**hit, "cached": True}
    if opts["output_dir"] is not None:
        result = run_go(model, tokenizer, opts, opts["output_dir"], progress)
    else:
        with tempfile.TemporaryDirectory(prefix="bitesm-go-") as tmp:
            result = run_go(model, tokenizer, opts, tmp, progress)
    result["model_hash"] = model_hash
    result["cached"] = False
    cache.put("go", key, result)
    return result
