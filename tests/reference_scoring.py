"""An independent, deliberately plain implementation of ProteinGym's ESM scoring strategies and its summary.

Written from ProteinGym's ``proteingym/baselines/esm/compute_fitness.py`` and ``performance_DMS_benchmarks.py``
with transformers, scipy and pandas only (masked copies stacked in plain batches of up to 64, no streaming, no
caching across sequences), and no import from ``bitesm`` -- so comparing it with :mod:`bitesm.evaluation` checks the library, not itself. Used by
``tests/test_eval_protocol.py`` and ``benchmarks/proteingym_strategies.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr


def optimal_window(i: int, n_tokens: int, window: int) -> tuple[int, int]:
    """ProteinGym's ``get_optimal_window`` (token index ``i``, ``n_tokens`` with <cls>/<eos>)."""
    half = window // 2
    if n_tokens <= window:
        return 0, n_tokens
    if i < half:
        return 0, window
    if i >= n_tokens - half:
        return n_tokens - window, n_tokens
    return max(0, i - half), min(n_tokens, i + half)


def _log_probs(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=tokens[None], attention_mask=torch.ones_like(tokens)[None]).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def _subs(mutant: str):
    for sub in mutant.split(":"):
        yield sub[0], int(sub[1:-1]), sub[-1]


def _masked_rows(model, tokenizer, ids: torch.Tensor, positions, window: int | None) -> dict[int, torch.Tensor]:
    """log p(. | ids masked at token i) for each token index i, cropped by ProteinGym's window, 64 copies a pass."""
    copies = []
    for i in positions:
        masked = ids.clone()
        masked[i] = tokenizer.mask_token_id
        start, end = optimal_window(i, len(ids), window) if window else (0, len(ids))
        copies.append((i, masked[start:end], i - start))
    rows = {}
    for length in sorted({len(t) for _, t, _ in copies}):
        group = [c for c in copies if len(c[1]) == length]
        for b in range(0, len(group), 64):
            chunk = group[b : b + 64]
            batch = torch.stack([t for _, t, _ in chunk])
            with torch.no_grad():
                logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
            lp = torch.log_softmax(logits.float(), dim=-1)
            for k, (i, _, read) in enumerate(chunk):
                rows[i] = lp[k, read]
    return rows


def masked_marginals(model, tokenizer, seq: str, mutants, window: int | None) -> np.ndarray:
    vocab = tokenizer.get_vocab()
    ids = torch.tensor(tokenizer(seq)["input_ids"])
    positions = sorted({pos for m in mutants for _, pos, _ in _subs(m)})
    rows = _masked_rows(model, tokenizer, ids, positions, window)
    return np.array([sum(float(rows[p][vocab[mt]]) - float(rows[p][vocab[wt]]) for wt, p, mt in _subs(m))
                     for m in mutants])


def wt_marginals(model, tokenizer, seq: str, mutants, window: int | None) -> np.ndarray:
    """ProteinGym's wt-marginals; longer than ``window`` (1,024 there): the "overlapping" weighted windows."""
    vocab = tokenizer.get_vocab()
    ids = torch.tensor(tokenizer(seq)["input_ids"])
    n = len(ids)
    if not window or n <= window:
        lp = _log_probs(model, ids)
    else:
        w = window
        weights = torch.ones(w)
        for i in range(1, w // 4 + 1):
            weights[i] = 1 / (1 + math.exp(-(i - w // 8) / (w / 64)))
        for i in range(w - 2 - w // 4, w - 1):
            weights[i] = 1 / (1 + math.exp((i - (w - 2) + w // 8) / (w / 64)))
        total = torch.zeros(n, len(vocab))
        wsum = torch.zeros(n)
        ls, le, rs, re_ = 0, w - 1, n - w, n - 1
        while True:
            for s, e in ((ls, le), (rs, re_)):
                total[s : e + 1] += _log_probs(model, ids[s : e + 1]) * weights[:, None]
                wsum[s : e + 1] += weights
            if le > rs:
                break
            ls, le, rs, re_ = ls + w // 2 - 1, le + w // 2 - 1, rs - (w // 2 - 1), re_ - (w // 2 - 1)
        if le - rs + 1 < w // 2 - 1:
            cs = int(n / 2) - w // 2
            total[cs : cs + w] += _log_probs(model, ids[cs : cs + w]) * weights[:, None]
            wsum[cs : cs + w] += weights
        lp = total / wsum[:, None]
    return np.array([sum(float(lp[p, vocab[mt]]) - float(lp[p, vocab[wt]]) for wt, p, mt in _subs(m)) for m in mutants])


def pseudo_log_likelihood(model, tokenizer, seq: str, window: int | None) -> float:
    ids = torch.tensor(tokenizer(seq)["input_ids"])
    rows = _masked_rows(model, tokenizer, ids, range(1, len(seq) + 1), window)
    return float(sum(float(rows[i][ids[i]]) for i in range(1, len(seq) + 1)))


def pseudo_ppl(model, tokenizer, seq: str, mutants, window: int | None) -> np.ndarray:
    base = pseudo_log_likelihood(model, tokenizer, seq, window)
    out = []
    for mutant in mutants:
        residues = list(seq)
        for _, pos, mt in _subs(mutant):
            residues[pos - 1] = mt
        out.append(pseudo_log_likelihood(model, tokenizer, "".join(residues), window) - base)
    return np.array(out)


STRATEGIES = {"masked-marginals": masked_marginals, "wt-marginals": wt_marginals, "pseudo-ppl": pseudo_ppl}


def spearman(scores, dms_score) -> float:
    return float(spearmanr(scores, dms_score).statistic)


def proteingym_summary(per_assay: dict[str, float], reference: pd.DataFrame) -> float:
    """ProteinGym's ``Average``: round to 3 decimals, mean per (UniProt_ID, selection type), per type, overall."""
    df = pd.DataFrame({"DMS_id": list(per_assay), "value": list(per_assay.values())})
    df["value"] = df["value"].round(3)  # as ProteinGym rounds per-assay values
    df = df.merge(reference[["DMS_id", "UniProt_ID", "coarse_selection_type"]], on="DMS_id")
    per_protein = df.groupby(["UniProt_ID", "coarse_selection_type"])["value"].mean().reset_index()
    return float(per_protein.groupby("coarse_selection_type")["value"].mean().mean())
