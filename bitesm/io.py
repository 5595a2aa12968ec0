"""Atomic file writes: readers (and a run killed mid-write) never see a partial file.

Files bitesm writes follow the process umask like any ``open(path, "w")``: ``tempfile.mkstemp`` (used for atomic
writes) and safetensors' ``save_file`` create files with mode 0600, so :func:`follow_umask` gives them
``0666 & ~umask`` (0644 under the usual umask 022) before they are published.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask (e.g. ``0o022``), read from ``/proc/self/status`` where the kernel reports it, else by
    setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(*paths: str | os.PathLike) -> None:
    """Give each file in ``paths`` the mode a plain ``open(path, "w")`` would: ``0666 & ~umask``.

    ``tempfile.mkstemp`` and safetensors' ``save_file`` create files with mode 0600; bitesm calls this on the files
    it wrote, never on a user's other files. Symlinks and missing paths are skipped.
    """
    mode = 0o666 & ~current_umask()
    for path in paths:
        path = Path(path)
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, ``fsync`` and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON; NaN floats are written as ``null`` (valid JSON)."""
    atomic_write_text(path, json.dumps(_nan_to_none(obj), indent=2) + "\n")


def check_writable(path: str | os.PathLike, *, folder: bool = False, option: str | None = None) -> Path:
    """Check, before any work, that an output can be written at ``path``: no component of it is a file, and a probe
    file can be written (and is deleted) in the nearest of its folders that exists. Nothing is created, so a command
    refused later leaves no empty folder behind.

    Args:
        path: the output file (``folder=False``: its parent folder is checked) or the output folder.
        folder: ``path`` is a folder to write files in, not a file.
        option: how the user gave the path (e.g. ``"--output"``), named in the message.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        bitesm.errors.UserInputError: ``path`` is a folder where a file is expected (or a file where a folder is),
            a component of it is a file, or the folder cannot be created or written (no permission, read-only file
            system); the message names the path, the reason and the fix.
    """
    from .errors import UserInputError

    path = Path(path)
    given = f"{option} {path}" if option else str(path)
    if not folder and path.is_dir():
        raise UserInputError(f"{given} is a folder; give the path of a file to write (e.g. {path / 'out'}).")
    target = path if folder else path.parent
    # the nearest of its folders that exists ("." or "/" at the latest): every component below it is created later
    existing = next(a for a in (target, *target.parents) if a.exists() or a.is_symlink())
    if not existing.is_dir():
        if existing == target and folder:
            raise UserInputError(f"{given} is a file, not a folder. Fix: give a folder path (created if missing).")
        raise UserInputError(f"{given} is under {existing}, which is a file, not a folder. Fix: choose an output "
                             "path under a folder.")
    try:
        # probe the nearest folder that exists: nothing is created for a command that is refused later
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".bitesm-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserInputError(
            f"{given} cannot be written ({reason}: {err.filename or target}). Fix: choose a location you may write "
            "to, or fix its permissions."
        ) from err
    return path
