"""Configuration of bitesm models: an ESM-2 ``EsmConfig`` plus quantization fields."""

# No ``from __future__ import annotations``: @strict checks field types only on real (non-string) annotations.
from huggingface_hub.dataclasses import strict
from transformers import EsmConfig

QUANTIZATION_SCHEMES = ("ternary",)


@strict
class BitEsmConfig(EsmConfig):
    """Configuration of :class:`~bitesm.models.modeling_bitesm.BitEsmForMaskedLM` (``model_type="bitesm"``).

    All :class:`transformers.EsmConfig` fields keep their meaning (an ESM-2 8M model is ``hidden_size=320``,
    ``num_hidden_layers=6``, ``num_attention_heads=20``, ``intermediate_size=1280``, rotary positions). Added fields:

    Args:
        quantization: ``"ternary"`` (BitNet b1.58 BitLinear layers: absmean ternary weights, per-token absmax
            activations; 2Bits of Protein) or ``None`` for a full-precision model whose outputs equal
            transformers' ``EsmForMaskedLM`` with the same weights.
        activation_bits: bit width of the per-token absmax activation quantizer of BitLinear (8 in BitNet b1.58);
            ``None`` leaves activations in floating point. Ignored when ``quantization`` is None.
        weight_eps: epsilon of the absmean weight quantizer (2Bits of Protein eq. 1).
        modules_to_not_convert: module names kept as ``nn.Linear``; ``None`` means the LM head, contact head and
            pooler (:data:`bitesm.nn.bitlinear.DEFAULT_MODULES_TO_NOT_CONVERT`); ``[]`` converts every Linear.

    Raises:
        huggingface_hub.errors.StrictDataclassFieldValidationError: a field of the wrong type.
        huggingface_hub.errors.StrictDataclassClassValidationError: a field out of range; the message names the field,
            the value and the allowed values (the underlying ``ValueError`` is its ``__cause__``).
    """

    model_type = "bitesm"

    quantization: str | None = "ternary"
    activation_bits: int | None = 8
    weight_eps: float = 1e-5
    modules_to_not_convert: list[str] | None = None

    def validate_quantization(self):
        if self.quantization is not None and self.quantization not in QUANTIZATION_SCHEMES:
            raise ValueError(
                f"quantization={self.quantization!r} is not supported; use one of {QUANTIZATION_SCHEMES} "
                "or None for full precision"
            )
        if self.activation_bits is not None and not (2 <= self.activation_bits <= 16):
            raise ValueError(f"activation_bits={self.activation_bits} is out of range; use an int in [2, 16] or None")
        if not (0.0 < self.weight_eps < 1.0):
            raise ValueError(f"weight_eps={self.weight_eps} is out of range; use a small positive float such as 1e-5")


__all__ = ["BitEsmConfig", "QUANTIZATION_SCHEMES"]
