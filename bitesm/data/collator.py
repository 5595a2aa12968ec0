"""Masked-language-model batch collation for ESM-2 pre-training.

Masking follows BERT / ESM-2: 15% of residue tokens are selected; of those 80%
become ``<mask>``, 10% a random residue and 10% stay unchanged; the loss is
computed on the selected positions only.

Sources
-------
* Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for
  Language Understanding", NAACL 2019, section 3.1 (80/10/10 rule).
* Lin et al., "Evolutionary-scale prediction of atomic-level protein structure
  with a language model", Science 2023 (ESM-2: 15% masking, random crop of
  long sequences to 1024 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .fasta import ESM_RESIDUES, STANDARD_AMINO_ACIDS

__all__ = ["MLMCollator", "encode_protein", "tokenize_residues"]

#: The 20 standard amino acids; random replacements are drawn from these only.

IGNORE_INDEX = -100


def _residue_lut(tokenizer) -> np.ndarray:
    """Byte -> token id lookup table (int64 [256]); -1 marks non-residues.

    Both upper- and lower-case letters map to the upper-case token.
    """
    vocab = tokenizer.get_vocab()
    lut = np.full(256, -1, dtype=np.int64)
    for aa in ESM_RESIDUES:
        if aa not in vocab:
            raise ValueError(
                f"Tokenizer vocabulary has no token for residue {aa!r}; use an "
                "ESM-2 tokenizer (bitesm.data.load_tokenizer())."
            )
        lut[ord(aa)] = lut[ord(aa.lower())] = vocab[aa]
    return lut


def _encode(lut: np.ndarray, sequence: str) -> np.ndarray:
    """Residue string -> int64 ids [L] (no special tokens); raises on bad chars."""
    try:
        raw = np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        raw = None
    ids = None if raw is None else lut[raw]
    if ids is None or (ids < 0).any():
        bad = next(
            (i, c) for i, c in enumerate(sequence)
            if not (c.isascii() and lut[ord(c)] >= 0)
        )
        raise ValueError(
            f"Sequence {sequence[:30]!r}... has invalid residue {bad[1]!r} at "
            f"position {bad[0] + 1} (1-based); allowed: {ESM_RESIDUES}. "
            "Validate inputs with bitesm.data.validate_sequence / iter_fasta."
        )
    return ids


def tokenize_residues(tokenizer, sequence: str) -> list[int]:
    """Map a residue string to token ids, without special tokens.

    Equivalent to ``tokenizer(sequence, add_special_tokens=False).input_ids``
    for upper-case sequences, but vectorised (and lower-case letters map to
    the upper-case tokens instead of ``<unk>``).

    Args:
        tokenizer: an ESM-2 tokenizer (see :func:`bitesm.data.load_tokenizer`).
        sequence: residues from :data:`bitesm.data.ESM_RESIDUES` (any case).

    Returns:
        list of ``len(sequence)`` token ids, e.g. ``"MKT"`` -> ``[20, 15, 11]``.

    Raises:
        ValueError: a character is not an ESM-2 residue letter (message names
            the position and character).
    """
    return _encode(_residue_lut(tokenizer), sequence).tolist()


def encode_protein(tokenizer, sequence: str) -> list[int]:
    """Token ids of one protein as ESM-2 reads it: ``<cls>``, one token per residue, ``<eos>``.

    Args:
        tokenizer: an ESM-2 tokenizer.
        sequence: residues from :data:`bitesm.data.ESM_RESIDUES` (any case).

    Returns:
        list of ``len(sequence) + 2`` ids, e.g. ``"MKT"`` -> ``[0, 20, 15, 11, 2]``.

    Raises:
        ValueError: a character is not an ESM-2 residue letter (see :func:`tokenize_residues`).
    """
    return [tokenizer.cls_token_id, *tokenize_residues(tokenizer, sequence), tokenizer.eos_token_id]


@dataclass(eq=False)
class MLMCollator:
    """Crop, tokenize, pad and mask a batch of protein sequences.

    Args:
        tokenizer: ESM-2 tokenizer (provides the vocabulary and the ids of
            ``<cls>``, ``<eos>``, ``<pad>``, ``<mask>``).
        max_length: maximum tokens per row *including* ``<cls>`` and ``<eos>``;
            sequences longer than ``max_length - 2`` residues are cropped.
            Must be >= 3.
        mask_rate: probability that a residue token is selected for the loss,
            in (0, 1). ``<cls>``, ``<eos>`` and ``<pad>`` are never selected.
        mask_replace_prob: probability that a selected token becomes ``<mask>``.
        random_replace_prob: probability that a selected token becomes a
            random standard amino acid (uniform over the 20 of
            :data:`STANDARD_AMINO_ACIDS`; may equal the original). The rest
            (``1 - mask_replace_prob - random_replace_prob``) stay unchanged.
            Both >= 0 with sum <= 1.
        random_crop: crop a window starting uniformly at random among the
            ``L - (max_length - 2) + 1`` valid starts; if False keep the first
            ``max_length - 2`` residues.
        generator: CPU ``torch.Generator`` used for every random draw (crop,
            selection, replacement). If None a new one is created, seeded from
            the global torch RNG (so ``torch.manual_seed`` makes it
            reproducible). ``collator.generator`` is always set, so
            ``collator.generator.get_state()`` / ``set_state()`` give exact
            resume. Note: with ``DataLoader(num_workers>0)`` every worker gets
            a copy of the generator in the same state; collate in the main
            process (collation is cheap) or reseed per worker.

    Call:
        ``collator(examples)`` with ``examples`` a list of dicts with key
        ``"sequence"`` (str of ESM-2 residue letters; other keys are ignored).

    Returns:
        dict with
        * ``input_ids``: LongTensor [B, T], ``<cls> residues <eos>`` then
          ``<pad>``; T = longest (cropped) row + 2 <= ``max_length``; selected
          positions are replaced per the 80/10/10 rule.
        * ``attention_mask``: LongTensor [B, T], 1 for real tokens (incl.
          ``<cls>``/``<eos>``), 0 for padding.
        * ``labels``: LongTensor [B, T], the original token id at selected
          positions, -100 elsewhere (a row may have no selected position).

    Raises:
        ValueError: invalid constructor argument (message names it), an
            example without ``"sequence"`` or with a non-residue character.

    Sources: BERT (Devlin et al. 2019) 80/10/10 masking; ESM-2 (Lin et al.
    2023) 15% masking and random cropping.
    """

    tokenizer: Any
    max_length: int = 512
    mask_rate: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    random_crop: bool = True
    generator: torch.Generator | None = None
    _lut: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, (int, np.integer)) or self.max_length < 3:
            raise ValueError(
                f"max_length must be an int >= 3 (it counts <cls> and <eos>), "
                f"got {self.max_length!r}."
            )
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1), got {self.mask_rate!r}.")
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}.")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ValueError(
                "mask_replace_prob + random_replace_prob must be <= 1, got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}."
            )
        if self.generator is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
            self.generator = torch.Generator().manual_seed(seed)
        elif self.generator.device.type != "cpu":
            raise ValueError(
                f"generator must be a CPU torch.Generator, got device "
                f"{self.generator.device}."
            )
        tok = self.tokenizer
        for name in ("cls_token_id", "eos_token_id", "pad_token_id", "mask_token_id"):
            if getattr(tok, name, None) is None:
                raise ValueError(f"tokenizer has no {name}; use an ESM-2 tokenizer.")
        self._lut = _residue_lut(tok)
        self._standard_ids = torch.tensor(
            [int(self._lut[ord(a)]) for a in STANDARD_AMINO_ACIDS], dtype=torch.long
        )

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("MLMCollator got an empty batch (examples=[]).")
        try:
            seqs = [ex["sequence"] for ex in examples]
        except (KeyError, TypeError) as err:
            raise ValueError(
                "MLMCollator expects a list of dicts with key 'sequence' "
                f"(e.g. rows of load_fasta_dataset); got {type(examples[0]).__name__} "
                f"{str(examples[0])[:80]}."
            ) from err
        g = self.generator
        batch = len(seqs)
        n_res = self.max_length - 2

        # --- crop (one uniform draw per row, always, so RNG use is fixed) ---
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=batch)
        u = torch.rand(batch, generator=g, dtype=torch.float64).numpy()
        n_starts = np.maximum(lengths - n_res + 1, 1)
        if self.random_crop:
            starts = np.minimum((u * n_starts).astype(np.int64), n_starts - 1)
        else:
            starts = np.zeros(batch, dtype=np.int64)
        kept = np.minimum(lengths, n_res)

        # --- tokenize into a padded [B, T] array ---
        width = int(kept.max()) + 2
        ids = np.full((batch, width), self.tokenizer.pad_token_id, dtype=np.int64)
        ids[:, 0] = self.tokenizer.cls_token_id
        for i, s in enumerate(seqs):
            k, st = int(kept[i]), int(starts[i])
            ids[i, 1 : k + 1] = _encode(self._lut, s[st : st + k])
        ids[np.arange(batch), kept + 1] = self.tokenizer.eos_token_id
        input_ids = torch.from_numpy(ids)

        positions = torch.arange(width).unsqueeze(0)
        kept_t = torch.from_numpy(kept).unsqueeze(1)
        attention_mask = (positions <= kept_t + 1).long()
        is_residue = (positions >= 1) & (positions <= kept_t)

        # --- select and replace (full-size draws: RNG use depends on shape only) ---
        selected = (torch.rand(batch, width, generator=g) < self.mask_rate) & is_residue
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        action = torch.rand(batch, width, generator=g)
        random_ids = self._standard_ids[
            torch.randint(0, len(self._standard_ids), (batch, width), generator=g)
        ]
        to_mask = selected & (action < self.mask_replace_prob)
        to_random = (
            selected
            & (action >= self.mask_replace_prob)
            & (action < self.mask_replace_prob + self.random_replace_prob)
        )
        input_ids = torch.where(to_mask, self.tokenizer.mask_token_id, input_ids)
        input_ids = torch.where(to_random, random_ids, input_ids)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
