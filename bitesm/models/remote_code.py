"""Write a checkpoint's custom code so it loads with ``trust_remote_code=True`` where bitesm is not installed.

transformers' ``custom_object_save`` copies a model file and its *single-dot* sibling imports only. bitesm keeps one
module per concept in separate subpackages (``bitesm.quant``, ``bitesm.nn``, ``bitesm.models``), so this module
does the same job for a package layout: starting from the modeling module it follows every relative import
(``from ..nn.bitlinear import X``), copies each imported module next to ``config.json`` and rewrites the import to
the flat form (``from .bitlinear import X``). Module basenames in that closure must therefore be unique, and bundled
modules import from leaf modules, never from a package ``__init__``. The same code runs again, unchanged, from a
flat remote-code folder, so a model loaded with ``trust_remote_code`` saves a loadable folder too.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
from pathlib import Path

_RELATIVE_IMPORT = re.compile(r"^(\s*)from\s+(\.+)([\w.]*)\s+import\s", flags=re.MULTILINE)


def _relative_imports(module) -> list:
    """Modules imported with ``from .x import`` / ``from ..pkg.x import`` by ``module``, resolved and imported."""
    source = Path(module.__file__).read_text(encoding="utf-8")
    package = module.__spec__.parent if module.__spec__ is not None else module.__package__
    found = []
    for _, dots, name in _RELATIVE_IMPORT.findall(source):
        resolved = importlib.util.resolve_name(dots + name, package)
        dep = importlib.import_module(resolved)
        if Path(dep.__file__).name == "__init__.py":
            raise ValueError(
                f"{module.__name__} imports the package {resolved!r}; bundled modules must import from leaf modules "
                f"(e.g. 'from {dots}{name}.<module> import ...') so the remote-code folder can be flattened"
            )
        found.append(dep)
    return found


def bundle_modules(root_module_name: str) -> dict[str, str]:
    """Flattened sources of ``root_module_name`` and everything it imports relatively.

    Args:
        root_module_name: dotted name of the modeling module, e.g. ``"bitesm.models.modeling_bitesm"``.

    Returns:
        ``{file_name: source}`` with relative imports rewritten to ``from .<basename> import``.

    Raises:
        ValueError: two bundled modules share a basename, or a module imports a package ``__init__``.
    """
    root = sys.modules.get(root_module_name) or importlib.import_module(root_module_name)
    seen: dict[str, object] = {}
    stack = [root]
    while stack:
        module = stack.pop()
        base = Path(module.__file__).name
        if base in seen:
            if seen[base] is not module:
                raise ValueError(f"two bundled modules are both named {base}: {seen[base].__name__}, {module.__name__}")
            continue
        seen[base] = module
        stack.extend(_relative_imports(module))

    def flatten(match: re.Match) -> str:
        indent, _, name = match.groups()
        return f"{indent}from .{name.rsplit('.', 1)[-1]} import "

    return {
        base: _RELATIVE_IMPORT.sub(flatten, Path(module.__file__).read_text(encoding="utf-8"))
        for base, module in seen.items()
    }


def write_remote_code(save_directory: str | os.PathLike, root_module_name: str) -> list[str]:
    """Write the flattened code bundle of ``root_module_name`` into ``save_directory`` (each file atomically).

    Returns:
        the file names written.
    """
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in sorted(bundle_modules(root_module_name).items()):
        fd, tmp = tempfile.mkstemp(dir=save_directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        os.replace(tmp, save_directory / name)
        written.append(name)
    return written
