"""Quantizer core: pure quantization math shared by QAT, PTQ and packed inference.

See :mod:`bitesm.quant.primitives` for the formulas and their sources.
"""

from .primitives import *  # noqa: F401,F403
from .primitives import __all__  # noqa: F401

# Post-training quantization: piecewise-linear quantizer (PTQ4Protein eq. 5-6) and calibration range observers.
from .piecewise import *  # noqa: F401,F403,E402
from .piecewise import __all__ as _piecewise_all  # noqa: E402
from .observers import *  # noqa: F401,F403,E402
from .observers import __all__ as _observers_all  # noqa: E402

__all__ = [*__all__, *_piecewise_all, *_observers_all]
