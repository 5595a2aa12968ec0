"""Integer matrix multiply of int8 activations by ternary (int8) weights, with the rescale of BitNet b1.58.

Given per-token quantized activations ``x = x_int * s_x`` (``x_int`` int8 ``[M, K]``, ``s_x`` float32 ``[M, 1]``,
:func:`bitesm.quant.primitives.quantize_per_token_absmax`) and a ternary weight ``W = W_t * gamma`` (``W_t`` int8
``[N, K]`` in {-1, 0, 1}, ``gamma`` the absmean scale, :func:`bitesm.quant.primitives.quantize_ternary_absmean`)::

    y = x W^T + b = (x_int W_t^T) * s_x * gamma + b        (BitNet b1.58, eq. 4-5 with the scales factored out)

The product ``x_int W_t^T`` is computed in integers (exact: ``|x_int| <= 128``, ``|W_t| <= 1``, so every sum is
below ``128 K``) by the fastest backend available, then rescaled in float32. The fake-quantized BitLinear computes
the same products with the scales inside, so the two differ only by float rounding (order of accumulation).

Backends (:func:`int8_backend`):

* ``"onednn"`` (x86 CPU): oneDNN's int8 GEMM (``torch.ops.onednn.qlinear_pointwise``, the kernel of PyTorch's x86
  int8 inference path), ``uint8`` activations ``x_int + 128`` with zero point 128 times ``int8`` weights prepacked
  once per layer, int32 accumulation, float32 output. About 2x the fp32 GEMM rate on an AVX2 CPU (``vpmaddubsw``),
  more with AVX512-VNNI / AMX.
* ``"int_mm"`` (CUDA): ``torch._int_mm`` on int8 tensor cores (``M > 16``, ``K`` and ``N`` multiples of 8; other
  shapes use ``"float"``).
* ``"float"`` (anywhere): ``x_int`` and ``W_t`` cast to the float dtype and multiplied by the float GEMM; exact for
  ``K < 2^24 / 128`` in float32, no faster than the float model (the reference for the others).

``BITESM_INT8_BACKEND`` (``onednn``, ``int_mm`` or ``float``) forces a backend.

Users: :class:`~bitesm.nn.bitlinear.BitLinear` without gradients and
:class:`~bitesm.nn.packed_bitlinear.PackedBitLinear` (:class:`TernaryInt8Weight`, weight prepacked once), and
BitLinear's training forward on x86 CPUs (:func:`training_codes_kernel`, weight prepacked every step).
"""

from __future__ import annotations

import os

import torch

from ..quant.primitives import quantize_per_token_absmax, rescale_accumulator

__all__ = [
    "BACKENDS", "TernaryInt8Weight", "int8_backend", "int8_codes_linear", "int8_ternary_linear", "prepack_ternary",
    "training_codes_kernel",
]

BACKENDS = ("onednn", "int_mm", "float")
_ENV = "BITESM_INT8_BACKEND"


def _onednn_available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops, "onednn")
        and hasattr(torch.ops.onednn, "qlinear_pointwise")
    )


def int8_backend(device: torch.device | str) -> str:
    """The integer-GEMM backend used on ``device`` (module docstring), honouring ``$BITESM_INT8_BACKEND``.

    Raises:
        ValueError: ``$BITESM_INT8_BACKEND`` names an unknown backend or one this device cannot run.
    """
    device = torch.device(device)
    forced = os.environ.get(_ENV)
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"${_ENV}={forced!r}; use one of {BACKENDS}")
        if (forced == "onednn" and (device.type != "cpu" or not _onednn_available())) or (
            forced == "int_mm" and device.type != "cuda"
        ):
            raise ValueError(f"${_ENV}={forced!r} cannot run on {device}; unset it or use 'float'")
        return forced
    if device.type == "cuda":
        return "int_mm"
    if device.type == "cpu" and _onednn_available():
        return "onednn"
    return "float"


def prepack_ternary(w_ternary: torch.Tensor, backend: str) -> object:
    """The weight in the form ``backend`` multiplies fastest (computed once per layer and device).

    Args:
        w_ternary: ``int8`` ``[N, K]`` in {-1, 0, 1}.
        backend: one of :data:`BACKENDS`.

    Returns:
        an opaque object for :func:`int8_ternary_linear`: oneDNN's packed weight, the transposed contiguous int8
        ``[K, N]`` for ``int_mm``, or the int8 ``[N, K]`` itself for ``float``.
    """
    if backend == "onednn":
        return torch.ops.onednn.qlinear_prepack(w_ternary.contiguous(), None)
    if backend == "int_mm":
        return w_ternary.t().contiguous()
    return w_ternary


