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
