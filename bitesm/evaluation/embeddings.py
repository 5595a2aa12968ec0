"""Per-residue and protein embeddings of proteins of any length: windows of the model's context, averaged per position.

A standard ESM-2 model reads at most ``m`` residues per pass (:func:`~bitesm.evaluation.context.default_max_residues`:
1,022 for ESM-2, i.e. 1,024 tokens with ``<cls>``/``<eos>``). Long ESM-2 (de Oliveira, Pedrini & Dias, 2024,
"Scaling Up ESM2 Architectures for Long Protein Sequences Analysis: Long and Quantized Approaches",
arXiv 2501.07747) embeds proteins longer than its input limit by splitting them into non-overlapping windows of
the model's maximum, running every window as its own protein and averaging the embeddings per position. This
module implements that scheme for both kinds of models; a long model (``config.attention_window`` set) simply
has a larger ``m`` (its own ``max_position_embeddings``) and can be given any ``max_residues`` (its
sliding-window attention is linear in the length), so it embeds a protein that fits in one pass.

The windows
-----------
For a protein of ``n`` residues and ``m`` residues per pass (:func:`embedding_windows`):

* ``n <= m``: one window, the whole protein (``<cls> residues <eos>``, ``n + 2`` tokens);
* ``n > m``: ``k = ceil(n / m)`` windows of exactly ``m`` residues, starting at residues ``0, m, 2m, ...,
  (k - 2) m`` (non-overlapping) and a **last window aligned to the protein's end**, starting at ``n - m``. It
  overlaps the window before it by ``k m - n`` residues (none when ``m`` divides ``n``); those residues get the
  mean of their two embeddings, every other residue its one embedding.

Why an end-aligned last window rather than a short one: with a short last window the C-terminal residues
(``n mod m`` of them, possibly 1 or 2) would be embedded with almost no context, unlike every other residue and
unlike anything the model saw in training (ESM-2 crops long proteins to full 1,024-token windows); with the
end-aligned window every residue is embedded in a context of exactly ``m`` residues, and all windows have the
same length, so they go through the model in batches without padding.

Every window is run as a protein of its own: ``<cls>``, its residues, ``<eos>`` (ESM-2's format for crops). The
per-residue embedding is the encoder's final hidden state (``last_hidden_state`` of the base model, i.e. after
ESM-2's ``emb_layer_norm_after``; fair-esm's ``repr_layers=[num_layers]``) at the residue's token, without the
``<cls>``/``<eos>`` tokens. The protein embedding is the mean of the per-residue embeddings over the ``n``
residues (each residue weighs once, whether one window or two covered it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ..data.collator import tokenize_residues
from ..data.fasta import validate_sequence
from .context import attention_window, default_max_residues

__all__ = ["ProteinEmbedding", "embed_protein", "embedding_windows"]


class ProteinEmbedding(NamedTuple):
    """Result of :func:`embed_protein` (unpacks as ``per_residue, mean, windows``).

    Attributes:
        per_residue: ``torch.float32`` tensor ``[n_residues, hidden_size]`` on CPU; row ``p`` is residue ``p``
            (0-based) averaged over the windows covering it.
        mean: ``torch.float32`` tensor ``[hidden_size]`` on CPU; ``per_residue.mean(0)``.
        windows: the ``(start, end)`` residue ranges (0-based, ``end`` exclusive) that went through the model, in
            order (:func:`embedding_windows`).
    """

    per_residue: torch.Tensor
    mean: torch.Tensor
    windows: tuple[tuple[int, int], ...]


def embedding_windows(n_residues: int, max_residues: int | None) -> list[tuple[int, int]]:
    """Residue windows that cover a protein (module docstring: non-overlapping, the last one end-aligned).

    Args:
        n_residues: protein length ``n`` (>= 1).
        max_residues: residues per pass ``m`` (>= 1), or ``None`` for one window whatever the length.

    Returns:
        ``[(start, end), ...]``, 0-based, ``end`` exclusive: ``[(0, n)]`` if ``n <= m``; else ``ceil(n / m)``
        windows of ``m`` residues, e.g. ``embedding_windows(10, 4) == [(0, 4), (4, 8), (6, 10)]`` (residues 6 and
        7 covered twice) and ``embedding_windows(8, 4) == [(0, 4), (4, 8)]``.

    Raises:
        ValueError: ``n_residues < 1`` or ``max_residues < 1``.
    """
    if isinstance(n_residues, bool) or not isinstance(n_residues, int) or n_residues < 1:
        raise ValueError(f"n_residues must be an int >= 1, got {n_residues!r}")
    if max_residues is not None and (
        isinstance(max_residues, bool) or not isinstance(max_residues, int) or max_residues < 1
    ):
        raise ValueError(f"max_residues must be an int >= 1 or None, got {max_residues!r}")
    if max_residues is None or n_residues <= max_residues:
        return [(0, n_residues)]
    k = math.ceil(n_residues / max_residues)
    windows = [(i * max_residues, (i + 1) * max_residues) for i in range(k - 1)]
    windows.append((n_residues - max_residues, n_residues))
    return windows


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _last_hidden_state(output: Any) -> torch.Tensor:
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, dict):
        return output["last_hidden_state"]
    if isinstance(output, torch.Tensor):
        return output
    return output[0]


def embed_protein(
    model: torch.nn.Module,
    tokenizer: Any,
    sequence: str,
    max_residues: int | None = None,
    batch_size: int = 8,
    device: Any = None,
    record_id: str = "sequence",
) -> ProteinEmbedding:
    """Per-residue and mean-pooled embeddings of one protein of any length (module docstring: the scheme).

    Args:
        model: an ESM-2-style encoder or masked LM (``BitEsmForMaskedLM``, ``BitEsmModel``, transformers'
            ``EsmForMaskedLM`` / ``EsmModel``). Its base model (``model.base_model``; the model itself if it has
            none) is called as ``(input_ids=[B, T] int64, attention_mask=[B, T] int64)`` and must return
            ``last_hidden_state`` ``[B, T, hidden]`` (any float dtype). It is put in eval mode for the call
            (training mode is restored) and moved to ``device`` if one is given.
        tokenizer: the ESM-2 tokenizer (needs ``<cls>``/``<eos>`` and the 25 residue letters).
        sequence: residues, one letter each from :data:`bitesm.data.ESM_RESIDUES`, any case; whitespace is
            removed (:func:`bitesm.data.validate_sequence`).
        max_residues: residues per forward pass ``m``. Default: the model's maximum,
            :func:`~bitesm.evaluation.context.default_max_residues` (``max_position_embeddings - 4``: 1,022 for
            ESM-2), or no limit when the config has none. A standard (global-attention) model refuses a value above
            its maximum; a long model (``config.attention_window`` set) accepts any, e.g. ``len(sequence)`` to
            embed a protein beyond its declared maximum in one pass.
        batch_size: windows per forward pass (all windows of a protein have the same length, so no padding).
        device: where to run; default the model's device.
        record_id: name of the protein in error messages.

    Returns:
        :class:`ProteinEmbedding`: ``per_residue`` float32 ``[n_residues, hidden]``, ``mean`` float32 ``[hidden]``
        (both on CPU; accumulated in float64), ``windows`` the residue ranges used.

    Raises:
        bitesm.data.InvalidResidueError: a character is not an ESM-2 residue letter (names the record, the
            1-based position and the character).
        ValueError: the sequence is empty; ``max_residues`` or ``batch_size`` < 1; ``max_residues`` above a
            standard model's maximum; the tokenizer lacks ``<cls>``/``<eos>`` or a residue; the model's output
            is not ``[B, T, hidden]``.
        TypeError: ``sequence`` is not a string.

    Source: Long ESM-2 (arXiv 2501.07747): windows of the model's maximum length, embeddings averaged per
    position; the end-aligned last window is bitesm's choice (module docstring).
    """
    if not isinstance(sequence, str):
        raise TypeError(f"sequence of {record_id!r} must be a str of residue letters, got {type(sequence).__name__}")
    seq = validate_sequence(sequence, record_id)
    if not seq:
        raise ValueError(f"Record {record_id!r} has no residues; embed a non-empty protein sequence.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    limit = default_max_residues(model)
    if max_residues is None:
        max_residues = limit
    elif attention_window(model) is None and limit is not None and max_residues > limit:
        raise ValueError(
            f"max_residues={max_residues} exceeds the model's maximum of {limit} residues per pass "
            f"(max_position_embeddings={limit + 4}, global attention); use max_residues <= {limit} (the default), "
            "or a long model (config.attention_window set), which accepts any length"
        )
    windows = embedding_windows(len(seq), max_residues)
    for name in ("cls_token_id", "eos_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no {name}; use the ESM-2 tokenizer")
    residues = torch.tensor(tokenize_residues(tokenizer, seq), dtype=torch.long)
    cls = torch.tensor([tokenizer.cls_token_id], dtype=torch.long)
    eos = torch.tensor([tokenizer.eos_token_id], dtype=torch.long)

    if device is None:
        device = _model_device(model)
    else:
        device = torch.device(device)
        model.to(device)
    encoder = getattr(model, "base_model", model)
    sums: torch.Tensor | None = None  # float64 [n, hidden]
    counts = torch.zeros(len(seq), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in range(0, len(windows), batch_size):
                chunk: Sequence[tuple[int, int]] = windows[b : b + batch_size]
                ids = torch.stack([torch.cat([cls, residues[s:e], eos]) for s, e in chunk]).to(device)
                hidden = _last_hidden_state(encoder(input_ids=ids, attention_mask=torch.ones_like(ids)))
                if hidden.dim() != 3 or tuple(hidden.shape[:2]) != tuple(ids.shape):
                    raise ValueError(
                        f"{type(encoder).__name__} returned hidden states of shape {tuple(hidden.shape)} for input "
                        f"{tuple(ids.shape)}; expected [batch, tokens, hidden]"
                    )
                hidden = hidden.detach().to("cpu", torch.float64)
                if sums is None:
                    sums = torch.zeros(len(seq), hidden.shape[-1], dtype=torch.float64)
                for row, (s, e) in enumerate(chunk):
                    sums[s:e] += hidden[row, 1 : 1 + e - s]
                    counts[s:e] += 1
    finally:
        model.train(was_training)
    assert sums is not None and bool((counts > 0).all())
    per_residue = sums / counts[:, None]
    return ProteinEmbedding(
        per_residue=per_residue.to(torch.float32),
        mean=per_residue.mean(0).to(torch.float32),
        windows=tuple(windows),
    )
