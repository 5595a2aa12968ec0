"""Unsupervised contact prediction from attention maps: long-range precision P@L, P@L/2, P@L/5.

The protocol of Rao et al. 2021 ("Transformer protein language models are unsupervised structure learners", ICLR;
the contact head of ESM-1b and ESM-2, transformers' ``EsmContactPredictionHead``), used by PTQ4Protein to check that
quantization keeps the structure an ESM-2 model has learnt:

1. **features** (:func:`attention_features`): one forward pass over ``<cls> protein <eos>`` with every attention map
   returned; the maps of the residues (``<cls>``/``<eos>`` rows and columns dropped) of every layer and head, each
   symmetrised (``A + Aᵀ``) and APC-corrected (average product correction, ``x - rowsum * colsum / total``), exactly
   as ``EsmContactPredictionHead`` computes its input: ``[layers * heads, L, L]``.
2. **regression** (:func:`fit_contact_regression`): a logistic regression with an L1 penalty on those features
   (standardised per feature, so the penalty means the same for any model), fitted on the residue pairs
   (``|i - j| >= 6``) of a few structures with known contacts (ESM fitted its head this way on 20 structures); its
   sparse weights pick the heads that attend along contacts. The model itself is not trained.
3. **precision** (:func:`contact_precision`): on the other structures, the top ``L``, ``L/2``, ``L/5`` pairs ranked by
   predicted probability, among pairs separated by ``>= 24`` residues (CASP's long range; medium 12-23 and short
   6-11 are reported too), and the fraction of them that are contacts (Cβ < 8 Å, :mod:`.structures`).

:func:`evaluate_contacts` runs the three steps over a set of structure files (default: ``data/structures/``, 5
experimental PDB/CATH entries and 7 AlphaFold2 models of ProteinGym targets), :func:`contacts_suite` is what
``bitesm eval run --suite contacts`` calls (cached by content), and :func:`format_table` is the table
``bitesm eval contacts`` prints.

Attention maps need global attention: a long model (``config.attention_window`` set, sliding-window attention)
raises :class:`ContactsInputError`; evaluate the global model it was converted from (same weights). Proteins longer
than the model's one-pass limit (:func:`bitesm.evaluation.context.default_max_residues`, 1,022 for ESM-2) are not
cropped: :func:`attention_features` raises and :func:`evaluate_contacts` skips them with a note.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserInputError
from ..io import atomic_write_json
from .cache import ResultCache, file_fingerprint, model_fingerprint
from .context import attention_window, default_max_residues, model_label
from .scoring import ProteinGymInputError, encode_sequence
from .structures import StructureContacts, StructureError, find_structure_files, load_structure_contacts

__all__ = [
    "CONTACTS_VERSION",
    "DEFAULT_STRUCTURES_DIR",
    "RANGES",
    "ContactsInputError",
    "ContactRegression",
    "symmetrize",
    "apc",
    "attention_features",
    "fit_contact_regression",
    "contact_precision",
    "evaluate_contacts",
    "contacts_suite",
    "format_table",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Structures shipped with the repository (absent in a wheel install): 5 experimental, 7 AlphaFold2 models.
DEFAULT_STRUCTURES_DIR = _REPO_ROOT / "data" / "structures"
#: Bumped when a change to this module changes the numbers; part of every cache key.
CONTACTS_VERSION = 1
#: Sequence-separation ranges ``[min, max)`` of CASP (and ESM's evaluation): short 6-11, medium 12-23, long >= 24.
RANGES: dict[str, tuple[int, int | None]] = {"long": (24, None), "medium": (12, 24), "short": (6, 12)}
#: Precision cut-offs: name -> divisor of L.
_TOP_K = {"P@L": 1, "P@L/2": 2, "P@L/5": 5}
#: Summary keys of the long-range means.
_SUMMARY_KEYS = {"P@L": "precision_at_L", "P@L/2": "precision_at_L2", "P@L/5": "precision_at_L5"}
#: Defaults of the regression and the split.
DEFAULT_N_TRAIN = 4
DEFAULT_C = 0.15
DEFAULT_TRAIN_MIN_SEPARATION = 6
DEFAULT_THRESHOLD = 8.0
#: Suite options accepted in ``settings.extra["contacts"]``.
_SUITE_OPTIONS = ("structures", "n_train", "seed", "C", "threshold", "min_separation")
#: Attention implementations that return the attention probabilities (transformers' eager; bitesm's PTQ softmax).
_RETURNS_ATTENTION_MAPS = ("eager", "bitesm_ptq")


class ContactsInputError(UserInputError):
    """A contact evaluation input is unusable (long model, protein too long, too few structures, bad option); the
    message names the input and the fix."""


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------
def symmetrize(x: torch.Tensor) -> torch.Tensor:
    """``x + xᵀ`` over the last two dimensions (``EsmContactPredictionHead``'s ``symmetrize``).

    Args:
        x: float ``[..., L, L]``.

    Returns:
        Same shape and dtype.
    """
    return x + x.transpose(-1, -2)


def apc(x: torch.Tensor) -> torch.Tensor:
    """Average product correction of each ``[L, L]`` map: ``x - rowsum(x) * colsum(x) / sum(x)``.

    Removes the part of a coupling map explained by each position's overall weight (Dunn et al. 2008; ESM's
    ``average_product_correct``, applied after :func:`symmetrize` as in ``EsmContactPredictionHead``).

    Args:
        x: float ``[..., L, L]``.

    Returns:
        Same shape and dtype (a new tensor).
    """
    row = x.sum(-1, keepdim=True)
    col = x.sum(-2, keepdim=True)
    total = x.sum((-1, -2), keepdim=True)
    return x - row * col / total


@contextlib.contextmanager
def _attention_maps_returned(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``output_attentions=True`` gives attention maps: attention implementations that do not
    return them (``sdpa``, flash, flex) are switched to ``eager`` (the same computation, written out) on every config
    of the model, and switched back on exit. ``eager`` and bitesm's PTQ attention (``bitesm_ptq``, which quantizes
    the softmax and returns its probabilities) are left as they are, so a PTQ model computes what it always does.
    """
    from transformers import PretrainedConfig

    configs: dict[int, Any] = {}
    for module in (model, *model.modules()):
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            configs.setdefault(id(config), config)
    previous = {}
    for key, config in configs.items():
        impl = getattr(config, "_attn_implementation", None)
        if impl is not None and impl not in _RETURNS_ATTENTION_MAPS:
            previous[key] = impl
            config._attn_implementation = "eager"
    try:
        yield
    finally:
        for key, impl in previous.items():
            configs[key]._attn_implementation = impl


