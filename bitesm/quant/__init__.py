"""Quantizer core: pure quantization math shared by QAT, PTQ and packed inference.

See :mod:`bitesm.quant.primitives` for the formulas and their sources.
"""

from .primitives import *  # noqa: F401,F403
from .primitives import __all__  # noqa: F401
