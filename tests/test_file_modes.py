"""Files bitesm writes follow the process umask (mkstemp and safetensors alone would make them 0600)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from bitesm.io import atomic_write_json, current_umask, follow_umask


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_the_process_umask(umask_027):
    assert current_umask() == 0o027


def test_atomic_writes_follow_the_umask(tmp_path, umask_027):
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert _mode(tmp_path / "r.json") == umask_027


def test_follow_umask_leaves_links_and_missing_paths(tmp_path, umask_027):
    target = tmp_path / "t.txt"
    target.write_text("x")
    os.chmod(target, 0o600)
    (tmp_path / "link").symlink_to(target)
    follow_umask(tmp_path / "link", tmp_path / "missing")
    assert _mode(target) == 0o600
    follow_umask(target)
    assert _mode(target) == umask_027


def test_saved_model_and_code_follow_the_umask(tmp_path, umask_027):
    from bitesm.models import BitEsmConfig, BitEsmForMaskedLM

    config = BitEsmConfig(vocab_size=33, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, quantization="ternary", pad_token_id=1, mask_token_id=32)
    BitEsmForMaskedLM(config).save_pretrained(tmp_path / "m")
    modes = {p.name: _mode(p) for p in (tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == umask_027 and modes["modeling_bitesm.py"] == umask_027, modes
    assert set(modes.values()) == {umask_027}, modes


def test_embeddings_and_checkpoints_follow_the_umask(tmp_path, umask_027):
    from safetensors.torch import save_file

    from bitesm.evaluation.embeddings import EmbeddingSet, save_embeddings
    from bitesm.training.checkpoint import publish_checkpoint, temporary_checkpoint_dir

    save_embeddings(EmbeddingSet(["p"], torch.zeros(1, 4), None, {}), tmp_path / "e.safetensors")
    assert _mode(tmp_path / "e.safetensors") == umask_027
    tmp = temporary_checkpoint_dir(tmp_path / "run", 3)
    tmp.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # written 0600 by safetensors
    final = publish_checkpoint(tmp, keep=2)
    assert _mode(final / "model.safetensors") == umask_027