def _check_global(model: torch.nn.Module) -> None:
    window = attention_window(model)
    if window is not None:
        raise ContactsInputError(
            f"model has sliding-window attention (config.attention_window={window}): it does not compute the full "
            "attention maps contact prediction reads. Fix: evaluate contacts on the global-attention model it was "
            "converted from (bitesm convert long keeps the weights), or set attention_window to None in its config."
        )


def attention_features(
    model: torch.nn.Module, tokenizer: Any, sequence: str
) -> torch.Tensor:
    """Symmetrised, APC-corrected attention maps of one protein: the input of ESM's contact head.

    One forward pass over ``<cls> sequence <eos>`` with ``output_attentions=True`` (attention implementations that
    return no maps, such as ``sdpa``, are switched to ``eager`` for the pass and restored afterwards; the logits are
    those of the model's own implementation to float rounding). Each ``[T, T]`` map loses its ``<cls>`` and ``<eos>``
    rows and columns and becomes ``apc(symmetrize(A))`` (:func:`symmetrize`, :func:`apc`), computed in float32:
    ``EsmContactPredictionHead``'s features for an unpadded sequence (Rao et al. 2021).

    Args:
        model: a masked LM with global attention (``EsmForMaskedLM``, ``BitEsmForMaskedLM``) in eval mode.
        tokenizer: its ESM-2 tokenizer.
        sequence: residues, one letter each (ESM-2 alphabet).

    Returns:
        ``torch.float32 [layers * heads, L, L]`` on CPU, layer-major (feature ``l * heads + h`` is layer ``l``,
        head ``h``), symmetric in the last two dimensions.

    Raises:
        ContactsInputError: a long model (``config.attention_window`` set); an empty sequence, one longer than
            :func:`bitesm.evaluation.context.default_max_residues` (no cropping), or with letters outside the
            ESM-2 vocabulary; a model that returns no attention maps.
    """
    _check_global(model)
    limit = default_max_residues(model)
    if not sequence:
        raise ContactsInputError("empty protein sequence: contact prediction needs at least one residue.")
    if limit is not None and len(sequence) > limit:
        raise ContactsInputError(
            f"protein of {len(sequence)} residues is longer than the model's one-pass limit of {limit} residues; "
            "attention maps are not cropped. Fix: use a shorter structure (or a domain of it)."
        )
    try:
        ids = encode_sequence(tokenizer, sequence)
    except ProteinGymInputError as err:
        raise ContactsInputError(str(err)) from err
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    ids = ids[None].to(device)
    with _attention_maps_returned(model), torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True, return_dict=True)
    maps = getattr(out, "attentions", None)
    if not maps or any(m is None for m in maps):
        raise ContactsInputError(
            f"{type(model).__name__} returned no attention maps with output_attentions=True. Fix: use a model whose "
            "attention implementation returns them (transformers' eager attention)."
        )
    att = torch.stack([m[0] for m in maps]).float().cpu()  # [layers, heads, T, T]
    layers, heads, n_tokens, _ = att.shape
    if n_tokens != len(sequence) + 2:
        raise ContactsInputError(f"expected {len(sequence) + 2} tokens, the model returned maps of {n_tokens}")
    att = att[..., 1:-1, 1:-1].reshape(layers * heads, len(sequence), len(sequence))
    return apc(symmetrize(att))


