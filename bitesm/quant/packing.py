"""2-bit packing of ternary weights: four values per byte, the bit layout of transformers' BitNet integration.

Pure tensor functions (no modules), used by :class:`bitesm.nn.packed_bitlinear.PackedBitLinear` and
``bitesm export --format packed``.

Bit layout (identical to ``pack_weights`` / ``unpack_weights`` in transformers' ``integrations/bitnet.py``, so a
packed bitesm weight reads the same way as a packed BitNet checkpoint): a ternary weight ``W`` of shape
``[N, K]`` (``N`` output rows, values in {-1, 0, +1}) is stored as a ``uint8`` tensor ``P`` of shape
``[ceil(N / 4), K]``. With ``R = ceil(N / 4)``, row ``r`` of ``W`` goes to packed row ``r mod R`` at bit offset
``2 * (r div R)``, as the 2-bit code ``W[r, k] + 1`` (0 for -1, 1 for 0, 2 for +1; code 3 is invalid)::

    P[p, k] = sum over i in 0..3 of  (W[p + i * R, k] + 1) << (2 * i)        (rows beyond N count as code 1, i.e. 0)

so bits 0-1 of every byte hold the first quarter of the rows, bits 2-3 the second, bits 4-5 the third and bits 6-7
the last. ``N`` need not be a multiple of 4: the missing rows of the last quarter are zeros and are dropped on
unpacking. Example: ``W = [[1], [0], [-1], [1]]`` (``N = 4``, ``R = 1``) packs to ``P = [[2 | 1<<2 | 0<<4 | 2<<6]]
= [[134]]``.
"""

from __future__ import annotations

import torch

__all__ = ["VALUES_PER_BYTE", "packed_rows", "pack_ternary", "unpack_ternary"]

#: Ternary values per packed byte (2 bits each).
VALUES_PER_BYTE = 4


def packed_rows(out_features: int) -> int:
    """Rows of the packed tensor for ``out_features`` ternary rows: ``ceil(out_features / 4)``."""
    return (int(out_features) + VALUES_PER_BYTE - 1) // VALUES_PER_BYTE


def pack_ternary(w: torch.Tensor) -> torch.Tensor:
    """Pack a ternary weight into 2-bit codes, four per byte (module docstring: the bit layout).

    Args:
        w: ``[N, K]`` integer or float tensor with values in {-1, 0, 1} (e.g. the ``int8`` result of
            :func:`bitesm.quant.primitives.quantize_ternary_absmean`).

    Returns:
        ``torch.uint8`` tensor ``[ceil(N / 4), K]`` on ``w``'s device.

    Raises:
        ValueError: ``w`` is not 2-D, or holds a value outside {-1, 0, 1}.
    """
    if w.dim() != 2:
        raise ValueError(f"pack_ternary expects a 2-D weight [out_features, in_features], got shape {tuple(w.shape)}")
    codes = w.to(torch.int16) + 1
    if bool(((codes < 0) | (codes > 2)).any()) or (w.is_floating_point() and bool((w != w.round()).any())):
        raise ValueError("pack_ternary: the weight holds values outside {-1, 0, 1}; quantize it first "
                         "(bitesm.quant.quantize_ternary_absmean)")
    n, k = codes.shape
    rows = packed_rows(n)
    padded = torch.ones(rows * VALUES_PER_BYTE, k, dtype=torch.int16, device=w.device)  # code 1 = value 0
    padded[:n] = codes
    packed = torch.zeros(rows, k, dtype=torch.int16, device=w.device)
    for i in range(VALUES_PER_BYTE):
        packed |= padded[i * rows : (i + 1) * rows] << (2 * i)
    return packed.to(torch.uint8)


def unpack_ternary(packed: torch.Tensor, out_features: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`.

    Args:
        packed: ``torch.uint8`` ``[ceil(N / 4), K]``.
        out_features: ``N``, the number of ternary rows to return.
        dtype: result dtype (``int8`` for the integer kernels, a float dtype to dequantize).

    Returns:
        ``[N, K]`` tensor of ``dtype`` with values in {-1, 0, 1}, on ``packed``'s device.

    Raises:
        ValueError: ``packed`` is not 2-D ``uint8``, ``out_features`` does not fit its rows, or a byte holds the
            invalid code 3 (a corrupted or foreign checkpoint).
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"unpack_ternary expects a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    rows = packed.shape[0]
    if packed_rows(out_features) != rows:
        raise ValueError(f"out_features={out_features} does not match {rows} packed rows (expected "
                         f"{VALUES_PER_BYTE * rows - 3}..{VALUES_PER_BYTE * rows})")
    p = packed.to(torch.int16)
    codes = torch.cat([(p >> (2 * i)) & 3 for i in range(VALUES_PER_BYTE)], dim=0)[:out_features]
    if bool((codes == 3).any()):
        raise ValueError("unpack_ternary: invalid 2-bit code 3 in the packed weight (corrupted checkpoint?)")
    return (codes - 1).to(dtype)
