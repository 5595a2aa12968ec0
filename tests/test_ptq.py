"""Post-training quantization (PTQ4Protein): sites, calibration, saved models, the CLI, the shared quantizer core."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModelForMaskedLM, EsmConfig, EsmForMaskedLM

import bitesm
from bitesm.data.collator import encode_protein
from bitesm.models import BitEsmConfig, BitEsmForMaskedLM, bitesm_config_from_esm, load_esm_config
from bitesm.ptq.convert import build_quantized_model, calibrate, load_fp_model, ptq_settings, quantize_model
from bitesm.ptq.sites import SITES, activation_quantizers

REPO = Path(__file__).resolve().parents[1]
ESM8M = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
SEQS = [
    "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAACEQWL",
    "MSHHWGYGKHNGPEHWHKDFPIAKGERQSPVDIDTHTAKYDPSLKPLSVSYDQATSLRILNNGHAFNVEFDDSQDKAVLKGGPLDGTYRLIQFHFHWGSLDGQGSEHTVDKKKYAAELHLVHWNTKYGDFGKAVQQPDGLAVLGIFLKVGSAKPGLQKVVDVLDSIKTKGKSADFTNFDPRGLLPESLDYWTYPGSLTTPPLLECVTWIVLKEPISVSSEQVLKFRKLNFNGEGEPEELMVDNWRPAQPLKNRQIKASFK",
    "MAHHHHHHVDDDDKMKIEEGKLVIWINGDKGYNGLAEVGKKFEKDTGIKVTVEHPDKLEEKFPQVAATGDGPDIIFWAHDRFGGYAQSGLLAEITPDKAFQDKLYPFTWDAVRYNGKLIAYPIAVEALSLIYNKDLLPNPPKTWEEIPALDKELKAKGKSALMFNLQEPYFTWPLIAADGGYAFKYENGKYDIKDVGVDNAGAKAGLTFLVDLIKNKHMNADTDYSIAEAAFNKGETAMTINGPWAWSNIDTSKVNYGVTVLPTFKGQPSKPFVGVLSAGINAASPNKELAKEFLENYLLTDEGLEAVNKDKPLGAVALKSYEEELAKDPRIAATMENAQKGEIMPNIPQMSAFWYAVRTAVINAASGRQTVDEALKDAQT",
    "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR",
]


def tiny_model(quantization=None, seed: int = 0) -> BitEsmForMaskedLM:
    config = bitesm_config_from_esm(
        load_esm_config(ESM8M), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        quantization=quantization,
    )
    torch.manual_seed(seed)
    return BitEsmForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return bitesm.data.load_tokenizer()


def _ids(tokenizer, seq):
    return torch.tensor([bitesm.data.encode_protein(tokenizer, seq)])


def test_ptq_and_bitlinear_share_one_quantizer_core():
    import bitesm.nn.bitlinear as bitlinear
    import bitesm.nn.int8_linear as int8_linear
    import bitesm.nn.packed_bitlinear as packed
    import bitesm.quant.piecewise as piecewise
    import bitesm.quant.primitives as primitives

    # BitLinear (QAT), the packed integer layer and the PTQ quantizers are functions of bitesm.quant.primitives
    assert bitlinear.fake_quantize_ternary_absmean is primitives.fake_quantize_ternary_absmean
    assert bitlinear.ternary_linear is primitives.ternary_linear
    assert packed.quantize_ternary_absmean is primitives.quantize_ternary_absmean
    assert int8_linear.quantize_per_token_absmax is primitives.quantize_per_token_absmax
    assert int8_linear.rescale_accumulator is primitives.rescale_accumulator
    assert piecewise.quantize_affine is primitives.quantize_affine
    assert piecewise.dequantize_affine is primitives.dequantize_affine


def test_sites_attach_the_expected_quantizers():
    model = build_quantized_model(tiny_model(), ptq_settings(8, 8, "uniform", SITES))
    sites = [q.site for q in activation_quantizers(model).values()]
    # per layer: 2 LayerNorms (in + out), 6 Linear inputs, softmax in + out; plus the final LayerNorm (in + out)
    assert sites.count("ffn_input") == 2 * 6
    assert sites.count("layernorm_input") == sites.count("layernorm_output") == 2 * 2 + 1
    assert sites.count("softmax_input") == sites.count("softmax_output") == 2
    last_only = build_quantized_model(tiny_model(), ptq_settings(None, 8, "uniform", ["layernorm_input"], [-1]))
    assert sorted(activation_quantizers(last_only)) == [
        "esm.encoder.emb_layer_norm_after.input_quantizer",
        "esm.encoder.layer.1.LayerNorm.input_quantizer",
        "esm.encoder.layer.1.attention.LayerNorm.input_quantizer",
    ]


def test_uncalibrated_model_refuses_to_run(tokenizer):
    model = build_quantized_model(tiny_model(), ptq_settings(8, 8, "piecewise", SITES))
    with pytest.raises(RuntimeError, match="no calibrated range; calibrate the model first"):
        model(_ids(tokenizer, SEQS[0]))


def test_ptq_config_values_are_validated():
    with pytest.raises(StrictDataclassError, match=r"ptq.act_bits=1 is out of range"):
        BitEsmConfig(ptq={"act_bits": 1, "sites": ["ffn_input"]})
    with pytest.raises(StrictDataclassError, match=r"unknown site\(s\) \['gelu_output'\]"):
        BitEsmConfig(ptq={"act_bits": 8, "sites": ["gelu_output"]})
    with pytest.raises(StrictDataclassError, match=r"ptq.method='log2'"):
        BitEsmConfig(ptq={"act_bits": 8, "method": "log2", "sites": ["ffn_input"]})


def test_weight_only_ptq_puts_weights_on_a_per_channel_grid():
    fp = tiny_model()
    quantized = quantize_model(fp, None, [], weight_bits=4, act_bits=None)
    w = quantized.esm.encoder.layer[0].intermediate.dense.weight
    w_fp = fp.esm.encoder.layer[0].intermediate.dense.weight
    for row, row_fp in zip(w, w_fp):
        step = row_fp.abs().max() / 7  # 4-bit symmetric: absmax maps to 2^3 - 1 = 7
        codes = row / step
        assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 7 + 1e-4
        assert (row - row_fp).abs().max() <= step / 2 + 1e-6
    # the LM head stays in floating point
    assert torch.equal(quantized.lm_head.dense.weight, fp.lm_head.dense.weight)


def test_calibrated_ranges_cover_the_calibration_activations_and_padding_is_masked(tokenizer):
    fp = tiny_model()
    quantized = quantize_model(fp, tokenizer, SEQS, weight_bits=8, act_bits=8, method="piecewise", batch_size=2)
    ranges = {name: (float(q.r_l), float(q.r_u)) for name, q in activation_quantizers(quantized).items()}
    assert all(lo <= 0.0 <= hi and hi > lo for lo, hi in ranges.values())
    probs = [r for name, r in ranges.items() if "softmax_output" in name]
    assert all(0.0 < hi <= 1.0 for _, hi in probs)  # softmax outputs are probabilities
    # padding must not change the logits of real tokens (scores are quantized before the mask is added)
    alone = quantized(_ids(tokenizer, SEQS[3])).logits
    ids = torch.cat([_ids(tokenizer, SEQS[3]), torch.ones(1, 20, dtype=torch.long)], dim=1)
    mask = (ids != 1).long()
    padded = quantized(ids, attention_mask=mask).logits[:, : alone.shape[1]]
    assert torch.allclose(alone, padded, atol=1e-4)
    # 8-bit piecewise stays close to the fp model, but is not identical to it
    with torch.no_grad():
        diff = (quantized(_ids(tokenizer, SEQS[0])).logits - fp(_ids(tokenizer, SEQS[0])).logits).abs()
    assert 0 < diff.max() < 0.5


def test_calibration_stores_the_breakpoint_scale_std_or_rms(tokenizer):
    """eq. 6's scale: the std of the activations for ranges around 0, their RMS for probabilities (one-sided)."""
    fp = tiny_model()
    quantized = quantize_model(fp, tokenizer, SEQS[:2], weight_bits=None, act_bits=8, method="piecewise",
                               sites=["softmax_output", "layernorm_output"], layers=[0], batch_size=2)
    seen = {}
    quantizers = activation_quantizers(quantized)
    for name, q in quantizers.items():
        q.observer = type("Capture", (), {"update": lambda self, x, name=name: seen.setdefault(name, []).append(x)})()
    with torch.no_grad():
        # the batch calibrate() ran: both proteins, right-padded
        rows = [encode_protein(tokenizer, s) for s in SEQS[:2]]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        quantized(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long())
    for name, q in quantizers.items():
        q.observer = None
        x = torch.cat([t.flatten().double() for t in seen[name]])
        expected = x.pow(2).mean().sqrt() if float(q.r_l) >= 0 else x.std(unbiased=False)
        assert float(q.std) == pytest.approx(float(expected), rel=1e-4), name
    assert {q.site for q in quantizers.values()} == {"softmax_output", "layernorm_output"}


