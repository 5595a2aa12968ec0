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

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..data.collator import tokenize_residues
from ..data.fasta import validate_sequence
from ..errors import UserInputError
from ..io import follow_umask
from .context import attention_window, default_max_residues, model_device

__all__ = [
    "EMBEDDINGS_FORMAT",
    "EmbeddingInputError",
    "EmbeddingSet",
    "EmbeddingsFileNotFoundError",
    "ProteinEmbedding",
    "embed_protein",
    "embed_sequences",
    "embedding_windows",
    "load_embeddings",
    "save_embeddings",
]


class EmbeddingInputError(UserInputError):
    """An embedding input or option is unusable (an empty protein, a ``layer`` or ``max_residues`` out of range, a
    file that is not a bitesm embeddings file); the message names it and the fix."""


class EmbeddingsFileNotFoundError(EmbeddingInputError, FileNotFoundError):
    """An embeddings file does not exist (also a ``FileNotFoundError``)."""


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
        EmbeddingInputError: ``n_residues < 1`` or ``max_residues < 1`` (a ``ValueError``).
    """
    if isinstance(n_residues, bool) or not isinstance(n_residues, int) or n_residues < 1:
        raise EmbeddingInputError(f"n_residues must be an int >= 1, got {n_residues!r}")
    if max_residues is not None and (
        isinstance(max_residues, bool) or not isinstance(max_residues, int) or max_residues < 1
    ):
        raise EmbeddingInputError(f"max_residues must be an int >= 1 or None, got {max_residues!r}")
    if max_residues is None or n_residues <= max_residues:
        return [(0, n_residues)]
    k = math.ceil(n_residues / max_residues)
    windows = [(i * max_residues, (i + 1) * max_residues) for i in range(k - 1)]
    windows.append((n_residues - max_residues, n_residues))
    return windows


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
        EmbeddingInputError: the sequence is empty; ``max_residues`` or ``batch_size`` < 1; ``max_residues`` above
            a standard model's maximum; the tokenizer lacks ``<cls>``/``<eos>``.
        ValueError: the tokenizer lacks a residue; the model's output is not ``[B, T, hidden]``.
        TypeError: ``sequence`` is not a string.

    Source: Long ESM-2 (arXiv 2501.07747): windows of the model's maximum length, embeddings averaged per
    position; the end-aligned last window is bitesm's choice (module docstring).
    """
    if not isinstance(sequence, str):
        raise TypeError(f"sequence of {record_id!r} must be a str of residue letters, got {type(sequence).__name__}")
    seq = validate_sequence(sequence, record_id)
    if not seq:
        raise EmbeddingInputError(f"Record {record_id!r} has no residues; embed a non-empty protein sequence.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EmbeddingInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    limit = default_max_residues(model)
    if max_residues is None:
        max_residues = limit
    elif attention_window(model) is None and limit is not None and max_residues > limit:
        raise EmbeddingInputError(
            f"max_residues={max_residues} exceeds the model's maximum of {limit} residues per pass "
            f"(max_position_embeddings={limit + 4}, global attention); use max_residues <= {limit} (the default), "
            "or a long model (config.attention_window set), which accepts any length"
        )
    windows = embedding_windows(len(seq), max_residues)
    longest = max(e - s for s, e in windows) + 2
    out = embed_sequences(model, tokenizer, [(record_id, seq)], per_residue=True, max_residues=max_residues,
                          max_tokens=batch_size * longest, device=device)
    return ProteinEmbedding(per_residue=out.per_residue[0], mean=out.mean[0], windows=tuple(windows))


# ----------------------------------------------------------------------------------------------
# Many proteins: batched by length, stored in safetensors (bitesm embed)
# ----------------------------------------------------------------------------------------------
#: ``format`` metadata of a bitesm embeddings file.
EMBEDDINGS_FORMAT = "bitesm-embeddings-v1"


class EmbeddingSet(NamedTuple):
    """Embeddings of many proteins (:func:`embed_sequences`, :func:`load_embeddings`).

    Attributes:
        ids: protein ids, in input order (``N``).
        mean: ``torch.float32`` ``[N, hidden]``: mean over each protein's residues.
        per_residue: ``None``, or a list of ``N`` ``torch.float32`` tensors ``[n_residues_i, hidden]``.
        metadata: ``{"model", "layer", "max_residues", ...}`` as strings.
    """

    ids: list[str]
    mean: torch.Tensor
    per_residue: list[torch.Tensor] | None
    metadata: dict[str, str]


def _check_layer(model: torch.nn.Module, layer: int | None) -> None:
    """``layer`` must index the model's hidden states (``0..L`` or ``-(L+1)..-1`` for ``L`` layers)."""
    if layer is None:
        return
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise EmbeddingInputError(f"layer must be an int (a hidden-state index) or None, got {layer!r}")
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if isinstance(n_layers, int) and not -(n_layers + 1) <= layer <= n_layers:
        raise EmbeddingInputError(
            f"layer={layer} is out of range for a model with {n_layers} layers: hidden states 0..{n_layers} "
            f"(0 = the embeddings, k = after layer k; -1..-{n_layers + 1} from the end). Fix: a layer in 0..{n_layers}, "
            "or none for the final representation"
        )


def _hidden_at(encoder: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, layer: int | None) -> torch.Tensor:
    if layer is None:
        return _last_hidden_state(encoder(input_ids=ids, attention_mask=mask))
    out = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states[layer]


def embed_sequences(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[tuple[str, str]],
    layer: int | None = None,
    per_residue: bool = False,
    max_residues: int | None = None,
    max_tokens: int = 16_384,
    device: Any = None,
    progress: bool = False,
) -> EmbeddingSet:
    """Embeddings of many proteins of any length, windows of all proteins batched together by length.

    Every protein is cut into the windows of :func:`embedding_windows` (one window when it fits; for a long model
    with ``max_residues=None``, always one window: its attention reads any length); all windows of all proteins are
    sorted by length and sent through the model in right-padded batches of at most ``max_tokens`` tokens; each
    residue's vectors are averaged over the windows covering it, then over the protein (as :func:`embed_protein`,
    whose single-protein result this equals up to float summation order).

    Args:
        model, tokenizer: as in :func:`embed_protein`.
        records: ``(id, sequence)`` pairs (e.g. :func:`bitesm.data.read_fasta`); sequences are validated.
        layer: hidden-state index (``0`` = embeddings output, ``k`` = after layer ``k``; negative from the end);
            ``None`` = the final representation (``last_hidden_state``, after ESM-2's final layer norm).
        per_residue: also return per-residue vectors.
        max_residues: residues per pass (default: the model's maximum for a standard model; unlimited for a long
            model).
        max_tokens: padded tokens per forward pass (batch size times the longest window).
        device: where to run; default the model's device.
        progress: a tqdm bar over proteins' windows.

    Returns:
        :class:`EmbeddingSet` (``mean`` float32 ``[N, hidden]`` on CPU).

    Raises:
        bitesm.data.InvalidResidueError: a residue is not an ESM-2 letter (names the record and position).
        EmbeddingInputError: an empty sequence or no records; ``max_tokens < 1``; ``max_residues`` above a standard
            model's maximum; ``layer`` out of range (checked against ``config.num_hidden_layers`` before any forward
            pass, naming the valid range).
        ValueError: the model's output is not ``[batch, tokens, hidden]``.
    """
    from tqdm.auto import tqdm

    if not records:
        raise EmbeddingInputError("no proteins to embed: records is empty")
    if max_tokens < 1:
        raise EmbeddingInputError(f"max_tokens must be >= 1, got {max_tokens}")
    _check_layer(model, layer)
    limit = default_max_residues(model)
    long_model = attention_window(model) is not None
    if max_residues is None:
        max_residues = None if long_model else limit
    elif not long_model and limit is not None and max_residues > limit:
        raise EmbeddingInputError(f"max_residues={max_residues} exceeds the model's maximum of {limit} residues per "
                                  f"pass; use max_residues <= {limit} (the default), or a long model")
    for name in ("cls_token_id", "eos_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise EmbeddingInputError(f"tokenizer {type(tokenizer).__name__} has no {name}; use the ESM-2 tokenizer")
    ids = [str(i) for i, _ in records]
    tokens = []
    windows = []  # (protein index, start, end)
    for k, (record_id, sequence) in enumerate(records):
        seq = validate_sequence(sequence, str(record_id))
        if not seq:
            raise EmbeddingInputError(f"Record {record_id!r} has no residues; embed a non-empty protein sequence.")
        tokens.append(torch.tensor(tokenize_residues(tokenizer, seq), dtype=torch.long))
        windows += [(k, s, e) for s, e in embedding_windows(len(seq), max_residues)]
    windows.sort(key=lambda w: w[2] - w[1])

    if device is None:
        device = model_device(model)
    else:
        device = torch.device(device)
        model.to(device)
    encoder = getattr(model, "base_model", model)
    # Per protein: float64 sums over its windows until its last window is done; then only its mean (and, with
    # per_residue, its float32 per-residue vectors) is kept, so memory holds the proteins in flight, not all of them.
    sums: list[torch.Tensor | None] = [None] * len(records)
    counts: list[torch.Tensor | None] = [torch.zeros(len(t), dtype=torch.float64) for t in tokens]
    remaining = [0] * len(records)
    for k, _, _ in windows:
        remaining[k] += 1
    means: list[torch.Tensor | None] = [None] * len(records)
    residues: list[torch.Tensor | None] = [None] * len(records)
    cls, eos, pad = tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(windows), desc="embedding", unit="window", disable=not progress)
    try:
        with torch.inference_mode():
            start = 0
            while start < len(windows):
                longest = windows[start][2] - windows[start][1] + 2
                stop = start + 1
                while stop < len(windows) and (stop - start + 1) * (windows[stop][2] - windows[stop][1] + 2) <= max_tokens:
                    stop += 1
                chunk = windows[start:stop]
                longest = max(e - s for _, s, e in chunk) + 2
                ids_batch = torch.full((len(chunk), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), longest), dtype=torch.long)
                for row, (k, s, e) in enumerate(chunk):
                    ids_batch[row, : e - s + 2] = torch.cat([torch.tensor([cls]), tokens[k][s:e], torch.tensor([eos])])
                    mask[row, : e - s + 2] = 1
                try:
                    hidden = _hidden_at(encoder, ids_batch.to(device), mask.to(device), layer)
                except IndexError as err:
                    raise EmbeddingInputError(
                        f"layer={layer} is out of range for a model with {model.config.num_hidden_layers} layers "
                        f"(hidden states 0..{model.config.num_hidden_layers})"
                    ) from err
                if hidden.dim() != 3 or tuple(hidden.shape[:2]) != tuple(ids_batch.shape):
                    raise ValueError(
                        f"{type(encoder).__name__} returned hidden states of shape {tuple(hidden.shape)} for input "
                        f"{tuple(ids_batch.shape)}; expected [batch, tokens, hidden]"
                    )
                hidden = hidden.detach().to("cpu", torch.float64)
                for row, (k, s, e) in enumerate(chunk):
                    if sums[k] is None:
                        sums[k] = torch.zeros(len(tokens[k]), hidden.shape[-1], dtype=torch.float64)
                    sums[k][s:e] += hidden[row, 1 : 1 + e - s]
                    counts[k][s:e] += 1
                    remaining[k] -= 1
                    if remaining[k] == 0:
                        residue64 = sums[k] / counts[k][:, None]
                        means[k] = residue64.mean(0).to(torch.float32)
                        if per_residue:
                            residues[k] = residue64.to(torch.float32)
                        sums[k] = counts[k] = None
                bar.update(len(chunk))
                start = stop
    finally:
        bar.close()
        model.train(was_training)
    mean = torch.stack(means)
    metadata = {"format": EMBEDDINGS_FORMAT, "layer": "last" if layer is None else str(layer),
                "max_residues": "none" if max_residues is None else str(max_residues),
                "model": str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)}
    return EmbeddingSet(ids, mean, residues if per_residue else None, metadata)


