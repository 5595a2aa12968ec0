"""HF-native bitesm models, registered with transformers' AutoConfig / AutoModel / AutoModelForMaskedLM /
AutoModelForSequenceClassification."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from .configuration_bitesm import BitEsmConfig
from .long import convert_to_long
from .modeling_bitesm import (
    BitEsmForMaskedLM,
    BitEsmForSequenceClassification,
    BitEsmModel,
    bitesm_config_from_esm,
    check_loading_info,
    checkpoint_model_type,
    load_esm_config,
    load_masked_lm,
)

AutoConfig.register(BitEsmConfig.model_type, BitEsmConfig, exist_ok=True)
AutoModel.register(BitEsmConfig, BitEsmModel, exist_ok=True)
AutoModelForMaskedLM.register(BitEsmConfig, BitEsmForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(BitEsmConfig, BitEsmForSequenceClassification, exist_ok=True)

__all__ = [
    "BitEsmConfig",
    "BitEsmModel",
    "BitEsmForMaskedLM",
    "BitEsmForSequenceClassification",
    "bitesm_config_from_esm",
    "check_loading_info",
    "checkpoint_model_type",
    "convert_to_long",
    "load_esm_config",
    "load_masked_lm",
]
