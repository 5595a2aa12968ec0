"""Register the ``bitesm`` model type with transformers' Auto classes when transformers is used, not before.

``import bitesm`` must make ``AutoConfig`` / ``AutoModelForMaskedLM`` / ``AutoTokenizer.from_pretrained(folder)``
resolve bitesm checkpoints without ``trust_remote_code``; registering means importing the model classes, hence
torch and transformers' modeling code (seconds). The ``bitesm`` command, which prints ``--help`` without either,
and users who import bitesm for its quantizer functions should not pay that.

So :func:`register_when_transformers_loads` registers the ``bitesm`` config with ``AutoConfig`` at once when
transformers' Auto config module is already imported, and otherwise installs a post-import hook (a ``sys.meta_path``
finder that wraps the loaders of transformers' modules) that does so as soon as
``transformers.models.auto.configuration_auto`` has run and no transformers module is still being imported
(transformers imports its Auto config module from inside other modules; registering in the middle of such an
import would read their half-made namespaces). The finder removes itself once the config is registered. The model
classes follow when the first ``BitEsmConfig`` is created (it imports :mod:`bitesm.models.modeling_bitesm`), which every
``AutoModel*.from_pretrained`` of a bitesm folder does before it looks up the model class. This module imports
nothing outside the standard library.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import warnings

__all__ = ["register_when_transformers_loads", "registered"]

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"

_lock = threading.RLock()
_state = {"registered": False}


def registered() -> bool:
    """Whether the bitesm model type is registered with transformers' Auto classes in this process."""
    return _state["registered"]


def _initializing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))  # set by importlib while the module's body runs


def _ready(running: str | None = None) -> bool:
    """The Auto config module is imported and no transformers module but ``running`` (whose body has just run to
    its end) is still being imported."""
    if _CONFIG_AUTO not in sys.modules or (_CONFIG_AUTO != running and _initializing(_CONFIG_AUTO)):
        return False
    return not any(
        _initializing(name) for name in list(sys.modules) if name != running and name.split(".")[0] == "transformers"
    )


def _register_if_ready(running: str | None = None) -> bool:
    with _lock:
        if _state["registered"]:
            return True
        if not _ready(running):
            return False
        _state["registered"] = True
    try:
        # importing the module registers its config (at the end of its body; a no-op while it is still being imported
        # by the user, who then registers it when its body ends)
        importlib.import_module("bitesm.models.configuration_bitesm")
    except Exception as err:  # noqa: BLE001  (never break the user's transformers import)
        _state["registered"] = False
        warnings.warn(f"bitesm could not register its model type with transformers: {err!r}", stacklevel=2)
        return False
    return True


class _PostExecLoader(importlib.abc.Loader):
    """Runs the real loader, then tries to register; every other attribute is the real loader's."""

    def __init__(self, loader, name: str):
        self._loader, self._name = loader, name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        if _register_if_ready(self._name):
            _remove_finder()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _TransformersFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of every transformers module in :class:`_PostExecLoader` until the config is registered."""

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] != "transformers":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PostExecLoader(spec.loader, fullname)
                return spec
        return None


_FINDER = _TransformersFinder()


def _remove_finder() -> None:
    with _lock:
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)


def register_when_transformers_loads() -> bool:
    """Register the ``bitesm`` model type now if transformers' Auto classes are imported, else as soon as they are.

    Returns:
        whether the registration happened now.
    """
    if _register_if_ready():
        _remove_finder()
        return True
    with _lock:
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
    return False
