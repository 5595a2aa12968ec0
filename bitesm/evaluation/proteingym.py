"""ProteinGym zero-shot substitution benchmark: assays, scores, ProteinGym's metrics and summary.

The protocol of ProteinGym (Notin et al., NeurIPS 2023; OATML-Markslab/ProteinGym) for a masked language model:

* **scores** per mutant with one of ProteinGym's ESM strategies (:mod:`bitesm.evaluation.scoring`:
  masked-marginals, the strategy of the ESM-2 leaderboard rows, wt-marginals or pseudo-ppl), with ProteinGym's
  window rules for long proteins and whole sequences for long models;
* **metrics** per assay (:mod:`bitesm.evaluation.metrics`): Spearman's rho against ``DMS_score``, AUC and MCC
  against ``DMS_score_bin``, NDCG and top-10% recall, as ``proteingym/performance_DMS_benchmarks.py`` defines them;
* **summary** (:mod:`bitesm.evaluation.aggregation`): ProteinGym's aggregation (mean per UniProt ID, then per
  coarse selection type, then the mean of those) with its bootstrap standard error, next to the published ESM-2
  (8M) and (35M) values when the reference table has them.

Assays come from a folder of ProteinGym ``<DMS_id>.csv`` files plus the reference file ``DMS_substitutions.csv``
(bitesm ships 18 assays and the v1.3 reference in ``data/proteingym``; ``python data/fetch_proteingym.py`` fetches
all 217).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..io import atomic_write_json
from .aggregation import aggregate, bootstrap_standard_error
from .cache import ResultCache, file_fingerprint, model_fingerprint, text_fingerprint
from .context import attention_window, model_label
from .metrics import METRICS, assay_metrics
from .mutants import apply_mutant, validate_mutants
from .scoring import ProteinGymInputError, score_mutants, scoring_window

__all__ = [
    "DEFAULT_ASSAYS_DIR",
    "DEFAULT_REFERENCE",
    "PUBLISHED_MODELS",
    "SCORES_VERSION",
    "ProteinGymFileNotFoundError",
    "default_reference",
    "describe_spearman",
    "evaluate_assay",
    "evaluate_proteingym",
    "find_assay_files",
    "format_results_table",
    "load_assay",
    "load_published",
    "load_reference",
    "summarize",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Embedded ProteinGym assays shipped with the repository (absent in a wheel install).
DEFAULT_ASSAYS_DIR = _REPO_ROOT / "data" / "proteingym" / "substitutions"
#: ProteinGym v1.3's reference file shipped with the repository (absent in a wheel install).
DEFAULT_REFERENCE = _REPO_ROOT / "data" / "proteingym" / "reference" / "DMS_substitutions.csv"
_PUBLISHED_FILENAME = "DMS_substitutions_Spearman_DMS_level.csv"
#: Published ProteinGym columns copied into the results: column name -> result key suffix.
PUBLISHED_MODELS = {"ESM2 (8M)": "ESM2_8M", "ESM2 (35M)": "ESM2_35M"}
_ASSAY_SUFFIXES = (".csv.gz", ".csv")


class ProteinGymFileNotFoundError(ProteinGymInputError, FileNotFoundError):
    """A ProteinGym input file or folder does not exist (or holds no assay); the message names it and the fix.

    Both a :class:`~bitesm.errors.UserInputError` and a ``FileNotFoundError``, so code that caught either keeps
    working.
    """


def default_reference(assays_dir: str | os.PathLike) -> Path:
    """The reference file of an assays folder when none is given: ``<assays_dir>/../reference/DMS_substitutions.csv``
    (ProteinGym's layout, as in bitesm's ``data/proteingym``) if that file exists, else the v1.3 reference shipped
    with the repository (:data:`DEFAULT_REFERENCE`) if it exists, else the first path (whose absence
    :func:`load_reference` reports).

    The shipped reference covers all 217 v1.3 assays; an assay file of another release whose ``mutated_sequence``
    disagrees with it is refused by :func:`evaluate_assay`.

    Args:
        assays_dir: a folder of ``<DMS_id>.csv`` files.

    Returns:
        The path.
    """
    sibling = Path(assays_dir).parent / "reference" / "DMS_substitutions.csv"
    if not sibling.is_file() and DEFAULT_REFERENCE.is_file():
        return DEFAULT_REFERENCE
    return sibling


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
        ProteinGymFileNotFoundError: no such file.
        ProteinGymInputError: the file is empty or not a CSV, a required column is missing, the file has no rows,
            or no row has a ``DMS_score`` (all NaN).
    """
    path = Path(path)
    if not path.is_file():
        raise ProteinGymFileNotFoundError(
            f"ProteinGym assay file {path} does not exist. Fix: pass a <DMS_id>.csv or .csv.gz "
            "file from ProteinGym's DMS_ProteinGym_substitutions folder."
        )
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise ProteinGymInputError(
            f"Assay file {path} cannot be read as a CSV ({type(err).__name__}: {err}). Fix: use a ProteinGym "
            "substitution file (columns mutant, mutated_sequence, DMS_score, DMS_score_bin; .csv or .csv.gz)."
        ) from err
    missing = [c for c in ("mutant", "DMS_score") if c not in df.columns]
    if missing:
        raise ProteinGymInputError(
            f"Assay file {path} lacks column(s) {missing} (has {list(df.columns)}). Fix: use a "
            "ProteinGym substitution file (columns mutant, mutated_sequence, DMS_score, DMS_score_bin)."
        )
    if len(df) == 0:
        raise ProteinGymInputError(f"Assay file {path} has no rows.")
    if pd.to_numeric(df["DMS_score"], errors="coerce").isna().all():
        raise ProteinGymInputError(
            f"Assay file {path}: no row has a numeric DMS_score (all {len(df)} are empty or NaN), so there is "
            "nothing to correlate the scores with. Fix: use the assay file as ProteinGym distributes it."
        )
    return df


