"""Zero-shot fitness scores of substitution mutants from a masked language model: ProteinGym's ESM strategies.

Three strategies, as in ProteinGym's ESM baseline (``proteingym/baselines/esm/compute_fitness.py``,
``--scoring-strategy``); scores are natural-log likelihood ratios (nats), higher = predicted fitter:

* **masked-marginals** (Meier et al. 2021, ESM-1v, eq. 1; the strategy of the ESM-2 rows of ProteinGym's
  leaderboard): for each mutated position ``i`` the *wild-type* sequence is masked at ``i``::

      score = sum over substitutions (i, wt -> mt) of  log p(x_i = mt | x_{-i}) - log p(x_i = wt | x_{-i})

  One forward pass per unique mutated position.
* **wt-marginals** (Meier et al. 2021, "wildtype marginal"): one unmasked forward pass of the wild type; the same
  difference read at every mutated position: ``sum log p(x_i = mt | x) - log p(x_i = wt | x)``.
* **pseudo-ppl** (pseudo-log-likelihood, Salazar et al. 2020 "Masked Language Model Scoring", eq. 2; Meier et al.
  2021): ``PLL(s) = sum over every residue i of log p(s_i | s_{-i})``, one masked pass per residue of every
  sequence; ``score = PLL(mutant) - PLL(wild type)``. ProteinGym's ``compute_pppl`` reads ``sequence[i]`` at token
  ``i`` (one residue off, since ``<cls>`` is token 0) and skips the last residue; bitesm computes the definition
  above. The shift by ``PLL(wild type)`` changes no rank statistic. Cost: ``L`` passes per mutant.

Long proteins (more tokens ``T = L + 2`` than the model window ``W``), :func:`scoring_window`:

* a long model (``config.attention_window`` set; Long ESM-2, arXiv 2501.07747) reads the whole sequence in every
  pass (``"full"``);
* otherwise ProteinGym's rules with ``W = max_residues + 2`` (1,024 for ESM-2): masked passes (masked-marginals,
  pseudo-ppl) are cropped with :func:`get_optimal_window` around the masked token (``"optimal"``); the unmasked
  wt-marginals pass uses ProteinGym's ``"overlapping"`` windows with sigmoid edge weights
  (:func:`overlapping_windows`).

Batching: masked copies of equal length, from any positions and any sequences, share forward passes of up to
``batch_size`` rows, streamed (a pseudo-ppl run over thousands of mutants never holds all copies in memory); every
strategy equals its one-pass-per-copy definition up to float summation order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.collator import encode_protein
from ..errors import UserInputError
from .context import attention_window, default_max_residues, model_device
from .mutants import apply_mutant, parse_mutant, validate_mutants

__all__ = [
    "STRATEGIES",
    "ProteinGymInputError",
    "get_optimal_window",
    "overlapping_windows",
    "scoring_window",
    "encode_sequence",
    "score_mutants",
    "masked_marginals_scores",
    "wt_marginals_scores",
    "pseudo_ppl_scores",
]

#: Scoring strategies, named as ProteinGym's ``--scoring-strategy``.
STRATEGIES = ("masked-marginals", "wt-marginals", "pseudo-ppl")


class ProteinGymInputError(UserInputError):
    """An input of the ProteinGym evaluation (assay file, reference, assay id, tokenizer) is unusable.

    The message names the input and how to fix it.
    """


# ----------------------------------------------------------------------------------------------
# Windows and tokens
# ----------------------------------------------------------------------------------------------
def get_optimal_window(
    mutation_position_relative: int, seq_len_wo_special: int, model_window: int
) -> tuple[int, int]:
    """ProteinGym's scoring window for one masked token of a long sequence.

    Verbatim port of ``get_optimal_window`` in ``proteingym/utils/scoring_utils.py``
    (OATML-Markslab/ProteinGym). Despite ProteinGym's argument name, ``compute_fitness.py`` calls
    it with the token index (``<cls>`` at 0) and ``len(sequence) + 2`` -- the length *with*
    ``<cls>``/``<eos>`` -- and ``model_window=1024``; use it the same way.

    Args:
        mutation_position_relative: token index ``i`` of the masked token (residue position
            ``p`` (1-based) has token index ``p`` because ``<cls>`` occupies index 0).
        seq_len_wo_special: total number of tokens ``T`` (residues + 2).
        model_window: window length ``W`` in tokens.

    Returns:
        ``(start, end)``: slice bounds into the token sequence (``end`` exclusive). ``end - start``
        is ``T`` if ``T <= W``, else ``W`` at the two ends and ``2 * (W // 2)`` in the middle.
    """
    half_model_window = model_window // 2
    if seq_len_wo_special <= model_window:
        return 0, seq_len_wo_special
    elif mutation_position_relative < half_model_window:
        return 0, model_window
    elif mutation_position_relative >= seq_len_wo_special - half_model_window:
        return seq_len_wo_special - model_window, seq_len_wo_special
    else:
        return (
            max(0, mutation_position_relative - half_model_window),
            min(seq_len_wo_special, mutation_position_relative + half_model_window),
        )


def encode_sequence(tokenizer: Any, sequence: str) -> torch.Tensor:
    """Token ids of ``<cls> sequence <eos>``, one token per residue.

    Identical to ``tokenizer(sequence)["input_ids"]`` for the ESM-2 tokenizer (and to fair-esm's
    batch converter, which ProteinGym uses), without the per-call tokenizer overhead.

    Args:
        tokenizer: ESM-2 tokenizer (needs ``get_vocab()``, ``cls_token_id``, ``eos_token_id``).
        sequence: residues, one letter each (upper-case).

    Returns:
        ``torch.int64`` tensor of shape ``(len(sequence) + 2,)`` on CPU.

    Raises:
        ProteinGymInputError: a residue has no token in the vocabulary.
    """
    if tokenizer.cls_token_id is None or tokenizer.eos_token_id is None:
        raise ProteinGymInputError(
            f"Tokenizer {type(tokenizer).__name__} has no <cls>/<eos> token; use the ESM-2 tokenizer."
        )
    try:
        return torch.tensor(encode_protein(tokenizer, sequence), dtype=torch.long)
    except ValueError as err:
        raise ProteinGymInputError(f"{err} Use the ESM-2 tokenizer and the assay's own target_seq.") from err


def overlapping_windows(n_tokens: int, model_window: int) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """ProteinGym's ``"overlapping"`` windows for one unmasked pass over a sequence longer than the model window.

    Port of the ``wt-marginals`` / ``--scoring-window overlapping`` branch of ProteinGym's
    ``proteingym/baselines/esm/compute_fitness.py`` with its constants written as fractions of ``W`` (equal to
    ProteinGym's for ``W = 1024``: ramp 256 = W/4, ramp centre 128 = W/8, slope 16 = W/64, stride 511 = W/2 - 1).
    Windows of ``W`` tokens walk in from both ends by the stride until they overlap, plus a central window when the
    final overlap is narrower than the stride; each window's log-probabilities are weighted per token by a
    sigmoid that fades in over its first ramp and out over its last (token 0 and token ``W - 1`` keep weight 1,
    as in ProteinGym), and the weighted sum is divided by the summed weights.

    Args:
        n_tokens: ``T`` tokens of ``<cls> seq <eos>``; must exceed ``model_window``.
        model_window: ``W`` tokens per pass (>= 64).

    Returns:
        ``(windows, weights)``: ``[(start, end_exclusive), ...]`` each of length ``W``, and the per-token weights,
        ``torch.float32`` of shape ``(W,)``.

    Raises:
        ValueError: ``n_tokens <= model_window`` or ``model_window < 64``.
    """
    if model_window < 64 or n_tokens <= model_window:
        raise ValueError(
            f"overlapping windows need model_window >= 64 < n_tokens, got model_window={model_window}, "
            f"n_tokens={n_tokens}"
        )
    w = model_window
    ramp, centre, slope, stride = w // 4, w // 8, w / 64, w // 2 - 1
    weights = torch.ones(w, dtype=torch.float32)
    for i in range(1, ramp + 1):
        weights[i] = 1 / (1 + math.exp(-(i - centre) / slope))
    for i in range(w - 2 - ramp, w - 1):
        weights[i] = 1 / (1 + math.exp((i - (w - 2) + centre) / slope))
    windows = []
    left_start, left_end = 0, w - 1  # inclusive bounds, as in ProteinGym
    right_start, right_end = n_tokens - w, n_tokens - 1
    while True:
        windows.append((left_start, left_end + 1))
        windows.append((right_start, right_end + 1))
        if left_end > right_start:
            break
        left_start, left_end = left_start + stride, left_end + stride
        right_start, right_end = right_start - stride, right_end - stride
    if left_end - right_start + 1 < stride:
        centre_start = int(n_tokens / 2) - w // 2
        windows.append((centre_start, centre_start + w))
    return windows, weights


def scoring_window(model: Any, max_residues: int | None = None) -> tuple[str, int | None]:
    """The window policy for ``model`` (module docstring: "Long proteins").

    Args:
        model: the scoring model (its ``config.attention_window`` and ``config.max_position_embeddings`` are read).
        max_residues: explicit residues per pass; ``None`` = the model's own rule.

    Returns:
        ``("full", None)``: every pass reads the whole ``<cls> seq <eos>`` (a long model with no explicit
        ``max_residues``, or a model whose config gives no maximum); ``("optimal", W)``: ProteinGym's windows with
        ``W = max_residues + 2`` tokens (``max_residues`` defaults to :func:`default_max_residues`: ``W = 1024`` for
        ESM-2).

    Raises:
        ValueError: ``max_residues < 1``.
    """
    if max_residues is None:
        if attention_window(model) is not None:
            return "full", None
        max_residues = default_max_residues(model)
        if max_residues is None:
            return "full", None
    if int(max_residues) < 1:
        raise ValueError(f"max_residues must be >= 1, got {max_residues}")
    return "optimal", int(max_residues) + 2


# ----------------------------------------------------------------------------------------------
# Forward passes
# ----------------------------------------------------------------------------------------------
def _logits(output: Any) -> torch.Tensor:
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict):
        return output["logits"]
    return output[0]


class _Runner:
    """Runs ``model`` in eval mode under ``inference_mode`` on ``device``; restores training mode on exit."""

    def __init__(self, model: torch.nn.Module, device: Any) -> None:
        self.model = model
        if device is None:
            self.device = model_device(model)
        else:
            self.device = torch.device(device)
            model.to(self.device)

    def __enter__(self) -> "_Runner":
        self.was_training = self.model.training
        self.model.eval()
        self._inference = torch.inference_mode()
        self._inference.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._inference.__exit__(*exc)
        self.model.train(self.was_training)

    def log_probs(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` int64 tokens -> ``(B, T, V)`` float32 log-softmax of the logits, on the model's device."""
        batch = batch.to(self.device)
        out = self.model(input_ids=batch, attention_mask=torch.ones_like(batch))
        return torch.log_softmax(_logits(out).float(), dim=-1)


def _run_masked(
    runner: _Runner,
    jobs: Iterable[tuple[Any, torch.Tensor, int]],
    n_jobs: int,
    batch_size: int,
    consume: Callable[[list[Any], torch.Tensor], None],
    desc: str,
    progress: bool,
) -> dict[str, int]:
    """Stream masked copies through the model, ``batch_size`` copies of equal length per pass.

    ``jobs`` yields ``(key, tokens, read)``: a 1-D int64 token tensor (already cropped, ``<mask>`` at ``read``) and
    the index whose log-probabilities are wanted; ``consume(keys, rows)`` receives each pass's ``(b, V)`` float32
    rows (CPU) in job order within the pass. Returns ``{"n_forward_batches", "max_forward_tokens"}``.
    """
    buffers: dict[int, list[tuple[Any, torch.Tensor, int]]] = defaultdict(list)
    stats = {"n_forward_batches": 0, "max_forward_tokens": 0}
    bar = tqdm(total=n_jobs, desc=desc, disable=not progress, leave=False, unit="pass")

    def flush(length: int) -> None:
        items = buffers.pop(length)
        batch = torch.stack([t for _, t, _ in items])
        read = torch.tensor([r for _, _, r in items], device=runner.device)
        rows = runner.log_probs(batch)[torch.arange(len(items), device=runner.device), read].cpu()
        consume([k for k, _, _ in items], rows)
        stats["n_forward_batches"] += 1
        stats["max_forward_tokens"] = max(stats["max_forward_tokens"], length)
        bar.update(len(items))

    for key, tokens, read in jobs:
        length = int(tokens.numel())
        buffers[length].append((key, tokens, read))
        if len(buffers[length]) >= batch_size:
            flush(length)
    for length in sorted(buffers):
        flush(length)
    bar.close()
    return stats


def _masked_copy(ids: torch.Tensor, i: int, window: int | None, mask_id: int) -> tuple[torch.Tensor, int, bool]:
    """``ids`` masked at token ``i`` and cropped with ProteinGym's optimal window: ``(tokens, read, cropped)``."""
    n = ids.numel()
    if window is not None and n > window:
        start, end = get_optimal_window(i, n, window)
    else:
        start, end = 0, n
    tokens = ids[start:end].clone()
    tokens[i - start] = mask_id
    return tokens, i - start, (start, end) != (0, n)


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------
def _prepare(tokenizer: Any, target_seq: str, mutants: Sequence[str], batch_size: int, assay_id: str):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seq = str(target_seq).strip().upper()
    mutants = list(mutants)
    validate_mutants(seq, mutants, assay_id)
    if tokenizer.mask_token_id is None:
        raise ProteinGymInputError(
            f"Tokenizer {type(tokenizer).__name__} has no <mask> token; use the ESM-2 tokenizer."
        )
    return seq, mutants, tokenizer.get_vocab(), encode_sequence(tokenizer, seq)


def _substitution_delta(mutants: Sequence[str], vocab: dict, row_log_probs: Callable[[int], torch.Tensor]) -> np.ndarray:
    """``sum over (wt, p, mt) of lp[p, mt] - lp[p, wt]`` per mutant, in float64, ``lp[p] = row_log_probs(p)``."""
    scores = np.zeros(len(mutants), dtype=np.float64)
    for k, mutant in enumerate(mutants):
        for wt, pos, mt in parse_mutant(mutant):
            row = row_log_probs(pos - 1)
            scores[k] += float(row[vocab[mt]].double()) - float(row[vocab[wt]].double())
    return scores


def _masked_marginals(runner, tokenizer, seq, mutants, vocab, ids, window, batch_size, progress, assay_id):
    positions = sorted({pos - 1 for m in mutants for _, pos, _ in parse_mutant(m)})
    n_windowed = 0
    log_probs: dict[int, torch.Tensor] = {}

    def jobs() -> Iterator[tuple[int, torch.Tensor, int]]:
        nonlocal n_windowed
        for p in positions:
            tokens, read, cropped = _masked_copy(ids, p + 1, window, tokenizer.mask_token_id)
            n_windowed += cropped
            yield p, tokens, read

    def consume(keys: list[int], rows: torch.Tensor) -> None:
        for p, row in zip(keys, rows):
            log_probs[p] = row

    stats = _run_masked(runner, jobs(), len(positions), batch_size, consume, f"{assay_id}: masked-marginals", progress)
    scores = _substitution_delta(mutants, vocab, log_probs.__getitem__)
    return scores, {**stats, "n_positions": len(positions), "n_windowed_positions": n_windowed,
                    "n_forward_sequences": len(positions)}


def _wt_marginals(runner, tokenizer, seq, mutants, vocab, ids, window, batch_size, progress, assay_id):
    n = ids.numel()
    if window is None or n <= window:
        log_probs = runner.log_probs(ids[None])[0].cpu()
        windows = [(0, n)]
    else:
        windows, weights = overlapping_windows(n, window)
        total: torch.Tensor | None = None  # (T, V) weighted sum of log-probabilities
        weight_sum = torch.zeros(n)
        for b in tqdm(range(0, len(windows), batch_size), desc=f"{assay_id}: wt-marginals", disable=not progress,
                      leave=False):
            chunk = windows[b : b + batch_size]
            lp = runner.log_probs(torch.stack([ids[s:e] for s, e in chunk])).cpu()
            if total is None:
                total = torch.zeros(n, lp.shape[-1])
            for (s, e), rows in zip(chunk, lp):
                total[s:e] += rows * weights[:, None]
                weight_sum[s:e] += weights
        log_probs = total / weight_sum[:, None]
    scores = _substitution_delta(mutants, vocab, lambda p: log_probs[p + 1])
    positions = {pos for m in mutants for _, pos, _ in parse_mutant(m)}
    return scores, {"n_forward_batches": math.ceil(len(windows) / batch_size),
                    "max_forward_tokens": max(e - s for s, e in windows), "n_positions": len(positions),
                    "n_windowed_positions": len(positions) if len(windows) > 1 else 0,
                    "n_forward_sequences": len(windows)}


def _pseudo_ppl(runner, tokenizer, seq, mutants, vocab, ids, window, batch_size, progress, assay_id):
    sequences = list(dict.fromkeys([seq] + [apply_mutant(seq, m) for m in mutants]))
    index = {s: k for k, s in enumerate(sequences)}
    pll = np.zeros(len(sequences), dtype=np.float64)
    n_windowed = 0

    def jobs() -> Iterator[tuple[tuple[int, int], torch.Tensor, int]]:
        nonlocal n_windowed
        for k, s in enumerate(sequences):
            s_ids = encode_sequence(tokenizer, s)
            for i in range(1, len(s) + 1):
                tokens, read, cropped = _masked_copy(s_ids, i, window, tokenizer.mask_token_id)
                n_windowed += cropped
                yield (k, int(s_ids[i])), tokens, read

    def consume(keys: list[tuple[int, int]], rows: torch.Tensor) -> None:
        seq_idx = torch.tensor([k for k, _ in keys])
        target = torch.tensor([t for _, t in keys])
        np.add.at(pll, seq_idx.numpy(), rows[torch.arange(len(keys)), target].double().numpy())

    n_jobs = len(sequences) * len(seq)
    stats = _run_masked(runner, jobs(), n_jobs, batch_size, consume, f"{assay_id}: pseudo-ppl", progress)
    scores = np.array([pll[index[apply_mutant(seq, m)]] - pll[0] for m in mutants], dtype=np.float64)
    return scores, {**stats, "n_positions": len(seq), "n_windowed_positions": n_windowed // len(sequences),
                    "n_forward_sequences": n_jobs}


_STRATEGY_FUNCTIONS = {
    "masked-marginals": _masked_marginals,
    "wt-marginals": _wt_marginals,
    "pseudo-ppl": _pseudo_ppl,
}


def score_mutants(
    model: torch.nn.Module,
    tokenizer: Any,
    target_seq: str,
    mutants: Sequence[str],
    strategy: str = "masked-marginals",
    batch_size: int = 32,
    max_residues: int | None = None,
    device: Any = None,
    progress: bool = False,
    assay_id: str = "<assay>",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Zero-shot scores of substitution mutants with one of ProteinGym's ESM strategies (module docstring).

    Args:
        model: masked LM with the ESM-2 vocabulary (``EsmForMaskedLM`` or a bitesm model), called as
            ``model(input_ids=(B, T) int64, attention_mask=(B, T) int64)`` and returning logits ``(B, T, vocab)``
            in any float dtype (fp32 or bf16; the log-softmax is always float32). Put in eval mode for the call
            (training mode restored) and moved to ``device`` if one is given.
        tokenizer: the ESM-2 tokenizer (``transformers.EsmTokenizer``).
        target_seq: wild-type sequence (upper-cased, as ProteinGym does), length ``L``.
        mutants: ``N`` mutant strings, ``"A23C"`` or ``"A23C:G45W"``, 1-based positions on ``target_seq``.
        strategy: one of :data:`STRATEGIES`.
        batch_size: sequences per forward pass.
        max_residues: residues per pass with ``<cls>``/``<eos>`` (``W = max_residues + 2``); default: the whole
            sequence for a long model, else :func:`default_max_residues` (1,022 for ESM-2: ProteinGym's ``W = 1024``).
        device: where to run; default the model's device.
        progress: a tqdm bar over forward passes.
        assay_id: name used in errors and progress bars.

    Returns:
        ``(scores, info)``: ``numpy.ndarray`` ``(N,)`` float64 in nats, in the order of ``mutants``, higher =
        predicted fitter; ``info`` = ``{"strategy", "scoring_window": "full" | "optimal", "model_window": W or
        None, "max_forward_tokens", "n_positions" (unique mutated positions; residues for pseudo-ppl),
        "n_windowed_positions" (positions whose pass was cropped), "n_forward_sequences" (sequences given to the
        model), "n_forward_batches"}``.

    Raises:
        MutantMismatchError: a mutant is malformed or does not match ``target_seq`` (names the assay and mutant).
        ProteinGymInputError: the tokenizer lacks ``<mask>``/``<cls>``/``<eos>`` or a residue token.
        ValueError: unknown ``strategy``, ``batch_size < 1`` or ``max_residues < 1``.

    Source: ``proteingym/baselines/esm/compute_fitness.py`` (``label_row``, ``compute_pppl``, the strategy branches)
    and ``proteingym/utils/scoring_utils.py`` (``get_optimal_window``), OATML-Markslab/ProteinGym; Meier et al.
    2021; Salazar et al. 2020.
    """
    if strategy not in _STRATEGY_FUNCTIONS:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    seq, mutants, vocab, ids = _prepare(tokenizer, target_seq, mutants, batch_size, assay_id)
    policy, window = scoring_window(model, max_residues)
    with _Runner(model, device) as runner:
        scores, info = _STRATEGY_FUNCTIONS[strategy](
            runner, tokenizer, seq, mutants, vocab, ids, window, batch_size, progress, assay_id
        )
    return scores, {"strategy": strategy, "scoring_window": policy, "model_window": window, **info}


def _strategy_doc(strategy: str) -> str:
    return f"""{strategy} scores of substitution mutants: :func:`score_mutants` with ``strategy="{strategy}"``.

    Args and errors as in :func:`score_mutants`.

    Returns:
        ``numpy.ndarray`` of shape ``(N,)``, dtype float64: log-likelihood ratios in nats, in the order of
        ``mutants``; higher = predicted fitter.
    """


def masked_marginals_scores(model, tokenizer, target_seq, mutants, **kwargs: Any) -> np.ndarray:
    return score_mutants(model, tokenizer, target_seq, mutants, strategy="masked-marginals", **kwargs)[0]


def wt_marginals_scores(model, tokenizer, target_seq, mutants, **kwargs: Any) -> np.ndarray:
    return score_mutants(model, tokenizer, target_seq, mutants, strategy="wt-marginals", **kwargs)[0]


def pseudo_ppl_scores(model, tokenizer, target_seq, mutants, **kwargs: Any) -> np.ndarray:
    return score_mutants(model, tokenizer, target_seq, mutants, strategy="pseudo-ppl", **kwargs)[0]


masked_marginals_scores.__doc__ = _strategy_doc("masked-marginals")
wt_marginals_scores.__doc__ = _strategy_doc("wt-marginals")
pseudo_ppl_scores.__doc__ = _strategy_doc("pseudo-ppl")
