"""Local sliding-window self-attention for ESM-2 encoders (Long ESM-2; Longformer's band).

Source: de Oliveira, Pedrini & Dias, 2024, "Scaling Up ESM2 Architectures for Long Protein Sequences Analysis:
Long and Quantized Approaches" (arXiv 2501.07747), which replaces ESM-2's global attention by Longformer's local
attention (Beltagy et al., 2020) with a 1,024-token window and doubles the input to 2,048 residues.

The band
--------
``window`` is the band's total width, half on each side as in Longformer: query ``i`` attends to the keys
``|i - j| <= window // 2``, i.e. ``span = 2 * (window // 2) + 1`` keys. Near either end of a protein the band is
shifted to stay inside it, as neighbourhood attention does (Hassani et al., 2023), instead of being cut off:
for a row of ``n`` real tokens the keys of query ``i`` are ``[s_i, s_i + span) ∩ [0, n)`` with ::

    s_i = max(0, min(i - window // 2, n - span))

so every query sees ``min(n, span)`` keys, interior queries see exactly Longformer's band, and a protein of
``n <= span`` tokens (``window >= n - 1``) gets global attention exactly: a converted long model computes what the
original ESM-2 computes on every protein that fits in its window. Rotary position embeddings are applied to queries
and keys before this function (``EsmSelfAttention``), so relative positions are those of ESM-2.

Padding: the mask is built from each row's length ``n`` (right padding, as ESM-2 tokenizers pad), so a padded row
gives the same outputs at its real positions as the row alone. Padding queries get the window of the last real
token (their outputs are finite and meaningless, as with transformers' sdpa path).

Kernels (linear time and memory in the length)
----------------------------------------------
* ``chunked`` (CPU, and CUDA with dropout): queries in blocks of ``block_size``; each block attends, through
  ``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask, to the key range its band covers
  (at most ``block_size + span - 1`` keys). Differentiable; a single block with no mask when the whole batch fits
  in one band, which is the exact call transformers' ``sdpa`` attention makes.
* ``flex`` (CUDA): ``torch.nn.attention.flex_attention`` with a block mask from the same ``s_i`` rule
  (compiled; blocks outside the band are skipped).

``BITESM_SLIDING_WINDOW_KERNEL`` (``auto`` | ``chunked`` | ``flex``) overrides the choice; ``auto`` uses flex on CUDA
when attention dropout is off and chunked otherwise.

The function is registered with transformers' ``AttentionInterface`` as :data:`ATTENTION_NAME`, with a mask function
(``AttentionMaskInterface``) that hands it the 2D padding mask instead of a ``[batch, 1, L, L]`` one; bitesm models
with ``config.attention_window`` set select it.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

ATTENTION_NAME = "bitesm_sliding_window"
#: Queries per block of the chunked kernel: the score tile is [batch, heads, block_size, <= block_size + span - 1].
DEFAULT_BLOCK_SIZE = 128
KERNELS = ("auto", "chunked", "flex")


def window_span(window: int) -> int:
    """Number of keys in a full band: ``2 * (window // 2) + 1`` (1,025 for ``window=1024``).

    Raises:
        ValueError: ``window`` is not an int >= 2.
    """
    if not isinstance(window, int) or isinstance(window, bool) or window < 2:
        raise ValueError(f"attention_window={window!r} is out of range; use an int >= 2 (e.g. 1024) or None (global)")
    return 2 * (window // 2) + 1


def window_starts(lengths: torch.Tensor, seq_len: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last key of every query's band (module docstring: ``s_i``).

    Args:
        lengths: LongTensor ``[batch]``, real tokens per row (>= 1).
        seq_len: padded length ``L``.
        window: band width (see :func:`window_span`).

    Returns:
        ``(start, end)``: LongTensors ``[batch, L]``; query ``i`` of row ``b`` attends to keys ``start <= j < end``.
    """
    n = lengths.view(-1, 1)
    start = _band_start(torch.arange(seq_len, device=lengths.device).view(1, -1), n, window)
    return start, torch.minimum(start + window_span(window), n)


def _band_start(i: torch.Tensor, n: torch.Tensor, window: int) -> torch.Tensor:
    """``s_i = max(0, min(i - window // 2, n - span))`` (module docstring), padding queries (i >= n) taking the last
    real token's band; elementwise on broadcastable integer tensors (also inside flex_attention's mask_mod)."""
    i = torch.minimum(i, n - 1)
    return torch.clamp(torch.minimum(i - window // 2, n - window_span(window)), min=0)


def sliding_window_mask(lengths: torch.Tensor, seq_len: int, window: int) -> torch.Tensor:
    """Dense boolean mask of the band (``True`` = attend), ``[batch, L, L]``; a reference for tests and plots.

    Memory is quadratic in ``seq_len``: the kernels never build it.
    """
    start, end = window_starts(lengths, seq_len, window)
    j = torch.arange(seq_len, device=lengths.device).view(1, 1, -1)
    return (j >= start.unsqueeze(-1)) & (j < end.unsqueeze(-1))


def padding_lengths(attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device) -> torch.Tensor:
    """Row lengths of a right-padded 2D mask (``None``: every row is full).

    Raises:
        ValueError: the mask is not 2D ``[batch, L]``, or is not right-padded (a 0 before a 1 in some row).
    """
    if attention_mask is None:
        return torch.full((batch_size,), seq_len, dtype=torch.long, device=device)
    if attention_mask.dim() != 2 or attention_mask.shape != (batch_size, seq_len):
        raise ValueError(
            f"sliding-window attention takes a 2D padding mask [batch, seq_len] = [{batch_size}, {seq_len}], got "
            f"shape {tuple(attention_mask.shape)}; pass the tokenizer's attention_mask, not a 4D mask"
        )
    keep = attention_mask.to(torch.bool)
    lengths = keep.sum(-1)
    prefix = torch.arange(seq_len, device=keep.device).view(1, -1) < lengths.view(-1, 1)
    if not bool(torch.equal(prefix, keep)):
        raise ValueError(
            "sliding-window attention needs right-padded batches (1s then 0s in every attention_mask row); "
            "pad on the right (tokenizer padding_side='right')"
        )
    if bool((lengths == 0).any()):
        raise ValueError("attention_mask has a row with no tokens; drop empty rows from the batch")
    return lengths


def chunked_sliding_window_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    lengths: torch.Tensor,
    window: int,
    scaling: float | None = None,
    dropout: float = 0.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> torch.Tensor:
    """Blocked sliding-window attention: time ``O(L * (block_size + span) * d)``, memory ``O(L * d)`` per head.

    Args:
        query, key, value: float ``[batch, heads, L, head_dim]`` (rotary already applied).
        lengths: LongTensor ``[batch]`` of real tokens per row (right padding).
        window: band width (module docstring).
        scaling: score scale passed to sdpa (``None``: ``head_dim ** -0.5``; ESM-2 passes 1.0, having scaled q).
        dropout: attention-probability dropout (applied only when > 0).
        block_size: queries per block.

    Returns:
        float ``[batch, heads, L, head_dim]``, ``query``'s dtype.
    """
    batch, _, seq_len, _ = query.shape
    span = window_span(window)
    if seq_len <= span:  # one block covering everything: the band is the padding mask
        full = bool((lengths == seq_len).all())
        mask = None if full else (torch.arange(seq_len, device=query.device) < lengths.view(-1, 1)).view(batch, 1, 1, -1)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    start, end = window_starts(lengths, seq_len, window)
    # [batch, heads, L, d] views of [batch, L, heads, d]: one contiguous copy makes every block slice contiguous
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    outputs = []
    for q0 in range(0, seq_len, block_size):
        q1 = min(q0 + block_size, seq_len)
        rows = lengths > q0  # rows with at least one real query in this block
        if not bool(rows.any()):
            outputs.append(torch.zeros_like(query[:, :, q0:q1]))
            continue
        lo = int(start[rows, q0].min())
        hi = int(end[rows, q1 - 1].max())
        j = torch.arange(lo, hi, device=query.device).view(1, 1, -1)
        mask = (j >= start[:, q0:q1, None]) & (j < end[:, q0:q1, None])
        mask |= ~mask.any(-1, keepdim=True)  # padding queries whose band lies outside [lo, hi): any finite output
        outputs.append(
            F.scaled_dot_product_attention(
                query[:, :, q0:q1], key[:, :, lo:hi], value[:, :, lo:hi],
                attn_mask=mask.unsqueeze(1), dropout_p=dropout, scale=scaling,
            )
        )
    return torch.cat(outputs, dim=2)


_compiled_flex = None
#: flex path: the padded length is rounded up to this multiple (flex_attention's block size), so the compiled kernel
#: sees few distinct shapes; padding keys are outside every band.
FLEX_LENGTH_MULTIPLE = 128


@functools.lru_cache(maxsize=8)
def _band_block_mask(lengths: tuple[int, ...], seq_len: int, window: int, device: str):
    """flex_attention ``BlockMask`` of the band, built once per (lengths, length, window, device) and reused by
    every layer of a forward pass."""
    from torch.nn.attention.flex_attention import create_block_mask

    span = window_span(window)
    n_rows = torch.tensor(lengths, device=device)

    def band(b, h, q_idx, kv_idx):
        n = n_rows[b]
        s = _band_start(q_idx, n, window)
        return (kv_idx >= s) & (kv_idx < s + span) & (kv_idx < n)

    return create_block_mask(band, len(lengths), None, seq_len, seq_len, device=device)


def flex_sliding_window_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    lengths: torch.Tensor,
    window: int,
    scaling: float | None = None,
    compile: bool | None = None,
) -> torch.Tensor:
    """Sliding-window attention with ``flex_attention`` and a block mask of the band (skips blocks outside it).

    Same arguments and result as :func:`chunked_sliding_window_attention` (no dropout). ``compile`` (default: on
    CUDA) runs flex_attention through ``torch.compile`` (automatic dynamic shapes), its fast path; uncompiled it is a
    reference implementation that materialises the scores (forward only on CPU; torch 2.13's compiled flex on CPU
    is not used: it gave wrong values for some lengths). The length is padded to a multiple of
    :data:`FLEX_LENGTH_MULTIPLE` so varying protein lengths reuse compiled kernels.
    """
    from torch.nn.attention.flex_attention import flex_attention

    global _compiled_flex
    seq_len = query.shape[2]
    if compile is None:
        compile = query.is_cuda
    padded = seq_len
    if compile:
        padded = -(-seq_len // FLEX_LENGTH_MULTIPLE) * FLEX_LENGTH_MULTIPLE
        if padded != seq_len:
            pad = (0, 0, 0, padded - seq_len)
            query, key, value = (F.pad(t, pad) for t in (query, key, value))
    block_mask = _band_block_mask(tuple(int(n) for n in lengths.tolist()), padded, window, str(query.device))
    fn = flex_attention
    if compile:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention)
        fn = _compiled_flex
    return fn(query, key, value, block_mask=block_mask, scale=scaling)[:, :, :seq_len]


def _kernel(query: torch.Tensor, dropout: float) -> str:
    choice = os.environ.get("BITESM_SLIDING_WINDOW_KERNEL", "auto")
    if choice not in KERNELS:
        raise ValueError(f"BITESM_SLIDING_WINDOW_KERNEL={choice!r}; use one of {KERNELS}")
    if choice == "auto":
        return "flex" if query.is_cuda and dropout == 0.0 else "chunked"
    return choice


def sliding_window_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers ``AttentionInterface`` entry: sliding-window attention with ``module.config.attention_window``.

    Args:
        module: the calling ``EsmSelfAttention`` (its ``config.attention_window`` is the band width).
        query, key, value: ``[batch, heads, L, head_dim]``.
        attention_mask: 2D padding mask ``[batch, L]`` (1/True = token) or None (from :func:`padding_mask_2d`).
        scaling, dropout: as in transformers' attention functions.

    Returns:
        ``(attn_output [batch, L, heads, head_dim], None)``: attention maps are not materialised (the contact head
        needs global attention maps; use the global model for contacts).

    Raises:
        ValueError: ``attention_window`` unset or out of range, a 4D or left-padded mask, an empty row, or
            ``output_attentions=True``.
    """
    window = getattr(module.config, "attention_window", None)
    if window is None:
        raise ValueError("sliding-window attention needs config.attention_window (an int such as 1024)")
    if kwargs.get("output_attentions"):
        raise ValueError("sliding-window attention does not return attention maps; use a global-attention model")
    batch, _, seq_len, _ = query.shape
    lengths = padding_lengths(attention_mask, batch, seq_len, query.device)
    dropout = dropout if module.training else 0.0
    if _kernel(query, dropout) == "flex":
        out = flex_sliding_window_attention(query, key, value, lengths, window, scaling)
    else:
        out = chunked_sliding_window_attention(query, key, value, lengths, window, scaling, dropout)
    return out.transpose(1, 2).contiguous(), None


def padding_mask_2d(batch_size: int, q_length: int, kv_length: int, attention_mask=None, **kwargs):
    """``AttentionMaskInterface`` entry: keep the 2D bool padding mask ``[batch, L]`` (None when nothing is padded)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask


AttentionInterface.register(ATTENTION_NAME, sliding_window_attention_forward)
AttentionMaskInterface.register(ATTENTION_NAME, padding_mask_2d)

__all__ = [
    "ATTENTION_NAME",
    "DEFAULT_BLOCK_SIZE",
    "window_span",
    "window_starts",
    "sliding_window_mask",
    "padding_lengths",
    "chunked_sliding_window_attention",
    "flex_sliding_window_attention",
    "sliding_window_attention_forward",
    "padding_mask_2d",
]
