"""Checkpoint consistency (bitesm.models.checkpoint_checks): folders whose files contradict each other are refused by
every loader with one line naming the file and the fix; real ESM-2 folders load unchanged."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import EsmForMaskedLM

from bitesm.cli import main
from bitesm.data import load_tokenizer
from bitesm.evaluation.model_loading import ModelLoadError
from bitesm.evaluation.model_loading import load_masked_lm as load_for_eval
from bitesm.models import BitEsmForMaskedLM, CheckpointMismatchError, bitesm_config_from_esm, check_checkpoint
from bitesm.models import load_masked_lm as load_bitesm
from bitesm.models.long import LongConversionError, convert_to_long
from bitesm.models.packed import to_packed

from conftest import tiny_esm

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[0, 5, 6, 7, 8, 9, 10, 11, 2]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def _save(model, folder: Path) -> Path:
    model.save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    return folder


def _ternary(seed: int = 0) -> BitEsmForMaskedLM:
    config = bitesm_config_from_esm(tiny_esm().config, quantization="ternary")
    torch.manual_seed(seed)
    return BitEsmForMaskedLM(config).eval()


def _edited(src: Path, dst: Path, drop=(), **changes) -> Path:
    """A copy of ``src`` whose config.json has ``changes`` applied and ``drop`` removed."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    for key in drop:
        config.pop(key, None)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A ternary bitesm folder, its packed export, and a transformers EsmForMaskedLM folder (with tokenizers)."""
    root = tmp_path_factory.mktemp("checkpoints")
    ternary = _ternary()
    esm = tiny_esm(seed=1)
    return SimpleNamespace(
        root=root,
        ternary=_save(ternary, root / "ternary"),
        packed=_save(to_packed(copy.deepcopy(ternary)), root / "packed"),
        esm=_save(esm, root / "esm"),
        ternary_model=ternary,
        esm_model=esm,
    )


def _cli_error(capsys, argv: list[str]) -> str:
    """Run the bitesm command, expect exit 2, return its one-line error."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


# -- config.json edited ---------------------------------------------------------------------------------------------


def test_ternary_folder_edited_to_esm_is_refused_naming_config_json(folders, tmp_path, capsys):
    edited = _edited(folders.ternary, tmp_path / "as_esm", model_type="esm")
    config_json = str(edited / "config.json")
    with pytest.raises(CheckpointMismatchError, match=r"config\.json has model_type='esm' but carries bitesm fields "
                                                      r"\(quantization: 'ternary'.*Fix: restore the original config"):
        load_bitesm(edited)
    with pytest.raises(ModelLoadError) as info:
        load_for_eval(edited)
    assert config_json in str(info.value) and "Fix: restore the original config.json" in str(info.value)
    # the command says it in one line and exits 2 instead of running the latent weights in floating point
    line = _cli_error(capsys, ["embed", "--model", str(edited), "--fasta", str(tmp_path / "x.fasta"),
                               "--output", str(tmp_path / "x.safetensors")])
    assert line.startswith("bitesm embed: error: ") and config_json in line
    assert "Fix:" in line


def test_ternary_folder_edited_to_bert_is_refused_naming_config_json(folders, tmp_path, capsys):
    edited = _edited(folders.ternary, tmp_path / "as_bert", model_type="bert")
    with pytest.raises(CheckpointMismatchError, match=r"as_bert/config\.json has model_type='bert' but holds a bitesm "
                                                      r"checkpoint.*would run random weights.*model_type\": \"bitesm"):
        load_bitesm(edited)
    with pytest.raises(ModelLoadError, match=r"as_bert/config\.json has model_type='bert'"):
        load_for_eval(edited)
    # a plain non-ESM config (no bitesm fields) is named as such
    bert = _edited(folders.esm, tmp_path / "esm_as_bert", model_type="bert")
    with pytest.raises(CheckpointMismatchError, match=r"model_type='bert'; bitesm runs ESM-2 masked language models "
                                                      r"only.*Fix: give an ESM-2"):
        check_checkpoint(bert)
    line = _cli_error(capsys, ["export", "--model", str(edited), "--output", str(tmp_path / "out")])
    assert str(edited / "config.json") in line


