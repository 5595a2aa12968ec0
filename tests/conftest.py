"""Shared fixtures and tiny models of the tests (kept small on purpose)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: The real ESM-2 8M config and tokenizer files (no weights).
ESM_DIR = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"

#: The six Linear layers of every ESM-2 encoder layer, all converted to BitLinear.
PER_LAYER = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


@pytest.fixture(scope="session")
def esm8m_dir() -> Path:
    """Real ESM-2 8M config + tokenizer files (no weights): hidden 320, 6 layers, 20 heads."""
    path = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
    assert (path / "config.json").is_file(), path
    return path


@pytest.fixture()
def small_esm_kwargs() -> dict:
    """A shrunk ESM-2 architecture (hidden 64, 2 layers, 4 heads), ESM-2 vocabulary and special tokens, no dropout."""
    return dict(
        vocab_size=33,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026,
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        mask_token_id=32,
    )


@pytest.fixture()
def one_thread():
    """Run a test with one intra-op thread: on 2 shared cores, threads fighting make small ops 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_esm(max_position_embeddings: int = 1026, seed: int = 0, hidden_size: int = 32,
             intermediate_size: int = 64):
    """A random transformers ``EsmForMaskedLM`` in eval mode: the ESM-2 8M config and vocabulary shrunk to 2 layers of
    4 heads (hidden 32, FFN 64 unless given), seeded."""
    from transformers import EsmConfig, EsmForMaskedLM

    cfg = EsmConfig.from_pretrained(str(ESM_DIR), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=intermediate_size,
                                    max_position_embeddings=max_position_embeddings)
    torch.manual_seed(seed)
    return EsmForMaskedLM(cfg).eval()