def int8_ternary_linear(
    x_int: torch.Tensor,
    x_scale: torch.Tensor,
    packed_weight: object,
    w_ternary: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    backend: str,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(x_int W_t^T) * x_scale * w_scale + bias`` with an integer GEMM (module docstring).

    Args:
        x_int: ``int8`` ``[M, K]`` activations.
        x_scale: ``float32`` ``[M, 1]`` per-token scales (``x_scale * w_scale`` is rescaled with
            :func:`bitesm.quant.primitives.rescale_accumulator`, the same function as the latent BitLinear).
        packed_weight: :func:`prepack_ternary` of ``w_ternary`` for ``backend``.
        w_ternary: ``int8`` ``[N, K]`` (used by the ``float`` fallback of ``int_mm`` for unsupported shapes).
        w_scale: 0-d ``float32`` per-tensor weight scale ``gamma + eps``.
        bias: ``[N]`` or ``None``.
        backend: one of :data:`BACKENDS`.
        out_dtype: dtype of the result.

    Returns:
        ``[M, N]`` tensor of ``out_dtype``.
    """
    m, k = x_int.shape
    n = w_ternary.shape[0]
    if backend == "onednn":
        ones = torch.ones(n, dtype=torch.float32)
        zeros = torch.zeros(n, dtype=torch.int64)
        # uint8 = int8 + 128 with zero point 128; for 8-bit two's complement, v + 128 = v XOR 0x80 (one byte pass)
        x_u8 = x_int.contiguous().view(torch.uint8).bitwise_xor(128)
        acc = torch.ops.onednn.qlinear_pointwise(
            x_u8, 1.0, 128, packed_weight, ones, zeros, None, 1.0, 0, torch.float32, "none", [None], ""
        )
    elif backend == "int_mm" and m > 16 and k % 8 == 0 and n % 8 == 0:
        acc = torch._int_mm(x_int.contiguous(), packed_weight).to(torch.float32)
    else:
        acc = x_int.to(torch.float32) @ w_ternary.to(torch.float32).t()
    return rescale_accumulator(acc, x_scale * w_scale, bias, out_dtype=out_dtype, inplace=True)


def int8_codes_linear(
    x_int: torch.Tensor,
    x_scale: torch.Tensor,
    w_ternary: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    backend: str | None = None,
) -> torch.Tensor:
    """The forward product of a training step in integers: :func:`int8_ternary_linear` on a weight prepacked for
    this call (the latent weight changes every step); the ``codes_kernel`` of
    :func:`bitesm.quant.primitives.ternary_linear`.

    Args:
        x_int: int8 ``[..., K]`` activation codes; x_scale: float32 ``[..., 1]``.
        w_ternary: int8 ``[N, K]`` in {-1, 0, 1}; w_scale: 0-d float32.
        bias: ``[N]`` or ``None``; out_dtype: dtype of the result.
        backend: one of :data:`BACKENDS` (default :func:`int8_backend` of ``x_int``'s device).

    Returns:
        ``[..., N]`` of ``out_dtype``.
    """
    backend = backend or int8_backend(x_int.device)
    k = x_int.shape[-1]
    y = int8_ternary_linear(x_int.reshape(-1, k), x_scale.reshape(-1, 1), prepack_ternary(w_ternary, backend),
                            w_ternary, w_scale, bias, backend, out_dtype)
    return y.reshape(*x_int.shape[:-1], w_ternary.shape[0])


def training_codes_kernel(device: torch.device | str):
    """The ``codes_kernel`` BitLinear trains with on ``device``: :func:`int8_codes_linear` where the integer GEMM is
    measured faster than the float one (oneDNN on x86 CPUs: about 2x the fp32 GEMM rate and 15x emulated bf16),
    else ``None`` (the float GEMM of the codes). CUDA keeps the float product until ``torch._int_mm`` training is
    measured on a GPU; ``$BITESM_INT8_BACKEND=float`` turns the integer product off everywhere."""
    return int8_codes_linear if int8_backend(device) == "onednn" else None


class TernaryInt8Weight:
    """One layer's ternary weight in the form its device's integer GEMM multiplies, rebuilt only when its source
    changes; used by :class:`~bitesm.nn.bitlinear.BitLinear` (inference without gradients) and
    :class:`~bitesm.nn.packed_bitlinear.PackedBitLinear`.

    :meth:`linear` quantizes the activations per token (:func:`quantize_per_token_absmax`, the function of the QAT
    path) and calls :func:`int8_ternary_linear`.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None

    def linear(self, x: torch.Tensor, bits: int, source: torch.Tensor, codes_and_scale, bias: torch.Tensor | None,
               out_features: int) -> torch.Tensor:
        """``[..., in] -> [..., out_features]`` in ``x.dtype``.

        Args:
            x: activations (float32 or bfloat16).
            bits: activation bits, 2..8.
            source: the tensor the weight is derived from (latent weight or packed codes); the cache is rebuilt
                when its storage, version or ``x``'s device changes.
            codes_and_scale: called on a rebuild, returns ``(int8 [out, in] codes in {-1, 0, 1}, 0-d float32
                scale)``.
            bias: ``[out_features]`` or ``None``.
            out_features: output width.
        """
        key = (x.device, source.data_ptr(), source._version)
        if key != self._key:
            self.codes, self.scale = codes_and_scale()
            self.backend = int8_backend(x.device)
            self.packed = prepack_ternary(self.codes, self.backend)
            self._key = key
        x_int, x_scale = quantize_per_token_absmax(x.reshape(-1, x.shape[-1]), bits)
        y = int8_ternary_linear(x_int, x_scale, self.packed, self.codes, self.scale, bias, self.backend,
                                out_dtype=x.dtype)
        return y.reshape(*x.shape[:-1], out_features)
