"""Real-int8 PTQ weights: ``Int8Linear`` (int8 codes + float32 scales) and the ``ptq["weight_format"] = "int8"``
checkpoints that ``bitesm ptq`` writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import AutoModelForMaskedLM, EsmConfig, EsmForMaskedLM

import bitesm
from bitesm.models import BitEsmConfig, BitEsmForMaskedLM, bitesm_config_from_esm
from bitesm.nn.quantized_linear import Int8Linear
from bitesm.ptq.convert import PTQInputError, quantize_model, to_int8_weights
from bitesm.ptq.memory import weight_memory_report
from bitesm.ptq.sites import activation_quantizers
from bitesm.quant.primitives import fake_quantize_weight_symmetric

REPO = Path(__file__).resolve().parents[1]
ESM8M = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
SEQS = [
    "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKAL",
    "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNF",
]


@pytest.fixture(scope="module")
def tokenizer():
    return bitesm.data.load_tokenizer()


def fp_8m(seed: int = 0) -> BitEsmForMaskedLM:
    torch.manual_seed(seed)
    return BitEsmForMaskedLM(bitesm_config_from_esm(EsmConfig.from_pretrained(str(ESM8M)), quantization=None)).eval()


def _ids():
    return torch.randint(4, 24, (2, 60), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bits", [8, 4])
def test_int8_linear_equals_the_fake_quantized_linear(bits, per_channel):
    torch.manual_seed(0)
    layer = nn.Linear(48, 24)
    fake = nn.Linear(48, 24)
    fake.load_state_dict(layer.state_dict())
    with torch.no_grad():
        fake.weight.copy_(fake_quantize_weight_symmetric(layer.weight, bits, per_channel))
    q = Int8Linear.from_linear(layer, bits, per_channel)
    assert q.weight.dtype == torch.int8 and q.weight_scale.dtype == torch.float32
    assert q.weight_scale.shape == ((24, 1) if per_channel else (1, 1))
    assert int(q.weight.abs().max()) <= 2 ** (bits - 1)
    # a weight already on the grid gives its codes back
    assert torch.equal(Int8Linear.from_linear(fake, bits, per_channel).weight, q.weight)
    x = torch.randn(3, 5, 48)
    with torch.no_grad():
        assert torch.equal(q(x), fake(x))
    assert set(q.state_dict()) == {"weight", "weight_scale", "bias"}
    with pytest.raises(RuntimeError, match="inference-only"):
        q(x.requires_grad_())
    with pytest.raises(ValueError, match="2..8 bits"):
        Int8Linear(4, 4, weight_bits=9)


@pytest.mark.parametrize("backend", ["onednn", "float"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_opt_in_integer_gemm_with_a_static_uniform_input_matches_the_float_path(backend, per_channel, monkeypatch):
    from bitesm.nn.int8_linear import int8_backend
    from bitesm.ptq.sites import ActivationQuantizer

    monkeypatch.setenv("BITESM_INT8_BACKEND", backend)
    try:
        int8_backend("cpu")
    except ValueError:
        pytest.skip(f"{backend} is not available here")
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(64, 40), 8, per_channel)
    layer.input_quantizer = ActivationQuantizer(8, "uniform", "ffn_input")
    layer.input_quantizer.set_range(-2.0, 3.0)
    x_hat = layer.input_quantizer(torch.randn(3, 7, 64))
    with torch.no_grad():
        ref = layer(x_hat)  # float path (default)
        layer.integer_gemm = True
        out = layer(x_hat)
    assert out.shape == ref.shape and (out - ref).abs().max().item() <= 1e-5
    assert layer._packed is not None  # the integer path ran and cached its prepacked weight


def test_weight_format_is_validated():
    base = EsmConfig.from_pretrained(str(ESM8M))
    ptq = {"weight_bits": 8, "act_bits": None, "weight_format": "int4"}
    with pytest.raises((StrictDataclassError, ValueError), match="weight_format"):
        bitesm_config_from_esm(base, quantization=None, ptq=ptq)
    with pytest.raises((StrictDataclassError, ValueError), match="weight_bits in \\[2, 8\\]"):
        bitesm_config_from_esm(base, quantization=None, ptq={"weight_bits": 12, "weight_format": "int8"})
    assert isinstance(bitesm_config_from_esm(base, quantization=None, ptq={"weight_bits": 8, "weight_format": "int8"}),
                      BitEsmConfig)


def test_w8a8_8m_file_is_under_0_3x_fp32_and_reloads_to_the_fake_quantized_logits(tmp_path, tokenizer):
    model = fp_8m()
    model.save_pretrained(tmp_path / "fp")
    fake = quantize_model(model, tokenizer, SEQS, weight_bits=8, act_bits=8, method="piecewise")
    to_int8_weights(fake).save_pretrained(tmp_path / "int8")
    fp_bytes = (tmp_path / "fp" / "model.safetensors").stat().st_size
    int8_bytes = (tmp_path / "int8" / "model.safetensors").stat().st_size
    assert int8_bytes <= 0.3 * fp_bytes, (int8_bytes, fp_bytes)
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["ptq"]["weight_format"] == "int8"
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "int8").eval()
    layers = [m for m in loaded.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 36 and all(m.weight.dtype == torch.int8 for m in layers)
    assert len(activation_quantizers(loaded)) == len(activation_quantizers(fake))
    # the analytic memory report counts the int8 codes as the weights they stand for
    assert weight_memory_report(loaded, 8, 8) == weight_memory_report(fake, 8, 8)
    ids = _ids()
    with torch.inference_mode():
        ref = fake(input_ids=ids).logits
        out = loaded(input_ids=ids).logits
    assert (out - ref).abs().max().item() <= 1e-4

    # without bitesm: the remote-code bundle builds the same Int8Linear layers
    torch.save({"ids": ids, "logits": ref}, tmp_path / "io.pt")
    code = f"""
