"""Quantized layers (BitLinear) and model conversion helpers."""

from .bitlinear import DEFAULT_MODULES_TO_NOT_CONVERT, BitLinear, replace_linear_with_bitlinear

__all__ = ["BitLinear", "replace_linear_with_bitlinear", "DEFAULT_MODULES_TO_NOT_CONVERT"]
