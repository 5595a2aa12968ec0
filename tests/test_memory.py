"""Weight-memory report (PTQ4Protein Table III) on the real ESM-2 8M shape, with hand-computed byte counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import EsmConfig, EsmForMaskedLM

from bitesm.ptq.memory import default_quantized_modules, format_bytes, weight_memory_report

# ESM-2 8M (esm2_t6_8M_UR50D): hidden 320, FFN 1280, 6 layers, vocab 33.
N_PARAMS = 7_512_474  # deduplicated: lm_head.decoder.weight is tied to the word embeddings; incl. contact head
# Per layer: query/key/value/attention-output 4 * 320*320 + intermediate 320*1280 + output 1280*320
N_QUANT = 6 * (4 * 320 * 320 + 2 * 320 * 1280)  # = 6 * 1,228,800 = 7,372,800
N_SCALES = 6 * (4 * 320 + 1280 + 320)  # one per output channel: 6 * 2,880 = 17,280
SCALE_BYTES = 4 * N_SCALES  # 69,120
OTHER_BYTES = 4 * (N_PARAMS - N_QUANT)  # 4 * 139,674 = 558,696 (embeddings, LayerNorms, biases, heads)
FP32_BYTES = 4 * N_PARAMS  # 30,049,896


@pytest.fixture(scope="module")
def esm8m(esm8m_dir):
    torch.manual_seed(0)
    return EsmForMaskedLM(EsmConfig.from_pretrained(esm8m_dir))


def test_hand_computed_constants():
    assert N_QUANT == 7_372_800 and N_SCALES == 17_280 and SCALE_BYTES == 69_120
    assert OTHER_BYTES == 558_696 and FP32_BYTES == 30_049_896


@pytest.mark.parametrize("bits", [None, 32])
def test_fp32_baseline(esm8m, bits):
    r = weight_memory_report(esm8m, bits)
    assert sum(p.numel() for p in esm8m.parameters()) == N_PARAMS
    assert r["n_params"] == N_PARAMS
    assert r["total_bytes"] == r["fp32_bytes"] == r["other_bytes"] == 4 * N_PARAMS == 30_049_896
    assert r["quantized_weight_bytes"] == r["n_quantized_params"] == 0
    assert r["compression_ratio"] == 1.0 and r["weight_bits"] is None


@pytest.mark.parametrize(
    "bits, total, ratio",
    [
        # W8: 7,372,800 * 1 B + 69,120 (scales) + 558,696 (fp32 rest) = 8,000,616; 30,049,896 / 8,000,616
        (8, 8_000_616, 3.755948),
        # W6: 7,372,800 * 6/8 = 5,529,600 + 69,120 + 558,696 = 6,157,416; ratio 4.880277
        (6, 6_157_416, 4.880277),
        # W4: 7,372,800 / 2 = 3,686,400 + 69,120 + 558,696 = 4,314,216; ratio 6.965320
        (4, 4_314_216, 6.965320),
    ],
)
def test_esm8m_quantized_bytes(esm8m, bits, total, ratio):
    r = weight_memory_report(esm8m, bits, act_bits=8)
    assert r["n_quantized_params"] == N_QUANT and r["n_quantized_tensors"] == 36
    assert r["scale_bytes"] == SCALE_BYTES
    assert r["quantized_weight_bytes"] == N_QUANT * bits // 8 + SCALE_BYTES
    assert r["other_bytes"] == OTHER_BYTES
    assert r["total_bytes"] == total == r["quantized_weight_bytes"] + r["other_bytes"]
    assert r["fp32_bytes"] == FP32_BYTES
    assert r["compression_ratio"] == pytest.approx(FP32_BYTES / total) == pytest.approx(ratio, abs=1e-6)
    assert r["weight_bits"] == bits and r["act_bits"] == 8


def test_act_bits_do_not_change_weight_memory(esm8m):
    a, b = weight_memory_report(esm8m, 4, act_bits=4), weight_memory_report(esm8m, 4)
    assert a["total_bytes"] == b["total_bytes"] and a["act_bits"] == 4 and b["act_bits"] is None


def test_default_predicate_skips_heads_and_pooler():
    class MyLinear(nn.Linear):  # e.g. a BitLinear-like subclass
        pass

    assert default_quantized_modules("esm.encoder.layer.0.intermediate.dense", MyLinear(2, 2))
    for name in ("lm_head.dense", "esm.contact_head.regression", "esm.pooler.dense"):
        assert not default_quantized_modules(name, nn.Linear(2, 2))
    assert not default_quantized_modules("encoder.norm", nn.LayerNorm(2))

    model = nn.ModuleDict(
        {"encoder": MyLinear(10, 6), "pooler": nn.Linear(6, 6, bias=False), "norm": nn.LayerNorm(6)}
    )
    r = weight_memory_report(model, 3)
    # encoder.weight 60 params at 3 bits: ceil(180 / 8) = 23 B + 6 scales * 4 B = 47 B;
    # rest fp32: encoder.bias 6 + pooler 36 + norm 12 = 54 params * 4 B = 216 B.
    assert r["quantized_weight_bytes"] == 47 and r["other_bytes"] == 216 and r["total_bytes"] == 263
    assert r["fp32_bytes"] == 4 * (60 + 54) and r["n_quantized_params"] == 60


def test_custom_predicate_tied_weight_counted_once(esm8m):
    # Also quantize the LM-head decoder, whose weight *is* the word-embedding matrix (33 x 320 = 10,560).
    assert esm8m.lm_head.decoder.weight is esm8m.esm.embeddings.word_embeddings.weight

    def with_decoder(name, module):
        return default_quantized_modules(name, module) or name == "lm_head.decoder"

    r = weight_memory_report(esm8m, 8, quantized_modules=with_decoder)
    assert r["n_params"] == N_PARAMS and r["n_quantized_params"] == N_QUANT + 10_560
    assert r["scale_bytes"] == SCALE_BYTES + 4 * 33
    # 7,383,360 B codes + 69,252 B scales + 4 * (139,674 - 10,560) = 516,456 B -> 7,969,068 B
    assert r["total_bytes"] == 7_383_360 + 69_252 + 516_456 == 7_969_068


def test_invalid_bits(esm8m):
    with pytest.raises(ValueError, match=r"weight_bits=0 is not supported; pass an integer bit width 1\.\.16"):
        weight_memory_report(esm8m, 0)
    with pytest.raises(ValueError, match=r"act_bits=24"):
        weight_memory_report(esm8m, 8, act_bits=24)
    with pytest.raises(TypeError, match="weight_bits must be an int or None"):
        weight_memory_report(esm8m, 1.58)


def test_format_bytes():
    assert format_bytes(7_500_000) == "7.5 MB"
    assert format_bytes(512) == "512 B"
    assert format_bytes(0) == "0 B"
    assert format_bytes(1_500) == "1.5 kB"
    assert format_bytes(30_049_896) == "30.0 MB"
    assert format_bytes(4_314_216) == "4.3 MB"
    assert format_bytes(999_999) == "1.0 MB"
    assert format_bytes(2.5e9) == "2.5 GB"
    with pytest.raises(ValueError, match="bytes >= 0"):
        format_bytes(-1)
