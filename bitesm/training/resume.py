"""What ``--resume`` checks and records: the config of each segment of a run, and a clean ``metrics.jsonl``.

Exact resume (a resumed run ends with the weights of an uninterrupted one) holds only if the config does not
change what is computed. Every checkpoint holds the config it was written with (``model/training_config.yaml``);
:func:`check_resume_config` compares the resumed run's config with it, key by key:

* **safe to change** (:data:`SAFE_TO_CHANGE`): logging, evaluation and checkpoint intervals, the number of
  checkpoints kept, the early-stop budgets ``max_time_minutes`` and ``max_tokens``, the Hub push settings, the
  ``evaluation`` section and ``lora.merge`` (what is written after training). These never change the weights of
  the steps that are trained. ``max_steps`` is safe too with a ``constant`` / ``constant_with_warmup`` learning
  rate (the schedule does not depend on it).
* **anything else** (model shape, quantization, data file, ``max_length``, ``mask_rate``, validation split,
  ``batch_size``, accumulation, seed, learning rate and schedule, ``max_steps``, weight decay, betas, mixed
  precision, ``lora``, ``head``...) is refused with the list of changes and the fix, unless the caller accepts it
  (``--allow-config-change``); the resumed segment then continues with the new values (no longer an exact resume).

Each segment of a run is recorded: ``<output_dir>/training_config.yaml`` is the config the run started with and is
never rewritten by a resume; ``<output_dir>/config_history.jsonl`` has one line per segment, ``{"step": S,
"resumed_from": checkpoint name or null, "changes": {key: [old, new]}, "config": {...}}``, S the step the
segment started at (0 for the first). Lines of segments whose progress was lost (they started at or after the
checkpoint resumed from) are dropped, so the file describes how the current weights were trained.

``metrics.jsonl`` rows logged after the checkpoint a run resumes from (steps > S) are dropped when it resumes
(:func:`truncate_metrics`), so no step is logged twice.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ..io import atomic_write_text
from . import checkpoint as ckpt
from .config import Config, ConfigError, _build

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_HISTORY",
    "METRICS_FILE",
    "SAFE_TO_CHANGE",
    "TRAINING_CONFIG",
    "check_resume_config",
    "config_changes",
    "record_segment",
    "truncate_metrics",
]

TRAINING_CONFIG = "training_config.yaml"
CONFIG_HISTORY = "config_history.jsonl"
METRICS_FILE = "metrics.jsonl"

#: Dotted keys (or section prefixes) that a resumed run may change without breaking an exact resume.
SAFE_TO_CHANGE = (
    "training.log_every",
    "training.eval_every",
    "training.save_every",
    "training.keep_checkpoints",
    "training.max_time_minutes",
    "training.max_tokens",
    "training.push_to_hub_repo",
    "training.push_every_checkpoints",
    "training.hub_private",
    "evaluation",
    "lora.merge",
)
#: Learning-rate schedules that do not depend on ``training.max_steps``.
_SCHEDULES_WITHOUT_MAX_STEPS = ("constant", "constant_with_warmup")
_ABSENT = "(absent)"


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict) and values:
        flat: dict[str, Any] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: values}


def _normalized(raw: Any) -> dict:
    """A stored config as :meth:`Config.to_dict` writes it today (missing keys get their defaults)."""
    if not isinstance(raw, dict):
        return {}
    try:
        return _build(Config, raw, "config").to_dict()
    except (ConfigError, TypeError):  # written by another bitesm version: compare what is there
        return raw


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two config dicts (:meth:`Config.to_dict`), flattened to dotted keys.

    Args:
        old, new: the stored and the current config.

    Returns:
        ``{dotted key: (old value, new value)}`` in ``new``'s key order (keys present on one side only have the
        value ``"(absent)"`` on the other).
    """
    a, b = _flatten(old), _flatten(new)
    keys = list(b) + [k for k in a if k not in b]
    return {k: (a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)}


def is_safe_change(key: str, config: Config) -> bool:
    """Whether changing ``key`` keeps an exact resume.

    Args:
        key: a dotted config key, e.g. ``training.log_every``.
        config: the resumed run's config (its ``lr_scheduler`` decides for ``training.max_steps``).

    Returns:
        True for :data:`SAFE_TO_CHANGE` keys (and the keys under a safe section), and for ``training.max_steps``
        with a ``constant`` / ``constant_with_warmup`` schedule.
    """
    if any(key == safe or key.startswith(safe + ".") for safe in SAFE_TO_CHANGE):
        return True
    return key == "training.max_steps" and config.training.lr_scheduler in _SCHEDULES_WITHOUT_MAX_STEPS


