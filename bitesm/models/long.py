"""Long ESM-2: convert an ESM-2 or bitesm checkpoint to local sliding-window attention and a longer input.

Source: de Oliveira, Pedrini & Dias, 2024, "Scaling Up ESM2 Architectures for Long Protein Sequences Analysis:
Long and Quantized Approaches" (arXiv 2501.07747). Long ESM-2 replaces ESM-2's global attention by Longformer's
local attention (window 1,024) and doubles the input limit from 1,022 to 2,048 residues, starting from the ESM-2
weights, then continues MLM pretraining (``configs/long-esm2-t6.yaml``). The conversion is Longformer's
``convert_model_to_long`` recipe (Beltagy et al., 2020, "Longformer", section 5 and its conversion notebook).

Lengths
-------
``max_length`` counts residues, as the paper does; a protein is read as ``<cls>``, residues, ``<eos>``, so the
long model takes ``max_length + 2`` tokens (the tokenizer's ``model_max_length``). ``max_position_embeddings``
follows ESM-2's own convention (fairseq / RoBERTa learned positions, which start at ``padding_idx + 1``):
``tokens + pad_token_id + 1``. ESM-2's 1,026 is 1,024 tokens = 1,022 residues; ``max_length=2048`` gives 2,052.

What changes
------------
* ``config.attention_window = window``, so the model runs :mod:`bitesm.nn.sliding_window_attention`
  (``config._attn_implementation == "bitesm_sliding_window"``). Proteins of at most ``window + 1`` tokens get
  global attention exactly, so the long model computes what the original computes on them.
* ``config.max_position_embeddings`` as above. ESM-2 uses rotary positions (no table): nothing else changes. With
  learned absolute positions (``position_embedding_type="absolute"``) the table grows by copying the trained rows
  repeatedly (:func:`extend_position_embeddings`), as Longformer does.

Everything else (every other weight, quantization: fp stays fp, ternary BitLinear stays ternary, PTQ at sites
other than the softmax) is unchanged. The attention-map outputs (``output_attentions``, the contact head) are not
available with local attention.

Command line: ``bitesm convert long --model DIR_OR_HUB_ID --max-length 2048 --window 1024 --output DIR``.
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import AutoModelForMaskedLM, EsmForMaskedLM

from ..errors import UserInputError
from ..nn.sliding_window_attention import window_span
from .configuration_bitesm import BitEsmConfig
from .modeling_bitesm import BitEsmForMaskedLM, bitesm_config_from_esm, checkpoint_model_type, load_masked_lm

logger = logging.getLogger(__name__)

#: <cls> and <eos> around every protein.
SPECIAL_TOKENS = 2
#: The paper's long input (residues) and window (tokens).
DEFAULT_MAX_LENGTH = 2048
DEFAULT_WINDOW = 1024
_SOFTMAX_SITES = ("softmax_input", "softmax_output")


class LongConversionError(UserInputError):
    """A conversion to Long ESM-2 that cannot be made or would change nothing (bad ``--window`` or
    ``--max-length``, a model already long with these settings, PTQ softmax sites); the message names the value
    and the fix."""


def position_offset(config) -> int:
    """Index of the first position row ESM uses: ``pad_token_id + 1`` (2 for ESM-2).

    ESM's learned positions (``create_position_ids_from_input_ids``) number tokens from ``padding_idx + 1``;
    row ``padding_idx`` is the padding row and the rows below it are never read.

    Raises:
        ValueError: ``config.pad_token_id`` is None (ESM-2 tokenizers have ``<pad>`` = 1).
    """
    if config.pad_token_id is None:
        raise ValueError("config.pad_token_id is None; ESM-2 configs have pad_token_id=1 (the <pad> token)")
    return int(config.pad_token_id) + 1


def max_residues(config) -> int:
    """Longest protein (residues) a config's ``max_position_embeddings`` allows: 1,022 for ESM-2 (1,026)."""
    return config.max_position_embeddings - position_offset(config) - SPECIAL_TOKENS


def position_embeddings_for(config, max_length: int) -> int:
    """``max_position_embeddings`` for proteins of ``max_length`` residues: ``max_length + 2 + pad_token_id + 1``."""
    return max_length + SPECIAL_TOKENS + position_offset(config)


