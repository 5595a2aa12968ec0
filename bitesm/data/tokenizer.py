"""ESM-2 tokenizer loading.

The ESM-2 tokenizer (33 tokens: ``<cls> <pad> <eos> <unk>``, 25 residue
letters, ``. - <null_1> <mask>``) ships inside the package
(``bitesm/data/esm2_tokenizer/``, copied verbatim from the Hugging Face repo
``facebook/esm2_t6_8M_UR50D``), so no network access is needed.

Source: https://huggingface.co/facebook/esm2_t6_8M_UR50D (vocab.txt,
tokenizer_config.json, special_tokens_map.json).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import AutoTokenizer, EsmTokenizer

__all__ = ["DEFAULT_TOKENIZER_DIR", "load_tokenizer"]

logger = logging.getLogger(__name__)

#: Folder of the packaged ESM-2 tokenizer files.
DEFAULT_TOKENIZER_DIR: Path = Path(__file__).resolve().parent / "esm2_tokenizer"

# Any of these makes a directory a loadable tokenizer directory.
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
_REQUIRED_SPECIAL = ("cls_token", "eos_token", "pad_token", "mask_token")


def load_tokenizer(name_or_path: str | os.PathLike | None = None) -> EsmTokenizer:
    """Load an ESM-2 tokenizer.

    Args:
        name_or_path: ``None`` for the packaged ESM-2 tokenizer
            (:data:`DEFAULT_TOKENIZER_DIR`); otherwise anything
            ``transformers.AutoTokenizer.from_pretrained`` accepts, e.g. a
            checkpoint directory or a hub id such as
            ``"facebook/esm2_t6_8M_UR50D"`` (needs network or the HF cache).
            A directory without tokenizer files (no ``vocab.txt`` /
            ``tokenizer.json``, e.g. a weights-only checkpoint) falls back to
            the packaged tokenizer with a logged warning.

    Returns:
        The tokenizer (``EsmTokenizer`` for ESM-2 checkpoints). Example:
        ``"MKTAYIAKQR"`` -> ``[0, 20, 15, 11, 5, 19, 12, 5, 15, 16, 10, 2]``
        (``<cls>`` = 0, ``<eos>`` = 2, ``<pad>`` = 1, ``<mask>`` = 32).

    Raises:
        OSError: ``name_or_path`` is neither a directory nor a reachable hub
            id (re-raised from transformers with a hint).
        ValueError: the loaded tokenizer lacks a cls/eos/pad/mask token, which
            masked-language-model training needs.
    """
    if name_or_path is None:
        tokenizer = EsmTokenizer.from_pretrained(str(DEFAULT_TOKENIZER_DIR))
    else:
        path = Path(name_or_path)
        if path.is_dir() and not any((path / f).is_file() for f in _TOKENIZER_FILES):
            logger.warning(
                "Directory %s has no tokenizer files (%s); using the packaged "
                "ESM-2 tokenizer from %s instead.",
                path, " / ".join(_TOKENIZER_FILES), DEFAULT_TOKENIZER_DIR,
            )
            return load_tokenizer(None)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        except OSError as err:
            raise OSError(
                f"Could not load a tokenizer from {str(name_or_path)!r}: {err}\n"
                "Fix: pass an existing checkpoint directory, a hub id available "
                "in the local Hugging Face cache (or with network access), or "
                "None for the packaged ESM-2 tokenizer."
            ) from err
    missing = [t for t in _REQUIRED_SPECIAL if getattr(tokenizer, t, None) is None]
    if missing:
        raise ValueError(
            f"Tokenizer {str(name_or_path)!r} has no {', '.join(missing)}; masked "
            "language modelling needs <cls>, <eos>, <pad> and <mask>. Use an "
            "ESM-2 tokenizer (name_or_path=None)."
        )
    return tokenizer
