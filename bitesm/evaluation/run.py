"""Evaluation runs that are cheap to repeat: ``bitesm eval run`` (one model, several suites) and ``bitesm eval watch``
(every new checkpoint of a training run).

A **suite** is a named evaluation (``proteingym``, ``contacts``, ``go``) registered in
:data:`SUITES` with a function ``(model, tokenizer, settings, cache, model_hash) -> result dict``. Every suite caches
its work in a :class:`bitesm.evaluation.cache.ResultCache` keyed by the model's content hash
(:func:`bitesm.evaluation.cache.model_fingerprint`), the settings that change numbers and the data files, so a rerun
on an unchanged checkpoint reads its results back and one changed weight, setting or assay file recomputes exactly
what it touches.

Output of ``bitesm eval run --output DIR``: ``DIR/<suite>.json`` per suite and ``DIR/run.json`` (model, content hash,
settings, per-suite cache hits and seconds). ``bitesm eval watch RUN_DIR`` writes one such folder per checkpoint,
``RUN_DIR/eval/<checkpoint-name>/``, appends one line per evaluated checkpoint to ``RUN_DIR/eval/history.jsonl`` and
logs the summary metrics to TensorBoard (``RUN_DIR/tensorboard/eval``) at the checkpoint's step.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UserInputError
from ..io import atomic_write_json
from ..training import checkpoint as ckpt
from .cache import ResultCache, model_fingerprint
from .model_loading import ModelLoadError, load_masked_lm
from .scoring import STRATEGIES

__all__ = [
    "SUITES",
    "EvalSettings",
    "EvalInputError",
    "register_suite",
    "parse_suites",
    "run_evaluation",
    "evaluate_model",
    "checkpoint_models",
    "watch",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
_DEFAULT_ASSAYS = _REPO_ROOT / "data" / "proteingym" / "substitutions"


class EvalInputError(UserInputError):
    """A ``bitesm eval run`` / ``watch`` input is unusable (unknown suite, missing run folder, ...); names the fix."""


@dataclass
class EvalSettings:
    """Settings of every suite in a run (defaults = the embedded data and ProteinGym's ESM-2 protocol).

    Attributes:
        assays: folder of ProteinGym ``<DMS_id>.csv[.gz]`` files (default: the 18 embedded assays).
        reference: ProteinGym ``DMS_substitutions.csv`` (default ``<assays>/../reference/DMS_substitutions.csv``,
            else the shipped v1.3 reference: :func:`bitesm.evaluation.proteingym.default_reference`).
        assay_ids: restrict ProteinGym to these ids (comma-separated string or list), ``None`` = all.
        strategy: ProteinGym scoring strategy, one of :data:`bitesm.evaluation.scoring.STRATEGIES`.
        max_residues: explicit residues per forward pass (``None`` = the model's own rule).
        batch_size: sequences per forward pass.
        n_bootstrap: bootstrap resamples for standard errors (ProteinGym: 10,000).
        extra: settings of suites registered by other modules (``{"go": {...}}``).
    """

    assays: str | None = None
    reference: str | None = None
    assay_ids: Any = None
    strategy: str = "masked-marginals"
    max_residues: int | None = None
    batch_size: int = 32
    n_bootstrap: int = 10_000
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise EvalInputError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.batch_size < 1:
            raise EvalInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.assays is None:
            self.assays = str(_DEFAULT_ASSAYS)
        if self.reference is None:
            from .proteingym import default_reference

            self.reference = str(default_reference(self.assays))


SuiteFunction = Callable[[torch.nn.Module, Any, EvalSettings, ResultCache, str, bool], dict]
#: Registered suites: name -> function ``(model, tokenizer, settings, cache, model_hash, progress) -> result``.
SUITES: dict[str, SuiteFunction] = {}


def register_suite(name: str, function: SuiteFunction) -> None:
    """Make ``name`` available to ``bitesm eval run --suite`` (a later registration replaces an earlier one)."""
    SUITES[name] = function


def _proteingym_suite(model, tokenizer, settings: EvalSettings, cache: ResultCache, model_hash: str,
                      progress: bool) -> dict:
    from .proteingym import evaluate_proteingym

    return evaluate_proteingym(
        model, tokenizer, settings.assays, settings.reference, assay_ids=settings.assay_ids,
        batch_size=settings.batch_size, progress=progress, max_residues=settings.max_residues,
        strategy=settings.strategy, cache=cache, model_hash=model_hash, n_bootstrap=settings.n_bootstrap,
    )


register_suite("proteingym", _proteingym_suite)


def _contacts_suite(model, tokenizer, settings: EvalSettings, cache: ResultCache, model_hash: str,
                    progress: bool) -> dict:
    from .contacts import contacts_suite

    return contacts_suite(model, tokenizer, settings, cache, model_hash, progress)


register_suite("contacts", _contacts_suite)


def _go_suite(model, tokenizer, settings: EvalSettings, cache: ResultCache, model_hash: str, progress: bool) -> dict:
    from .go_prediction import go_suite

    return go_suite(model, tokenizer, settings, cache, model_hash, progress)


register_suite("go", _go_suite)


def parse_suites(suites: str | Sequence[str]) -> list[str]:
    """``"proteingym,go"`` or a list -> validated suite names, order kept, duplicates dropped.

    Raises:
        EvalInputError: empty, or a name not in :data:`SUITES` (the message lists the available suites).
    """
    names = [s.strip() for s in (suites.split(",") if isinstance(suites, str) else suites) if s and s.strip()]
    if not names:
        raise EvalInputError("no suite given. Fix: --suite proteingym (comma-separated for several)")
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise EvalInputError(
            f"unknown suite(s) {unknown}; available: {sorted(SUITES)}. Fix: pass --suite with those names."
        )
    return list(dict.fromkeys(names))


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    suites: str | Sequence[str],
    output_dir: str | Path,
    settings: EvalSettings | None = None,
    cache: ResultCache | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``suites`` on a loaded model with the result cache; write ``<suite>.json`` and ``run.json``.

    Args:
        model, tokenizer: a masked LM in eval mode on its device, and its ESM-2 tokenizer.
        suites: names in :data:`SUITES` (list or comma-separated).
        output_dir: folder for the result files (created).
        settings: :class:`EvalSettings` (default: the embedded data, masked-marginals).
        cache: a :class:`ResultCache` (default: one at :func:`bitesm.evaluation.cache.default_cache_dir`).
        model_name: recorded in the results; default the model's ``name_or_path``.
        progress: tqdm bars.

    Returns:
        The ``run.json`` content: ``{"model", "model_hash", "suites": {name: {"file", "seconds", "cache_hits",
        "cache_misses"}}, "settings", "seconds"}``, plus ``"results": {name: suite result}`` (not written to
        ``run.json``; each is in ``<suite>.json``).

    Raises:
        EvalInputError: unknown suite or bad settings; the suites' own input errors propagate.
    """
    t0 = time.perf_counter()
    names = parse_suites(suites)
    settings = settings or EvalSettings()
    cache = cache if cache is not None else ResultCache()
    output_dir = Path(output_dir)
    name = model_name or getattr(model, "name_or_path", None) or type(model).__name__
    model_hash = model_fingerprint(model)
    manifest: dict[str, Any] = {"model": str(name), "model_hash": model_hash, "suites": {},
                                "settings": dataclasses.asdict(settings)}
    results = {}
    for suite in names:
        s0, hits, misses = time.perf_counter(), cache.hits, cache.misses
        result = SUITES[suite](model, tokenizer, settings, cache, model_hash, progress)
        result["model"] = str(name)
        atomic_write_json(output_dir / f"{suite}.json", result)
        results[suite] = result
        manifest["suites"][suite] = {"file": f"{suite}.json", "seconds": time.perf_counter() - s0,
                                     "cache_hits": cache.hits - hits, "cache_misses": cache.misses - misses}
    manifest["seconds"] = time.perf_counter() - t0
    atomic_write_json(output_dir / "run.json", manifest)
    return {**manifest, "results": results}


def run_evaluation(
    model: str | Path,
    suites: str | Sequence[str] = "proteingym",
    output_dir: str | Path = "eval",
    settings: EvalSettings | None = None,
    cache: ResultCache | None = None,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load ``model`` (folder or Hub id) and :func:`evaluate_model` it: the library form of ``bitesm eval run``.

    Args:
        model: checkpoint folder or Hub id (:func:`bitesm.evaluation.model_loading.load_masked_lm`).
        dtype, device: precision and device of the forward passes (part of the cache key).
        suites, output_dir, settings, cache, progress: as in :func:`evaluate_model`.

    Returns:
        As :func:`evaluate_model`, plus ``"load_seconds"``.

    Raises:
        ModelLoadError: the model cannot be loaded. EvalInputError and the suites' input errors as in
        :func:`evaluate_model`.
    """
    parse_suites(suites)  # fail before loading a model
    t0 = time.perf_counter()
    loaded, tokenizer = load_masked_lm(model, dtype, device)
    load_seconds = time.perf_counter() - t0
    out = evaluate_model(loaded, tokenizer, suites, output_dir, settings, cache, str(model), progress)
    return {**out, "load_seconds": load_seconds}


# ----------------------------------------------------------------------------------------------
# bitesm eval watch
# ----------------------------------------------------------------------------------------------
def checkpoint_models(run_dir: str | Path) -> list[tuple[str, int, Path]]:
    """The loadable model folders of a training run, oldest first: ``[(name, step, folder), ...]``.

    Each complete checkpoint ``checkpoints/checkpoint-<step>/`` holding an HF-format ``model/`` folder gives
    ``("checkpoint-<step>", step, folder)``; the final ``model/`` folder gives ``("final", step, folder)`` with the
    step from its ``trainer_state.json``.

    Raises:
        EvalInputError: ``run_dir`` is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalInputError(f"training run folder {run_dir} does not exist. Fix: pass bitesm train's --output-dir.")
    found = []
    for path in ckpt.list_checkpoints(run_dir):
        model_dir = path / ckpt.CHECKPOINT_MODEL_DIR
        if (model_dir / "config.json").is_file():
            state = json.loads((path / ckpt.TRAINER_STATE).read_text())
            found.append((path.name, int(state.get("step", 0)), model_dir))
    final = run_dir / "model"
    if (final / "config.json").is_file():
        state_file = final / "trainer_state.json"
        step = int(json.loads(state_file.read_text()).get("step", 0)) if state_file.is_file() else -1
        found.append(("final", step, final))
    return found


def _log_tensorboard(run_dir: Path, step: int, suite: str, result: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    summary = result.get("summary") or {}
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not k.endswith("_se")}
    if not scalars:
        return
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard" / "eval"))
    try:
        for key, value in scalars.items():
            writer.add_scalar(f"{suite}/{key}", value, step)
    finally:
        writer.close()


def watch(
    run_dir: str | Path,
    suites: str | Sequence[str] = "proteingym",
    settings: EvalSettings | None = None,
    cache: ResultCache | None = None,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    interval: float = 60.0,
    once: bool = False,
    timeout: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Evaluate every checkpoint of a training run as it appears (``bitesm eval watch``).

    Polls :func:`checkpoint_models` every ``interval`` seconds and runs :func:`run_evaluation` on each model folder
    not yet evaluated, writing ``RUN_DIR/eval/<name>/``, appending ``{"name", "step", "model_hash", "suites":
    {suite: summary}}`` to ``RUN_DIR/eval/history.jsonl`` and logging summaries to TensorBoard. Stops when the final
    ``model/`` folder has been evaluated (training finished), after one pass with ``once``, or after ``timeout``
    seconds. A checkpoint deleted while it is read (``keep_checkpoints`` rotation) is skipped with a message.

    Returns:
        The history entries written by this call, in order.

    Raises:
        EvalInputError: unknown suite or missing run folder.
    """
    names = parse_suites(suites)
    run_dir = Path(run_dir)
    checkpoint_models(run_dir)  # validates the folder
    cache = cache if cache is not None else ResultCache()
    history_file = run_dir / "eval" / "history.jsonl"
    done = set()
    if history_file.is_file():
        done = {json.loads(line)["name"] for line in history_file.read_text().splitlines() if line.strip()}
    written: list[dict[str, Any]] = []
    start = time.monotonic()
    while True:
        for name, step, folder in checkpoint_models(run_dir):
            if name in done:
                continue
            log(f"bitesm eval watch: evaluating {name} (step {step})")
            try:
                out = run_evaluation(folder, names, run_dir / "eval" / name, settings, cache, dtype, device, progress)
            except ModelLoadError as err:
                if not folder.exists():
                    log(f"bitesm eval watch: {name} was deleted before it could be read; skipped")
                    done.add(name)
                    continue
                raise err
            entry = {"name": name, "step": step, "model_hash": out["model_hash"],
                     "suites": {s: out["results"][s].get("summary") for s in names}}
            with open(history_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
            for suite in names:
                _log_tensorboard(run_dir, step, suite, out["results"][suite])
            written.append(entry)
            done.add(name)
        if once or "final" in done or (timeout is not None and time.monotonic() - start >= timeout):
            return written
        time.sleep(interval)