def test_quantized_model_round_trips_through_save_pretrained(tmp_path, tokenizer):
    quantized = quantize_model(tiny_model("ternary"), tokenizer, SEQS, weight_bits=8, act_bits=6, method="uniform")
    quantized.save_pretrained(tmp_path)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.ptq == quantized.config.ptq and reloaded.config.quantization == "ternary"
    for name, q in activation_quantizers(reloaded).items():
        original = activation_quantizers(quantized)[name]
        assert (float(q.r_l), float(q.r_u)) == (float(original.r_l), float(original.r_u))
    ids = _ids(tokenizer, SEQS[1])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, quantized(ids).logits)
    # the remote-code bundle carries the PTQ modules
    assert {"sites.py", "attention.py", "piecewise.py", "primitives.py"} <= {p.name for p in tmp_path.glob("*.py")}


@pytest.mark.slow
def test_cli_quantizes_an_esm2_checkpoint_in_facebook_format(tmp_path):
    torch.manual_seed(0)
    EsmForMaskedLM(EsmConfig.from_pretrained(ESM8M)).save_pretrained(tmp_path / "esm2")
    for file in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "esm2" / file).write_bytes((ESM8M / file).read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "bitesm.cli", "ptq", "--model", str(tmp_path / "esm2"), "--output", str(tmp_path / "w8a8"),
         "--weight-bits", "8", "--act-bits", "8", "--method", "piecewise", "--num-calibration", "8",
         "--sampling", "uniform", "--max-length", "256"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "w8a8" / "ptq_report.json").read_text())
    assert report["ptq"]["act_bits"] == 8 and report["memory"]["compression_ratio"] == pytest.approx(3.7559, abs=1e-3)
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "w8a8").eval()
    assert len(activation_quantizers(model)) == 6 * (2 * 2 + 6 + 2) + 2
    with torch.no_grad():
        logits = model(torch.tensor([[0, 20, 15, 11, 5, 19, 12, 5, 15, 16, 10, 2]])).logits
    assert logits.shape == (1, 12, 33) and torch.isfinite(logits).all()


