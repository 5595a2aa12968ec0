"""Sliding-window attention (Long ESM-2): the band rule, the kernels against a dense reference, and the models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import EsmConfig, EsmForMaskedLM

from bitesm.models import BitEsmConfig, BitEsmForMaskedLM, bitesm_config_from_esm
from bitesm.nn.sliding_window_attention import (
    ATTENTION_NAME,
    chunked_sliding_window_attention,
    flex_sliding_window_attention,
    padding_lengths,
    sliding_window_mask,
    window_span,
    window_starts,
)

# --- the band ---------------------------------------------------------------------------------------------------


def test_window_span():
    assert window_span(1024) == 1025  # |i - j| <= 512
    assert window_span(4) == 5
    assert window_span(5) == 5  # odd: 2 on each side


def test_band_by_hand():
    # n = 10 tokens, window 4 (2 each side, span 5): interior queries see i-2..i+2, ends are shifted inside.
    start, end = window_starts(torch.tensor([10]), 10, 4)
    assert start[0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 5, 5]
    assert (end - start)[0].tolist() == [5] * 10
    mask = sliding_window_mask(torch.tensor([10]), 10, 4)[0]
    assert mask[4].nonzero().flatten().tolist() == [2, 3, 4, 5, 6]
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert mask[9].nonzero().flatten().tolist() == [5, 6, 7, 8, 9]


def test_band_with_padding_is_the_band_of_the_row_alone():
    # row of 6 real tokens padded to 10: real queries get the 6-token band, padding queries the last real band
    start, end = window_starts(torch.tensor([6, 10]), 10, 4)
    alone_start, alone_end = window_starts(torch.tensor([6]), 6, 4)
    assert torch.equal(start[0, :6], alone_start[0]) and torch.equal(end[0, :6], alone_end[0])
    assert start[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert int(end[0].max()) == 6  # never a padding key


def test_window_at_least_sequence_is_global():
    mask = sliding_window_mask(torch.tensor([9, 7]), 9, 8)
    assert bool(mask[0].all())
    assert bool(mask[1][:, :7].all()) and not bool(mask[1][:, 7:].any())


@pytest.mark.parametrize("window", [1, 0, 2.5, None, True])
def test_window_out_of_range(window):
    with pytest.raises(ValueError, match="attention_window=.* is out of range; use an int >= 2"):
        window_span(window)


def test_padding_lengths_errors():
    with pytest.raises(ValueError, match="right-padded"):
        padding_lengths(torch.tensor([[0, 1, 1]]), 1, 3, "cpu")
    with pytest.raises(ValueError, match="2D padding mask"):
        padding_lengths(torch.ones(1, 1, 3, 3), 1, 3, "cpu")
    with pytest.raises(ValueError, match="no tokens"):
        padding_lengths(torch.tensor([[1, 1, 1], [0, 0, 0]]), 2, 3, "cpu")
    assert padding_lengths(torch.tensor([[1, 1, 0], [1, 1, 1]]), 2, 3, "cpu").tolist() == [2, 3]


# --- kernels against a dense reference --------------------------------------------------------------------------


def _reference(q, k, v, lengths, window):
    mask = sliding_window_mask(lengths, q.shape[2], window).unsqueeze(1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _valid(lengths, seq_len):
    return (torch.arange(seq_len)[None, :] < lengths[:, None])[:, None, :, None]


@pytest.mark.parametrize("window,block", [(16, 8), (30, 7), (64, 32), (200, 16)])
def test_chunked_equals_dense_reference(window, block):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 90, 8) for _ in range(3))
    lengths = torch.tensor([90, 41, 7])
    out = chunked_sliding_window_attention(q, k, v, lengths, window, block_size=block)
    ref = _reference(q, k, v, lengths, window)
    valid = _valid(lengths, 90).expand_as(out)
    assert (out - ref)[valid].abs().max().item() < 1e-6
    assert torch.isfinite(out).all()  # padding queries too


def test_chunked_gradients_equal_dense_reference():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 40, 8, requires_grad=True) for _ in range(3))
    lengths = torch.tensor([40, 25])
    weight = _valid(lengths, 40).float()  # loss over real queries only
    (chunked_sliding_window_attention(q, k, v, lengths, 10, block_size=8) * weight).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    (_reference(q, k, v, lengths, 10) * weight).sum().backward()
    for got, t in zip(grads, (q, k, v)):
        assert (got - t.grad).abs().max().item() < 1e-5


def test_flex_equals_dense_reference_forward():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 80, 8) for _ in range(3))
    lengths = torch.tensor([80, 33])
    out = flex_sliding_window_attention(q, k, v, lengths, 20, compile=False)
    ref = _reference(q, k, v, lengths, 20)
    valid = _valid(lengths, 80).expand_as(out)
    assert (out - ref)[valid].abs().max().item() < 1e-5


# --- models -----------------------------------------------------------------------------------------------------

IDS = torch.tensor([[0] + [5, 8, 13, 20, 4, 9, 11, 15, 6, 17] * 4 + [2], [0] + [7, 12, 4, 16, 10] * 5 + [2] + [1] * 15])
MASK = (IDS != 1).long()


@pytest.mark.parametrize("quantization", [None, "ternary"])
@pytest.mark.parametrize("padded", [False, True])
def test_long_model_with_window_covering_sequence_equals_global(small_esm_kwargs, quantization, padded):
    """The bar: window >= sequence length gives the global model's logits (max abs diff <= 1e-5, fp32)."""
    torch.manual_seed(0)
    esm = EsmForMaskedLM(EsmConfig(**small_esm_kwargs)).eval()
    global_model = BitEsmForMaskedLM(BitEsmConfig(quantization=quantization, **small_esm_kwargs)).eval()
    global_model.load_state_dict(esm.state_dict(), strict=False)
    length = IDS.shape[1]
    long_model = BitEsmForMaskedLM(
        BitEsmConfig(quantization=quantization, attention_window=length, **small_esm_kwargs)
    ).eval()
    long_model.load_state_dict(global_model.state_dict(), strict=True)
    assert long_model.config._attn_implementation == ATTENTION_NAME
    ids, mask = (IDS, MASK) if padded else (IDS[:1], None)
    with torch.no_grad():
        expected = global_model(input_ids=ids, attention_mask=mask).logits
        got = long_model(input_ids=ids, attention_mask=mask).logits
        if quantization is None:
            assert (esm(input_ids=ids, attention_mask=mask).logits - expected).abs().max().item() == 0.0
    real = (MASK[: ids.shape[0]] == 1) if padded else torch.ones_like(ids, dtype=torch.bool)
    assert (got - expected)[real].abs().max().item() <= 1e-5


