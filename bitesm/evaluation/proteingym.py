"""Zero-shot ProteinGym substitution benchmark with the ESM masked-marginals strategy.

Scoring follows ProteinGym's ESM baseline exactly (``proteingym/baselines/esm/compute_fitness.py``,
``--scoring-strategy masked-marginals``, the strategy used for the ESM2 rows of the leaderboard,
see ``scripts/scoring_DMS_zero_shot/scoring_ESM2_substitutions.sh``), which implements the
masked-marginal score of Meier et al. 2021 (ESM-1v, "Language models enable zero-shot prediction
of the effects of mutations on protein function", eq. 1) as used for ESM-2 (Lin et al. 2023):

    score(mutant) = sum over its substitutions (i, wt -> mt) of
                    log p(x_i = mt | x_{-i}) - log p(x_i = wt | x_{-i})

where ``x_{-i}`` is the *wild-type* sequence with position ``i`` replaced by ``<mask>``.

Long sequences (ProteinGym's "optimal" scoring window, the default ``--scoring-window optimal``):
the tokenized sequence ``<cls> seq <eos>`` has ``T = len(seq) + 2`` tokens. When ``T`` exceeds the
model window ``W`` (ProteinGym hard-codes ``W = 1024`` tokens for ESM, i.e. 1,022 residues plus
``<cls>``/``<eos>``), the masked token sequence for token index ``i`` (``i = position + 1``
because of ``<cls>``) is cropped to ``tokens[start:end]`` with ``get_optimal_window`` from
``proteingym/utils/scoring_utils.py``::

    half = W // 2
    if T <= W:                 [0, T]
    elif i < half:             [0, W]
    elif i >= T - half:        [T - W, T]
    else:                      [max(0, i - half), min(T, i + half)]

The crop is a plain slice: a window in the middle of the protein contains no ``<cls>``/``<eos>``
token, exactly as in ProteinGym. The log-probabilities are read at index ``i - start``.

Here ``W = max_residues + 2``; by default ``max_residues = config.max_position_embeddings - 4``,
because ESM configs count the padding offset of the learned position embeddings
(``padding_idx + 1 = 2``) in ``max_position_embeddings``: ESM-2's ``max_position_embeddings = 1026``
gives ``W = 1024`` tokens = 1,022 residues, ProteinGym's value.

Which window (the rule, :func:`scoring_window`):

* a **long model** (``model.config.attention_window`` set: Long ESM-2's sliding-window attention, de Oliveira
  et al. 2024, arXiv 2501.07747) scores every position on the **full sequence**, ``T`` tokens in one pass
  whatever the length: its attention is linear in the length and its rotary positions have no limit, so
  nothing is cropped (``"scoring_window": "full"`` in the results);
* any other model uses ProteinGym's optimal window above with ``W = max_residues + 2``
  (``"scoring_window": "optimal"``, ``"model_window": W``); proteins with ``T <= W`` are not cropped.

An explicit ``max_residues`` applies ProteinGym's window with that ``W`` to either kind of model (e.g. to score
a long model as if it had ESM-2's context).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ..data.collator import encode_protein
from ..data.tokenizer import load_tokenizer
from ..io import atomic_write_json
from .context import attention_window, default_max_residues
from .mutants import MutantMismatchError, parse_mutant, validate_mutants

__all__ = [
    "ProteinGymInputError",
    "PUBLISHED_MODELS",
    "get_optimal_window",
    "default_max_residues",
    "scoring_window",
    "encode_sequence",
    "masked_marginals_scores",
    "load_assay",
    "load_reference",
    "load_published",
    "find_assay_files",
    "evaluate_assay",
    "evaluate_proteingym",
    "add_cli_arguments",
    "cli_main",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Embedded ProteinGym assays shipped with the repository (absent in a wheel install).
DEFAULT_ASSAYS_DIR = _REPO_ROOT / "data" / "proteingym" / "substitutions"
_PUBLISHED_FILENAME = "DMS_substitutions_Spearman_DMS_level.csv"
#: Published ProteinGym columns copied into the results: column name -> result key suffix.
PUBLISHED_MODELS = {"ESM2 (8M)": "ESM2_8M", "ESM2 (35M)": "ESM2_35M"}
_ASSAY_SUFFIXES = (".csv.gz", ".csv")


class ProteinGymInputError(ValueError):
    """An input of the ProteinGym evaluation (assay file, reference, assay id) is unusable.

    The message names the input and how to fix it.
    """


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------
def get_optimal_window(
    mutation_position_relative: int, seq_len_wo_special: int, model_window: int
) -> tuple[int, int]:
    """ProteinGym's scoring window for one masked token of a long sequence.

    Verbatim port of ``get_optimal_window`` in ``proteingym/utils/scoring_utils.py``
    (OATML-Markslab/ProteinGym). Despite ProteinGym's argument name, ``compute_fitness.py`` calls
    it with the token index (``<cls>`` at 0) and ``len(sequence) + 2`` -- the length *with*
    ``<cls>``/``<eos>`` -- and ``model_window=1024``; use it the same way.

    Args:
        mutation_position_relative: token index ``i`` of the masked token (residue position
            ``p`` (1-based) has token index ``p`` because ``<cls>`` occupies index 0).
        seq_len_wo_special: total number of tokens ``T`` (residues + 2).
        model_window: window length ``W`` in tokens.

    Returns:
        ``(start, end)``: slice bounds into the token sequence (``end`` exclusive). ``end - start``
        is ``T`` if ``T <= W``, else ``W`` at the two ends and ``2 * (W // 2)`` in the middle.
    """
    half_model_window = model_window // 2
    if seq_len_wo_special <= model_window:
        return 0, seq_len_wo_special
    elif mutation_position_relative < half_model_window:
        return 0, model_window
    elif mutation_position_relative >= seq_len_wo_special - half_model_window:
        return seq_len_wo_special - model_window, seq_len_wo_special
    else:
        return (
            max(0, mutation_position_relative - half_model_window),
            min(seq_len_wo_special, mutation_position_relative + half_model_window),
        )


def scoring_window(model: Any, max_residues: int | None = None) -> tuple[str, int | None]:
    """The window policy for ``model`` (module docstring: "Which window").

    Args:
        model: the scoring model (its ``config.attention_window`` and ``config.max_position_embeddings`` are read).
        max_residues: explicit residues per pass; ``None`` = the model's own rule.

    Returns:
        ``("full", None)``: every masked copy is the whole ``<cls> seq <eos>`` (a long model with no explicit
        ``max_residues``, or a model whose config gives no maximum); ``("optimal", W)``: ProteinGym's
        :func:`get_optimal_window` with ``W = max_residues + 2`` tokens (``max_residues`` defaults to
        :func:`default_max_residues`: ``W = 1024`` for ESM-2).

    Raises:
        ValueError: ``max_residues < 1``.
    """
    if max_residues is None:
        if attention_window(model) is not None:
            return "full", None
        max_residues = default_max_residues(model)
        if max_residues is None:
            return "full", None
    if int(max_residues) < 1:
        raise ValueError(f"max_residues must be >= 1, got {max_residues}")
    return "optimal", int(max_residues) + 2


def encode_sequence(tokenizer: Any, sequence: str) -> torch.Tensor:
    """Token ids of ``<cls> sequence <eos>``, one token per residue.

    Identical to ``tokenizer(sequence)["input_ids"]`` for the ESM-2 tokenizer (and to fair-esm's
    batch converter, which ProteinGym uses), without the per-call tokenizer overhead.

    Args:
        tokenizer: ESM-2 tokenizer (needs ``get_vocab()``, ``cls_token_id``, ``eos_token_id``).
        sequence: residues, one letter each (upper-case).

    Returns:
        ``torch.int64`` tensor of shape ``(len(sequence) + 2,)`` on CPU.

    Raises:
        ProteinGymInputError: a residue has no token in the vocabulary.
    """
    if tokenizer.cls_token_id is None or tokenizer.eos_token_id is None:
        raise ProteinGymInputError(
            f"Tokenizer {type(tokenizer).__name__} has no <cls>/<eos> token; use the ESM-2 tokenizer."
        )
    try:
        return torch.tensor(encode_protein(tokenizer, sequence), dtype=torch.long)
    except ValueError as err:
        raise ProteinGymInputError(f"{err} Use the ESM-2 tokenizer and the assay's own target_seq.") from err


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _logits(output: Any) -> torch.Tensor:
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict):
        return output["logits"]
    return output[0]


def _score_mutants(
    model: torch.nn.Module,
    tokenizer: Any,
    target_seq: str,
    mutants: Sequence[str],
    batch_size: int = 32,
    max_residues: int | None = None,
    device: Any = None,
    progress: bool = False,
    assay_id: str = "<assay>",
) -> tuple[np.ndarray, dict[str, int]]:
    """Implementation of :func:`masked_marginals_scores`; also returns counts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seq = str(target_seq).strip().upper()
    mutants = list(mutants)
    validate_mutants(seq, mutants, assay_id)

    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ProteinGymInputError(
            f"Tokenizer {type(tokenizer).__name__} has no <mask> token; use the ESM-2 tokenizer."
        )
    vocab = tokenizer.get_vocab()
    ids = encode_sequence(tokenizer, seq)
    n_tokens = ids.numel()

    policy, window = scoring_window(model, max_residues)

    # Flatten substitutions: (mutant index, 0-based position, wt token, mt token).
    mut_idx, pos0, wt_tok, mt_tok = [], [], [], []
    for k, mutant in enumerate(mutants):
        for wt, pos, mt in parse_mutant(mutant):
            mut_idx.append(k)
            pos0.append(pos - 1)
            wt_tok.append(vocab[wt])
            mt_tok.append(vocab[mt])
    positions = sorted(set(pos0))
    row_of = {p: r for r, p in enumerate(positions)}

    # One masked copy per unique position; crop per ProteinGym's window; group equal lengths.
    groups: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # length -> (row, i, start)
    n_windowed = 0
    for r, p in enumerate(positions):
        i = p + 1  # token index (<cls> at 0)
        if window is not None and n_tokens > window:
            start, end = get_optimal_window(i, n_tokens, window)
            n_windowed += 1
        else:
            start, end = 0, n_tokens
        groups[end - start].append((r, i, start))
    batches = [
        (length, items[b : b + batch_size])
        for length, items in sorted(groups.items())
        for b in range(0, len(items), batch_size)
    ]

    if device is None:
        device = _model_device(model)
    else:
        device = torch.device(device)
        model.to(device)
    n_vocab: int | None = None
    log_probs: torch.Tensor | None = None  # (n_positions, vocab) float32, CPU
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for length, items in tqdm(
                batches, desc=f"{assay_id}: masked marginals", disable=not progress, leave=False
            ):
                rows = torch.tensor([r for r, _, _ in items], dtype=torch.long)
                rel = torch.tensor([i - s for _, i, s in items], dtype=torch.long)
                batch = torch.stack([ids[s : s + length] for _, _, s in items])
                batch[torch.arange(len(items)), rel] = mask_id
                batch = batch.to(device)
                out = model(input_ids=batch, attention_mask=torch.ones_like(batch))
                logits = _logits(out)[torch.arange(len(items), device=device), rel.to(device)]
                lp = torch.log_softmax(logits.float(), dim=-1).cpu()
                if log_probs is None:
                    n_vocab = lp.shape[-1]
                    log_probs = torch.empty(len(positions), n_vocab, dtype=torch.float32)
                log_probs[rows] = lp
    finally:
        model.train(was_training)

    scores = np.zeros(len(mutants), dtype=np.float64)
    if positions:
        assert log_probs is not None
        lp64 = log_probs.double().numpy()
        r = np.array([row_of[p] for p in pos0], dtype=np.int64)
        delta = lp64[r, np.array(mt_tok)] - lp64[r, np.array(wt_tok)]
        np.add.at(scores, np.array(mut_idx, dtype=np.int64), delta)
    info = {
        "scoring_window": policy,
        "model_window": window,
        "max_forward_tokens": max((length for length, _ in batches), default=0),
        "n_positions": len(positions),
        "n_windowed_positions": n_windowed,
        "n_forward_batches": len(batches),
    }
    return scores, info


def masked_marginals_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    target_seq: str,
    mutants: Sequence[str],
    batch_size: int = 32,
    max_residues: int | None = None,
    device: Any = None,
    progress: bool = False,
    assay_id: str = "<assay>",
) -> np.ndarray:
    """ESM masked-marginal scores of substitution mutants (ProteinGym's ESM-2 strategy).

    For every *unique* mutated position ``p`` the wild-type sequence ``<cls> seq <eos>`` is copied
    with token ``p`` (1-based; ``<cls>`` is token 0) replaced by ``<mask>``, kept whole for a long model
    (``config.attention_window`` set) or else cropped with ProteinGym's optimal window if it is longer than the
    model window (:func:`scoring_window`, the module docstring and :func:`get_optimal_window`), and run
    through the model; the log-softmax (float32) of the logits
    at the masked token gives ``log p(. | x_{-p})``. Then::

        score(mutant) = sum over (wt, p, mt) in mutant of  log p(mt | x_{-p}) - log p(wt | x_{-p})

    Up to ``batch_size`` masked copies of equal length go through one forward pass under
    ``torch.inference_mode()``; the result equals scoring one position at a time.

    Args:
        model: masked LM with the ESM-2 vocabulary (``EsmForMaskedLM`` or a bitesm model), called as
            ``model(input_ids=(B, T) int64, attention_mask=(B, T) int64)`` and returning logits of
            shape ``(B, T, vocab)`` (any float dtype: fp32 or bf16). It is put in eval mode for the
            call (training mode is restored) and moved to ``device`` if one is given.
        tokenizer: the ESM-2 tokenizer (``transformers.EsmTokenizer``).
        target_seq: wild-type sequence (upper-cased, as ProteinGym does), length ``L``.
        mutants: ``N`` mutant strings, ``"A23C"`` or ``"A23C:G45W"``, 1-based positions on
            ``target_seq``.
        batch_size: masked sequences per forward pass.
        max_residues: residues that fit in one forward pass with ``<cls>``/``<eos>`` (model window
            ``W = max_residues + 2`` tokens). Default: none for a long model (full sequence, any length);
            else :func:`default_max_residues`: ``config.max_position_embeddings - 4`` = 1,022 for ESM-2,
            ProteinGym's ``W = 1024``. Given explicitly, ProteinGym's window with this ``W`` applies to
            either kind of model.
        device: where to run; default the model's device.
        progress: show a tqdm bar over forward batches.
        assay_id: name used in error messages.

    Returns:
        ``numpy.ndarray`` of shape ``(N,)``, dtype float64: log-likelihood ratios in nats (natural
        log), in the order of ``mutants``; higher = predicted fitter.

    Raises:
        MutantMismatchError: a mutant is malformed or does not match ``target_seq`` (names the
            assay and the mutant).
        ProteinGymInputError: the tokenizer lacks ``<mask>``/``<cls>``/``<eos>`` or a residue token.
        ValueError: ``batch_size < 1`` or ``max_residues < 1``.

    Source: ``masked-marginals`` branch of ``main`` and ``label_row`` in
    ``proteingym/baselines/esm/compute_fitness.py``; ``get_optimal_window`` in
    ``proteingym/utils/scoring_utils.py`` (OATML-Markslab/ProteinGym); Meier et al. 2021 eq. 1.
    """
    scores, _ = _score_mutants(
        model, tokenizer, target_seq, mutants, batch_size=batch_size, max_residues=max_residues,
        device=device, progress=progress, assay_id=assay_id,
    )
    return scores


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def load_assay(path: str | os.PathLike) -> pd.DataFrame:
    """Read one ProteinGym substitution assay (``<DMS_id>.csv`` or ``.csv.gz``).

    Args:
        path: CSV file (gzip detected from the ``.gz`` suffix) with at least the columns ``mutant``
            and ``DMS_score`` (ProteinGym also has ``mutated_sequence`` and ``DMS_score_bin``).

    Returns:
        The rows as a DataFrame, file order kept.

    Raises:
        FileNotFoundError: no such file.
        ProteinGymInputError: a required column is missing or the file has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ProteinGym assay file {path} does not exist. Fix: pass a <DMS_id>.csv or .csv.gz "
            "file from ProteinGym's DMS_ProteinGym_substitutions folder."
        )
    df = pd.read_csv(path)
    missing = [c for c in ("mutant", "DMS_score") if c not in df.columns]
    if missing:
        raise ProteinGymInputError(
            f"Assay file {path} lacks column(s) {missing} (has {list(df.columns)}). Fix: use a "
            "ProteinGym substitution file (columns mutant, mutated_sequence, DMS_score, DMS_score_bin)."
        )
    if len(df) == 0:
        raise ProteinGymInputError(f"Assay file {path} has no rows.")
    return df


def load_reference(path: str | os.PathLike) -> pd.DataFrame:
    """Read ProteinGym's reference file ``DMS_substitutions.csv``.

    Args:
        path: the reference CSV (one row per assay; needs columns ``DMS_id`` and ``target_seq``).

    Returns:
        The DataFrame, unchanged.

    Raises:
        FileNotFoundError: no such file (message says where to get it).
        ProteinGymInputError: ``DMS_id`` or ``target_seq`` column missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ProteinGym reference file {path} does not exist. Fix: pass --reference with "
            "ProteinGym's reference_files/DMS_substitutions.csv (bitesm ships v1.3 at "
            "data/proteingym/reference/DMS_substitutions.csv)."
        )
    df = pd.read_csv(path)
    missing = [c for c in ("DMS_id", "target_seq") if c not in df.columns]
    if missing:
        raise ProteinGymInputError(
            f"Reference file {path} lacks column(s) {missing}. Fix: use ProteinGym's "
            "DMS_substitutions.csv."
        )
    return df


