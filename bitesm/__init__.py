"""bitesm: training, quantizing and evaluating low-bit ESM-2 protein language models.

Importing :mod:`bitesm` registers the ``bitesm`` model type with transformers' Auto classes, so
``AutoModelForMaskedLM.from_pretrained(dir)`` and ``AutoTokenizer.from_pretrained(dir)`` work on bitesm checkpoints
without ``trust_remote_code``. The import itself is light: the registration runs when transformers' Auto classes are
imported (at once if they already are; :mod:`bitesm.auto_registration`), and the names below are imported on first
use.
"""

from __future__ import annotations

from .auto_registration import register_when_transformers_loads
from .lazy import lazy_exports
from .runtime import quiet_optional_kernel_warning

__version__ = "0.1.0"

#: Public names and the module each comes from (imported on first access, PEP 562).
_LAZY = {
    "BitEsmConfig": "bitesm.models",
    "BitEsmModel": "bitesm.models",
    "BitEsmForMaskedLM": "bitesm.models",
    "BitLinear": "bitesm.nn",
    "replace_linear_with_bitlinear": "bitesm.nn",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


register_when_transformers_loads()
quiet_optional_kernel_warning()  # bitsandbytes' notice about an optional Hub-downloaded CPU kernel, at its import
