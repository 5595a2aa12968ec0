"""Tests for bitesm.models: BitEsmConfig, BitEsmForMaskedLM (fp equivalence, from_esm, remote code, QAT),
BitEsmForSequenceClassification."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub.errors import (
    StrictDataclassClassValidationError,
    StrictDataclassError,
    StrictDataclassFieldValidationError,
)
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    EsmConfig,
    EsmForMaskedLM,
    EsmModel,
)

import bitesm  # noqa: F401  (registers the Auto classes)
from bitesm.models import (
    BitEsmConfig,
    BitEsmForMaskedLM,
    BitEsmForSequenceClassification,
    BitEsmModel,
    CheckpointMismatchError,
    bitesm_config_from_esm,
)
from bitesm.nn.bitlinear import BitLinear

from conftest import PER_LAYER

# <cls>=0 <pad>=1 <eos>=2 <mask>=32; residues 4..23. Row 0 is padded, row 1 has two <mask> tokens.
INPUT_IDS = torch.tensor(
    [
        [0, 5, 6, 7, 8, 9, 2, 1, 1, 1],
        [0, 10, 32, 12, 13, 32, 15, 16, 17, 2],
    ]
)
ATTENTION_MASK = (INPUT_IDS != 1).long()
LABELS = torch.tensor(
    [
        [-100, -100, 6, -100, -100, 9, -100, -100, -100, -100],
        [-100, -100, 11, -100, -100, 14, -100, -100, -100, -100],
    ]
)


def _logits(model, ids=INPUT_IDS, mask=ATTENTION_MASK):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits




def _count_bitlinear(model) -> int:
    return sum(isinstance(m, BitLinear) for m in model.modules())


@pytest.fixture(scope="module")
def esm8m_checkpoint(tmp_path_factory, esm8m_dir):
    """A random ESM-2 8M EsmForMaskedLM saved with save_pretrained."""
    torch.manual_seed(0)
    model = EsmForMaskedLM(EsmConfig.from_pretrained(esm8m_dir)).eval()
    path = tmp_path_factory.mktemp("esm8m")
    model.save_pretrained(path)
    return path, model


@pytest.fixture()
def small_pair(small_esm_kwargs):
    """(EsmForMaskedLM, BitEsmForMaskedLM(quantization=None)) with the same random weights."""
    torch.manual_seed(1)
    esm = EsmForMaskedLM(EsmConfig(**small_esm_kwargs)).eval()
    bit = BitEsmForMaskedLM(BitEsmConfig(quantization=None, **small_esm_kwargs)).eval()
    bit.load_state_dict(esm.state_dict(), strict=True)
    return esm, bit


# --- config ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(quantization="int4"), r"quantization='int4' is not supported; use one of \('ternary',\)"),
        (dict(activation_bits=1), r"activation_bits=1 is out of range; use an int in \[2, 16\]"),
        (dict(activation_bits=17), r"activation_bits=17 is out of range"),
        (dict(weight_eps=0.0), r"weight_eps=0.0 is out of range"),
    ],
)
def test_config_validation_errors(kwargs, pattern):
    with pytest.raises(StrictDataclassClassValidationError, match=pattern):
        BitEsmConfig(**kwargs)


def test_config_inherited_field_types_are_checked():
    with pytest.raises(StrictDataclassFieldValidationError, match=r"Field 'hidden_size' expected int, got float"):
        BitEsmConfig(hidden_size=64.5)


def test_config_valid_values():
    c = BitEsmConfig(quantization=None, activation_bits=None)
    assert c.quantization is None and c.activation_bits is None
    c = BitEsmConfig()
    assert (c.model_type, c.quantization, c.activation_bits, c.weight_eps, c.modules_to_not_convert) == (
        "bitesm",
        "ternary",
        8,
        1e-5,
        None,
    )


def test_config_range_error_is_a_strict_validation_error_caused_by_value_error():
    with pytest.raises(StrictDataclassError, match="quantization='int4' is not supported") as info:
        BitEsmConfig(quantization="int4")
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("kwargs", [dict(activation_bits=8.5), dict(modules_to_not_convert="lm_head")])
def test_config_field_types_are_checked(kwargs):
    with pytest.raises(StrictDataclassError, match=next(iter(kwargs))):
        BitEsmConfig(**kwargs)


def test_config_dict_and_disk_round_trip(tmp_path, small_esm_kwargs):
    c = BitEsmConfig(
        quantization=None,
        activation_bits=4,
        weight_eps=1e-3,
        modules_to_not_convert=["lm_head", "x"],
        **small_esm_kwargs,
    )
    d = c.to_dict()
    assert d["model_type"] == "bitesm"
    assert (d["quantization"], d["activation_bits"], d["weight_eps"], d["modules_to_not_convert"]) == (
        None,
        4,
        1e-3,
        ["lm_head", "x"],
    )
    c2 = BitEsmConfig.from_dict(d)
    assert c2.to_dict() == d
    c.save_pretrained(tmp_path)
    c3 = AutoConfig.from_pretrained(tmp_path)
    assert type(c3) is BitEsmConfig
    d3 = c3.to_dict()
    assert d3.pop("_name_or_path") == str(tmp_path)
    d.pop("_name_or_path")
    assert d3 == d
    assert c3.hidden_size == 64 and c3.activation_bits == 4


def test_bitesm_config_from_esm(esm8m_dir):
    c = bitesm_config_from_esm(EsmConfig.from_pretrained(esm8m_dir), quantization=None, activation_bits=4)
    assert type(c) is BitEsmConfig and c.model_type == "bitesm"
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (320, 6, 20, 1280)
    assert (c.position_embedding_type, c.token_dropout, c.mask_token_id, c.pad_token_id) == ("rotary", True, 32, 1)
    assert (c.quantization, c.activation_bits) == (None, 4)


# --- full precision equals transformers' EsmForMaskedLM ------------------------------------------------------------


def test_fp_model_equals_esm_for_masked_lm(small_pair):
    esm, bit = small_pair
    assert _count_bitlinear(bit) == 0
    assert all(type(m) is nn.Linear for m in bit.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        out_e = esm(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, labels=LABELS)
        out_b = bit(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, labels=LABELS)
    assert out_b.logits.shape == (2, 10, 33)
    assert torch.equal(out_b.logits, out_e.logits)
    assert torch.equal(out_b.loss, out_e.loss)
    assert out_e.loss.item() > 0


def test_fp_base_model_equals_esm_model(small_esm_kwargs):
    torch.manual_seed(2)
    esm = EsmModel(EsmConfig(**small_esm_kwargs)).eval()
    bit = BitEsmModel(BitEsmConfig(quantization=None, **small_esm_kwargs)).eval()
    bit.load_state_dict(esm.state_dict(), strict=True)
    with torch.no_grad():
        a = esm(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).last_hidden_state
        b = bit(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).last_hidden_state
    assert torch.equal(a, b)


def test_ternary_weight_only_model_equals_esm_with_quantized_weights(small_pair, small_esm_kwargs):
    """Ternary + activation_bits=None == EsmForMaskedLM whose encoder Linear weights are W~ * (gamma + eps)."""
    esm, _ = small_pair
    bit = BitEsmForMaskedLM(BitEsmConfig(quantization="ternary", activation_bits=None, **small_esm_kwargs)).eval()
    bit.load_state_dict(esm.state_dict(), strict=True)
    assert _count_bitlinear(bit) == 12  # 2 layers x 6
    fp_logits = _logits(esm)
    with torch.no_grad():
        for i in range(2):
            for s in PER_LAYER:
                w = esm.get_submodule(f"esm.encoder.layer.{i}.{s}").weight
                d = w.abs().mean() + 1e-5
                w.copy_((w / d).round().clamp(-1, 1) * d)
    torch.testing.assert_close(_logits(bit), _logits(esm), rtol=0, atol=1e-5)
    assert (_logits(bit) - fp_logits).abs().max() > 1e-3  # quantization actually changed the model


# --- from_esm -----------------------------------------------------------------------------------------------------


def test_from_esm_8m(esm8m_checkpoint):
    path, src = esm8m_checkpoint
    model = BitEsmForMaskedLM.from_esm(path)
    assert type(model.config) is BitEsmConfig and model.config.quantization == "ternary"
    assert model.config.hidden_size == 320 and model.config.activation_bits == 8
    assert _count_bitlinear(model) == 36
    src_sd, sd = src.state_dict(), model.state_dict()
    assert set(sd) == set(src_sd)
    for k in src_sd:
        assert torch.equal(sd[k], src_sd[k]), k
    # ternary model computes something else than the fp source
    assert (_logits(model.eval()) - _logits(src)).abs().max() > 1e-3


def test_from_esm_fp_equals_source(esm8m_checkpoint):
    path, src = esm8m_checkpoint
    model = BitEsmForMaskedLM.from_esm(path, quantization=None).eval()
    assert _count_bitlinear(model) == 0
    assert torch.equal(_logits(model), _logits(src))
    m4 = BitEsmForMaskedLM.from_esm(path, activation_bits=None)
    assert m4.config.activation_bits is None
    assert m4.esm.encoder.layer[0].attention.self.query.activation_bits is None


@pytest.fixture()
def small_checkpoint_labelled_8m(tmp_path, small_esm_kwargs, esm8m_dir):
    """Hidden-64 weights behind an ESM-2 8M-shaped config.json."""
    torch.manual_seed(4)
    EsmForMaskedLM(EsmConfig(**small_esm_kwargs)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    big = json.loads((esm8m_dir / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_attention_heads"):
        cfg[key] = big[key]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_from_esm_shape_mismatch_raises(small_checkpoint_labelled_8m):
    # refused before loading, from the weight file's header: keys and shapes named, config.json named with the fix
    pattern = (
        r"model\.safetensors do not fit the model .*config\.json describes \(mismatched_keys .*"
        r"esm\.embeddings\.word_embeddings\.weight: \[33, 64\] stored, \[33, 320\] expected.*"
        r"Fix: restore the original config\.json"
    )
    with pytest.raises(CheckpointMismatchError, match=pattern):
        BitEsmForMaskedLM.from_esm(small_checkpoint_labelled_8m)
    # also when transformers is told to tolerate mismatched sizes
    with pytest.raises(CheckpointMismatchError, match=pattern):
        BitEsmForMaskedLM.from_esm(small_checkpoint_labelled_8m, ignore_mismatched_sizes=True)


def test_from_esm_missing_keys_raises(tmp_path, small_esm_kwargs):
    torch.manual_seed(5)
    EsmForMaskedLM(EsmConfig(**small_esm_kwargs)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights = {k: v for k, v in weights.items() if "layer.1." not in k}
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"do not fit the model .*config\.json describes \(missing_keys \['esm\.encoder\.layer\.1\."):
        BitEsmForMaskedLM.from_esm(tmp_path)


def test_from_esm_rejects_non_esm(tmp_path):
    bert = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    bert.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has model_type='bert'; from_esm converts ESM checkpoints"):
        BitEsmForMaskedLM.from_esm(tmp_path)


# --- save_pretrained with remote code -------------------------------------------------------------------------------

CODE_FILES = {"modeling_bitesm.py", "configuration_bitesm.py", "bitlinear.py", "primitives.py", "remote_code.py"}


@pytest.fixture()
def saved_ternary(tmp_path, small_esm_kwargs):
    torch.manual_seed(6)
    model = BitEsmForMaskedLM(BitEsmConfig(activation_bits=8, **small_esm_kwargs)).eval()
    path = tmp_path / "ckpt"
    model.save_pretrained(path)
    return path, model


def test_save_pretrained_writes_code_and_auto_map(saved_ternary):
    path, _ = saved_ternary
    files = {p.name for p in path.iterdir()}
    assert CODE_FILES | {"config.json", "model.safetensors"} <= files
    assert not any(name.endswith(".tmp") for name in files)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "bitesm" and cfg["quantization"] == "ternary"
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_bitesm.BitEsmConfig",
        "AutoModel": "modeling_bitesm.BitEsmModel",
        "AutoModelForMaskedLM": "modeling_bitesm.BitEsmForMaskedLM",
        "AutoModelForSequenceClassification": "modeling_bitesm.BitEsmForSequenceClassification",
    }
    for name in CODE_FILES:
        source = (path / name).read_text()
        assert not re.search(r"^\s*from\s+\.\.", source, flags=re.MULTILINE), name
        assert not re.search(r"^\s*(from|import)\s+bitesm\b", source, flags=re.MULTILINE), name
    modeling = (path / "modeling_bitesm.py").read_text()
    assert "from .bitlinear import" in modeling and "from .configuration_bitesm import" in modeling
    assert "from .primitives import" in (path / "bitlinear.py").read_text()


def test_save_then_auto_load_in_process(saved_ternary):
    path, model = saved_ternary
    loaded = AutoModelForMaskedLM.from_pretrained(path).eval()
    assert isinstance(loaded, BitEsmForMaskedLM)
    assert _count_bitlinear(loaded) == 12
    assert torch.equal(_logits(loaded), _logits(model))


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["bitesm"] = None  # any 'import bitesm...' now raises ImportError
    import torch
    from transformers import AutoModelForMaskedLM

    src, ids, mask = sys.argv[1], torch.tensor({ids}), torch.tensor({mask})
    model = AutoModelForMaskedLM.from_pretrained(src, trust_remote_code=True).eval()
    n_bit = sum(type(m).__name__ == "BitLinear" for m in model.modules())
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained("resaved")  # a remote-code model saves a loadable folder too
    again = AutoModelForMaskedLM.from_pretrained("resaved", trust_remote_code=True).eval()
    with torch.no_grad():
        logits_again = again(input_ids=ids, attention_mask=mask).logits
    torch.save({{"logits": logits, "logits_again": logits_again, "module": type(model).__module__,
                "n_bit": n_bit, "bitesm_loaded": any(k.startswith("bitesm.") for k in sys.modules)}}, "out.pt")
    """
)


