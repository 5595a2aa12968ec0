"""bitesm models: ESM-2 encoders whose Linear layers are BitNet b1.58 ``BitLinear`` layers.

``BitEsmModel`` and ``BitEsmForMaskedLM`` are transformers' ``EsmModel`` / ``EsmForMaskedLM`` with every
``nn.Linear`` of the encoder replaced by :class:`~bitesm.nn.bitlinear.BitLinear` (2Bits of Protein, Morsing et al.,
2024). Embeddings, the LM head and the contact head stay full precision. Parameter names are unchanged, so ESM-2
checkpoints load directly (:meth:`BitEsmForMaskedLM.from_esm`), and with ``quantization=None`` the model computes
exactly what ``EsmForMaskedLM`` computes.

Saved folders carry their code (``auto_map`` in ``config.json`` plus the flattened modules written by
:mod:`bitesm.models.remote_code`), so ``AutoModelForMaskedLM.from_pretrained(dir, trust_remote_code=True)`` works
where bitesm is not installed.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from transformers import EsmConfig, EsmForMaskedLM, EsmForSequenceClassification, EsmModel, PretrainedConfig
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from ..nn.bitlinear import DEFAULT_MODULES_TO_NOT_CONVERT, replace_linear_with_bitlinear
from ..nn.packed_bitlinear import replace_bitlinear_with_packed
from ..nn.quantized_linear import replace_linear_with_int8
from ..nn.sliding_window_attention import ATTENTION_NAME as SLIDING_WINDOW_ATTENTION
from ..ptq.attention import ATTENTION_NAME
from ..ptq.sites import attach_activation_quantizers
from .configuration_bitesm import BitEsmConfig
from .remote_code import write_remote_code

AUTO_MAP = {
    "AutoConfig": "configuration_bitesm.BitEsmConfig",
    "AutoModel": "modeling_bitesm.BitEsmModel",
    "AutoModelForMaskedLM": "modeling_bitesm.BitEsmForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_bitesm.BitEsmForSequenceClassification",
}

#: Modules of a sequence-level model kept full precision besides the defaults: its classification head.
SEQUENCE_HEAD_MODULES = ("classifier",)

# ESM-2 checkpoints keep one rotary ``inv_freq`` per layer; transformers renames them for model_type "esm" when
# loading (and back when saving). bitesm checkpoints use the same parameter names, so they get the same mapping.
register_checkpoint_conversion_mapping(
    BitEsmConfig.model_type, get_checkpoint_conversion_mapping("esm"), overwrite=True
)


def quantize_model_(model, config: BitEsmConfig, head_modules: tuple[str, ...] = ()) -> int:
    """Apply ``config.quantization`` (BitLinear layers; PackedBitLinear with ``weight_format="packed"``),
    ``config.ptq`` (activation quantizers; encoder Linear layers become
    :class:`~bitesm.nn.quantized_linear.Int8Linear` with ``ptq["weight_format"] == "int8"``) and
    ``config.attention_window`` (sliding-window attention) in place.

    Args:
        model: the freshly built model.
        config: its config.
        head_modules: module names kept full precision in addition to the defaults when
            ``config.modules_to_not_convert`` is None (a sequence model's ``classifier``).

    Returns:
        the number of Linear layers converted to BitLinear (0 for floating point).
    """
    converted = 0
    if config.quantization is not None:
        converted = replace_linear_with_bitlinear(
            model,
            modules_to_not_convert=(
                (*DEFAULT_MODULES_TO_NOT_CONVERT, *head_modules)
                if config.modules_to_not_convert is None
                else config.modules_to_not_convert
            ),
            activation_bits=config.activation_bits,
            weight_eps=config.weight_eps,
        )
        if config.weight_format == "packed":
            replace_bitlinear_with_packed(model, empty=True)
    ptq = config.ptq or {}
    if ptq.get("weight_format") == "int8":  # int8 weight codes + scales, loaded from the checkpoint
        replace_linear_with_int8(
            model, ptq["weight_bits"], ptq.get("weight_granularity", "per_channel") == "per_channel", empty=True
        )
    if ptq.get("act_bits") is not None and ptq.get("sites"):
        attach_activation_quantizers(
            model, ptq["act_bits"], ptq.get("method", "uniform"), ptq["sites"], ptq.get("layers")
        )
        if {"softmax_input", "softmax_output"} & set(ptq["sites"]):
            config._attn_implementation = ATTENTION_NAME
    if config.attention_window is not None:
        config._attn_implementation = SLIDING_WINDOW_ATTENTION
    return converted


class _SaveWithCodeMixin:
    """``save_pretrained`` that also writes the model's code and ``auto_map`` (see module docstring)."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            from ..io import follow_umask

            written = write_remote_code(save_directory, __name__)
            # safetensors and mkstemp create 0600 files; the folder's files follow the umask like config.json
            folder = Path(save_directory)
            follow_umask(*(folder / name for name in written), *folder.glob("model*.safetensors"))


class BitEsmModel(_SaveWithCodeMixin, EsmModel):
    """ESM-2 encoder with BitLinear layers; see :class:`transformers.EsmModel` for inputs and outputs.

    Args:
        config: a :class:`BitEsmConfig`.
        add_pooling_layer: as in ``EsmModel``.

    Inputs: ``input_ids`` LongTensor ``[batch, seq_len]`` (ESM-2 vocabulary, <cls> first, <eos> last),
    ``attention_mask`` LongTensor ``[batch, seq_len]`` (1 = token, 0 = padding).
    Outputs: ``last_hidden_state`` float ``[batch, seq_len, hidden_size]``.
    """

    config_class = BitEsmConfig

    def __init__(self, config: BitEsmConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        quantize_model_(self, config)


class BitEsmForMaskedLM(_SaveWithCodeMixin, EsmForMaskedLM):
    """ESM-2 masked language model with BitLinear layers (ternary QAT; 2Bits of Protein).

    Inputs as :class:`BitEsmModel`, plus ``labels`` LongTensor ``[batch, seq_len]`` (-100 = not scored).
    Outputs: ``logits`` float ``[batch, seq_len, vocab_size]`` (33 for ESM-2), ``loss`` (mean cross-entropy in
    nats over scored positions) when ``labels`` is given.
    """

    config_class = BitEsmConfig

    def __init__(self, config: BitEsmConfig):
        super().__init__(config)
        quantize_model_(self, config)

    @classmethod
    def from_esm(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        quantization: str | None = "ternary",
        activation_bits: int | None = 8,
        **from_pretrained_kwargs,
    ) -> BitEsmForMaskedLM:
        """Convert a pretrained ESM-2 ``EsmForMaskedLM`` checkpoint (Hub id or folder) to a bitesm model.

        The weights are loaded unchanged into the same parameter names; with ``quantization="ternary"`` the model
        then trains (QAT) and infers through BitLinear.

        Args:
            pretrained_model_name_or_path: e.g. ``"facebook/esm2_t6_8M_UR50D"`` or a local folder in that format.
            quantization, activation_bits: :class:`BitEsmConfig` fields.
            **from_pretrained_kwargs: passed to ``from_pretrained`` (``revision``, ``cache_dir``, ``dtype``...).

        Raises:
            CheckpointMismatchError: the checkpoint is not an ESM masked LM, its files contradict each other
                (:func:`~bitesm.models.checkpoint_checks.check_checkpoint`), it is a packed bitesm checkpoint
                (inference only: convert its latent checkpoint), or weights are missing, unexpected or of another
                shape (the message lists the keys). A ``ValueError`` subclass.
        """
        # bitesm's checkpoint checks are not part of a checkpoint's remote code: converting needs bitesm installed
        checks = importlib.import_module("bitesm.models.checkpoint_checks")

        hub_kwargs = _config_kwargs(from_pretrained_kwargs)
        model_type = checkpoint_model_type(pretrained_model_name_or_path, **hub_kwargs)
        if model_type not in ("esm", BitEsmConfig.model_type):
            raise checks.CheckpointMismatchError(
                f"{pretrained_model_name_or_path} has model_type={model_type!r}; from_esm converts ESM "
                "checkpoints (model_type 'esm'), e.g. facebook/esm2_t6_8M_UR50D"
            )
        raw = checks.check_checkpoint(pretrained_model_name_or_path, **hub_kwargs)
        if raw.get("weight_format") == "packed":
            raise checks.CheckpointMismatchError(
                f"{pretrained_model_name_or_path} is a packed ternary checkpoint (weight_format 'packed', written by "
                "'bitesm export --format packed'): inference only, its 2-bit weights cannot be converted. Fix: convert "
                "the latent checkpoint it was exported from"
            )
        esm_config = load_esm_config(pretrained_model_name_or_path, **hub_kwargs)
        config = bitesm_config_from_esm(esm_config, quantization=quantization, activation_bits=activation_bits)
        return checks.load_checked(cls, pretrained_model_name_or_path, checked=False, config=config, **from_pretrained_kwargs)


class BitEsmForSequenceClassification(_SaveWithCodeMixin, EsmForSequenceClassification):
    """ESM-2 with a sequence-level head (classification or regression) and BitLinear encoder layers.

    transformers' ``EsmForSequenceClassification``: the ``<cls>`` token's final hidden state goes through
    ``classifier`` (dense, tanh, output projection; kept full precision). ``config.num_labels`` outputs;
    ``config.problem_type`` ``"single_label_classification"`` (cross-entropy) or ``"regression"`` (MSE, one output).

    Inputs as :class:`BitEsmModel`, plus ``labels``: LongTensor ``[batch]`` (class indices) or float ``[batch]``
    (regression targets). Outputs: ``logits`` float ``[batch, num_labels]``, ``loss`` when ``labels`` is given.
    """

    config_class = BitEsmConfig

    def __init__(self, config: BitEsmConfig):
        super().__init__(config)
        quantize_model_(self, config, head_modules=SEQUENCE_HEAD_MODULES)


def checkpoint_model_type(name_or_path: str | os.PathLike, **kwargs) -> str | None:
    """The ``model_type`` in a checkpoint's ``config.json`` (folder or Hub id), without building a config."""
    return PretrainedConfig.get_config_dict(name_or_path, **kwargs)[0].get("model_type")


def load_esm_config(name_or_path: str | os.PathLike, **kwargs) -> EsmConfig:
    """The architecture in a checkpoint's ``config.json`` (ESM-2 or bitesm) as an ``EsmConfig``.

    Reads the raw dict, so no model-type mismatch warning is logged for bitesm checkpoints.
    """
    return EsmConfig.from_dict(PretrainedConfig.get_config_dict(name_or_path, **kwargs)[0])


def load_masked_lm(
    name_or_path: str | os.PathLike, quantization: str | None = None, activation_bits: int | None = 8
) -> BitEsmForMaskedLM:
    """Load a bitesm checkpoint as saved, or convert an ESM-2 one with :meth:`BitEsmForMaskedLM.from_esm`.

    Args:
        name_or_path: a checkpoint folder or Hub id (``model_type`` ``bitesm`` or ``esm``).
        quantization, activation_bits: :class:`BitEsmConfig` fields of the conversion of an ESM-2 checkpoint
            (ignored for a bitesm checkpoint, which loads as saved).

    Returns:
        a :class:`BitEsmForMaskedLM`.

    Raises:
        CheckpointMismatchError: the checkpoint's files contradict each other or a weight file is damaged
            (:mod:`bitesm.models.checkpoint_checks`); the message names the file and the fix.
        OSError: the checkpoint cannot be found.
    """
    checks = importlib.import_module("bitesm.models.checkpoint_checks")  # not part of a checkpoint's remote code
    config = checks.check_checkpoint(name_or_path)
    if config.get("model_type") == BitEsmConfig.model_type:
        return checks.load_checked(BitEsmForMaskedLM, name_or_path, checked=False)
    return BitEsmForMaskedLM.from_esm(name_or_path, quantization=quantization, activation_bits=activation_bits)


def _config_kwargs(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}


def bitesm_config_from_esm(esm_config: EsmConfig, **overrides) -> BitEsmConfig:
    """A :class:`BitEsmConfig` with every architecture field of ``esm_config`` (an ``EsmConfig`` or a
    ``BitEsmConfig``) and the given fields replaced by ``overrides`` (quantization, ptq, shape...)."""
    values = esm_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path", "auto_map"):
        values.pop(key, None)
    values.update(overrides)
    return BitEsmConfig.from_dict(values)


__all__ = [
    "BitEsmForMaskedLM",
    "BitEsmForSequenceClassification",
    "BitEsmModel",
    "bitesm_config_from_esm",
    "checkpoint_model_type",
    "load_esm_config",
    "load_masked_lm",
    "quantize_model_",
]

if __name__.startswith("bitesm."):  # installed bitesm (not a checkpoint's remote-code copy): the Auto classes know it
    from transformers.models.auto.modeling_auto import (
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
    )

    AutoModel.register(BitEsmConfig, BitEsmModel, exist_ok=True)
    AutoModelForMaskedLM.register(BitEsmConfig, BitEsmForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(BitEsmConfig, BitEsmForSequenceClassification, exist_ok=True)
