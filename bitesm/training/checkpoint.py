"""Atomic, resumable training checkpoints.

A checkpoint is a folder ``<output_dir>/checkpoints/checkpoint-<step:08d>`` written by Accelerate's ``save_state``
(model, optimizer, scheduler, per-process RNG states) plus ``trainer_state.json`` (step, epoch, position in the
epoch, tokens, elapsed time), one ``collator_rng_<rank>.pt`` per process (the MLM collator's generator) and ``model/``,
the model in HF format (what ``bitesm eval watch`` evaluates and Hub pushes upload). It is
first written under a hidden temporary name and renamed into place only when complete, so a run killed at any
moment (even SIGKILL during a save) leaves only complete checkpoints under their final names.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..io import follow_umask

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
#: The HF-format model folder (``save_pretrained`` + tokenizer) inside every checkpoint, loadable with from_pretrained.
CHECKPOINT_MODEL_DIR = "model"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found) if (p / TRAINER_STATE).is_file()]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def temporary_checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """The hidden folder a checkpoint of ``step`` is written to before :func:`publish_checkpoint`."""
    return Path(output_dir) / CHECKPOINT_DIR / f".tmp-{checkpoint_name(step)}"


def publish_checkpoint(tmp_dir: Path, keep: int) -> Path:
    """Rename a fully written temporary checkpoint to its final name, then delete all but the newest ``keep``. Its
    files (accelerate and safetensors write some with mode 0600) first get the modes the umask gives."""
    follow_umask(*(p for p in tmp_dir.rglob("*") if p.is_file()))
    final = tmp_dir.parent / tmp_dir.name.removeprefix(".tmp-")
    if final.exists():  # a re-run of the same step after a resume: the new one replaces it
        shutil.rmtree(final)
    os.replace(tmp_dir, final)
    for old in list_checkpoints(tmp_dir.parent.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_temporary(output_dir: str | os.PathLike) -> None:
    """Remove leftovers of saves that were interrupted."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def replace_dir(tmp_dir: Path, final: Path) -> None:
    """Move a completely written folder to ``final``, replacing an older one without a moment where neither exists
    under a known name (the old one is first renamed aside, then deleted)."""
    aside = final.with_name(f".old-{final.name}")
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        os.replace(final, aside)
    os.replace(tmp_dir, final)
    shutil.rmtree(aside, ignore_errors=True)
