"""Evaluation results cached by content: a rerun recomputes only what changed.

A cached entry is keyed by everything that can change its numbers, each reduced to a content hash:

* the **model**: :func:`model_fingerprint`, a SHA-256 over the config (minus paths and version stamps) and every
  parameter and buffer tensor (name, dtype, shape, bytes) as loaded, so one changed weight gives another key and the
  same weights under another folder name or on the Hub give the same key;
* the **settings** (strategy, window, dtype, device type, ...), written into the key as they are;
* the **data**: :func:`file_fingerprint` of each input file (assay CSV, reference row, structures, ...).

The key, as canonical JSON, is hashed to the entry's file name ``<root>/<suite>/<hh>/<hash>.json``; the file holds
the key and the value, and a read checks the stored key equals the asked one. Entries are written atomically
(:func:`bitesm.io.atomic_write_json`), so concurrent or interrupted runs never leave a partial entry. Default root:
``$BITESM_CACHE_DIR``, else ``$XDG_CACHE_HOME/bitesm/eval``, else ``~/.cache/bitesm/eval``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json

__all__ = ["ResultCache", "default_cache_dir", "file_fingerprint", "model_fingerprint", "text_fingerprint"]

# Config fields that name where a model came from, not what it computes.
_CONFIG_FIELDS_IGNORED = ("_name_or_path", "transformers_version", "_commit_hash", "auto_map", "architectures")


def default_cache_dir() -> Path:
    """``$BITESM_CACHE_DIR``, else ``$XDG_CACHE_HOME/bitesm/eval``, else ``~/.cache/bitesm/eval``."""
    if os.environ.get("BITESM_CACHE_DIR"):
        return Path(os.environ["BITESM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bitesm" / "eval"


def text_fingerprint(text: str) -> str:
    """SHA-256 hex digest of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB blocks).

    Raises:
        FileNotFoundError: no such file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Content hash of a model as it computes: its config and every tensor of its ``state_dict``.

    Args:
        model: any ``torch.nn.Module``; ``model.config`` (a ``PretrainedConfig``) is included when present, minus
            the fields that only say where it was loaded from (``_name_or_path``, ``transformers_version``,
            ``auto_map``, ...).

    Returns:
        SHA-256 hex digest (64 characters). Tensors are hashed in name order with their dtype and shape; tied
        weights count once per name. Cost: one pass over the weights (about 1 s per GB on a CPU).
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        values = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_FIELDS_IGNORED}
        digest.update(json.dumps(values, sort_keys=True, default=str).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode("utf-8"))
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class ResultCache:
    """A folder of evaluation results keyed by content (module docstring).

    Args:
        root: cache folder (created on first write); default :func:`default_cache_dir`.
        enabled: ``False`` makes :meth:`get` always miss and :meth:`put` do nothing (``--no-cache``).

    Attributes:
        hits, misses: counts since construction (reported by ``bitesm eval run``).
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _path(self, suite: str, key: dict[str, Any]) -> tuple[Path, str]:
        canonical = json.dumps(key, sort_keys=True, default=str)
        digest = text_fingerprint(canonical)
        return self.root / suite / digest[:2] / f"{digest}.json", canonical

    def get(self, suite: str, key: dict[str, Any]) -> Any | None:
        """The value stored under ``(suite, key)``, or ``None`` (a miss; unreadable entries count as misses).

        Args:
            suite: namespace (``"proteingym"``, ``"go"``, ...).
            key: JSON-serialisable dict of everything the value depends on.
        """
        if not self.enabled:
            self.misses += 1
            return None
        path, canonical = self._path(suite, key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.misses += 1
            return None
        if json.dumps(entry.get("key"), sort_keys=True, default=str) != canonical:
            self.misses += 1
            return None
        self.hits += 1
        return entry["value"]

    def put(self, suite: str, key: dict[str, Any], value: Any) -> None:
        """Store ``value`` (JSON-serialisable; NaN is stored as ``null``) under ``(suite, key)`` atomically."""
        if not self.enabled:
            return
        path, _ = self._path(suite, key)
        atomic_write_json(path, {"key": key, "value": value})
