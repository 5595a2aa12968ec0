"""How much of a protein a model reads in one forward pass (its context), as evaluation sees it.

Two kinds of models:

* **standard** (ESM-2, global attention, ``config.attention_window`` absent or ``None``): one pass holds at most
  :func:`default_max_residues` residues plus ``<cls>``/``<eos>`` (1,022 + 2 = 1,024 tokens for ESM-2, the window
  ProteinGym hard-codes). Longer proteins are cut into windows (ProteinGym's crop for scoring,
  :mod:`bitesm.evaluation.proteingym`; averaged windows for embeddings, :mod:`bitesm.evaluation.embeddings`).
* **long** (Long ESM-2, de Oliveira et al. 2024, arXiv 2501.07747; ``config.attention_window`` set): local
  sliding-window attention (:mod:`bitesm.nn.sliding_window_attention`) whose cost is linear in the length and
  whose rotary positions have no limit, so one pass can hold a protein of any length.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.long import max_residues

__all__ = ["attention_window", "default_max_residues", "model_device", "model_label"]


def model_label(model: Any) -> str:
    """How results name a model: its ``name_or_path`` (the folder or Hub id it was loaded from), else its config's
    ``_name_or_path``, else its class name."""
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name) if name else type(model).__name__


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def default_max_residues(model: Any) -> int | None:
    """Residues per forward pass for ``model``: :func:`bitesm.models.long.max_residues` of its config.

    ESM configs count the padding offset in ``max_position_embeddings`` (positions start at ``pad_token_id + 1 = 2``),
    so the token context is ``max_position_embeddings - 2`` (1,024 for ESM-2, ProteinGym's ``model_window``) and two
    of those tokens are ``<cls>``/``<eos>``: 1,022 residues for ESM-2 (1026 - 4). The same rule applies to a long
    model (its declared ``max_position_embeddings``); whether a caller may go beyond it depends on
    :func:`attention_window`.

    Returns:
        The residue count, or ``None`` (no limit known) when the model has no config with
        ``max_position_embeddings``.
    """
    config = getattr(model, "config", None)
    if getattr(config, "max_position_embeddings", None) is None:
        return None
    return max_residues(config)


def attention_window(model: Any) -> int | None:
    """``model.config.attention_window``: the sliding-window band width of a long model, ``None`` for global attention.

    Models without the field (transformers' ``EsmForMaskedLM``, stubs without a config) count as global.
    """
    window = getattr(getattr(model, "config", None), "attention_window", None)
    return None if window is None else int(window)
