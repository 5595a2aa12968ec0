"""Packed ternary weights and the integer inference path (issue 8): bit layout, kernels, models, export."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, EsmConfig, EsmTokenizer

from bitesm.cli import main as bitesm_main
from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm
from bitesm.models.packed import PackedExportError, to_packed
from bitesm.nn import int8_linear as int8_linear_module
from bitesm.nn.bitlinear import BitLinear
from bitesm.nn.int8_linear import (
    BACKENDS,
    int8_backend,
    int8_codes_linear,
    int8_ternary_linear,
    prepack_ternary,
    training_codes_kernel,
)
from bitesm.nn.packed_bitlinear import PackedBitLinear
from bitesm.quant.packing import pack_ternary, packed_rows, unpack_ternary
from bitesm.quant.primitives import quantize_per_token_absmax, quantize_ternary_absmean, ternary_linear

REPO = Path(__file__).resolve().parents[1]
ESM8M = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"


# ----------------------------------------------------------------------------- bit layout
def test_pack_example_from_the_docstring_and_round_trip():
    assert pack_ternary(torch.tensor([[1], [0], [-1], [1]])).tolist() == [[2 | 1 << 2 | 0 << 4 | 2 << 6]] == [[134]]
    torch.manual_seed(0)
    for n, k in [(8, 5), (7, 3), (1, 1), (13, 16)]:
        w = torch.randint(-1, 2, (n, k), dtype=torch.int8)
        p = pack_ternary(w)
        assert p.dtype == torch.uint8 and p.shape == (packed_rows(n), k)
        assert torch.equal(unpack_ternary(p, n), w)
    # rows beyond N pad with code 1 (value 0): a 5-row weight keeps rows 5..7 as zeros
    p = pack_ternary(torch.ones(5, 2, dtype=torch.int8))
    assert torch.equal(unpack_ternary(p, 5), torch.ones(5, 2, dtype=torch.int8))


def test_layout_equals_transformers_bitnet_integration():
    from transformers.integrations.bitnet import pack_weights, unpack_weights

    w = torch.randint(-1, 2, (12, 7), dtype=torch.int8)
    assert torch.equal(pack_ternary(w), pack_weights(w.clone()))
    assert torch.equal(unpack_ternary(pack_ternary(w), 12, torch.float32), unpack_weights(pack_ternary(w), torch.float32))


def test_pack_errors():
    with pytest.raises(ValueError, match="outside"):
        pack_ternary(torch.tensor([[2, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        pack_ternary(torch.zeros(3))
    with pytest.raises(ValueError, match="code 3"):
        unpack_ternary(torch.full((1, 2), 255, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="does not match"):
        unpack_ternary(torch.zeros(2, 2, dtype=torch.uint8), 3)


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "int_mm"])
def test_integer_kernel_is_exact(backend):
    if backend == "onednn" and int8_backend("cpu") != "onednn":
        pytest.skip("oneDNN int8 GEMM not available in this torch build")
    torch.manual_seed(0)
    x = torch.randn(37, 96)
    w = torch.randint(-1, 2, (40, 96), dtype=torch.int8)
    x_int, x_scale = quantize_per_token_absmax(x, 8)
    bias = torch.randn(40)
    y = int8_ternary_linear(x_int, x_scale, prepack_ternary(w, backend), w, torch.tensor(0.25), bias, backend)
    exact = (x_int.long() @ w.long().t()).double() * x_scale.double() * 0.25 + bias.double()
    torch.testing.assert_close(y.double(), exact, atol=1e-5, rtol=1e-6)


def test_backend_selection(monkeypatch):
    assert int8_backend("cpu") in ("onednn", "float")
    monkeypatch.setenv("BITESM_INT8_BACKEND", "float")
    assert int8_backend("cpu") == "float"
    monkeypatch.setenv("BITESM_INT8_BACKEND", "int_mm")
    with pytest.raises(ValueError, match="cannot run on cpu"):
        int8_backend("cpu")
    monkeypatch.setenv("BITESM_INT8_BACKEND", "nope")
    with pytest.raises(ValueError, match="use one of"):
        int8_backend("cpu")


# ----------------------------------------------------------------------------- layers
@pytest.mark.parametrize("bits", [8, 4, 12, None])
def test_packed_layer_equals_bitlinear_bit_for_bit(bits):
    torch.manual_seed(0)
    layer = BitLinear(64, 30, activation_bits=bits)
    x = torch.randn(3, 11, 64)
    packed = PackedBitLinear.from_bitlinear(layer)
    with torch.no_grad():
        assert torch.equal(packed(x), layer(x))
    # the training path (custom autograd function, 8 bits or fewer) computes the same values
    assert torch.equal(layer(x.clone().requires_grad_(True)).detach(), packed(x))
    # BitLinear's product of codes is the fake-quant product x_hat W_hat^T (up to float rounding)
    if bits == 8:
        w_t, scale = quantize_ternary_absmean(layer.weight)
        x_int, s = quantize_per_token_absmax(x, 8)
        fake = torch.nn.functional.linear(x_int.float() * s, w_t.float() * scale, layer.bias)
        torch.testing.assert_close(layer(x), fake, atol=1e-5, rtol=1e-5)


def test_ternary_linear_gradients_are_the_fake_quant_ste():
    torch.manual_seed(0)
    w = torch.randn(6, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    ternary_linear(x, w, None, 8).sum().backward()
    w_t, gamma = quantize_ternary_absmean(w.detach())
    x_int, s = quantize_per_token_absmax(x.detach(), 8)
    ones = torch.ones(4, 6)
    torch.testing.assert_close(x.grad, ones @ (w_t.float() * gamma))  # dy/dx = W_hat
    torch.testing.assert_close(w.grad, ones.t() @ (x_int.float() * s))  # dy/dW = x_hat


def _grads(layer, x, grad_out, autocast=None):
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with autocast or torch.autocast("cpu", enabled=False):
        y = layer(x)
    y.float().backward(grad_out)
    return y.detach(), x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("bits", [8, 5])
def test_training_integer_forward_equals_float_forward(bits, monkeypatch):
    """With gradients on an x86 CPU the forward product runs on oneDNN's int8 GEMM: values and STE gradients are the
    float product of the codes bit for bit (both exact integer sums), and the eval-mode values."""
    if training_codes_kernel("cpu") is None:
        pytest.skip("oneDNN int8 GEMM not available in this torch build")
    torch.manual_seed(0)
    layer = BitLinear(96, 40, activation_bits=bits)
    x = torch.randn(2, 33, 96) * torch.logspace(-2, 2, 33).view(1, 33, 1)
    grad_out = torch.randn(2, 33, 40)
    calls = []
    monkeypatch.setattr(int8_linear_module, "int8_codes_linear",
                        lambda *a, **k: calls.append(1) or int8_codes_linear(*a, **k))
    integer = _grads(layer, x, grad_out)
    assert calls, "the training forward did not use the integer kernel"
    monkeypatch.setenv("BITESM_INT8_BACKEND", "float")
    assert training_codes_kernel("cpu") is None
    floating = _grads(layer, x, grad_out)
    for a, b in zip(integer, floating):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(layer(x), integer[0])


def test_training_integer_forward_under_bf16_autocast():
    """Under CPU bf16 autocast the int32 accumulator is rescaled in float32 and rounded once to bf16; the float
    product rounds the accumulator to bf16 first. Same dtype, and equal within a bf16 step."""
    if training_codes_kernel("cpu") is None:
        pytest.skip("oneDNN int8 GEMM not available in this torch build")
    torch.manual_seed(0)
    layer = BitLinear(96, 40)
    x, grad_out = torch.randn(4, 96), torch.randn(4, 40)
    y, gx, gw, gb = _grads(layer, x, grad_out, torch.autocast("cpu", dtype=torch.bfloat16))
    w_t, gamma = quantize_ternary_absmean(layer.weight)
    x_int, s = quantize_per_token_absmax(x, 8)
    exact = (x_int.double() @ w_t.double().t()) * s.double() * gamma.double() + layer.bias.double()
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, exact.float().to(torch.bfloat16))  # one rounding, of the float32 rescale
    # the STE weight gradient in bf16: grad^T x_hat with both operands rounded to bf16
    ref = grad_out.bfloat16().float().t() @ (x_int.float() * s).bfloat16().float()
    torch.testing.assert_close(gw.float(), ref, rtol=2e-2, atol=2e-2)


def test_packed_layer_refuses_training():
    layer = PackedBitLinear.from_bitlinear(BitLinear(8, 4))
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(torch.randn(2, 8, requires_grad=True))


# ----------------------------------------------------------------------------- models
def ternary_8m(seed: int = 0) -> BitEsmForMaskedLM:
    torch.manual_seed(seed)
    return BitEsmForMaskedLM(bitesm_config_from_esm(EsmConfig.from_pretrained(str(ESM8M)), quantization="ternary")).eval()


def test_packed_8m_checkpoint_is_8x_smaller_and_loads_to_the_same_logits(tmp_path):
    model = ternary_8m()
    model.save_pretrained(tmp_path / "latent")
    EsmTokenizer.from_pretrained(str(ESM8M)).save_pretrained(tmp_path / "latent")
    assert bitesm_main(["export", "--model", str(tmp_path / "latent"), "--format", "packed",
                        "--output", str(tmp_path / "packed")]) == 0
    latent_bytes = (tmp_path / "latent" / "model.safetensors").stat().st_size
    packed_bytes = (tmp_path / "packed" / "model.safetensors").stat().st_size
    assert latent_bytes / packed_bytes >= 8, (latent_bytes, packed_bytes)
    assert json.loads((tmp_path / "packed" / "config.json").read_text())["weight_format"] == "packed"
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "packed").eval()
    assert sum(isinstance(m, PackedBitLinear) for m in loaded.modules()) == 36
    ids = torch.randint(4, 24, (2, 100))
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
        out = loaded(input_ids=ids).logits
    assert (out - ref).abs().max().item() <= 1e-4  # bit-identical in float32 in practice
    assert torch.equal(out, ref)
    # already packed / not ternary
    assert bitesm_main(["export", "--model", str(tmp_path / "packed"), "--output", str(tmp_path / "again")]) == 2
    with pytest.raises(PackedExportError, match="only ternary bitesm models"):
        fp = BitEsmForMaskedLM(bitesm_config_from_esm(EsmConfig.from_pretrained(str(ESM8M)), quantization=None))
        to_packed(fp)


def test_packed_folder_loads_without_bitesm_in_a_fresh_process(tmp_path):
    model = ternary_8m()
    packed = to_packed(copy.deepcopy(model))
    packed.save_pretrained(tmp_path / "packed")
    ids = torch.randint(4, 24, (1, 40))
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
    torch.save({"ids": ids, "logits": expected}, tmp_path / "io.pt")
    code = f"""
import sys, torch
from transformers import AutoModelForMaskedLM
m = AutoModelForMaskedLM.from_pretrained({str(tmp_path / 'packed')!r}, trust_remote_code=True).eval()
io = torch.load({str(tmp_path / 'io.pt')!r})
with torch.inference_mode():
    out = m(input_ids=io["ids"]).logits
assert 'bitesm' not in sys.modules, 'bitesm was imported'
print(type(m.esm.encoder.layer[0].attention.self.query).__name__, (out - io["logits"]).abs().max().item())
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    name, diff = result.stdout.split()[-2:]
    assert name == "PackedBitLinear" and float(diff) <= 1e-4