def test_esm_folder_edited_to_bitesm_is_refused(folders, tmp_path):
    # would otherwise load as a ternary model (BitEsmConfig's default quantization)
    edited = _edited(folders.esm, tmp_path / "as_bitesm", model_type="bitesm")
    with pytest.raises(CheckpointMismatchError, match=r"model_type='bitesm' but none of bitesm's fields.*"
                                                      r"restore \"model_type\": \"esm\""):
        load_bitesm(edited)


def test_esm_config_with_packed_fields_and_contradicting_bitesm_fields_are_refused(folders, tmp_path):
    edited = _edited(folders.esm, tmp_path / "esm_packed", quantization="ternary", weight_format="packed")
    with pytest.raises(CheckpointMismatchError, match=r"model_type='esm' but carries bitesm fields"):
        check_checkpoint(edited)
    # bitesm fields that contradict each other: packed weights need quantization ternary
    fp_packed = _edited(folders.ternary, tmp_path / "fp_packed", quantization=None, weight_format="packed")
    with pytest.raises(CheckpointMismatchError, match=r"fp_packed/config\.json contradicts itself: "
                                                      r"weight_format='packed' stores ternary weights"):
        load_for_eval_or_raise(fp_packed)


def load_for_eval_or_raise(folder):
    try:
        return load_for_eval(folder)
    except ModelLoadError as err:  # the evaluation loader wraps the check's error, message unchanged
        raise err.__cause__


# -- weights against config.json --------------------------------------------------------------------------------------


def test_packed_weights_behind_a_latent_config_are_refused(folders, tmp_path):
    latent_cfg = _edited(folders.packed, tmp_path / "no_format", drop=("weight_format",))
    with pytest.raises(CheckpointMismatchError, match=r"no_format/model\.safetensors holds packed ternary weights "
                                                      r".*no_format/config\.json says weight_format='latent'"):
        load_bitesm(latent_cfg)
    as_esm = _edited(folders.packed, tmp_path / "packed_esm", model_type="esm",
                     drop=("quantization", "activation_bits", "weight_eps", "modules_to_not_convert", "ptq",
                           "attention_window", "weight_format", "auto_map", "architectures"))
    with pytest.raises(CheckpointMismatchError, match=r"holds packed ternary weights .*says model_type='esm'"):
        load_for_eval_or_raise(as_esm)
    # and the other way: a latent checkpoint labelled packed
    packed_cfg = _edited(folders.ternary, tmp_path / "labelled_packed", weight_format="packed")
    with pytest.raises(CheckpointMismatchError, match=r"says weight_format='packed' but .*holds latent"):
        load_bitesm(packed_cfg)


def test_architecture_edits_are_refused_with_the_keys(folders, tmp_path):
    deeper = _edited(folders.esm, tmp_path / "deeper", num_hidden_layers=3)
    with pytest.raises(CheckpointMismatchError, match=r"deeper/model\.safetensors do not fit the model .*deeper/"
                                                      r"config\.json describes \(missing_keys \['esm\.encoder\.layer\.2\."):
        load_for_eval_or_raise(deeper)
    wider = _edited(folders.esm, tmp_path / "wider", intermediate_size=128)
    with pytest.raises(CheckpointMismatchError, match=r"intermediate\.dense\.weight: \[64, 32\] stored, \[128, 32\] "
                                                      r"expected"):
        load_bitesm(wider)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_safetensors_file_is_refused_naming_it(folders, tmp_path, capsys, damage):
    broken = _edited(folders.ternary, tmp_path / "broken")
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x07" * 64, "empty": b""}[damage])
    with pytest.raises(CheckpointMismatchError, match=rf"{weights} is truncated or corrupt \(.*Fix: copy or download"):
        load_bitesm(broken)
    line = _cli_error(capsys, ["embed", "--model", str(broken), "--fasta", str(tmp_path / "x.fasta"),
                               "--output", str(tmp_path / "x.safetensors")])
    assert str(weights) in line and "truncated or corrupt" in line


def test_a_sharded_checkpoint_with_a_missing_shard_is_refused(folders, tmp_path):
    sharded = _edited(folders.esm, tmp_path / "sharded")
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointMismatchError, match=r"model-00002-of-00002\.safetensors \(a shard listed in"):
        check_checkpoint(sharded)


# -- real checkpoints still load ------------------------------------------------------------------------------------


