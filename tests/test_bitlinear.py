"""Tests for bitesm.nn.bitlinear: BitLinear against an independent BitNet b1.58 reference, conversion of ESM-2."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import EsmConfig, EsmForMaskedLM

from bitesm.nn.bitlinear import DEFAULT_MODULES_TO_NOT_CONVERT, BitLinear, replace_linear_with_bitlinear

from conftest import PER_LAYER

# --- independent reference (BitNet b1.58 reference code, with bitesm's scale gamma + eps) -------------------


def ref_activation_quant(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    qp = 2 ** (bits - 1) - 1
    scale = qp / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    return (x * scale).round().clamp(-qp - 1, qp) / scale


def ref_weight_quant(w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    d = w.abs().mean() + eps
    return (w / d).round().clamp(-1, 1) * d


def ref_forward(x, w, b, bits=8, eps=1e-5):
    xq = ref_activation_quant(x, bits) if bits is not None else x
    y = xq @ ref_weight_quant(w, eps).T
    return y if b is None else y + b


def _layer(in_f=64, out_f=24, bias=True, seed=0, **kw) -> BitLinear:
    torch.manual_seed(seed)
    layer = BitLinear(in_f, out_f, bias=bias, **kw)
    if bias:
        with torch.no_grad():
            layer.bias.uniform_(-0.5, 0.5)
    return layer


# --- forward -----------------------------------------------------------------------------------------------


def test_forward_literal():
    layer = BitLinear(2, 2, bias=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.5], [0.25, -0.25]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.tensor([[127.0, -63.5]])
    # weights: gamma = 2.5 / 4 = 0.625, s = 0.62501, W~ = [[1, -1], [0, 0]]
    # activations: absmax 127 -> step 1, x_hat = [127, -64] (-63.5 ties to even)
    # y0 = 0.62501 * (127 + 64) + 0.5 = 119.37691 + 0.5 = 119.87691 ; y1 = 0 - 1 = -1
    y = layer(x)
    torch.testing.assert_close(y, torch.tensor([[119.87691, -1.0]]), rtol=0, atol=2e-5)
    # activation_bits=None: x unchanged, y0 = 0.62501 * 190.5 + 0.5 = 119.064405 + 0.5 = 119.564405
    layer.activation_bits = None
    torch.testing.assert_close(layer(x), torch.tensor([[119.564405, -1.0]]), rtol=0, atol=2e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bits", [8, 4, None])
def test_forward_matches_reference(bias, bits):
    layer = _layer(bias=bias, activation_bits=bits)
    g = torch.Generator().manual_seed(1)
    row_scale = torch.logspace(-2, 2, 5).view(1, 5, 1)  # tokens of very different magnitudes
    x = torch.randn(3, 5, 64, generator=g) * row_scale
    with torch.no_grad():
        y = layer(x)
        ref = ref_forward(x, layer.weight, layer.bias, bits=bits)
    assert y.shape == (3, 5, 24)
    # float rounding grows with the token's magnitude: compare at unit scale, within 1e-6
    assert ((y - ref).abs() / row_scale.clamp(min=1)).max() <= 1e-6
    # the quantization is not a no-op: plain nn.Linear differs
    assert (y - nn.functional.linear(x, layer.weight, layer.bias)).abs().max() > 1e-2


def test_bias_is_full_precision_and_optional():
    layer = _layer(bias=True)
    x = torch.randn(4, 64)
    with torch.no_grad():
        y_bias = layer(x)
        b = layer.bias.clone()
        layer.bias.zero_()
        y_zero = layer(x)
    # the bias is added unquantized
    torch.testing.assert_close(y_bias - y_zero, b.expand(4, -1), rtol=0, atol=1e-6)
    assert _layer(bias=False).bias is None


def test_weight_eps_is_used():
    layer = _layer(bias=False, activation_bits=None, weight_eps=0.5)
    x = torch.randn(2, 64)
    with torch.no_grad():
        ref = ref_forward(x, layer.weight, None, bits=None, eps=0.5)
        torch.testing.assert_close(layer(x), ref, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(layer(x), ref_forward(x, layer.weight, None, bits=None, eps=1e-5))


def test_zero_input_row_is_finite():
    layer = _layer()
    y = layer(torch.zeros(2, 64))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, layer.bias.detach().expand(2, -1))


def test_bf16_forward_dtype():
    layer = _layer().to(torch.bfloat16)
    y = layer(torch.randn(3, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == (3, 24)


# --- backward (STE) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, None])
def test_backward_is_straight_through(bits):
    layer = _layer(activation_bits=bits)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 64, generator=g).requires_grad_()
    grad_out = torch.randn(2, 3, 24, generator=g)
    layer(x).backward(grad_out)
    with torch.no_grad():
        x_hat = (ref_activation_quant(x, bits) if bits else x).reshape(-1, 64)
        w_hat = ref_weight_quant(layer.weight)
        go = grad_out.reshape(-1, 24)
        # dL/dW = grad_out^T @ x_hat (STE through the weight quantizer)
        torch.testing.assert_close(layer.weight.grad, go.T @ x_hat, rtol=1e-5, atol=1e-5)
        # dL/dx = grad_out @ W_hat (STE through the activation quantizer)
        torch.testing.assert_close(x.grad, grad_out @ w_hat, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.bias.grad, go.sum(0), rtol=1e-6, atol=1e-6)


# --- from_linear / state dict --------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_shares_parameters(bias):
    lin = nn.Linear(5, 3, bias=bias)
    bl = BitLinear.from_linear(lin, activation_bits=4, weight_eps=1e-3)
    assert bl.weight is lin.weight
    assert bl.bias is lin.bias if bias else bl.bias is None
    assert (bl.in_features, bl.out_features, bl.activation_bits, bl.weight_eps) == (5, 3, 4, 1e-3)
    assert bl.weight.device.type == "cpu"
    assert list(bl.state_dict()) == list(lin.state_dict())
    assert [n for n, _ in bl.named_parameters()] == [n for n, _ in lin.named_parameters()]
    # a change through one is seen by the other
    with torch.no_grad():
        lin.weight.add_(1.0)
    assert torch.equal(bl.weight, lin.weight)


def test_state_dict_interchangeable_with_linear():
    assert list(BitLinear(6, 4).state_dict()) == ["weight", "bias"] == list(nn.Linear(6, 4).state_dict())
    assert list(BitLinear(6, 4, bias=False).state_dict()) == ["weight"]
    lin = nn.Linear(6, 4)
    bl = BitLinear(6, 4)
    bl.load_state_dict(lin.state_dict(), strict=True)
    assert torch.equal(bl.weight, lin.weight) and torch.equal(bl.bias, lin.bias)


@pytest.mark.parametrize("bad", [1, 0, 17, -8])
def test_invalid_activation_bits(bad):
    with pytest.raises(ValueError, match=rf"activation_bits must be None or in \[2, 16\], got {bad}"):
        BitLinear(4, 4, activation_bits=bad)


def test_extra_repr_mentions_quantization():
    assert "weights=ternary(absmean), activation_bits=8" in repr(BitLinear(4, 2))


# --- replace_linear_with_bitlinear on ESM-2 8M ---------------------------------------------------------------



@pytest.fixture()
def esm8m(esm8m_dir):
    torch.manual_seed(0)
    return EsmForMaskedLM(EsmConfig.from_pretrained(esm8m_dir))


def _bitlinear_names(model):
    return {n for n, m in model.named_modules() if isinstance(m, BitLinear)}


def test_replace_esm8m_defaults(esm8m):
    assert esm8m.config.hidden_size == 320 and esm8m.config.num_hidden_layers == 6
    params_before = {n: p for n, p in esm8m.named_parameters()}
    keys_before = list(esm8m.state_dict())
    n = replace_linear_with_bitlinear(esm8m, activation_bits=4, weight_eps=1e-3)
    assert n == 36  # 6 layers x (q, k, v, attention out, intermediate, output)
    expected = {f"esm.encoder.layer.{i}.{s}" for i in range(6) for s in PER_LAYER}
    assert _bitlinear_names(esm8m) == expected
    for name in ("lm_head.dense", "lm_head.decoder", "esm.contact_head.regression"):
        assert type(esm8m.get_submodule(name)) is nn.Linear
    for name in expected:
        m = esm8m.get_submodule(name)
        assert (m.activation_bits, m.weight_eps) == (4, 1e-3)
    # parameters are shared, not copied, and the state dict is unchanged
    assert all(p is params_before[n] for n, p in esm8m.named_parameters())
    assert list(esm8m.state_dict()) == keys_before
    assert DEFAULT_MODULES_TO_NOT_CONVERT == ("lm_head", "contact_head", "pooler")
    # a second pass finds nothing left to convert
    assert replace_linear_with_bitlinear(esm8m) == 0


def test_replace_custom_modules_to_not_convert(esm8m):
    n = replace_linear_with_bitlinear(esm8m, modules_to_not_convert=["attention", "lm_head", "contact_head"])
    assert n == 12  # only the FFN: 6 x (intermediate.dense, output.dense)
    assert _bitlinear_names(esm8m) == {
        f"esm.encoder.layer.{i}.{s}" for i in range(6) for s in ("intermediate.dense", "output.dense")
    }


def test_replace_custom_list_replaces_defaults(esm8m):
    # documented semantics (as transformers' bitnet integration): a custom list replaces the default one,
    # so ["attention"] converts the 12 FFN layers plus lm_head.dense, lm_head.decoder and contact_head.regression
    assert replace_linear_with_bitlinear(esm8m, modules_to_not_convert=["attention"]) == 15
    names = _bitlinear_names(esm8m)
    assert {"lm_head.dense", "lm_head.decoder", "esm.contact_head.regression"} <= names
    assert not any(".attention." in n for n in names)


def test_replace_matches_whole_name_components_only(esm8m):
    keep = ["esm.encoder.layer.0.attention.self.query", "atten", "lm_head", "contact_head"]
    # an exact qualified name keeps that one layer; "atten" is not a name component and keeps nothing
    assert replace_linear_with_bitlinear(esm8m, modules_to_not_convert=keep) == 35
    assert type(esm8m.get_submodule("esm.encoder.layer.0.attention.self.query")) is nn.Linear
    assert isinstance(esm8m.get_submodule("esm.encoder.layer.1.attention.self.query"), BitLinear)


def test_replace_rejects_invalid_activation_bits():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"activation_bits must be None or in \[2, 16\], got 1"):
        replace_linear_with_bitlinear(model, activation_bits=1)


def test_replaced_model_matches_reference_forward():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4, bias=False))
    x = torch.randn(5, 16)
    assert replace_linear_with_bitlinear(model, modules_to_not_convert=None) == 2
    with torch.no_grad():
        h = torch.relu(ref_forward(x, model[0].weight, model[0].bias))
        ref = ref_forward(h, model[2].weight, None)
        torch.testing.assert_close(model(x), ref, rtol=1e-6, atol=1e-6)