def load_published(path: str | os.PathLike) -> dict[str, dict[str, float | None]]:
    """Published per-assay Spearman of ESM2 (8M)/(35M) from ProteinGym.

    Args:
        path: ``DMS_substitutions_Spearman_DMS_level.csv`` (ProteinGym
            ``benchmarks/DMS_zero_shot/substitutions/Spearman``), column ``DMS ID`` plus one column
            per model.

    Returns:
        ``{DMS_id: {"ESM2_8M": rho or None, "ESM2_35M": rho or None}}``.

    Raises:
        FileNotFoundError: no such file.
        ProteinGymInputError: no ``DMS ID`` column or none of the ESM2 (8M)/(35M) columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Published Spearman file {path} does not exist.")
    df = pd.read_csv(path)
    id_col = "DMS ID" if "DMS ID" in df.columns else "DMS_id" if "DMS_id" in df.columns else None
    cols = [c for c in PUBLISHED_MODELS if c in df.columns]
    if id_col is None or not cols:
        raise ProteinGymInputError(
            f"Published Spearman file {path} needs a 'DMS ID' column and columns "
            f"{list(PUBLISHED_MODELS)}. Fix: use ProteinGym's {_PUBLISHED_FILENAME}."
        )
    out: dict[str, dict[str, float | None]] = {}
    for _, row in df.iterrows():
        out[str(row[id_col])] = {
            PUBLISHED_MODELS[c]: (None if pd.isna(row[c]) else float(row[c])) for c in cols
        }
    return out


def find_assay_files(assays_dir: str | os.PathLike) -> dict[str, Path]:
    """Map ``DMS_id -> file`` for every ``<DMS_id>.csv`` / ``<DMS_id>.csv.gz`` in ``assays_dir``.

    A plain ``.csv`` wins over a ``.csv.gz`` of the same assay. Sorted by ``DMS_id``.

    Raises:
        FileNotFoundError: the folder does not exist or holds no assay CSVs.
    """
    d = Path(assays_dir)
    if not d.is_dir():
        raise FileNotFoundError(
            f"ProteinGym assays folder {d} does not exist. Fix: pass --assays <folder of "
            "<DMS_id>.csv or .csv.gz files> (the unzipped DMS_ProteinGym_substitutions folder "
            "from ProteinGym, or bitesm's data/proteingym/substitutions)."
        )
    found: dict[str, Path] = {}
    for f in d.iterdir():
        if not f.is_file():
            continue
        for suffix in _ASSAY_SUFFIXES:
            if f.name.endswith(suffix):
                dms_id = f.name[: -len(suffix)]
                if dms_id not in found or suffix == ".csv":
                    found[dms_id] = f
                break
    if not found:
        raise FileNotFoundError(
            f"ProteinGym assays folder {d} holds no .csv or .csv.gz files. Fix: point --assays at "
            "the folder with the <DMS_id>.csv substitution files."
        )
    return dict(sorted(found.items()))


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def evaluate_assay(
    model: torch.nn.Module,
    tokenizer: Any,
    assay_csv: str | os.PathLike,
    target_seq: str,
    assay_id: str | None = None,
    **scoring_kwargs: Any,
) -> dict[str, Any]:
    """Score one ProteinGym assay and correlate with the measurements.

    Args:
        model, tokenizer: as in :func:`masked_marginals_scores`.
        assay_csv: ``<DMS_id>.csv`` or ``.csv.gz`` (columns ``mutant``, ``DMS_score``).
        target_seq: the assay's reference sequence (``target_seq`` in ``DMS_substitutions.csv``).
        assay_id: name for the result and errors; default the file name without ``.csv[.gz]``.
        **scoring_kwargs: passed to :func:`masked_marginals_scores` (``batch_size``,
            ``max_residues``, ``device``, ``progress``).

    Returns:
        ``{"DMS_id": str, "n_mutants": int, "seq_len": int (residues), "scoring_window": "full" (whole
        sequence in every pass: a long model) or "optimal" (ProteinGym's window policy),
        "model_window": int tokens ``W`` of the optimal policy or None for "full",
        "max_forward_tokens": int (longest token sequence given to the model: ``seq_len + 2`` for "full",
        ``<= W`` for "optimal"), "n_positions": int (unique mutated positions = forward sequences),
        "n_windowed_positions": int (positions whose sequence was cropped), "spearman": float
        (``scipy.stats.spearmanr(scores, DMS_score)``; NaN if undefined), "seconds": float (wall
        time incl. file reading), "positions_per_second": float}``.

    Raises:
        FileNotFoundError / ProteinGymInputError: see :func:`load_assay`.
        MutantMismatchError: a mutant does not match ``target_seq`` (names the assay).

    Source: Spearman per assay is ProteinGym's headline zero-shot metric (Notin et al. 2023).
    """
    t0 = time.perf_counter()
    name = Path(assay_csv).name
    if assay_id is None:
        assay_id = next((name[: -len(s)] for s in _ASSAY_SUFFIXES if name.endswith(s)), name)
    df = load_assay(assay_csv)
    scores, info = _score_mutants(
        model, tokenizer, target_seq, df["mutant"].tolist(), assay_id=assay_id, **scoring_kwargs
    )
    rho = float(spearmanr(scores, df["DMS_score"].to_numpy(dtype=np.float64)).statistic)
    seconds = time.perf_counter() - t0
    return {
        "DMS_id": assay_id,
        "n_mutants": int(len(df)),
        "seq_len": len(str(target_seq).strip()),
        "scoring_window": info["scoring_window"],
        "model_window": info["model_window"],
        "max_forward_tokens": info["max_forward_tokens"],
        "n_positions": info["n_positions"],
        "n_windowed_positions": info["n_windowed_positions"],
        "spearman": rho,
        "seconds": seconds,
        "positions_per_second": info["n_positions"] / seconds if seconds > 0 else float("nan"),
    }


def _model_name(model: Any) -> str:
    name = getattr(model, "name_or_path", None) or getattr(
        getattr(model, "config", None), "_name_or_path", None
    )
    return str(name) if name else type(model).__name__


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate_proteingym(
    model: torch.nn.Module,
    tokenizer: Any,
    assays_dir: str | os.PathLike,
    reference_csv: str | os.PathLike,
    output_json: str | os.PathLike | None = None,
    assay_ids: Sequence[str] | str | None = None,
    published_csv: str | os.PathLike | None = None,
    batch_size: int = 32,
    device: Any = None,
    progress: bool = True,
    max_residues: int | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Zero-shot ProteinGym substitution benchmark (masked marginals) over a folder of assays.

    Args:
        model, tokenizer: as in :func:`masked_marginals_scores`.
        assays_dir: folder of ``<DMS_id>.csv`` / ``<DMS_id>.csv.gz`` assay files.
        reference_csv: ProteinGym ``DMS_substitutions.csv`` giving ``target_seq`` per ``DMS_id``.
        output_json: if given, the result is written there atomically (temp file + ``os.replace``);
            NaN is written as ``null``.
        assay_ids: restrict to these ``DMS_id`` s (list or comma-separated string).
        published_csv: ProteinGym ``DMS_substitutions_Spearman_DMS_level.csv``; default that file
            next to ``reference_csv`` if it exists (else published values are omitted).
        batch_size, device, max_residues: see :func:`masked_marginals_scores`.
        progress: tqdm bars (assays and, per assay, forward batches).
        model_name: ``"model"`` field; default ``model.name_or_path`` or the class name.

    Returns:
        ``{"model": str, "strategy": "masked-marginals", "attention_window": int | None (the model's
        sliding-window band, None for global attention), "n_assays": int, "mean_spearman": float,
        "mean_published_spearman_ESM2_8M": float | None, "mean_published_spearman_ESM2_35M": ...,
        "seconds": float, "assays": [per-assay dicts of :func:`evaluate_assay`, plus
        "published_spearman_ESM2_8M"/"published_spearman_ESM2_35M" (float or None) when a
        published file is used]}``. Means are unweighted over the evaluated assays (the published
        means over the same assays).

    Raises:
        FileNotFoundError: missing assays folder / reference / published file.
        ProteinGymInputError: unknown ``assay_ids``, or an assay missing from the reference (both
            checked before any scoring).
        MutantMismatchError: an assay's mutant does not match its ``target_seq``.
    """
    t0 = time.perf_counter()
    assays_dir = Path(assays_dir)
    files = find_assay_files(assays_dir)
    if assay_ids is not None:
        if isinstance(assay_ids, str):
            assay_ids = [a.strip() for a in assay_ids.split(",") if a.strip()]
        unknown = [a for a in assay_ids if a not in files]
        if unknown:
            avail = list(files)
            shown = ", ".join(avail[:10]) + (f", ... ({len(avail)} in all)" if len(avail) > 10 else "")
            raise ProteinGymInputError(
                f"Unknown assay id(s) {unknown}: no <DMS_id>.csv or .csv.gz in {assays_dir}. "
                f"Available: {shown}. Fix: pass ids from that folder to --assay-ids (comma-separated)."
            )
        files = {a: files[a] for a in dict.fromkeys(assay_ids)}
    reference_csv = Path(reference_csv)
    ref = load_reference(reference_csv)
    seq_of = dict(zip(ref["DMS_id"].astype(str), ref["target_seq"].astype(str)))
    not_in_ref = [a for a in files if a not in seq_of]
    if not_in_ref:
        raise ProteinGymInputError(
            f"Assay(s) {not_in_ref} from {assays_dir} have no row in reference {reference_csv} "
            "(column DMS_id). Fix: use the DMS_substitutions.csv of the same ProteinGym release as "
            "the assay files, or restrict with --assay-ids."
        )
    if published_csv is None:
        candidate = reference_csv.parent / _PUBLISHED_FILENAME
        published = load_published(candidate) if candidate.is_file() else None
    else:
        published = load_published(published_csv)

    if device is not None:
        model.to(torch.device(device))
    results = []
    bar = tqdm(files.items(), desc="ProteinGym", disable=not progress, unit="assay")
    for dms_id, path in bar:
        bar.set_postfix_str(dms_id)
        res = evaluate_assay(
            model, tokenizer, path, seq_of[dms_id], assay_id=dms_id, batch_size=batch_size,
            max_residues=max_residues, progress=progress,
        )
        if published is not None:
            pub = published.get(dms_id, {})
            for key in PUBLISHED_MODELS.values():
                res[f"published_spearman_{key}"] = pub.get(key)
        results.append(res)

    out: dict[str, Any] = {
        "model": model_name or _model_name(model),
        "strategy": "masked-marginals",
        "attention_window": attention_window(model),
        "n_assays": len(results),
        "mean_spearman": float(np.mean([r["spearman"] for r in results])),
    }
    if published is not None:
        for key in PUBLISHED_MODELS.values():
            out[f"mean_published_spearman_{key}"] = _mean(
                r.get(f"published_spearman_{key}") for r in results
            )
    out["seconds"] = time.perf_counter() - t0
    out["assays"] = results
    if output_json is not None:
        atomic_write_json(Path(output_json), out)
    return out


# ----------------------------------------------------------------------------------------------
# CLI: bitesm eval proteingym --model DIR --assays PATH --output FILE
# ----------------------------------------------------------------------------------------------
def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``bitesm eval proteingym`` options to ``parser`` (returned for chaining)."""
    default_assays = str(DEFAULT_ASSAYS_DIR) if DEFAULT_ASSAYS_DIR.is_dir() else None
    parser.add_argument("--model", required=True,
                        help="checkpoint folder or Hugging Face Hub id of a masked LM with the "
                             "ESM-2 vocabulary (EsmForMaskedLM or a bitesm model)")
    parser.add_argument("--assays", default=default_assays,
                        help="folder of ProteinGym <DMS_id>.csv / .csv.gz substitution files "
                             f"(default: {default_assays or 'none; required'})")
    parser.add_argument("--reference", default=None,
                        help="ProteinGym DMS_substitutions.csv "
                             "(default: <assays>/../reference/DMS_substitutions.csv)")
    parser.add_argument("--output", default=None, help="write the results JSON here")
    parser.add_argument("--assay-ids", default=None,
                        help="comma-separated DMS_ids to evaluate (default: all in --assays)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="masked sequences per forward pass (default 32)")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="model weights dtype (log-softmax is always float32)")
    return parser


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bitesm eval proteingym`` with parsed ``args`` (see :func:`add_cli_arguments`).

    Loads ``AutoModelForMaskedLM.from_pretrained(args.model)`` (bitesm is imported first so bitesm
    checkpoints resolve) and its tokenizer (falling back to the ESM-2 tokenizer files when the
    folder has none), runs :func:`evaluate_proteingym`, prints a table (column ``window``: ``full`` for a long
    model scored on whole sequences, else ProteinGym's window ``W`` in tokens).

    Returns:
        0 on success; 2 on an input error (message on stderr naming the input and the fix).
    """
    import bitesm  # noqa: F401  (registers bitesm model types with the Auto classes)
    from transformers import AutoModelForMaskedLM

    def fail(msg: str) -> int:
        print(f"bitesm eval proteingym: error: {msg}", file=sys.stderr)
        return 2

    if args.assays is None:
        return fail("--assays is required (folder of ProteinGym <DMS_id>.csv / .csv.gz files).")
    assays = Path(args.assays)
    reference = Path(args.reference) if args.reference else assays.parent / "reference" / "DMS_substitutions.csv"
    if args.batch_size < 1:
        return fail(f"--batch-size must be >= 1, got {args.batch_size}.")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    try:
        model = AutoModelForMaskedLM.from_pretrained(args.model, dtype=dtype)
    except (OSError, ValueError) as err:
        return fail(
            f"cannot load --model {args.model!r}: {err}\nFix: pass a checkpoint folder containing "
            "config.json and weights, or a Hub id available offline."
        )
    try:
        tokenizer = load_tokenizer(args.model)
        model.to(device)
        result = evaluate_proteingym(
            model, tokenizer, assays, reference, output_json=args.output,
            assay_ids=args.assay_ids, batch_size=args.batch_size, device=device,
            model_name=str(args.model),
        )
    except (FileNotFoundError, ProteinGymInputError, MutantMismatchError) as err:
        return fail(str(err))

    has_pub = "mean_published_spearman_ESM2_8M" in result
    head = f"{'DMS_id':<34} {'n_mut':>6} {'len':>5} {'window':>7} {'spearman':>9}"
    if has_pub:
        head += f" {'ESM2-8M':>8} {'ESM2-35M':>8}"
    print(head + f" {'sec':>7}")

    def fmt(x: Any) -> str:
        return f"{x:8.3f}" if isinstance(x, float) and not math.isnan(x) else f"{'-':>8}"

    for r in result["assays"]:
        window = "full" if r["scoring_window"] == "full" else str(r["model_window"])
        line = f"{r['DMS_id']:<34} {r['n_mutants']:>6} {r['seq_len']:>5} {window:>7} {fmt(r['spearman']):>9}"
        if has_pub:
            line += f" {fmt(r.get('published_spearman_ESM2_8M'))} {fmt(r.get('published_spearman_ESM2_35M'))}"
        print(line + f" {r['seconds']:7.1f}")
    line = f"{'mean (' + str(result['n_assays']) + ' assays)':<34} {'':>6} {'':>5} {'':>7} {fmt(result['mean_spearman']):>9}"
    if has_pub:
        line += f" {fmt(result['mean_published_spearman_ESM2_8M'])} {fmt(result['mean_published_spearman_ESM2_35M'])}"
    print(line + f" {result['seconds']:7.1f}")
    if args.output:
        print(f"wrote {args.output}")
    return 0