def test_load_fp_model_refuses_an_already_quantized_checkpoint(tmp_path, tokenizer):
    quantize_model(tiny_model(), tokenizer, SEQS[:2], weight_bits=8, act_bits=8).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="already post-training quantized"):
        load_fp_model(tmp_path)


def test_calibrate_needs_quantizers_and_sequences(tokenizer):
    model = build_quantized_model(tiny_model(), ptq_settings(8, None))
    with pytest.raises(ValueError, match="no activation quantizers"):
        calibrate(model, tokenizer, SEQS)
    model = build_quantized_model(tiny_model(), ptq_settings(8, 8))
    with pytest.raises(ValueError, match="at least one sequence"):
        calibrate(model, tokenizer, [])


# -- refusals: packed checkpoints, settings that would quantize nothing ------------------------------------------


def _saved(model, folder: Path, tokenizer) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


def test_ptq_refuses_a_packed_checkpoint(tmp_path, tokenizer, capsys):
    from bitesm.cli import main
    from bitesm.models.packed import to_packed
    from bitesm.ptq.convert import PTQInputError

    packed = _saved(to_packed(tiny_model("ternary")), tmp_path / "packed", tokenizer)
    with pytest.raises(PTQInputError, match=r"packed checkpoint \(weight_format 'packed' in .*config\.json.*"
                                            r"quantize 0 weight tensors.*Fix: quantize the latent checkpoint, the one "
                                            r"before 'bitesm export --format packed'"):
        load_fp_model(packed)
    assert main(["ptq", "--model", str(packed), "--output", str(tmp_path / "w8a8")]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("bitesm ptq: error: ") and "latent checkpoint" in line
    assert not (tmp_path / "w8a8").exists()


def test_ptq_refuses_settings_that_would_quantize_nothing(tmp_path, tokenizer, capsys):
    from bitesm.cli import main
    from bitesm.ptq.convert import PTQInputError, check_ptq_effect

    ternary, fp = tiny_model("ternary"), tiny_model()
    with pytest.raises(PTQInputError, match=r"--weight-bits 8: .* 12 encoder Linear layers are ternary.*0 tensors "
                                            r"would be quantized.*Fix: pass --weight-bits 32"):
        check_ptq_effect(ternary, ptq_settings(8, 8))
    check_ptq_effect(ternary, ptq_settings(None, 8))  # activation-only PTQ of a ternary model is fine
    check_ptq_effect(fp, ptq_settings(8, None))
    with pytest.raises(PTQInputError, match=r"--weight-bits 32 --act-bits 32 quantizes nothing"):
        check_ptq_effect(fp, ptq_settings(32, 32))
    with pytest.raises(PTQInputError, match=r"--act-bits 8 with no --sites quantizes no activation"):
        check_ptq_effect(fp, ptq_settings(None, 8, sites=[]))
    with pytest.raises(PTQInputError, match=r"--layers \[5\] out of range: .* has 2 encoder layers"):
        check_ptq_effect(fp, ptq_settings(None, 8, layers=[5]))
    folder = _saved(ternary, tmp_path / "ternary", tokenizer)
    assert main(["ptq", "--model", str(folder), "--output", str(tmp_path / "out"), "--weight-bits", "8",
                 "--act-bits", "32"]) == 2
    assert "mislabelled W8" in _one_error_line(capsys) and not (tmp_path / "out").exists()


# -- ptq analyze: labels, the ternary note, the packed size, progress -----------------------------------------------


def test_baseline_label_names_the_model_precision():
    from bitesm.ptq.analysis import baseline_label

    assert baseline_label(tiny_model("ternary")) == "ternary W1.58A8 (as trained)"
    assert baseline_label(tiny_model()) == "FP32 (W32A32)"


@pytest.mark.slow
def test_analyze_a_ternary_model_labels_it_and_reports_the_export_size(tmp_path, tokenizer, capsys):
    from bitesm.models.packed import export_packed
    from bitesm.ptq.analysis import TERNARY_WEIGHTS_NOTE, analyze

    folder = _saved(tiny_model("ternary"), tmp_path / "ternary", tokenizer)
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">p{i}\n{(SEQS[i % 4] * 2)[: 20 + 9 * i]}\n" for i in range(12)))
    tables = analyze(
        str(folder), tmp_path / "analysis", calibration=str(fasta), sampling="uniform", num_calibration=2,
        observer="minmax", max_length=64, batch_size=2, seed=0, assays="", reference="", assay_ids="",
        validation_size=3, eval_max_length=64,
    )
    table1 = tables["table1_sites"].set_index("configuration")
    baseline = table1.loc["ternary W1.58A8 (as trained)"]
    w8a32 = table1.loc["W8A32"]
    assert w8a32["note"] == f"{TERNARY_WEIGHTS_NOTE}: equals the baseline"
    assert w8a32["val_loss"] == baseline["val_loss"]  # the ternary weights are unchanged by weight PTQ
    assert table1.loc["W8A8"]["note"] == TERNARY_WEIGHTS_NOTE and table1.loc["W32A8"]["note"].startswith("ternary weights")
    memory = tables["table3_memory"]
    exported = export_packed(folder, tmp_path / "packed")
    assert list(memory["model_bytes"]) == [exported["input_bytes"], exported["output_bytes"]]
    assert memory["compression_ratio"].iloc[1] == pytest.approx(exported["ratio"])
    assert "ternary W1.58A8 (as trained)" in (tmp_path / "analysis" / "tables.md").read_text()
    assert "ptq analyze: 100%" in capsys.readouterr().err  # the progress bar over the 18 configurations