# ----------------------------------------------------------------------------------------------
# Regression
# ----------------------------------------------------------------------------------------------
def _l1_logistic_regression(C: float, seed: int, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    l1 = {"l1_ratio": 1.0} if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated" \
        else {"penalty": "l1"}  # scikit-learn >= 1.8 spells the L1 penalty l1_ratio=1
    return LogisticRegression(C=C, solver="liblinear", random_state=seed, max_iter=max_iter, **l1)


def _as_numpy(x: Any, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _pair_indices(length: int, valid: np.ndarray, min_separation: int,
                  max_separation: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` with ``min_separation <= j - i`` (``< max_separation``), both residues valid."""
    i, j = np.triu_indices(length, k=max(int(min_separation), 1))
    keep = valid[i] & valid[j]
    if max_separation is not None:
        keep &= (j - i) < max_separation
    return i[keep], j[keep]


@dataclass
class ContactRegression:
    """An L1 logistic regression from attention features to contact probabilities (:func:`fit_contact_regression`).

    Attributes:
        classifier: the fitted ``sklearn.linear_model.LogisticRegression`` (on standardised features).
        mean, scale: float64 ``[n_features]``, the training pairs' per-feature mean and standard deviation (1 where
            a feature is constant) that standardise the features before the classifier.
        min_separation: pairs used for fitting had ``|i - j| >=`` this.
        C: inverse L1 strength used.
        n_pairs, n_contacts: residue pairs fitted on, and how many of them are contacts.
    """

    classifier: Any
    mean: np.ndarray
    scale: np.ndarray
    min_separation: int
    C: float
    n_pairs: int
    n_contacts: int

    @property
    def coef(self) -> np.ndarray:
        """float64 ``[n_features]``: the weight of each standardised feature, one per layer and head (layer-major);
        zero for heads the L1 penalty dropped. Comparable across heads (a head's contact signal per standard
        deviation)."""
        return self.classifier.coef_[0].astype(np.float64)

    @property
    def intercept(self) -> float:
        return float(self.classifier.intercept_[0])

    def predict(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Contact probabilities of every residue pair.

        Args:
            features: ``[n_features, L, L]`` from :func:`attention_features` (torch or numpy).

        Returns:
            float32 ``[L, L]``: ``sigmoid(coef · features[:, i, j] + intercept)`` (the classifier's
            ``predict_proba`` on the standardised features), symmetric when the features are.

        Raises:
            ContactsInputError: the feature count differs from the one fitted.
        """
        x = _as_numpy(features, np.float64)
        if x.ndim != 3 or x.shape[0] != self.coef.shape[0]:
            raise ContactsInputError(
                f"features of shape {x.shape} do not match the regression's {self.coef.shape[0]} features "
                "(layers * heads): fit and predict with the same model."
            )
        weights = self.coef / self.scale  # standardisation folded into the weights
        logits = np.tensordot(weights, x, axes=1) + (self.intercept - float(weights @ self.mean))
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def to_dict(self, layers: int | None = None) -> dict[str, Any]:
        """JSON form: ``C``, ``min_separation``, ``n_pairs``, ``n_contacts``, ``intercept``, ``n_nonzero`` and
        ``coef`` (as ``[layers][heads]`` when ``layers`` divides the feature count, else flat)."""
        coef = self.coef
        shaped = coef.reshape(layers, -1).tolist() if layers and coef.size % layers == 0 else coef.tolist()
        return {"C": self.C, "min_separation": self.min_separation, "n_pairs": self.n_pairs,
                "n_contacts": self.n_contacts, "intercept": self.intercept,
                "n_nonzero": int(np.count_nonzero(coef)), "coef": shaped}


def fit_contact_regression(
    features_list: Sequence[torch.Tensor | np.ndarray],
    contacts_list: Sequence[np.ndarray],
    valid_list: Sequence[np.ndarray] | None = None,
    min_separation: int = DEFAULT_TRAIN_MIN_SEPARATION,
    C: float = DEFAULT_C,
    seed: int = 0,
    max_iter: int = 1000,
) -> ContactRegression:
    """Fit ESM's contact regression: logistic regression with an L1 penalty on attention features.

    Pair selection: of each structure, every pair ``i < j`` with ``j - i >= min_separation`` (6, as ESM's contact
    regression, which ignores the trivially close pairs) whose two residues are valid; one sample per pair
    (the features are symmetric), label ``contacts[i, j]``; no class weights. The model is ESM's (a logistic
    regression, i.e. a linear layer plus sigmoid, on the APC features), with one difference: each feature is
    standardised (training-pair mean and standard deviation) before the fit, so that the L1 strength ``C`` means the
    same for every model; raw APC values scale as ``1/L`` and for small models are so small that an L1 penalty on
    them drops every head. Standardisation is folded back into the weights at prediction. Solver ``liblinear``
    (deterministic for a given ``seed``).

    Sources: Rao et al. 2021 (logistic regression with an L1 penalty on 20 training structures);
    ``EsmContactPredictionHead`` (the regression as a ``Linear(layers * heads, 1)`` + sigmoid).

    Args:
        features_list: per structure, float ``[n_features, L_s, L_s]`` (:func:`attention_features`).
        contacts_list: per structure, bool ``[L_s, L_s]`` (:attr:`StructureContacts.contacts`).
        valid_list: per structure, bool ``[L_s]``; default all valid.
        min_separation: smallest ``|i - j|`` fitted on (>= 1).
        C: inverse L1 strength of ``sklearn.linear_model.LogisticRegression`` (smaller = fewer heads).
        seed: ``random_state`` of the solver.
        max_iter: solver iterations.

    Returns:
        :class:`ContactRegression` (``predict(features) -> float32 [L, L]`` probabilities).

    Raises:
        ContactsInputError: no structures, mismatched lengths or shapes, ``C <= 0`` or ``min_separation < 1``, or
            the selected pairs hold only one class (no contact or only contacts).
    """
    if not features_list:
        raise ContactsInputError("no training structures: the contact regression needs at least one.")
    if valid_list is None:
        valid_list = [None] * len(features_list)
    if not (len(features_list) == len(contacts_list) == len(valid_list)):
        raise ContactsInputError(
            f"features_list, contacts_list and valid_list differ in length ({len(features_list)}, "
            f"{len(contacts_list)}, {len(valid_list)})."
        )
    if not C > 0:
        raise ContactsInputError(f"C (inverse L1 strength) must be > 0, got {C!r}")
    if min_separation < 1:
        raise ContactsInputError(f"min_separation must be >= 1, got {min_separation!r}")
    xs, ys = [], []
    n_features = None
    for k, (feats, contacts, valid) in enumerate(zip(features_list, contacts_list, valid_list)):
        x = _as_numpy(feats, np.float32)
        c = _as_numpy(contacts, bool)
        length = c.shape[0] if c.ndim == 2 else -1
        v = np.ones(length, dtype=bool) if valid is None else _as_numpy(valid, bool)
        if x.ndim != 3 or x.shape[1:] != (length, length) or c.shape != (length, length) or v.shape != (length,):
            raise ContactsInputError(
                f"structure {k}: features {x.shape}, contacts {c.shape} and valid {v.shape} do not match "
                "([n_features, L, L], [L, L], [L])."
            )
        if n_features is None:
            n_features = x.shape[0]
        elif x.shape[0] != n_features:
            raise ContactsInputError(f"structure {k} has {x.shape[0]} features, the first had {n_features}.")
        i, j = _pair_indices(length, v, min_separation)
        xs.append(x[:, i, j].T)
        ys.append(c[i, j])
    x_all = np.concatenate(xs).astype(np.float64)
    y_all = np.concatenate(ys)
    n_contacts = int(y_all.sum())
    if n_contacts == 0 or n_contacts == y_all.size:
        raise ContactsInputError(
            f"the {y_all.size} training pairs (|i-j| >= {min_separation}) hold "
            f"{'no contact' if n_contacts == 0 else 'only contacts'}; the regression needs both. Fix: train on "
            "more or larger structures."
        )
    mean = x_all.mean(axis=0)
    scale = x_all.std(axis=0)
    scale[~(scale > 0)] = 1.0
    clf = _l1_logistic_regression(C, seed, max_iter).fit((x_all - mean) / scale, y_all)
    return ContactRegression(clf, mean, scale, int(min_separation), float(C), int(y_all.size), n_contacts)


# ----------------------------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------------------------
def contact_precision(
    probabilities: torch.Tensor | np.ndarray,
    contacts: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray | None = None,
    min_separation: int = 24,
    max_separation: int | None = None,
) -> dict[str, float]:
    """Precision of the top-``L``, ``L/2``, ``L/5`` predicted contacts (ESM's and CASP's contact precision).

    Candidates are the pairs ``i < j`` with ``min_separation <= j - i`` (and ``j - i < max_separation`` when given)
    whose two residues are valid; pairs with an invalid residue are neither ranked nor counted. They are ranked by
    probability (descending; NaN last; ties in row-major pair order), and for ``k = max(1, floor(L / d))`` with
    ``d = 1, 2, 5`` and ``L`` the sequence length (all residues, as ESM), the precision is the number of true contacts
    among the top ``k`` divided by ``k`` (if fewer than ``k`` pairs qualify, the missing ones count as wrong, as in
    ESM's evaluation). Long range (CASP): ``min_separation=24``; medium ``12, 24``; short ``6, 12`` (:data:`RANGES`).

    Args:
        probabilities: float ``[L, L]`` contact scores (only the order matters).
        contacts: bool ``[L, L]`` true contacts (Cβ < 8 Å,
            :func:`bitesm.evaluation.structures.load_structure_contacts`).
        valid: bool ``[L]``; default all valid.
        min_separation: smallest ``j - i`` counted (>= 1).
        max_separation: ``j - i`` must be below it (exclusive); ``None`` = no bound.

    Returns:
        ``{"P@L": float, "P@L/2": float, "P@L/5": float}``, each in ``[0, 1]``.

    Raises:
        ContactsInputError: shapes differ or are not square, ``min_separation < 1``.
    """
    p = _as_numpy(probabilities, np.float64)
    c = _as_numpy(contacts, bool)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or c.shape != p.shape:
        raise ContactsInputError(f"probabilities {p.shape} and contacts {c.shape} must both be [L, L]")
    length = p.shape[0]
    v = np.ones(length, dtype=bool) if valid is None else _as_numpy(valid, bool)
    if v.shape != (length,):
        raise ContactsInputError(f"valid has shape {v.shape}, expected ({length},)")
    if min_separation < 1:
        raise ContactsInputError(f"min_separation must be >= 1, got {min_separation!r}")
    i, j = _pair_indices(length, v, min_separation, max_separation)
    scores = np.nan_to_num(p[i, j], nan=-np.inf)
    truth = c[i, j]
    ranked = truth[np.argsort(-scores, kind="stable")]
    out = {}
    for name, divisor in _TOP_K.items():
        k = max(1, length // divisor)
        out[name] = float(ranked[:k].sum()) / k
    return out


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate_contacts(
    model: torch.nn.Module,
    tokenizer: Any,
    structure_paths: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    n_train: int = DEFAULT_N_TRAIN,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    C: float = DEFAULT_C,
    threshold: float = DEFAULT_THRESHOLD,
    min_separation: int = DEFAULT_TRAIN_MIN_SEPARATION,
    progress: bool = False,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Unsupervised contact precision of a model on a set of structures (module docstring).

    Every structure file is read (:func:`bitesm.evaluation.structures.load_structure_contacts`, first protein chain,
    contacts at ``threshold`` Å); files that cannot be read and proteins longer than the model's one-pass limit are
    skipped with a note. The usable structures, in name order, are shuffled with ``seed``: the first ``n_train`` fit
    the L1 logistic regression (:func:`fit_contact_regression`), the others are evaluated
    (:func:`contact_precision` in each range of :data:`RANGES`). Training structures get rows too (``split:
    "train"``), but only test structures enter the means.

    Args:
        model, tokenizer: a global-attention masked LM in eval mode, and its ESM-2 tokenizer.
        structure_paths: folder, file, or list of them (:func:`bitesm.evaluation.structures.find_structure_files`);
            default :data:`DEFAULT_STRUCTURES_DIR`.
        n_train: structures the regression is fitted on (>= 1; at least one usable structure must remain).
        seed: shuffles the train/test split and seeds the solver.
        output_dir: if given, ``contacts.json`` (the result) and ``predictions.npz`` (float32 ``[L, L]`` contact
            probabilities per structure name) are written there.
        C, min_separation: of :func:`fit_contact_regression`.
        threshold: contact cutoff in Å.
        progress: a tqdm bar over structures.
        model_name: ``"model"`` field; default ``model.name_or_path`` or the class name.

    Returns:
        ``{"model", "contacts_version", "settings", "n_structures", "n_train", "n_test", "train", "test" (names),
        "regression" (:meth:`ContactRegression.to_dict`, ``coef`` as ``[layers][heads]``), "summary"
        (``precision_at_L``, ``precision_at_L2``, ``precision_at_L5``: long-range means over the test structures),
        "mean" ({range: {"P@L", "P@L/2", "P@L/5"}} over the test structures), "chance" ({range: mean contact
        density of the candidate pairs}: the expected precision of a random ranking), "structures" (one row per
        structure: ``name``, ``file``, ``chain``, ``split``, ``length``, ``n_valid``, ``n_pairs`` and ``n_contacts``
        per range, ``precision`` {range: {...}}, ``seconds``), "skipped" ([{"name", "file", "reason"}]),
        "seconds"}``.

    Raises:
        ContactsInputError: a long model; ``n_train < 1``; fewer than ``n_train + 1`` usable structures; training
            pairs of a single class.
        FileNotFoundError, StructureError: a structure path does not exist, or a folder has no structure file.
    """
    t0 = time.perf_counter()
    _check_global(model)
    if n_train < 1:
        raise ContactsInputError(f"n_train must be >= 1 (structures to fit the regression on), got {n_train}")
    files = find_structure_files(structure_paths if structure_paths is not None else DEFAULT_STRUCTURES_DIR)
    limit = default_max_residues(model)
    loaded: list[StructureContacts] = []
    skipped: list[dict[str, str]] = []
    for path in files:
        try:
            structure = load_structure_contacts(path, threshold=threshold)
        except (StructureError, FileNotFoundError) as err:
            skipped.append({"name": path.name, "file": path.name, "reason": str(err)})
            continue
        if limit is not None and len(structure) > limit:
            skipped.append({"name": structure.name, "file": path.name,
                            "reason": f"{len(structure)} residues > the model's one-pass limit of {limit}"})
            continue
        loaded.append(structure)
    loaded.sort(key=lambda s: s.name)
    if len(loaded) < n_train + 1:
        notes = "; ".join(f"{s['file']}: {' '.join(s['reason'].split())}" for s in skipped)
        raise ContactsInputError(
            f"{len(loaded)} usable structure(s), but n_train={n_train} leaves none to evaluate"
            + (f" (skipped {notes})" if notes else "") + ". Fix: pass more structures or a smaller --n-train."
        )
    order = np.random.default_rng(seed).permutation(len(loaded))
    train_idx = set(order[:n_train].tolist())

    features, seconds = [], []
    bar = tqdm(loaded, desc="contacts: attention maps", disable=not progress, unit="structure")
    for structure in bar:
        bar.set_postfix_str(structure.name)
        s0 = time.perf_counter()
        features.append(attention_features(model, tokenizer, structure.sequence))
        seconds.append(time.perf_counter() - s0)

    train = [k for k in range(len(loaded)) if k in train_idx]
    regression = fit_contact_regression(
        [features[k] for k in train], [loaded[k].contacts for k in train], [loaded[k].valid for k in train],
        min_separation=min_separation, C=C, seed=seed,
    )
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)

    rows, predictions = [], {}
    for k, structure in enumerate(loaded):
        probs = regression.predict(features[k])
        predictions[structure.name] = probs
        precision, n_contacts, n_pairs = {}, {}, {}
        for name, (lo, hi) in RANGES.items():
            precision[name] = contact_precision(probs, structure.contacts, structure.valid, lo, hi)
            i, j = _pair_indices(len(structure), structure.valid, lo, hi)
            n_contacts[name] = int(structure.contacts[i, j].sum())
            n_pairs[name] = int(i.size)
        rows.append({
            "name": structure.name, "file": Path(structure.path).name, "chain": structure.chain,
            "split": "train" if k in train_idx else "test", "length": len(structure),
            "n_valid": int(structure.valid.sum()), "n_pairs": n_pairs, "n_contacts": n_contacts,
            "precision": precision, "seconds": seconds[k],
        })
    test_rows = [r for r in rows if r["split"] == "test"]
    mean = {name: {top: _mean([r["precision"][name][top] for r in test_rows]) for top in _TOP_K} for name in RANGES}
    chance = {name: _mean([r["n_contacts"][name] / r["n_pairs"][name] for r in test_rows if r["n_pairs"][name]])
              for name in RANGES}
    out: dict[str, Any] = {
        "model": model_name or model_label(model),
        "contacts_version": CONTACTS_VERSION,
        "settings": {"n_train": n_train, "seed": seed, "C": C, "threshold": threshold,
                     "min_separation": min_separation, "ranges": {k: list(v) for k, v in RANGES.items()}},
        "n_structures": len(loaded),
        "n_train": len(train),
        "n_test": len(test_rows),
        "train": [r["name"] for r in rows if r["split"] == "train"],
        "test": [r["name"] for r in test_rows],
        "regression": regression.to_dict(layers),
        "summary": {_SUMMARY_KEYS[top]: mean["long"][top] for top in _TOP_K},
        "mean": mean,
        "chance": chance,
        "structures": rows,
        "skipped": skipped,
        "seconds": time.perf_counter() - t0,
    }
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_dir / "contacts.json", out)
        np.savez_compressed(output_dir / "predictions.npz", **predictions)
    return out


# ----------------------------------------------------------------------------------------------
# Suite (bitesm eval run --suite contacts)
# ----------------------------------------------------------------------------------------------
def _suite_options(settings: Any) -> dict[str, Any]:
    extra = getattr(settings, "extra", None) or {}
    opts = dict(extra.get("contacts") or {})
    unknown = sorted(set(opts) - set(_SUITE_OPTIONS))
    if unknown:
        raise ContactsInputError(
            f"unknown contacts option(s) {unknown}; available: {list(_SUITE_OPTIONS)} "
            "(settings.extra['contacts'])."
        )
    return {
        "structures": opts.get("structures"),
        "n_train": int(opts.get("n_train", DEFAULT_N_TRAIN)),
        "seed": int(opts.get("seed", 0)),
        "C": float(opts.get("C", DEFAULT_C)),
        "threshold": float(opts.get("threshold", DEFAULT_THRESHOLD)),
        "min_separation": int(opts.get("min_separation", DEFAULT_TRAIN_MIN_SEPARATION)),
    }


def contacts_suite(
    model: torch.nn.Module,
    tokenizer: Any,
    settings: Any,
    cache: ResultCache | None,
    model_hash: str | None,
    progress: bool = True,
) -> dict[str, Any]:
    """The ``contacts`` suite of ``bitesm eval run``: :func:`evaluate_contacts` with its result cached by content.

    Options come from ``settings.extra.get("contacts", {})``: ``structures`` (folder, file or list; default
    :data:`DEFAULT_STRUCTURES_DIR`), ``n_train``, ``seed``, ``C``, ``threshold`` (Å), ``min_separation`` (of the
    regression), each defaulting as in :func:`evaluate_contacts`. ``settings.max_residues`` is not used (the model's
    own one-pass limit applies; longer proteins are skipped).

    The cache key (suite ``"contacts"``) holds :data:`CONTACTS_VERSION`, ``model_hash``, the weights' dtype and the
    device type, the options, and the name and :func:`bitesm.evaluation.cache.file_fingerprint` of every structure
    file; a hit returns the stored result (``"cached": True``) without a forward pass.

    Args:
        model, tokenizer: as in :func:`evaluate_contacts`.
        settings: a :class:`bitesm.evaluation.run.EvalSettings` (or any object with an ``extra`` dict).
        cache: a :class:`ResultCache`, or ``None`` (always compute).
        model_hash: :func:`bitesm.evaluation.cache.model_fingerprint` of ``model`` (computed when ``None``).
        progress: tqdm bar.

    Returns:
        The :func:`evaluate_contacts` dict plus ``"model_hash"`` and ``"cached"``; ``"summary"`` holds
        ``precision_at_L``, ``precision_at_L2``, ``precision_at_L5`` (long-range means over the test structures).

    Raises:
        ContactsInputError: an unknown option, and as :func:`evaluate_contacts`.
        FileNotFoundError, StructureError: as :func:`evaluate_contacts`.
    """
    opts = _suite_options(settings)
    _check_global(model)
    files = find_structure_files(opts["structures"] if opts["structures"] is not None else DEFAULT_STRUCTURES_DIR)
    key = None
    if cache is not None:
        model_hash = model_hash or model_fingerprint(model)
        param = next(model.parameters(), None)
        key = {
            "version": CONTACTS_VERSION,
            "model": model_hash,
            "dtype": str(param.dtype) if param is not None else None,
            "device_type": param.device.type if param is not None else "cpu",
            "settings": {k: v for k, v in opts.items() if k != "structures"},
            "structures": [[f.name, file_fingerprint(f)] for f in files],
        }
        hit = cache.get("contacts", key)
        if hit is not None:
            return {**hit, "cached": True}
    result = evaluate_contacts(
        model, tokenizer, files, n_train=opts["n_train"], seed=opts["seed"], C=opts["C"],
        threshold=opts["threshold"], min_separation=opts["min_separation"], progress=progress,
    )
    result["model_hash"] = model_hash
    if cache is not None:
        cache.put("contacts", key, result)
    return {**result, "cached": False}


# ----------------------------------------------------------------------------------------------
# Text: the table bitesm eval contacts prints
# ----------------------------------------------------------------------------------------------
def _fmt(x: Any) -> str:
    return f"{x:6.3f}" if isinstance(x, float) and not math.isnan(x) else f"{'-':>6}"


def format_table(result: dict[str, Any]) -> str:
    """A text table of an :func:`evaluate_contacts` result: one row per structure (split, chain, length, valid
    residues, long-range contacts, chance level, long-range P@L, P@L/2, P@L/5, seconds), the test means of every
    range of :data:`RANGES`, the regression's training set and the skipped files.

    Args:
        result: the dict :func:`evaluate_contacts` (or :func:`contacts_suite`) returns, or its JSON file, loaded.

    Returns:
        The lines, joined by newlines (no trailing newline).
    """
    lines = ["long range (|i-j| >= 24); chance = contact density of the candidate pairs",
             f"{'structure':<28} {'split':<5} {'chain':>5} {'len':>5} {'valid':>5} {'LR-cts':>6} {'chance':>6} "
             f"{'P@L':>6} {'P@L/2':>6} {'P@L/5':>6} {'sec':>6}"]
    for r in result["structures"]:
        p = r["precision"]["long"]
        density = r["n_contacts"]["long"] / r["n_pairs"]["long"] if r["n_pairs"]["long"] else float("nan")
        lines.append(f"{r['name']:<28} {r['split']:<5} {r['chain']:>5} {r['length']:>5} {r['n_valid']:>5} "
                     f"{r['n_contacts']['long']:>6} {_fmt(density)} {_fmt(p['P@L'])} {_fmt(p['P@L/2'])} "
                     f"{_fmt(p['P@L/5'])} {r['seconds']:6.1f}")
    for name in RANGES:
        m, label = result["mean"][name], f"mean ({result['n_test']} test, {name} range)"
        lines.append(f"{label:<60} {_fmt(result['chance'][name])} {_fmt(m['P@L'])} {_fmt(m['P@L/2'])} "
                     f"{_fmt(m['P@L/5'])}")
    reg = result["regression"]
    lines.append(f"regression: fitted on {', '.join(result['train'])} ({reg['n_pairs']} pairs, {reg['n_contacts']} "
                 f"contacts), {reg['n_nonzero']} non-zero heads; {result['seconds']:.1f} s")
    lines += [f"skipped {s['file']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines)