def extend_position_embeddings(weight: torch.Tensor, num_positions: int, offset: int) -> torch.Tensor:
    """A learned position table grown to ``num_positions`` rows by repeating the trained rows (Longformer).

    Rows ``[0, offset)`` (the never-read rows and the padding row ``offset - 1``) are kept as they are. Position
    rows follow with period ``P = old_rows - offset``: new row ``offset + t`` is old row ``offset + (t mod P)``.
    For ESM-shaped tables (1,026 rows, offset 2) the first 1,026 rows are unchanged and rows 1,026.. repeat rows
    2..1,025 (the positions of tokens 0..1,023, ``<cls>`` first), cut off at ``num_positions``.

    Args:
        weight: float ``[old_rows, hidden]``, any dtype / device.
        num_positions: rows of the new table, ``>= old_rows``.
        offset: ``pad_token_id + 1`` (:func:`position_offset`).

    Returns:
        a new tensor ``[num_positions, hidden]`` of ``weight``'s dtype and device, equal to ``weight`` on its
        first ``old_rows`` rows.

    Raises:
        ValueError: ``num_positions < old_rows``, or ``offset`` leaves no position rows to copy.
    """
    old_rows = weight.shape[0]
    if num_positions < old_rows:
        raise ValueError(f"num_positions={num_positions} is smaller than the table's {old_rows} rows; it can only grow")
    if not 0 <= offset < old_rows:
        raise ValueError(f"offset={offset} must be in [0, {old_rows}) for a table of {old_rows} rows")
    period = old_rows - offset
    rows = torch.arange(num_positions, device=weight.device)
    index = torch.where(rows < offset, rows, offset + (rows - offset) % period)
    return weight.detach()[index].clone()


def long_config(config, max_length: int, window: int, source: str = "the model", **overrides) -> BitEsmConfig:
    """The :class:`BitEsmConfig` of the long variant of ``config`` (an ``EsmConfig`` or ``BitEsmConfig``).

    Args:
        config: the source architecture.
        max_length: longest protein in residues (2,048 in the paper).
        window: ``attention_window``, the band's total width in tokens (1,024 in the paper).
        source: how error messages name the model (a path or Hub id).
        **overrides: other :class:`BitEsmConfig` fields (e.g. ``quantization=None`` for an ``EsmConfig``).

    Raises:
        ValueError: ``window`` is not an int >= 2; the config has PTQ softmax sites or no pad token.
    """
    _check_window(window)
    _check_ptq_sites(overrides.get("ptq", getattr(config, "ptq", None)), source)
    return bitesm_config_from_esm(
        config,
        attention_window=window,
        max_position_embeddings=position_embeddings_for(config, max_length),
        **overrides,
    )


def to_long_model(
    model: EsmForMaskedLM, max_length: int, window: int, source: str = "the model"
) -> BitEsmForMaskedLM:
    """The long variant of a loaded model (no check that ``max_length`` grows; see :func:`convert_to_long`).

    Builds a :class:`BitEsmForMaskedLM` from :func:`long_config` (so the quantization and attention of the config
    are applied as for any bitesm model) and copies every weight, growing a learned position table with
    :func:`extend_position_embeddings`. A plain ``EsmForMaskedLM`` becomes a full-precision bitesm model.

    Returns:
        the long model, on ``model``'s device and dtype, in ``model``'s train/eval mode.

    Raises:
        ValueError: as :func:`long_config`; weights that do not fit the long model (a bug: message lists the keys).
    """
    overrides = {} if isinstance(model.config, BitEsmConfig) else {"quantization": None}
    config = long_config(model.config, max_length, window, source, **overrides)
    state = model.state_dict()
    key = "esm.embeddings.position_embeddings.weight"
    if config.position_embedding_type == "absolute" and key in state:
        state[key] = extend_position_embeddings(state[key], config.max_position_embeddings, position_offset(config))
    param = next(model.parameters())
    # built in the source's dtype as from_pretrained would (float32 buffers such as rotary inv_freq stay float32)
    long_model = AutoModelForMaskedLM.from_config(config, dtype=param.dtype)
    missing, unexpected = long_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not fit the long model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return long_model.to(param.device).train(model.training)


