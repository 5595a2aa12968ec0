"""Long ESM-2 (arXiv 2501.07747): checkpoint conversion, ``bitesm convert long``, and training a long model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, EsmConfig, EsmForMaskedLM

import bitesm  # noqa: F401  (registers the Auto classes)
from bitesm.cli import main
from bitesm.data import encode_protein, load_tokenizer
from bitesm.models import BitEsmConfig, BitEsmForMaskedLM
from bitesm.models.long import convert_to_long, extend_position_embeddings, max_residues
from bitesm.nn.bitlinear import BitLinear
from bitesm.nn.sliding_window_attention import ATTENTION_NAME
from bitesm.training import build_model
from bitesm.training.config import ConfigError, ModelConfig, load_config

from conftest import PER_LAYER, REPO

PROTEIN = "MKTAYIAKQRQISFVKSHFSRQLEERLG"  # 30 tokens: attention stays global for windows >= 29
LONG_PROTEIN = ("ACDEFGHIKLMNPQRSTVWY" * 55)[:1100]  # 1,102 tokens: more than ESM-2's 1,026 positions

pytestmark = pytest.mark.usefixtures("one_thread")


def _ids(sequence: str) -> torch.Tensor:
    return torch.tensor([encode_protein(load_tokenizer(), sequence)])


def _logits(model, sequence: str = PROTEIN) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=_ids(sequence)).logits


@pytest.fixture()
def esm_checkpoint(tmp_path, small_esm_kwargs) -> tuple[Path, EsmForMaskedLM]:
    """A tiny random ESM-2 (rotary, 1,026 positions) saved in facebook/esm2 format, with the ESM-2 tokenizer."""
    torch.manual_seed(0)
    model = EsmForMaskedLM(EsmConfig(**small_esm_kwargs)).eval()
    path = tmp_path / "esm2"
    model.save_pretrained(path)
    load_tokenizer().save_pretrained(path)
    return path, model


# -- conversion ------------------------------------------------------------------------------------------------


def test_esm_checkpoint_converts_with_same_weights_and_logits(esm_checkpoint, tmp_path):
    path, esm = esm_checkpoint
    long, tokenizer = convert_to_long(path, max_length=2048, window=1024)
    c = long.config
    assert type(long) is BitEsmForMaskedLM and c.quantization is None
    assert (c.attention_window, c._attn_implementation) == (1024, ATTENTION_NAME)
    # ESM-2's 1,026 = 1,022 residues + <cls> + <eos> + pad_token_id + 1; the long model takes 2,048 residues
    assert (max_residues(esm.config), c.max_position_embeddings, max_residues(c)) == (1022, 2052, 2048)
    assert tokenizer.model_max_length == 2050
    source, converted = esm.state_dict(), long.state_dict()
    assert set(converted) == set(source)
    assert all(torch.equal(converted[k], source[k]) for k in source)
    assert torch.equal(_logits(long), _logits(esm))  # the protein fits in the window: attention stays global

    out = tmp_path / "long"
    long.save_pretrained(out)
    tokenizer.save_pretrained(out)
    loaded = AutoModelForMaskedLM.from_pretrained(out)
    assert (loaded.config.attention_window, loaded.config._attn_implementation) == (1024, ATTENTION_NAME)
    assert AutoTokenizer.from_pretrained(out).model_max_length == 2050
    assert torch.equal(_logits(loaded), _logits(esm))
    logits = _logits(loaded, LONG_PROTEIN)
    assert logits.shape == (1, 1102, 33) and torch.isfinite(logits).all()


def test_loaded_bf16_model_converts_in_its_dtype(esm_checkpoint):
    esm = EsmForMaskedLM.from_pretrained(esm_checkpoint[0], dtype=torch.bfloat16).eval()
    long, _ = convert_to_long(esm)
    assert long.dtype == torch.bfloat16 and not long.training
    inv_freq = {b.dtype for name, b in long.named_buffers() if name.endswith("inv_freq")}
    assert inv_freq == {torch.float32}  # as from_pretrained builds it: rotary frequencies are not rounded to bf16
    assert torch.equal(_logits(long), _logits(esm))


def test_extend_position_embeddings_repeats_the_trained_rows():
    # 6 rows, offset 2 (pad_token_id=1): rows 0, 1 kept, then rows 2..5 repeated with period 4
    weight = torch.arange(6, dtype=torch.float32).view(6, 1).repeat(1, 3)
    new = extend_position_embeddings(weight, 11, offset=2)
    assert new[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 2]
    assert torch.equal(new[:, 1], new[:, 0]) and new.dtype == weight.dtype
    with pytest.raises(ValueError, match=r"num_positions=5 is smaller than the table's 6 rows"):
        extend_position_embeddings(weight, 5, offset=2)


def test_absolute_positions_are_copied_and_the_long_model_reads_longer_proteins(small_esm_kwargs):
    # learned positions, 10 rows = 6 residues + <cls> + <eos> + the 2 rows below the first position (0 and <pad>)
    torch.manual_seed(1)
    kwargs = {**small_esm_kwargs, "position_embedding_type": "absolute", "max_position_embeddings": 10}
    esm = EsmForMaskedLM(EsmConfig(**kwargs)).eval()
    old = esm.esm.embeddings.position_embeddings.weight.detach().clone()
    assert max_residues(esm.config) == 6

    long, _ = convert_to_long(esm, max_length=12, window=4)
    table = long.esm.embeddings.position_embeddings
    assert long.config.max_position_embeddings == table.num_embeddings == 16  # 12 + 2 + pad_token_id + 1
    assert table.padding_idx == 1 and torch.equal(table.weight[1], torch.zeros(64))  # the padding row stays zero
    expected_rows = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7]  # rows 10..15 repeat the position rows 2..7
    assert torch.equal(table.weight.detach(), old[expected_rows])

    # 5 tokens: one band of window + 1 = 5 keys covers them, so attention is global and the positions are the same
    assert torch.equal(_logits(long, "MKT"), _logits(esm, "MKT"))
    twelve = "MKTAYIAKQRQI"
    with pytest.raises(IndexError):
        _logits(esm, twelve)  # 14 tokens need position rows up to 15
    assert torch.isfinite(_logits(long, twelve)).all()


def test_ternary_bitesm_checkpoint_stays_ternary(tmp_path, small_esm_kwargs):
    torch.manual_seed(2)
    ternary = BitEsmForMaskedLM(BitEsmConfig(quantization="ternary", **small_esm_kwargs)).eval()
    ternary.save_pretrained(tmp_path)
    long, tokenizer = convert_to_long(tmp_path, max_length=2048, window=1024)
    assert long.config.quantization == "ternary" and long.config.attention_window == 1024
    n_layers = small_esm_kwargs["num_hidden_layers"]
    assert sum(isinstance(m, BitLinear) for m in long.modules()) == n_layers * len(PER_LAYER)
    source = ternary.state_dict()
    assert all(torch.equal(long.state_dict()[k], source[k]) for k in source)
    assert torch.equal(_logits(long), _logits(ternary))
    assert tokenizer.model_max_length == 2050  # no tokenizer files: the packaged ESM-2 tokenizer


def test_cli_converts_and_saves_with_remote_code(esm_checkpoint, tmp_path, capsys):
    path, esm = esm_checkpoint
    out = tmp_path / "long"
    argv = ["convert", "long", "--model", str(path), "--max-length", "2048", "--window", "1024", "--output", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "output": str(out),
        "source": str(path),
        "source_model_type": "esm",
        "quantization": None,
        "attention_window": 1024,
        "max_length": 2048,
        "max_tokens": 2050,
        "max_position_embeddings": 2052,
        "position_embedding_type": "rotary",
        "attn_implementation": ATTENTION_NAME,
    }
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_bitesm.py", "sliding_window_attention.py"} <= files
    assert "vocab.txt" in files
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bitesm"
    assert (config["attention_window"], config["max_position_embeddings"]) == (1024, 2052)
    assert torch.equal(_logits(AutoModelForMaskedLM.from_pretrained(out)), _logits(esm))


REMOTE_SCRIPT = """
import sys
sys.modules["bitesm"] = None  # any 'import bitesm...' now raises ImportError
import torch
from transformers import AutoModelForMaskedLM

model = AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
ids = torch.tensor([[0] + [5 + i % 20 for i in range(int(sys.argv[2]))] + [2]])
with torch.no_grad():
    logits = model(input_ids=ids).logits
torch.save({"attn": model.config._attn_implementation, "window": model.config.attention_window, "logits": logits,
            "bitesm_loaded": any(k.startswith("bitesm.") for k in sys.modules)}, "out.pt")
"""


@pytest.mark.slow
def test_long_model_loads_as_remote_code_without_bitesm(esm_checkpoint, tmp_path):
    long, _ = convert_to_long(esm_checkpoint[0], max_length=2048, window=1024)
    long.save_pretrained(tmp_path / "long")
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "hf_modules"), HF_HUB_OFFLINE="1", PYTHONPATH="",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path / "long"), "1100"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = torch.load(tmp_path / "out.pt")
    assert (out["attn"], out["window"], out["bitesm_loaded"]) == (ATTENTION_NAME, 1024, False)
    ids = torch.tensor([[0] + [5 + i % 20 for i in range(1100)] + [2]])
    with torch.no_grad():
        assert torch.equal(out["logits"], long.eval()(input_ids=ids).logits)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_length": 1022}, r"max_length=1022 residues is not larger than the 1022 that .*esm2 already takes "
                               r"\(max_position_embeddings=1026\); pass a larger max_length \(--max-length\), "
                               r"e\.g\. 2048"),
        ({"max_length": 500}, r"max_length=500 residues is not larger than the 1022"),
        ({"window": 1}, r"window=1 is out of range: the attention window \(--window\) must be an int >= 2 tokens; "
                        r"Long ESM-2 uses 1024"),
        ({"window": 1024.0}, r"window=1024\.0 is out of range"),
    ],
)
def test_conversion_errors_name_the_value_and_the_fix(esm_checkpoint, kwargs, message):
    with pytest.raises(ValueError, match=message):
        convert_to_long(esm_checkpoint[0], **kwargs)


def test_ptq_softmax_sites_are_refused(small_esm_kwargs):
    ptq = {"weight_bits": 8, "act_bits": 8, "method": "uniform", "sites": ["softmax_input", "ffn_input"]}
    model = BitEsmForMaskedLM(BitEsmConfig(quantization=None, ptq=ptq, **small_esm_kwargs))
    with pytest.raises(ValueError, match=r"quantized at \['softmax_input'\].*convert its unquantized checkpoint"):
        convert_to_long(model)


def test_non_esm_checkpoint_is_refused(tmp_path):
    bert = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    bert.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has model_type='bert'"):
        convert_to_long(tmp_path)


# -- training ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window,message", [
    (1, r"model.attention_window=1 is out of range: use an int >= 2"),
    ("1024", r"model.attention_window='1024' has the wrong type \(str\): expected an int"),
    (True, r"model.attention_window=True has the wrong type \(bool\): expected an int"),
])
def test_training_config_validates_attention_window(window, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs/long-esm2-t6.yaml", {"model.attention_window": window})


def test_long_config_follows_the_paper():
    cfg = load_config(REPO / "configs/long-esm2-t6.yaml")
    assert (cfg.model.attention_window, cfg.model.quantization, cfg.data.max_length) == (1024, None, 2050)
    assert cfg.data.train_fasta.endswith("swissprot_2014-01_sample50k.fasta.gz")
    # 5 epochs of the 50,000-protein sample minus the validation split
    assert cfg.training.max_steps == 5 * (50_000 - cfg.data.validation_size) // cfg.training.batch_size


@pytest.mark.parametrize("quantization", [None, "ternary"])
def test_build_model_converts_a_pretrained_esm2_checkpoint(esm_checkpoint, quantization):
    path, esm = esm_checkpoint
    cfg = ModelConfig(from_pretrained=str(path), quantization=quantization, attention_window=1024)
    model, tokenizer = build_model(cfg, max_length=2050)
    c = model.config
    assert (c.quantization, c.attention_window, c.max_position_embeddings) == (quantization, 1024, 2052)
    assert c._attn_implementation == ATTENTION_NAME and tokenizer.model_max_length == 2050
    source = esm.state_dict()
    assert all(torch.equal(model.state_dict()[k], source[k]) for k in source)
    # data that fits ESM-2's 1,022 residues: only the attention changes
    short, _ = build_model(cfg, max_length=514)
    assert (short.config.attention_window, short.config.max_position_embeddings) == (1024, 1026)


def test_build_model_from_architecture_fits_the_data(esm8m_dir):
    cfg = ModelConfig(config=str(esm8m_dir), quantization=None, attention_window=1024,
                      overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "intermediate_size": 64})
    model, tokenizer = build_model(cfg, max_length=2050)
    assert (model.config.attention_window, model.config.max_position_embeddings) == (1024, 2052)
    assert model.config._attn_implementation == ATTENTION_NAME and tokenizer.model_max_length == 2050


@pytest.mark.slow
def test_train_long_esm2_config_then_reload(tmp_path):
    run = tmp_path / "run"
    overrides = {
        "model.overrides.hidden_size": 32,
        "model.overrides.num_hidden_layers": 2,
        "model.overrides.num_attention_heads": 2,
        "model.overrides.intermediate_size": 64,
        "data.max_sequences": 40,
        "data.validation_size": 4,
        "training.batch_size": 4,
        "training.gradient_accumulation_steps": 1,
        "training.warmup_steps": 0,
        "training.max_steps": 3,
        "training.mixed_precision": '"no"',  # YAML reads a bare no as False
        "training.eval_every": 0,
        "training.save_every": 0,
        "training.log_every": 1,
        "evaluation.proteingym": "null",
    }
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    proc = subprocess.run(
        [sys.executable, "-m", "bitesm.cli", "train", "--config", "configs/long-esm2-t6.yaml",
         "--output-dir", str(run), *sets],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["step"] == 3 and 0 < summary["val/loss"] < 10
    model = AutoModelForMaskedLM.from_pretrained(run / "model")
    c = model.config
    assert (c.attention_window, c._attn_implementation, c.max_position_embeddings) == (1024, ATTENTION_NAME, 2052)
    assert AutoTokenizer.from_pretrained(run / "model").model_max_length == 2050
    logits = _logits(model, LONG_PROTEIN)
    assert logits.shape == (1, 1102, 33) and torch.isfinite(logits).all()