import sys, torch
from transformers import AutoModelForMaskedLM
m = AutoModelForMaskedLM.from_pretrained({str(tmp_path / 'int8')!r}, trust_remote_code=True).eval()
io = torch.load({str(tmp_path / 'io.pt')!r})
with torch.inference_mode():
    out = m(input_ids=io["ids"]).logits
assert 'bitesm' not in sys.modules, 'bitesm was imported'
layer = m.esm.encoder.layer[0].attention.self.query
print(type(layer).__name__, layer.weight.dtype, (out - io["logits"]).abs().max().item())
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    name, dtype, diff = result.stdout.split()[-3:]
    assert name == "Int8Linear" and dtype == "torch.int8" and float(diff) <= 1e-4


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_weights_only_and_per_tensor_int8_checkpoints(tmp_path, tokenizer, granularity):
    fake = quantize_model(fp_8m(1), tokenizer, SEQS, weight_bits=8, act_bits=None, weight_granularity=granularity)
    stored = to_int8_weights(fake)
    stored.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    query = loaded.esm.encoder.layer[0].attention.self.query
    assert isinstance(query, Int8Linear)
    assert query.weight_scale.shape == ((320, 1) if granularity == "per_channel" else (1, 1))
    assert not activation_quantizers(loaded)
    ids = _ids()
    with torch.inference_mode():
        assert (loaded(input_ids=ids).logits - fake(input_ids=ids).logits).abs().max().item() <= 1e-4


def test_old_fake_quantized_checkpoint_without_weight_format_still_loads(tmp_path, tokenizer):
    fake = quantize_model(fp_8m(2), tokenizer, SEQS[:1], weight_bits=8, act_bits=8, method="uniform")
    assert "weight_format" not in fake.config.ptq
    fake.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert not any(isinstance(m, Int8Linear) for m in loaded.modules())
    assert loaded.esm.encoder.layer[0].attention.self.query.weight.dtype == torch.float32
    ids = _ids()
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, fake(input_ids=ids).logits)


def test_to_int8_weights_needs_at_most_8_weight_bits(tokenizer):
    fake = quantize_model(fp_8m(), tokenizer, SEQS[:1], weight_bits=None, act_bits=8, method="uniform")
    with pytest.raises(PTQInputError, match="weight_bits in 2..8"):
        to_int8_weights(fake)


@pytest.mark.slow
def test_cli_writes_int8_weights_by_default_and_reports_the_file_bytes(tmp_path):
    torch.manual_seed(0)
    EsmForMaskedLM(EsmConfig.from_pretrained(ESM8M)).save_pretrained(tmp_path / "esm2")
    for file in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "esm2" / file).write_bytes((ESM8M / file).read_bytes())
    common = ["--model", str(tmp_path / "esm2"), "--num-calibration", "4", "--max-length", "128"]
    for out, extra in (("w8a8", []), ("fake", ["--weight-format", "fake"])):
        proc = subprocess.run([sys.executable, "-m", "bitesm.cli", "ptq", *common, "--output", str(tmp_path / out),
                               *extra], capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "w8a8" / "ptq_report.json").read_text())
    assert report["ptq"]["weight_format"] == "int8"
    assert report["memory"]["file_bytes"] == (tmp_path / "w8a8" / "model.safetensors").stat().st_size
    fake_report = json.loads((tmp_path / "fake" / "ptq_report.json").read_text())
    assert "weight_format" not in fake_report["ptq"]
    assert report["memory"]["file_bytes"] <= 0.3 * fake_report["memory"]["file_bytes"]
    proc = subprocess.run([sys.executable, "-m", "bitesm.cli", "ptq", *common, "--output", str(tmp_path / "w12"),
                           "--weight-bits", "12", "--weight-format", "int8"], capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 2 and "--weight-format int8" in proc.stderr
