"""Process settings the ``bitesm`` command applies when it starts: a steady glibc allocator for CPU tensors.

glibc's malloc serves large blocks with ``mmap`` and gives freed heap tops back to the kernel, adapting both
thresholds to the allocation history. A forward pass frees activations of tens of MiB that the next pass allocates
again, so every pass page-faults (and the kernel zeroes) them anew, by an amount that depends on what ran before.
Measured on a 2-core CPU (``benchmarks/inference_speed.py``, ``benchmarks/README.md``): the same ESM-2 8M-shaped
forward at 8 x 512 tokens took 0.82 s measured first in a process and 0.45 s measured second; ``bitesm embed`` of
400 proteins with an 8M-shaped ternary model took 65.9 s by default and 54.6 s with the settings below.

:func:`steady_malloc` keeps blocks up to 32 MiB on the heap (``M_MMAP_THRESHOLD``) and trims the heap only when
more than 1 GiB of it is free (``M_TRIM_THRESHOLD``): the memory a forward frees is reused by the next one. The
peak memory is unchanged; the resident memory stays near the peak instead of falling between passes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

from .errors import UserInputError

__all__ = ["MALLOC_ENV", "STEADY_MALLOC", "quiet_optional_kernel_warning", "steady_malloc"]

#: ``$BITESM_MALLOC``: ``steady`` (the default) or ``default`` (leave glibc's adaptive settings alone).
MALLOC_ENV = "BITESM_MALLOC"
_CHOICES = ("steady", "default")
#: glibc ``mallopt`` parameter numbers (``malloc.h``) and the values :func:`steady_malloc` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
STEADY_MALLOC = {"M_MMAP_THRESHOLD": 32 * 2**20, "M_TRIM_THRESHOLD": 2**30}
#: Environment variables through which a user already tunes glibc's malloc; :func:`steady_malloc` then does nothing.
_USER_TUNABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def steady_malloc() -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` to 32 MiB and ``M_TRIM_THRESHOLD`` to 1 GiB for this process (module
    docstring), unless ``$BITESM_MALLOC=default``, the user already tunes malloc (``MALLOC_*_`` variables or a
    ``glibc.malloc`` entry in ``$GLIBC_TUNABLES``), or the C library is not glibc.

    Returns:
        whether the settings were applied.

    Raises:
        UserInputError: ``$BITESM_MALLOC`` is neither ``steady`` nor ``default`` (a ``ValueError``).
    """
    choice = os.environ.get(MALLOC_ENV, "steady")
    if choice not in _CHOICES:
        raise UserInputError(f"environment variable {MALLOC_ENV}={choice!r} is not a choice; set it to one of "
                             f"{', '.join(_CHOICES)}, or unset it")
    if choice == "default" or not sys.platform.startswith("linux"):
        return False
    if any(name in os.environ for name in _USER_TUNABLES) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, STEADY_MALLOC["M_MMAP_THRESHOLD"])) and bool(
        mallopt(_M_TRIM_THRESHOLD, STEADY_MALLOC["M_TRIM_THRESHOLD"])
    )


#: bitsandbytes (0.50) logs this at import on CPUs with AVX512-BF16 when the optional ``kernels`` package (which
#: downloads a compiled kernel from the Hugging Face Hub at run time) is not installed; its own CPU kernels are used.
_BNB_KERNELS_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


def _not_optional_kernel_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_BNB_KERNELS_MESSAGE)


def quiet_optional_kernel_warning() -> None:
    """Drop bitsandbytes' import-time warning that the optional Hub-downloaded CPU 4-bit kernel is missing (it then
    uses its built-in CPU kernels, which bitesm's NF4 path is tested with). Only that one message of that one logger
    is filtered; idempotent."""
    logger = logging.getLogger(_BNB_KERNELS_LOGGER)
    if _not_optional_kernel_notice not in logger.filters:
        logger.addFilter(_not_optional_kernel_notice)