def test_long_model_padding_does_not_change_real_positions(small_esm_kwargs):
    torch.manual_seed(0)
    model = BitEsmForMaskedLM(BitEsmConfig(quantization="ternary", attention_window=8, **small_esm_kwargs)).eval()
    n = int(MASK[1].sum())
    with torch.no_grad():
        batched = model(input_ids=IDS, attention_mask=MASK).logits[1, :n]
        alone = model(input_ids=IDS[1:, :n]).logits[0]
    assert (batched - alone).abs().max().item() <= 1e-5


def test_long_model_narrow_window_is_local_and_trains(small_esm_kwargs):
    """A token change reaches a position only within the receptive field (layers * window/2), and gradients flow."""
    torch.manual_seed(0)
    kwargs = dict(small_esm_kwargs, num_hidden_layers=2)
    model = BitEsmForMaskedLM(BitEsmConfig(quantization=None, attention_window=6, **kwargs))
    ids = IDS[:1].clone()
    changed = ids.clone()
    changed[0, 30] = 19
    model.eval()
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    # receptive field after 2 layers: +-6 positions (3 per layer); position 5 is 25 away
    assert (a[0, 5] - b[0, 5]).abs().max().item() == 0.0
    assert (a[0, 29] - b[0, 29]).abs().max().item() > 0.0
    model.train()
    labels = torch.full_like(ids, -100)
    labels[0, 10] = ids[0, 10]
    model(input_ids=ids, labels=labels).loss.backward()
    assert model.esm.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_long_model_runs_past_max_position_embeddings(small_esm_kwargs):
    kwargs = dict(small_esm_kwargs, max_position_embeddings=66)
    model = BitEsmForMaskedLM(BitEsmConfig(quantization="ternary", attention_window=16, **kwargs)).eval()
    ids = torch.randint(4, 24, (1, 300))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_save_and_reload_keeps_sliding_window(tmp_path, small_esm_kwargs):
    model = BitEsmForMaskedLM(BitEsmConfig(quantization="ternary", attention_window=8, **small_esm_kwargs)).eval()
    model.save_pretrained(tmp_path)
    again = BitEsmForMaskedLM.from_pretrained(tmp_path).eval()
    assert again.config.attention_window == 8 and again.config._attn_implementation == ATTENTION_NAME
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS[:1]).logits, again(input_ids=IDS[:1]).logits)


def test_config_errors(small_esm_kwargs):
    with pytest.raises(Exception, match=r"attention_window=1 is out of range"):
        BitEsmConfig(attention_window=1)
    with pytest.raises(Exception, match="ptq softmax sites need the explicit"):
        BitEsmConfig(attention_window=64, ptq={"act_bits": 8, "sites": ["softmax_input"]})
    model = BitEsmForMaskedLM(BitEsmConfig(quantization=None, attention_window=8, **small_esm_kwargs)).eval()
    with pytest.raises(ValueError, match="does not return attention maps"):
        model(input_ids=IDS[:1], output_attentions=True)
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=IDS[:1], attention_mask=torch.flip(MASK[1:], dims=[1]))


def test_bitesm_config_from_esm_keeps_window(esm8m_dir):
    config = bitesm_config_from_esm(EsmConfig.from_pretrained(esm8m_dir), quantization=None, attention_window=1024)
    assert config.attention_window == 1024
    assert BitEsmConfig.from_dict(config.to_dict()).attention_window == 1024
