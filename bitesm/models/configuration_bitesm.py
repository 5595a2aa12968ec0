"""Configuration of bitesm models: an ESM-2 ``EsmConfig`` plus quantization fields."""

# No ``from __future__ import annotations``: @strict checks field types only on real (non-string) annotations.
from huggingface_hub.dataclasses import strict
from transformers.models.esm.configuration_esm import EsmConfig

from ..ptq.sites import METHODS, SITES

QUANTIZATION_SCHEMES = ("ternary",)
#: How a ternary model's encoder weights are stored: ``latent`` full-precision weights (trainable, quantized in every
#: forward) or ``packed`` 2-bit ternary codes plus one scale per layer (inference only, integer GEMM).
WEIGHT_FORMATS = ("latent", "packed")
PTQ_KEYS = ("weight_bits", "act_bits", "method", "sites", "layers", "weight_granularity", "weight_format")
#: How a post-training-quantized model stores its encoder Linear weights (``ptq["weight_format"]``): ``fake`` (fp32
#: weights on the quantization grid; the default, and what configs without the key mean) or ``int8``
#: (:class:`~bitesm.nn.quantized_linear.Int8Linear`: int8 codes plus float32 scales; needs ``weight_bits`` <= 8).
PTQ_WEIGHT_FORMATS = ("fake", "int8")


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
        ptq: post-training quantization (PTQ4Protein) applied to the model, or ``None``. A dict with
            ``weight_bits`` (encoder Linear weights, symmetric uniform; ``None`` = floating point), ``act_bits``
            (activations at the ``sites``; ``None`` = floating point), ``method`` (``"uniform"`` or ``"piecewise"``),
            ``sites`` (subset of ``layernorm_input``, ``layernorm_output``, ``softmax_input``, ``softmax_output``,
            ``ffn_input``), ``layers`` (encoder layer indices or ``None`` for all) and ``weight_granularity``
            (``"per_channel"`` or ``"per_tensor"``), and optionally ``weight_format`` (``"fake"``, the default:
            fp32 weights on the grid; ``"int8"``: int8 codes plus float32 scales, needs ``weight_bits`` <= 8,
            written by ``bitesm ptq``). The calibrated activation ranges are buffers of the model.
        attention_window: local sliding-window attention (Long ESM-2, arXiv 2501.07747): the band's total width in
            tokens, half on each side as in Longformer (1,024 in the paper), or ``None`` for ESM-2's global attention.
            See :mod:`bitesm.nn.sliding_window_attention` for the exact band (it is global for proteins of at most
            ``window + 1`` tokens).
        weight_format: ``"latent"`` (default: BitLinear layers keep full-precision latent weights, quantized in every
            forward; trainable) or ``"packed"`` (:class:`~bitesm.nn.packed_bitlinear.PackedBitLinear`: 2-bit packed
            ternary weights and their scales, int8 activations times ternary weights by an integer GEMM; inference
            only; ``bitesm export --format packed``). ``"packed"`` needs ``quantization="ternary"``.
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
    ptq: dict | None = None
    attention_window: int | None = None
    weight_format: str = "latent"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if __name__.startswith("bitesm."):  # installed bitesm, not a checkpoint's remote-code copy of this file
            import importlib

            # importing the modeling module registers the model classes with the Auto classes (at its end), before
            # AutoModel*.from_pretrained asks whether this config has local code
            importlib.import_module("bitesm.models.modeling_bitesm")

    def validate_quantization(self):
        if self.quantization is not None and self.quantization not in QUANTIZATION_SCHEMES:
            raise ValueError(
                f"quantization={self.quantization!r} is not supported; use one of {QUANTIZATION_SCHEMES} "
                "or None for full precision"
            )
        if self.activation_bits is not None and not (2 <= self.activation_bits <= 16):
            raise ValueError(f"activation_bits={self.activation_bits} is out of range; use an int in [2, 16] or None")
        if self.ptq is not None:
            _validate_ptq(self.ptq)
        if self.attention_window is not None and (
            not isinstance(self.attention_window, int) or self.attention_window < 2
        ):
            raise ValueError(
                f"attention_window={self.attention_window!r} is out of range; use an int >= 2 (e.g. 1024) or None "
                "for global attention"
            )
        if self.attention_window is not None and {"softmax_input", "softmax_output"} & set((self.ptq or {}).get("sites") or ()):
            raise ValueError(
                "ptq softmax sites need the explicit (global) attention scores; quantize a model with "
                "attention_window=None, or drop softmax_input/softmax_output from ptq.sites"
            )
        if self.weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"weight_format={self.weight_format!r} is not supported; use one of {WEIGHT_FORMATS}")
        if self.weight_format == "packed" and self.quantization != "ternary":
            raise ValueError(
                f"weight_format='packed' stores ternary weights; it needs quantization='ternary', got "
                f"{self.quantization!r}"
            )
        if not (0.0 < self.weight_eps < 1.0):
            raise ValueError(f"weight_eps={self.weight_eps} is out of range; use a small positive float such as 1e-5")


def _validate_ptq(ptq: dict) -> None:
    unknown = sorted(set(ptq) - set(PTQ_KEYS))
    if unknown:
        raise ValueError(f"ptq has unknown key(s) {unknown}; allowed: {PTQ_KEYS}")
    for key in ("weight_bits", "act_bits"):
        bits = ptq.get(key)
        if bits is not None and (not isinstance(bits, int) or not 2 <= bits <= 16):
            raise ValueError(f"ptq.{key}={bits!r} is out of range; use an int in [2, 16] or None (floating point)")
    if ptq.get("method", "uniform") not in METHODS:
        raise ValueError(f"ptq.method={ptq.get('method')!r}; use one of {METHODS}")
    bad_sites = sorted(set(ptq.get("sites") or ()) - set(SITES))
    if bad_sites:
        raise ValueError(f"ptq.sites has unknown site(s) {bad_sites}; choose from {SITES}")
    if ptq.get("weight_granularity", "per_channel") not in ("per_channel", "per_tensor"):
        raise ValueError(f"ptq.weight_granularity={ptq.get('weight_granularity')!r}; use 'per_channel' or 'per_tensor'")
    fmt = ptq.get("weight_format", "fake")
    if fmt not in PTQ_WEIGHT_FORMATS:
        raise ValueError(f"ptq.weight_format={fmt!r}; use one of {PTQ_WEIGHT_FORMATS}")
    if fmt == "int8" and (ptq.get("weight_bits") is None or ptq["weight_bits"] > 8):
        raise ValueError(
            f"ptq.weight_format='int8' stores weight codes in int8; it needs ptq.weight_bits in [2, 8], got "
            f"{ptq.get('weight_bits')!r}. Use weight_format 'fake' for wider or floating-point weights"
        )


__all__ = ["QUANTIZATION_SCHEMES", "BitEsmConfig"]

if __name__.startswith("bitesm."):  # installed bitesm (not a checkpoint's remote-code copy): AutoConfig knows "bitesm"
    from transformers.models.auto.configuration_auto import AutoConfig

    AutoConfig.register(BitEsmConfig.model_type, BitEsmConfig, exist_ok=True)