@pytest.mark.slow
def test_remote_code_loads_without_bitesm(saved_ternary, tmp_path):
    path, model = saved_ternary
    work = tmp_path / "work"
    work.mkdir()
    script = REMOTE_SCRIPT.format(ids=INPUT_IDS.tolist(), mask=ATTENTION_MASK.tolist())
    env = dict(
        os.environ,
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HUB_OFFLINE="1",
        PYTHONPATH="",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = torch.load(work / "out.pt")
    assert out["module"].startswith("transformers_modules"), out["module"]
    assert out["n_bit"] == 12
    assert not out["bitesm_loaded"]
    expected = _logits(model)
    assert (out["logits"] - expected).abs().max().item() == 0.0
    assert (out["logits_again"] - expected).abs().max().item() == 0.0


# --- QAT --------------------------------------------------------------------------------------------------------


def test_ternary_model_trains(small_esm_kwargs):
    torch.manual_seed(7)
    model = BitEsmForMaskedLM(BitEsmConfig(**small_esm_kwargs)).train()
    bitlinears = {n: m for n, m in model.named_modules() if isinstance(m, BitLinear)}
    assert len(bitlinears) == 12
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(4, 24, (8, 24), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    labels = torch.full_like(ids, -100)
    masked = torch.rand(ids.shape, generator=g) < 0.25
    masked[:, [0, -1]] = False
    labels[masked] = ids[masked]
    inputs = ids.masked_fill(masked, 32)
    codes_before = {n: torch.sign(m.quantized_weight().detach()) for n, m in bitlinears.items()}

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        opt.zero_grad()
        loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        if step == 0:
            for name, m in bitlinears.items():
                assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0, name
                assert m.bias.grad is not None and m.bias.grad.abs().sum() > 0, name
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    # the latent weights moved enough to flip ternary codes, and quantized weights are still ternary
    codes_after = {n: torch.sign(m.quantized_weight().detach()) for n, m in bitlinears.items()}
    assert any(not torch.equal(codes_after[n], codes_before[n]) for n in bitlinears)
    for m in bitlinears.values():
        w_hat = m.quantized_weight().detach().abs()
        scale = m.weight.detach().abs().mean() + m.weight_eps
        # |w_hat| is 0 or gamma + eps (up to float rounding of the STE sum for clipped weights)
        assert ((w_hat == 0) | ((w_hat - scale).abs() <= 1e-6 * scale)).all()
        assert (w_hat > 0).any() and (w_hat == 0).any()


def test_sequence_classification_model_is_ternary_with_a_full_precision_head(small_esm_kwargs):
    config = BitEsmConfig(**small_esm_kwargs, quantization="ternary", num_labels=3)
    model = AutoModelForSequenceClassification.from_config(config)
    assert isinstance(model, BitEsmForSequenceClassification)
    assert _count_bitlinear(model) == 2 * len(PER_LAYER)  # the encoder's; the head stays nn.Linear
    assert type(model.classifier.dense) is nn.Linear and type(model.classifier.out_proj) is nn.Linear
    out = model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.item() > 0

