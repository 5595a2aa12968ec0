"""Masked-language-model loss and perplexity on held-out sequences (validation during training, PTQ analysis)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader

from ..data.collator import MLMCollator


def validation_collator(collator: MLMCollator, seed: int, masked_only: bool) -> MLMCollator:
    """A deterministic copy of a training collator for validation.

    Crops are fixed (the first ``max_length - 2`` residues) and masks come from a generator seeded with ``seed``.
    ``masked_only=False`` corrupts as in training (80% ``<mask>`` / 10% random / 10% kept); ``True`` replaces every
    selected residue by ``<mask>``, so the loss measures prediction from context alone.
    """
    replace = dict(mask_replace_prob=1.0, random_replace_prob=0.0) if masked_only else {}
    return dataclasses.replace(
        collator, random_crop=False, generator=torch.Generator().manual_seed(seed), **replace
    )


@torch.no_grad()
def masked_lm_loss_sums(
    model: torch.nn.Module, batches: Iterable[dict], autocast=contextlib.nullcontext
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (nats) over labelled positions and the per-token counts of the targets.

    Args:
        model: a masked LM returning ``logits [batch, seq, vocab]``.
        batches: dicts with ``input_ids``, ``attention_mask`` and ``labels`` (LongTensors ``[batch, seq]``, -100 =
            not scored), already on the model's device.
        autocast: a context-manager factory for mixed precision.

    Returns:
        ``(totals, counts)``: float64 tensor ``[2]`` = (loss sum, number of targets) and float64 ``[vocab]`` target
        counts, on the model's device, ready to be summed across processes.
    """
    device = next(model.parameters()).device
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    counts = torch.zeros(model.config.vocab_size, dtype=torch.float64, device=device)
    for batch in batches:
        with autocast():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        totals[0] += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="sum"
        ).double()
        targets = batch["labels"][batch["labels"] != -100]
        totals[1] += targets.numel()
        counts += torch.bincount(targets, minlength=counts.numel()).double()
    return totals, counts


def summarize(totals: torch.Tensor, counts: torch.Tensor) -> dict:
    """Mean loss (nats), perplexity ``exp(loss)``, and the unigram entropy of the targets (nats)."""
    loss = (totals[0] / totals[1].clamp(min=1)).item()
    p = counts[counts > 0] / counts.sum()
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "unigram_entropy": float(-(p * p.log()).sum()),
        "masked_tokens": int(totals[1]),
    }


def evaluate_mlm(
    model: torch.nn.Module,
    tokenizer,
    sequences: Sequence[str],
    max_length: int = 512,
    mask_rate: float = 0.15,
    seed: int = 0,
    batch_size: int = 16,
    masked_only: bool = False,
) -> dict:
    """MLM loss and perplexity of ``model`` on ``sequences`` with fixed crops and masks (see
    :func:`validation_collator`); returns :func:`summarize`'s dict.

    Raises:
        ValueError: no sequences.
    """
    if not sequences:
        raise ValueError("evaluate_mlm needs at least one sequence")
    collator = validation_collator(MLMCollator(tokenizer, max_length=max_length, mask_rate=mask_rate), seed, masked_only)
    device = next(model.parameters()).device
    loader = DataLoader([{"sequence": s} for s in sequences], batch_size=batch_size, collate_fn=collator)
    was_training = model.training
    model.eval()
    totals, counts = masked_lm_loss_sums(model, ({k: v.to(device) for k, v in b.items()} for b in loader))
    model.train(was_training)
    return summarize(totals, counts)