def test_a_transformers_esm_folder_loads_unchanged(folders):
    assert check_checkpoint(folders.esm)["model_type"] == "esm"
    model, _ = load_for_eval(folders.esm)
    assert type(model) is EsmForMaskedLM
    assert torch.equal(_logits(model), _logits(folders.esm_model))
    fp = load_bitesm(folders.esm)  # bitesm's own loader converts it to a floating-point bitesm model
    assert fp.config.quantization is None and torch.equal(_logits(fp), _logits(folders.esm_model))
    ternary = load_bitesm(folders.ternary)
    assert torch.equal(_logits(ternary), _logits(folders.ternary_model))
    assert check_checkpoint(folders.packed)["weight_format"] == "packed"


def test_a_facebook_format_esm_checkpoint_loads_unchanged(folders, tmp_path):
    """Extra buffers and names of older checkpoints are not problems: position_ids, one rotary inv_freq per layer,
    the tied lm_head.decoder.weight stored, LayerNorm weight/bias names (instead of gamma/beta)."""
    folder = tmp_path / "facebook"
    folders.esm_model.config.save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    state = {k: v.clone().contiguous() for k, v in folders.esm_model.state_dict().items() if "inv_freq" not in k}
    inv_freq = folders.esm_model.state_dict()["esm.rotary_embeddings.inv_freq"]
    for i in range(folders.esm_model.config.num_hidden_layers):
        state[f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq"] = inv_freq.clone()
    state["esm.embeddings.position_ids"] = torch.arange(1026).unsqueeze(0)
    assert "lm_head.decoder.weight" in state and any(k.endswith("LayerNorm.weight") for k in state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    check_checkpoint(folder)
    model, _ = load_for_eval(folder)
    assert type(model) is EsmForMaskedLM and torch.equal(_logits(model), _logits(folders.esm_model))


# -- the other loaders ----------------------------------------------------------------------------------------------


def test_lora_base_and_push_validation_refuse_an_edited_folder(folders, tmp_path):
    from bitesm.hub.push import validate_model_folder
    from bitesm.lora.base import _direct_config

    edited = _edited(folders.ternary, tmp_path / "as_esm", model_type="esm")
    model_cfg = SimpleNamespace(from_pretrained=str(edited), quantization="ternary", activation_bits=8,
                                attention_window=None, tokenizer=None)
    with pytest.raises(CheckpointMismatchError, match=r"as_esm/config\.json has model_type='esm'"):
        _direct_config(model_cfg, 128)
    with pytest.raises(CheckpointMismatchError, match=r"as_esm/config\.json has model_type='esm'"):
        validate_model_folder(edited)
    assert validate_model_folder(folders.ternary)["model_type"] == "bitesm"
    assert validate_model_folder(folders.esm)["model_type"] == "esm"
    truncated = _edited(folders.ternary, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointMismatchError, match=r"truncated/model\.safetensors is truncated or corrupt"):
        validate_model_folder(truncated)


def test_export_refuses_what_it_would_not_change(folders, tmp_path, capsys):
    fp = _save(BitEsmForMaskedLM(bitesm_config_from_esm(tiny_esm().config, quantization=None)), tmp_path / "fp")
    line = _cli_error(capsys, ["export", "--model", str(fp), "--output", str(tmp_path / "out")])
    assert "is a floating-point model" in line and "no ternary weights to pack" in line
    line = _cli_error(capsys, ["export", "--model", str(folders.packed), "--output", str(tmp_path / "out")])
    assert "is already packed" in line and "Fix:" in line
    assert not (tmp_path / "out").exists()


def test_convert_long_refuses_a_model_already_long_with_the_same_settings(folders, tmp_path, capsys):
    long, tokenizer = convert_to_long(folders.esm, max_length=2048, window=1024)
    long.save_pretrained(tmp_path / "long")
    tokenizer.save_pretrained(tmp_path / "long")
    with pytest.raises(LongConversionError, match=r"is already a long model with attention_window=1024 and "
                                                  r"max_length=2048 residues.*Fix: use it as it is"):
        convert_to_long(tmp_path / "long", max_length=2048, window=1024)
    line = _cli_error(capsys, ["convert", "long", "--model", str(tmp_path / "long"), "--max-length", "2048",
                               "--window", "1024", "--output", str(tmp_path / "again")])
    assert "already a long model" in line and not (tmp_path / "again").exists()
    edited = _edited(folders.ternary, tmp_path / "as_esm", model_type="esm")
    line = _cli_error(capsys, ["convert", "long", "--model", str(edited), "--output", str(tmp_path / "long2")])
    assert str(edited / "config.json") in line