def stored_config(checkpoint: Path, output_dir: str | os.PathLike) -> tuple[dict | None, Path | None]:
    """The config a checkpoint was written with.

    Args:
        checkpoint: the checkpoint folder.
        output_dir: the run folder (its ``training_config.yaml`` is the fallback).

    Returns:
        ``(config, file)``: the config of ``<checkpoint>/model/training_config.yaml`` (for a checkpoint without one,
        the run's ``training_config.yaml``) as :meth:`Config.to_dict` writes it, and the file read; ``(None, None)``
        when there is neither.
    """
    for path in (checkpoint / ckpt.CHECKPOINT_MODEL_DIR / TRAINING_CONFIG, Path(output_dir) / TRAINING_CONFIG):
        if path.is_file():
            try:
                return _normalized(yaml.safe_load(path.read_text())), path
            except yaml.YAMLError:
                continue
    return None, None


def _show(value: Any) -> str:
    return value if value is _ABSENT else json.dumps(value)


def check_resume_config(
    config: Config, checkpoint: Path, output_dir: str | os.PathLike, allow_config_change: bool = False
) -> dict[str, tuple[Any, Any]]:
    """Compare a resumed run's config with the one ``checkpoint`` was written with.

    Args:
        config: the config of the resumed run.
        checkpoint: the checkpoint folder it resumes from.
        output_dir: the run folder.
        allow_config_change: accept changes that break an exact resume (``--allow-config-change``).

    Returns:
        every change ``{dotted key: (old, new)}`` (safe ones included; empty when the checkpoint stores no
        config), for :func:`record_segment`.

    Raises:
        ConfigError: a change outside :data:`SAFE_TO_CHANGE` without ``allow_config_change``, listing each changed
            key as ``old -> new`` and the two fixes.
    """
    old, source = stored_config(checkpoint, output_dir)
    if old is None:
        logger.warning("%s stores no training_config.yaml: the resumed config cannot be compared", checkpoint)
        return {}
    changes = config_changes(old, config.to_dict())
    unsafe = {k: v for k, v in changes.items() if not is_safe_change(k, config)}
    safe = {k: v for k, v in changes.items() if k not in unsafe}
    if safe:
        logger.info("resumed with changed settings (safe for an exact resume): %s",
                    ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in safe.items()))
    if unsafe and not allow_config_change:
        listed = ", ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in unsafe.items())
        raise ConfigError(
            f"--resume: the config differs from the one {checkpoint.name} was trained with ({source}) in "
            f"{len(unsafe)} key(s) that change the training, so the run would no longer be an exact resume: "
            f"{listed}. Fix: resume with the original values, or pass --allow-config-change "
            "(allow_config_change=True) to continue with the new ones (recorded in "
            f"{Path(output_dir) / CONFIG_HISTORY})"
        )
    if unsafe:
        logger.warning("resuming with a changed config (--allow-config-change; no longer an exact resume): %s",
                       ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in unsafe.items()))
    return changes


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: dropped
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def record_segment(
    output_dir: str | os.PathLike,
    step: int,
    config: Config,
    changes: dict[str, tuple[Any, Any]] | None = None,
    resumed_from: Path | None = None,
) -> None:
    """Record the start of a segment of a run (call on the main process).

    A new run (``resumed_from`` None) writes ``training_config.yaml`` and starts ``config_history.jsonl``; a
    resumed one keeps ``training_config.yaml`` (written only if missing), drops the history lines of segments that
    started at or after ``step`` and appends its own (module docstring).

    Args:
        output_dir: the run folder.
        step: the step the segment starts at (0 for a new run).
        config: the segment's config.
        changes: what changed since the checkpoint resumed from (:func:`check_resume_config`).
        resumed_from: the checkpoint the segment resumes from, or ``None``.
    """
    output_dir = Path(output_dir)
    config_file, history_file = output_dir / TRAINING_CONFIG, output_dir / CONFIG_HISTORY
    if resumed_from is None or not config_file.is_file():
        atomic_write_text(config_file, yaml.safe_dump(config.to_dict()))
    rows = [] if resumed_from is None else [r for r in _read_jsonl(history_file) if r.get("step", 0) < step]
    rows.append({
        "step": step,
        "resumed_from": None if resumed_from is None else resumed_from.name,
        "changes": {k: [a, b] for k, (a, b) in (changes or {}).items()},
        "config": config.to_dict(),
    })
    _write_jsonl(history_file, rows)


def truncate_metrics(output_dir: str | os.PathLike, step: int | None) -> set[frozenset]:
    """Drop the ``metrics.jsonl`` rows a resumed run will log again (call on the main process).

    Args:
        output_dir: the run folder.
        step: the step of the checkpoint resumed from: rows of later steps are removed; ``None`` (a new run in a
            folder without checkpoints, e.g. after a crash before the first one) removes every row.

    Returns:
        the metric-name sets (``frozenset`` of keys other than ``step`` and ``tokens``) of the rows kept at
        ``step``, so that the resumed run does not log them a second time.
    """
    path = Path(output_dir) / METRICS_FILE
    if step is None:
        if path.is_file():
            path.unlink()
        return set()
    rows = _read_jsonl(path)
    kept = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= step]
    if len(kept) != len(rows):
        logger.info("%s: %d row(s) logged after step %d dropped (that progress is retrained)", path,
                    len(rows) - len(kept), step)
        _write_jsonl(path, kept)
    return {frozenset(k for k in r if k not in ("step", "tokens")) for r in kept if r["step"] == step}