def save_embeddings(embeddings: EmbeddingSet, path: str | Path) -> None:
    """Write an :class:`EmbeddingSet` to a safetensors file atomically (temporary file + ``os.replace``).

    Layout: tensor ``mean`` float32 ``[N, hidden]``; with per-residue vectors, ``residues`` float32
    ``[sum n_i, hidden]`` (proteins concatenated in order) and ``offsets`` int64 ``[N + 1]`` (protein ``i`` is
    ``residues[offsets[i]:offsets[i + 1]]``); metadata ``ids`` (JSON list) plus :attr:`EmbeddingSet.metadata`.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {"mean": embeddings.mean.contiguous()}
    if embeddings.per_residue is not None:
        lengths = torch.tensor([0] + [len(r) for r in embeddings.per_residue], dtype=torch.long)
        tensors["offsets"] = torch.cumsum(lengths, 0)
        tensors["residues"] = torch.cat(embeddings.per_residue).contiguous()
    metadata = {**embeddings.metadata, "ids": json.dumps(embeddings.ids)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    follow_umask(tmp)
    os.replace(tmp, path)


def load_embeddings(path: str | Path) -> EmbeddingSet:
    """Read a file written by :func:`save_embeddings`.

    Raises:
        EmbeddingsFileNotFoundError: no such file.
        EmbeddingInputError: not a bitesm embeddings file (no ``mean`` tensor or ``ids`` metadata).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise EmbeddingsFileNotFoundError(f"embeddings file {path} does not exist. Fix: write it with bitesm embed.")
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        keys = set(f.keys())
        if "mean" not in keys or "ids" not in metadata:
            raise EmbeddingInputError(f"{path} is not a bitesm embeddings file (format {EMBEDDINGS_FORMAT}). Fix: bitesm embed.")
        mean = f.get_tensor("mean")
        per_residue = None
        if "residues" in keys:
            residues, offsets = f.get_tensor("residues"), f.get_tensor("offsets").tolist()
            per_residue = [residues[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    ids = json.loads(metadata.pop("ids"))
    return EmbeddingSet(ids, mean, per_residue, metadata)
