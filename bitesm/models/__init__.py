"""HF-native bitesm models: :class:`BitEsmConfig`, :class:`BitEsmModel`, :class:`BitEsmForMaskedLM`,
:class:`BitEsmForSequenceClassification`, conversion from ESM-2 and to Long ESM-2.

The names are imported on first use (PEP 562), so ``import bitesm.models.configuration_bitesm`` does not import the
modeling code. Importing ``configuration_bitesm`` registers the ``bitesm`` config with ``AutoConfig``; importing
``modeling_bitesm`` (which the first ``BitEsmConfig`` created does) registers the model classes with ``AutoModel``,
``AutoModelForMaskedLM`` and ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

from ..lazy import lazy_exports

#: Public names and the module each comes from.
_LAZY = {
    "BitEsmConfig": ".configuration_bitesm",
    "BitEsmModel": ".modeling_bitesm",
    "BitEsmForMaskedLM": ".modeling_bitesm",
    "BitEsmForSequenceClassification": ".modeling_bitesm",
    "bitesm_config_from_esm": ".modeling_bitesm",
    "check_loading_info": ".checkpoint_checks",
    "checkpoint_model_type": ".modeling_bitesm",
    "load_esm_config": ".modeling_bitesm",
    "load_masked_lm": ".modeling_bitesm",
    "convert_to_long": ".long",
    "CheckpointMismatchError": ".checkpoint_checks",
    "check_checkpoint": ".checkpoint_checks",
    "load_checked": ".checkpoint_checks",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