def load_reference(path: str | os.PathLike) -> pd.DataFrame:
    """Read ProteinGym's reference file ``DMS_substitutions.csv``.

    Args:
        path: the reference CSV (one row per assay; needs columns ``DMS_id`` and ``target_seq``).

    Returns:
        The DataFrame, unchanged.

    Raises:
        ProteinGymFileNotFoundError: no such file (message says where to get it).
        ProteinGymInputError: ``DMS_id`` or ``target_seq`` column missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ProteinGymFileNotFoundError(
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
        ProteinGymFileNotFoundError: no such file.
        ProteinGymInputError: no ``DMS ID`` column or none of the ESM2 (8M)/(35M) columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ProteinGymFileNotFoundError(f"Published Spearman file {path} does not exist.")
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
        ProteinGymFileNotFoundError: the folder does not exist or holds no assay CSVs.
    """
    d = Path(assays_dir)
    if not d.is_dir():
        raise ProteinGymFileNotFoundError(
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
        raise ProteinGymFileNotFoundError(
            f"ProteinGym assays folder {d} holds no .csv or .csv.gz files. Fix: point --assays at "
            "the folder with the <DMS_id>.csv substitution files."
        )
    return dict(sorted(found.items()))


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
#: Version of the scores' computation, part of every cache key: bump it when scoring changes its numbers.
SCORES_VERSION = 2


def _check_mutated_sequences(df: pd.DataFrame, target_seq: str, assay_id: str) -> None:
    """The file's ``mutated_sequence`` column, when present, must equal ``target_seq`` with the mutant applied."""
    if "mutated_sequence" not in df.columns:
        return
    for row, (mutant, given) in enumerate(zip(df["mutant"], df["mutated_sequence"])):
        if apply_mutant(target_seq, mutant) != str(given).strip().upper():
            raise ProteinGymInputError(
                f"Assay {assay_id}: row {row} (mutant {mutant!r}) has a mutated_sequence that is not target_seq with "
                "that mutant applied. Fix: use the reference file (target_seq) of the same ProteinGym release as the "
                "assay file."
            )


def evaluate_assay(
    model: torch.nn.Module,
    tokenizer: Any,
    assay_csv: str | os.PathLike,
    target_seq: str,
    assay_id: str | None = None,
    strategy: str = "masked-marginals",
    cache: ResultCache | None = None,
    cache_key: dict[str, Any] | None = None,
    **scoring_kwargs: Any,
) -> dict[str, Any]:
    """Score one ProteinGym assay and compute ProteinGym's metrics.

    Args:
        model, tokenizer: as in :func:`bitesm.evaluation.scoring.score_mutants`.
        assay_csv: ``<DMS_id>.csv`` or ``.csv.gz`` (columns ``mutant``, ``DMS_score``; ``DMS_score_bin`` for AUC and
            MCC; ``mutated_sequence``, when present, is checked against ``target_seq`` + mutant).
        target_seq: the assay's reference sequence (``target_seq`` in ``DMS_substitutions.csv``).
        assay_id: name for the result and errors; default the file name without ``.csv[.gz]``.
        strategy: one of :data:`bitesm.evaluation.scoring.STRATEGIES`.
        cache: where scores are looked up and stored (:class:`bitesm.evaluation.cache.ResultCache`); needs
            ``cache_key``.
        cache_key: what the scores depend on besides this assay (model fingerprint, dtype, device type, ...); the
            assay file's hash, ``target_seq``, ``strategy``, the window settings and :data:`SCORES_VERSION` are
            added here.
        **scoring_kwargs: passed to :func:`score_mutants` (``batch_size``, ``max_residues``, ``device``,
            ``progress``).

    Returns:
        ``{"DMS_id", "n_mutants", "seq_len" (residues), "strategy", "scoring_window": "full" | "optimal",
        "model_window": W tokens or None, "max_forward_tokens", "n_positions", "n_windowed_positions",
        "spearman", "auc", "mcc", "ndcg", "recall" (:func:`bitesm.evaluation.metrics.assay_metrics`; AUC and MCC
        None without ``DMS_score_bin``), "cached": bool, "seconds": float (wall time incl. file reading),
        "positions_per_second": float (scored forward sequences per second; NaN when cached), "scores": list of
        float (per mutant, file order)}``.

    Raises:
        ProteinGymFileNotFoundError / ProteinGymInputError: see :func:`load_assay`; a ``mutated_sequence`` that
            disagrees.
        MutantMismatchError: a mutant does not match ``target_seq`` (names the assay).
        ValueError: ``cache`` without ``cache_key``.

    Source: ProteinGym (Notin et al. 2023), ``proteingym/baselines/esm/compute_fitness.py`` and
    ``proteingym/performance_DMS_benchmarks.py``.
    """
    t0 = time.perf_counter()
    name = Path(assay_csv).name
    if assay_id is None:
        assay_id = next((name[: -len(s)] for s in _ASSAY_SUFFIXES if name.endswith(s)), name)
    if cache is not None and cache_key is None:
        raise ValueError("evaluate_assay: a cache needs a cache_key (at least the model fingerprint)")
    df = load_assay(assay_csv)
    seq = str(target_seq).strip().upper()
    validate_mutants(seq, df["mutant"].tolist(), assay_id)
    _check_mutated_sequences(df, seq, assay_id)
    policy, window = scoring_window(model, scoring_kwargs.get("max_residues"))
    key = None
    if cache is not None:
        key = {**cache_key, "assay_file": file_fingerprint(assay_csv), "target_seq": text_fingerprint(seq),
               "strategy": strategy, "scoring_window": policy, "model_window": window,
               "scores_version": SCORES_VERSION}
    hit = cache.get("proteingym", key) if cache is not None else None
    if hit is not None:
        scores, info = np.asarray(hit["scores"], dtype=np.float64), hit["info"]
    else:
        scores, info = score_mutants(
            model, tokenizer, seq, df["mutant"].tolist(), strategy=strategy, assay_id=assay_id, **scoring_kwargs
        )
        if cache is not None:
            cache.put("proteingym", key, {"scores": scores.tolist(), "info": info})
    bins = df["DMS_score_bin"].to_numpy() if "DMS_score_bin" in df.columns else None
    metrics = assay_metrics(scores, df["DMS_score"].to_numpy(dtype=np.float64), bins)
    seconds = time.perf_counter() - t0
    return {
        "DMS_id": assay_id,
        "n_mutants": len(df),
        "seq_len": len(seq),
        "strategy": strategy,
        "scoring_window": info["scoring_window"],
        "model_window": info["model_window"],
        "max_forward_tokens": info["max_forward_tokens"],
        "n_positions": info["n_positions"],
        "n_windowed_positions": info["n_windowed_positions"],
        **metrics,
        "cached": hit is not None,
        "seconds": seconds,
        "positions_per_second": (
            float("nan") if hit is not None or seconds <= 0 else info["n_forward_sequences"] / seconds
        ),
        "scores": scores.tolist(),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def summarize(
    assays: Sequence[dict[str, Any]], reference: pd.DataFrame, published: dict[str, dict] | None = None,
    n_bootstrap: int = 10_000, seed: int = 0,
) -> dict[str, Any]:
    """ProteinGym's summary of per-assay results, with bootstrap standard errors and the published ESM-2 values.

    Args:
        assays: per-assay dicts of :func:`evaluate_assay` (keys ``DMS_id`` and the :data:`METRICS`).
        reference: ProteinGym's ``DMS_substitutions.csv`` (columns ``DMS_id``, ``UniProt_ID``,
            ``coarse_selection_type``).
        published: :func:`load_published` output, or ``None``.
        n_bootstrap, seed: bootstrap resamples (ProteinGym uses 10,000) and the generator seed.

    Returns:
        ``{"summary": {metric: ProteinGym average, f"{metric}_bootstrap_se": float, ...},
        "summary_by_selection_type": {metric: {coarse_selection_type: float}},
        "published_summary": {"ESM2_8M": {"spearman": ProteinGym average over the same assays}, ...}}``; metrics
        that are None for every assay are left out.

    Raises:
        AggregationInputError: an assay has no row in ``reference`` or a column is missing (from
            :func:`bitesm.evaluation.aggregation.aggregate`).

    Source: ``main`` and ``compute_bootstrap_standard_error_functional_categories`` in
    ``proteingym/performance_DMS_benchmarks.py`` (per-assay values rounded to 3 decimals, as there).
    """
    ids = [a["DMS_id"] for a in assays]
    summary: dict[str, Any] = {}
    by_type: dict[str, Any] = {}
    for metric in METRICS:
        values = [a.get(metric) for a in assays]
        if all(v is None for v in values):
            continue
        per_assay = pd.DataFrame({"DMS_id": ids, "model": [np.nan if v is None else v for v in values]})
        agg = aggregate(per_assay, reference, metric)["model"]
        summary[metric] = agg["average"]
        summary[f"{metric}_bootstrap_se"] = bootstrap_standard_error(
            per_assay, reference, n_resamples=n_bootstrap, seed=seed
        )["model"]
        by_type[metric] = agg["by_selection_type"]
    out: dict[str, Any] = {"summary": summary, "summary_by_selection_type": by_type}
    if published is not None:
        pub_summary = {}
        for key in PUBLISHED_MODELS.values():
            vals = [published.get(i, {}).get(key) for i in ids]
            if any(v is None for v in vals):
                continue
            per_assay = pd.DataFrame({"DMS_id": ids, key: vals})
            pub_summary[key] = {"spearman": aggregate(per_assay, reference, "spearman")[key]["average"]}
        out["published_summary"] = pub_summary
    return out


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
    strategy: str = "masked-marginals",
    cache: ResultCache | None = None,
    model_hash: str | None = None,
    n_bootstrap: int = 10_000,
) -> dict[str, Any]:
    """The ProteinGym zero-shot substitution benchmark over a folder of assays (module docstring).

    Args:
        model, tokenizer: as in :func:`bitesm.evaluation.scoring.score_mutants`.
        assays_dir: folder of ``<DMS_id>.csv`` / ``<DMS_id>.csv.gz`` assay files.
        reference_csv: ProteinGym ``DMS_substitutions.csv`` (``target_seq``, ``UniProt_ID``,
            ``coarse_selection_type`` per ``DMS_id``).
        output_json: if given, the result is written there atomically; NaN is written as ``null``.
        assay_ids: restrict to these ``DMS_id`` s (list or comma-separated string).
        published_csv: ProteinGym ``DMS_substitutions_Spearman_DMS_level.csv``; default that file next to
            ``reference_csv`` if it exists (else published values are omitted).
        batch_size, device, max_residues, strategy: see :func:`score_mutants`.
        progress: tqdm bars (assays and, per assay, forward passes).
        model_name: ``"model"`` field; default ``model.name_or_path`` or the class name.
        cache: look up and store each assay's scores (:class:`ResultCache`); keyed by ``model_hash`` (default
            :func:`model_fingerprint` of ``model``), the weights' dtype, the device type, the strategy and window,
            and the assay's data.
        model_hash: the model's fingerprint when the caller already has it.
        n_bootstrap: bootstrap resamples for the standard errors (ProteinGym: 10,000).

    Returns:
        ``{"model", "model_hash" (None without a cache), "strategy", "attention_window" (None for global
        attention), "n_assays", "mean_spearman" (plain mean over assays), "summary", "summary_by_selection_type",
        "published_summary" (see :func:`summarize`), "mean_published_spearman_ESM2_8M" / "..._ESM2_35M" (plain
        means over the same assays), "n_cached_assays", "seconds", "assays": [:func:`evaluate_assay` dicts plus
        "published_spearman_ESM2_8M" / "..._ESM2_35M" when a published file is used]}``.

    Raises:
        ProteinGymFileNotFoundError: missing assays folder / reference / published file.
        ProteinGymInputError: unknown ``assay_ids``, or an assay missing from the reference (both checked before
            any scoring).
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
            "(column DMS_id). Fix: use the DMS_substitutions.csv of the same ProteinGym release as the "
            "assay files, or restrict with --assay-ids."
        )
    if published_csv is None:
        candidate = reference_csv.parent / _PUBLISHED_FILENAME
        published = load_published(candidate) if candidate.is_file() else None
    else:
        published = load_published(published_csv)

    if device is not None:
        model.to(torch.device(device))
    cache_key = None
    if cache is not None:
        model_hash = model_hash or model_fingerprint(model)
        param = next(model.parameters(), None)
        cache_key = {"model": model_hash, "dtype": str(param.dtype) if param is not None else None,
                     "device_type": (torch.device(device) if device is not None else
                                     param.device if param is not None else torch.device("cpu")).type}
    results = []
    bar = tqdm(files.items(), desc=f"ProteinGym ({strategy})", disable=not progress, unit="assay")
    for dms_id, path in bar:
        bar.set_postfix_str(dms_id)
        res = evaluate_assay(
            model, tokenizer, path, seq_of[dms_id], assay_id=dms_id, strategy=strategy, cache=cache,
            cache_key=cache_key, batch_size=batch_size, max_residues=max_residues, progress=progress,
        )
        if published is not None:
            pub = published.get(dms_id, {})
            for key in PUBLISHED_MODELS.values():
                res[f"published_spearman_{key}"] = pub.get(key)
        results.append(res)

    out: dict[str, Any] = {
        "model": model_name or model_label(model),
        "model_hash": model_hash,
        "strategy": strategy,
        "attention_window": attention_window(model),
        "n_assays": len(results),
        "mean_spearman": _mean(r["spearman"] for r in results),
    }
    has_summary_columns = {"UniProt_ID", "coarse_selection_type"} <= set(ref.columns)
    if has_summary_columns:
        out.update(summarize(results, ref, published, n_bootstrap=n_bootstrap))
    if published is not None:
        for key in PUBLISHED_MODELS.values():
            out[f"mean_published_spearman_{key}"] = _mean(r.get(f"published_spearman_{key}") for r in results)
    out["n_cached_assays"] = sum(r["cached"] for r in results)
    out["seconds"] = time.perf_counter() - t0
    out["assays"] = results
    if output_json is not None:
        atomic_write_json(Path(output_json), out)
    return out


# ----------------------------------------------------------------------------------------------
# Text: the per-assay table and the Spearman lines (printed by bitesm eval proteingym and bitesm eval run)
# ----------------------------------------------------------------------------------------------
#: ProteinGym's leaderboard averages all of its DMS substitution assays (217 in v1.3).
LEADERBOARD_ASSAYS = 217


def describe_spearman(result: dict[str, Any]) -> list[str]:
    """One labelled line per Spearman's ρ of an :func:`evaluate_proteingym` result, each next to the published
    ESM-2 values computed the same way over the same assays.

    * ``mean Spearman's ρ``: the plain mean over the assays scored (``result["mean_spearman"]``).
    * ``ProteinGym summary Spearman's ρ``: ProteinGym's aggregation of the same assays (mean per UniProt ID and
      selection type, then per coarse selection type, then overall; ``result["summary"]["spearman"]``) with its
      bootstrap standard error.

    The leaderboard's own figures average all 217 assays; a result over fewer assays says so rather than sitting
    next to them.

    Args:
        result: the dict :func:`evaluate_proteingym` returns (or its JSON file, loaded).

    Returns:
        lines of text, without trailing newlines.
    """
    n = result.get("n_assays", len(result.get("assays") or []))
    labels = {key: label.replace("ESM2", "ESM-2") for label, key in PUBLISHED_MODELS.items()}

    def published(values: dict[str, Any]) -> str:
        shown = [f"{labels[k]} {v:.3f}" for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)]
        return f"; published over the same {n} assays: {', '.join(shown)}" if shown else ""

    lines = []
    mean = result.get("mean_spearman")
    if isinstance(mean, (int, float)) and math.isfinite(mean):
        pub = {k: result.get(f"mean_published_spearman_{k}") for k in labels}
        lines.append(f"mean Spearman's ρ over the {n} assays scored (plain mean): {mean:.4f}{published(pub)}")
    summary = result.get("summary") or {}
    if isinstance(summary.get("spearman"), (int, float)):
        se = summary.get("spearman_bootstrap_se")
        pub = {k: ((result.get("published_summary") or {}).get(k) or {}).get("spearman") for k in labels}
        lines.append(
            f"ProteinGym summary Spearman's ρ over the same {n} assays (mean per UniProt ID and selection type, then "
            f"per selection type): {summary['spearman']:.4f}" + (f" ± {se:.4f}" if isinstance(se, float) else "")
            + published(pub)
        )
    if lines and n < LEADERBOARD_ASSAYS:
        lines.append(f"(the ProteinGym leaderboard averages all {LEADERBOARD_ASSAYS} assays: not comparable)")
    return lines


def format_results_table(result: dict[str, Any]) -> str:
    """A text table of an :func:`evaluate_proteingym` result: one row per assay, then the plain mean and
    ProteinGym's summary line.

    Columns: ``DMS_id``, ``n_mut`` (mutants), ``len`` (residues), ``window`` (``full`` for a long model scored on
    whole sequences, else ProteinGym's window ``W`` in tokens), ``spearman``, the published ``ESM2-8M`` /
    ``ESM2-35M`` values when the result has them, and ``sec``. Missing values show as ``-``.

    Args:
        result: the dict :func:`evaluate_proteingym` returns (or its JSON file, loaded).

    Returns:
        The lines, joined by newlines (no trailing newline).
    """
    has_pub = "mean_published_spearman_ESM2_8M" in result
    head = f"{'DMS_id':<34} {'n_mut':>6} {'len':>5} {'window':>7} {'spearman':>9}"
    if has_pub:
        head += f" {'ESM2-8M':>8} {'ESM2-35M':>8}"
    lines = [head + f" {'sec':>7}"]

    def fmt(x: Any) -> str:
        return f"{x:8.3f}" if isinstance(x, float) and not math.isnan(x) else f"{'-':>8}"

    for r in result["assays"]:
        window = "full" if r["scoring_window"] == "full" else str(r["model_window"])
        line = f"{r['DMS_id']:<34} {r['n_mutants']:>6} {r['seq_len']:>5} {window:>7} {fmt(r['spearman']):>9}"
        if has_pub:
            line += f" {fmt(r.get('published_spearman_ESM2_8M'))} {fmt(r.get('published_spearman_ESM2_35M'))}"
        lines.append(line + f" {r['seconds']:7.1f}")
    label = f"plain mean ({result['n_assays']} assays)"
    line = f"{label:<34} {'':>6} {'':>5} {'':>7} {fmt(result['mean_spearman']):>9}"
    if has_pub:
        line += f" {fmt(result.get('mean_published_spearman_ESM2_8M'))} " \
                f"{fmt(result.get('mean_published_spearman_ESM2_35M'))}"
    lines.append(line + f" {result['seconds']:7.1f}")
    summary = result.get("summary") or {}
    if summary:
        shown = ", ".join(f"{m} {summary[m]:.3f} ± {summary[m + '_bootstrap_se']:.3f}" for m in METRICS if m in summary)
        lines.append(f"ProteinGym summary ({result['strategy']}; per protein, per selection type, overall): {shown}")
    return "\n".join(lines)