def convert_to_long(
    model_or_path: str | os.PathLike | EsmForMaskedLM,
    max_length: int = DEFAULT_MAX_LENGTH,
    window: int = DEFAULT_WINDOW,
    tokenizer=None,
) -> tuple[BitEsmForMaskedLM, object]:
    """Long ESM-2 (arXiv 2501.07747): an ESM-2 or bitesm model with sliding-window attention and a longer input.

    Args:
        model_or_path: a checkpoint folder or Hub id, either ESM-2 (``model_type="esm"``, facebook/esm2 format;
            converted to a full-precision bitesm model with :func:`load_masked_lm`) or bitesm (fp, ternary or PTQ,
            kept as it is); or a loaded ``EsmForMaskedLM`` / :class:`BitEsmForMaskedLM`.
        max_length: longest protein in residues (2,048 in the paper); must exceed the source's
            (:func:`max_residues`: 1,022 for ESM-2).
        window: ``attention_window`` in tokens, the band's total width, half on each side (1,024 in the paper).
        tokenizer: the tokenizer to return; ``None`` loads the checkpoint's (or the packaged ESM-2 one for a
            loaded model).

    Returns:
        ``(model, tokenizer)``: a :class:`BitEsmForMaskedLM` with ``config.attention_window = window`` and
        ``config.max_position_embeddings = max_length + 2 + pad_token_id + 1`` (2,052 for the paper's setting),
        weights equal to the source's (a learned position table is extended, its old rows unchanged); the
        tokenizer with ``model_max_length = max_length + 2`` tokens. Inputs and outputs as the source model's:
        ``input_ids`` LongTensor ``[batch, L <= max_length + 2]`` right-padded, float ``logits [batch, L, vocab]``.

    Raises:
        LongConversionError: ``window`` is not an int >= 2; ``max_length`` is not larger than the source's limit
            (a model already long with this ``window`` and ``max_length`` is named as such: converting it would
            change nothing); the source is post-training quantized at the softmax sites.
        CheckpointMismatchError: the source is not an ESM masked LM, or its files contradict each other
            (:mod:`bitesm.models.checkpoint_checks`).
        ValueError: the source has no pad token. Each message names the value and the fix.
    """
    _check_window(window)
    if isinstance(model_or_path, EsmForMaskedLM):
        model, source = model_or_path, type(model_or_path).__name__
    else:
        source = str(model_or_path)
        model = load_masked_lm(source, quantization=None)
    current = max_residues(model.config)
    if getattr(model.config, "attention_window", None) == window and max_length == current:
        raise LongConversionError(
            f"{source} is already a long model with attention_window={window} and max_length={current} residues: "
            "converting it again would write the same model. Fix: use it as it is, or pass a larger --max-length"
        )
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= current:
        raise LongConversionError(
            f"max_length={max_length!r} residues is not larger than the {current} that {source} already takes "
            f"(max_position_embeddings={model.config.max_position_embeddings}); pass a larger max_length "
            "(--max-length), "
            f"e.g. {DEFAULT_MAX_LENGTH if current < DEFAULT_MAX_LENGTH else 2 * current}"
        )
    long_model = to_long_model(model, max_length, window, source)
    if tokenizer is None:
        from ..data.tokenizer import load_tokenizer  # lazy: bitesm.data imports datasets

        tokenizer = load_tokenizer(None if isinstance(model_or_path, EsmForMaskedLM) else source)
    tokenizer.model_max_length = max_length + SPECIAL_TOKENS
    if window_span(window) >= max_length + SPECIAL_TOKENS:
        logger.warning(
            "attention_window=%d covers every protein of up to %d tokens: attention stays global", window,
            max_length + SPECIAL_TOKENS,
        )
    return long_model, tokenizer


def _check_window(window) -> None:
    try:
        window_span(window)
    except ValueError:
        raise LongConversionError(
            f"window={window!r} is out of range: the attention window (--window) must be an int >= 2 tokens; "
            "Long ESM-2 uses 1024"
        ) from None


def _check_ptq_sites(ptq: dict | None, source: str) -> None:
    sites = sorted(set((ptq or {}).get("sites") or ()) & set(_SOFTMAX_SITES))
    if sites:
        raise LongConversionError(
            f"{source} is post-training quantized at {sites}, which need the explicit global attention scores; "
            "convert its unquantized checkpoint to long first, then run 'bitesm ptq' on the long model with "
            "--sites excluding softmax_input,softmax_output"
        )


# -- command line -----------------------------------------------------------------------------------------------


def convert_checkpoint_to_long(
    model: str | os.PathLike, output: str | os.PathLike, max_length: int = DEFAULT_MAX_LENGTH,
    window: int = DEFAULT_WINDOW,
) -> dict:
    """``bitesm convert long``: :func:`convert_to_long` a checkpoint and save the result (with its remote code and
    tokenizer) to ``output``.

    Args:
        model: ESM-2 or bitesm checkpoint folder or Hub id (relative paths also resolve against the repository root).
        output: folder for the long model.
        max_length: longest protein in residues.
        window: sliding-window width in tokens.

    Returns:
        a summary: ``output``, ``source``, ``source_model_type``, ``quantization``, ``attention_window``,
        ``max_length``, ``max_tokens``, ``max_position_embeddings``, ``position_embedding_type``,
        ``attn_implementation``.

    Raises:
        LongConversionError, CheckpointMismatchError: as :func:`convert_to_long`.
    """
    from ..training.config import resolve_path

    source = resolve_path(str(model))
    source_type = checkpoint_model_type(source)
    converted, tokenizer = convert_to_long(source, max_length=max_length, window=window)
    converted.save_pretrained(output)
    tokenizer.save_pretrained(output)
    c = converted.config
    return {
        "output": str(output),
        "source": source,
        "source_model_type": source_type,
        "quantization": c.quantization,
        "attention_window": c.attention_window,
        "max_length": max_length,
        "max_tokens": tokenizer.model_max_length,
        "max_position_embeddings": c.max_position_embeddings,
        "position_embedding_type": c.position_embedding_type,
        "attn_implementation": c._attn_implementation,
    }


__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_WINDOW",
    "SPECIAL_TOKENS",
    "LongConversionError",
    "convert_checkpoint_to_long",
    "convert_to_long",
    "extend_position_embeddings",
    "long_config",
    "max_residues",
    "position_embeddings_for",
    "position_offset",
    "to_long_model",
]
