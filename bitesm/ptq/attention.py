"""Eager ESM-2 attention with quantized softmax input and output (PTQ4Protein softmax sites).

Registered with transformers' ``AttentionInterface`` (and the eager additive mask with ``AttentionMaskInterface``)
under :data:`ATTENTION_NAME`; bitesm models whose PTQ config quantizes a softmax site select it. The scores are
quantized *before* the padding mask is added, so clipping never lifts a masked position's score.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION_NAME = "bitesm_ptq"


def ptq_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention with optional quantizers ``module.softmax_input_quantizer`` / ``..._output_...``.

    Args:
        module: the ``EsmSelfAttention`` calling it (holds the quantizers, if any).
        query, key, value: ``[batch, heads, seq, head_dim]``.
        attention_mask: additive float mask ``[batch, 1, seq, seq]`` (0 or a large negative number), or None.
        scaling: score scale (``head_dim ** -0.5`` when None).

    Returns:
        ``(attn_output [batch, seq, heads, head_dim], attn_weights [batch, heads, seq, seq])``.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    quantize_in = getattr(module, "softmax_input_quantizer", None)
    if quantize_in is not None:
        scores = quantize_in(scores)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    quantize_out = getattr(module, "softmax_output_quantizer", None)
    if quantize_out is not None:
        probs = quantize_out(probs)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


AttentionInterface.register(ATTENTION_NAME, ptq_attention_forward)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)

__all__ = ["ATTENTION_NAME", "ptq_attention_forward"]
