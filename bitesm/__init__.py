"""bitesm: training, quantizing and evaluating low-bit ESM-2 protein language models.

Importing :mod:`bitesm` registers the ``bitesm`` model type with transformers' Auto classes,
so ``AutoModelForMaskedLM.from_pretrained(dir)`` works on bitesm checkpoints.
"""

__version__ = "0.1.0"

from . import models as _models  # noqa: E402,F401  (registers the Auto classes)
from .models import BitEsmConfig, BitEsmForMaskedLM, BitEsmModel  # noqa: E402
from .nn import BitLinear, replace_linear_with_bitlinear  # noqa: E402

__all__ = ["BitEsmConfig", "BitEsmModel", "BitEsmForMaskedLM", "BitLinear", "replace_linear_with_bitlinear"]
