"""4-bit LoRA (bitesm.lora): NF4 loading, the CPU eval/train fix, ternary bases, adapters, heads, config, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, EsmConfig, EsmForMaskedLM

import bitesm  # noqa: F401  (registers the Auto classes)
from bitesm.data import iter_fasta, load_tokenizer
from bitesm.data.labelled import LabelledDataError, load_labelled_sequences, read_labels_file
from bitesm.lora import (
    BaseSpec,
    LoraBitLinear,
    TernaryMergeError,
    attach_lora,
    load_adapter,
    load_base,
    memory_report,
    merge_adapter,
    nf4_weight_bytes,
    prepare_base,
    resolve_target_modules,
    save_adapter,
)
from bitesm.lora.trainer import LoraTrainer
from bitesm.models import BitEsmConfig, BitEsmForMaskedLM
from bitesm.nn.bitlinear import BitLinear
from bitesm.training.config import ConfigError, ModelConfig, load_config
from bitesm.training.trainer import Trainer

from conftest import PER_LAYER, REPO

SAMPLE = REPO / "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"
TINY_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "model": {
        "config": str(REPO / "data/esm2_hf_configs/esm2_t6_8M_UR50D"),
        "overrides": TINY_SHAPE,
        "quantization": None,
        "attention_window": 32,  # Long ESM-2's sliding window, engaged by the 48-token crops
    },
    "data": {"train_fasta": str(SAMPLE), "max_length": 48, "validation_size": 8, "max_sequences": 200},
    "training": {
        "seed": 1, "batch_size": 4, "learning_rate": 1e-2, "warmup_steps": 0, "max_steps": 4, "weight_decay": 0.0,
        "mixed_precision": "no", "eval_every": 2, "save_every": 2, "log_every": 1,
    },
    "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "gradient_checkpointing": False},
}


def write_config(tmp_path: Path, **sections) -> Path:
    """TINY with ``section__key=value`` replacements (``section=None`` drops a section)."""
    cfg = json.loads(json.dumps(TINY))
    for dotted, value in sections.items():
        if "__" not in dotted:
            cfg[dotted] = value
            continue
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))
    return path


def run_in_process(tmp_path: Path, name: str = "run", **sections) -> tuple[dict, Path, LoraTrainer]:
    out = tmp_path / name
    trainer = LoraTrainer(load_config(write_config(tmp_path, **sections)), out)
    return trainer.train(), out, trainer


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def batch(n: int = 3, length: int = 40) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 24, (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def base_spec(tmp_path: Path, quantization=None, load_in_4bit=True, **kwargs) -> BaseSpec:
    """A tiny random base saved under tmp_path."""
    config = BitEsmConfig.from_dict(
        {**EsmConfig.from_pretrained(REPO / "data/esm2_hf_configs/esm2_t6_8M_UR50D").to_dict(), **TINY_SHAPE,
         "quantization": quantization}
    )
    path = tmp_path / f"base-{quantization}"
    if not path.exists():
        torch.manual_seed(0)
        BitEsmForMaskedLM(config).save_pretrained(path)
        load_tokenizer().save_pretrained(path)
    return BaseSpec(source=str(path), config=BitEsmConfig.from_pretrained(path).to_dict(), load_in_4bit=load_in_4bit,
                    **kwargs)


def randomize_adapters(model) -> None:
    """LoRA's B starts at zero; give every adapter weight a value so that save/reload/merge are really tested."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# -- the CLI run every adapter test below reuses -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, dict]:
    """``bitesm lora`` on a tiny 4-bit Long ESM-2: 4 steps, validation at steps 0, 2 and 4, merge."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = write_config(tmp, lora__merge=True)
    run = tmp / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "bitesm.cli", "lora", "--config", str(cfg), "--output-dir", str(run)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, json.loads(proc.stdout[proc.stdout.index("{"):])


def test_cli_trains_validates_mid_run_and_saves_adapter_alone(cli_run):
    run, summary = cli_run
    assert summary["step"] == 4 and summary["replicas_in_sync"] is True
    records = metrics(run)
    assert [r["step"] for r in records if "val/loss" in r] == [0, 2, 4]  # start (the base), mid-training, end
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    assert all(0 < r["val/loss"] < 10 for r in records if "val/loss" in r)
    adapter = run / "adapter"
    assert {"adapter_model.safetensors", "adapter_config.json", "lora_base.json", "vocab.txt"} <= {
        p.name for p in adapter.iterdir()
    }
    assert not list(adapter.glob("model*.safetensors"))  # the base is not copied
    keys = load_file(str(adapter / "adapter_model.safetensors")).keys()
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    check = summary["adapter_check"]
    assert check["reload_max_abs_diff"] <= 1e-4
    assert check["adapter_bytes"] < 0.10 * check["base_fp32_bytes"]
    # checkpoints hold the trainable weights only
    stored = load_file(str(run / "checkpoints" / "checkpoint-00000004" / "model.safetensors"))
    assert set(stored) == {k for k in stored if "lora_" in k} and len(stored) == 2 * 6 * 2
    assert json.loads((run / "memory_report.json").read_text()) == summary["memory"]


def test_memory_report_nf4_linear_weights_are_under_a_fifth_of_fp32(cli_run, tmp_path):
    _, summary = cli_run
    lin = summary["memory"]["linear_weights"]
    assert summary["memory"]["base_format"] == "nf4" and lin["nf4_measured"]
    assert lin["tensors"] == 2 * 6 and lin["fp32_bytes"] == 4 * lin["params"] == 2 * lin["bf16_bytes"]
    assert lin["nf4_bytes"] <= lin["fp32_bytes"] / 5
    # the formula used for bases that are not loaded in 4 bits equals what bitsandbytes holds
    spec = base_spec(tmp_path)
    fp = memory_report(load_base(BaseSpec(**{**spec.__dict__, "load_in_4bit": False}), "cpu"))
    nf4 = memory_report(load_base(spec, "cpu"))
    assert not fp["linear_weights"]["nf4_measured"] and nf4["linear_weights"]["nf4_measured"]
    assert fp["linear_weights"]["nf4_bytes"] == nf4["linear_weights"]["nf4_bytes"]
    assert nf4_weight_bytes(64 * 128, double_quant=False) == 64 * 128 // 2 + 64 + 4 * 128


def test_nf4_loading_replaces_encoder_linears_only(tmp_path):
    import bitsandbytes as bnb

    model = load_base(base_spec(tmp_path, double_quant=False, compute_dtype="float32"), "cpu")
    four_bit = {n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert four_bit == {f"esm.encoder.layer.{i}.{p}" for i in range(2) for p in PER_LAYER}
    for name in ("lm_head.dense", "lm_head.decoder", "esm.contact_head.regression"):
        assert type(model.get_submodule(name)) is torch.nn.Linear
    layer = model.get_submodule("esm.encoder.layer.0.attention.self.query")
    assert layer.weight.quant_type == "nf4" and not layer.weight.quant_state.nested
    assert model.is_loaded_in_4bit and not layer.support_avx512bf16_for_cpu


# -- CPU: validation (eval mode, no grad) between training steps -----------------------------------------------


def test_cpu_eval_between_train_steps_keeps_weights_and_matches_train_mode(tmp_path, monkeypatch):
    """bitsandbytes repacks a Linear4bit's weight for CPU in an eval-mode no-grad forward when the CPU has
    AVX512-BF16, and the next training step cannot read it. Simulate such a CPU (without load_base's fix this test
    fails: here the repacked weights are misread, on an AVX512-BF16 CPU the training step fails); load_base must turn
    the repacking off so train -> eval -> train runs on unchanged weights."""
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    model = attach_lora(load_base(base_spec(tmp_path), "cpu"), r=2, alpha=4, dropout=0.0)
    layers = [m for m in model.modules() if isinstance(m, bnb_modules.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    packed = [m.weight.data.clone() for m in layers]
    inputs = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for phase in ("train", "eval", "train", "eval", "train"):
        if phase == "train":
            model.train()
            loss = model(**inputs, labels=inputs["input_ids"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                train_mode = model(**inputs).logits
        else:
            model.eval()
            with torch.no_grad():
                evaluated = model(**inputs).logits
            torch.testing.assert_close(evaluated, train_mode, rtol=0, atol=1e-5)  # dropout is 0: same function
    assert all(not getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    assert all(torch.equal(m.weight.data, w) for m, w in zip(layers, packed))


# -- adapters: save, reload, merge -----------------------------------------------------------------------------


def test_adapter_reloads_on_its_base_with_identical_logits(tmp_path):
    spec = base_spec(tmp_path)
    model = attach_lora(load_base(spec, "cpu"), r=2, alpha=4)
    randomize_adapters(model)
    model.eval()
    with torch.no_grad():
        expected = model(**batch()).logits
    adapter = save_adapter(model, tmp_path / "adapter", spec, load_tokenizer())
    reloaded, tokenizer = load_adapter(adapter, device="cpu")
    with torch.no_grad():
        got = reloaded(**batch()).logits
    assert (got - expected).abs().max().item() <= 1e-4
    assert tokenizer.mask_token_id == 32
    base_bytes = memory_report(model)["base"]["fp32_bytes"]
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.10 * base_bytes
    # lora_base.json points at the base relative to the adapter folder
    assert json.loads((adapter / "lora_base.json").read_text())["source"] == "../base-None"


def test_merged_fp_model_equals_the_unmerged_4bit_model(cli_run):
    run, _ = cli_run
    unmerged, _ = load_adapter(run / "adapter", device="cpu")
    merged = AutoModelForMaskedLM.from_pretrained(run / "merged").eval()  # a plain bitesm checkpoint
    assert type(merged).__name__ == "BitEsmForMaskedLM" and merged.config.attention_window == 32
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert not hasattr(merged.config, "quantization_config")
    inputs = batch(length=60)  # longer than the window: sliding-window attention in both
    with torch.no_grad():
        diff = (merged(**inputs).logits - unmerged(**inputs).logits).abs().max().item()
    assert diff <= 1e-4


def test_merge_on_a_fp_base_without_4bit(tmp_path):
    spec = base_spec(tmp_path, load_in_4bit=False)
    model = attach_lora(load_base(spec, "cpu"), r=2, alpha=4)
    randomize_adapters(model)
    model.eval()
    with torch.no_grad():
        expected = model(**batch()).logits
    merged = merge_adapter(save_adapter(model, tmp_path / "adapter", spec), tmp_path / "merged")
    with torch.no_grad():
        assert (merged(**batch()).logits - expected).abs().max().item() <= 1e-4
    assert (tmp_path / "merged" / "model.safetensors").is_file()


# -- ternary bases -----------------------------------------------------------------------------------------------


def test_lora_on_ternary_base_trains_and_leaves_bitlinear_weights_bit_identical(tmp_path):
    result, run, trainer = run_in_process(
        tmp_path, model__quantization="ternary", lora__load_in_4bit=False, training__max_steps=6,
        training__eval_every=6,
    )
    model = trainer.accelerator.unwrap_model(trainer.model)
    wrapped = [m for m in model.modules() if isinstance(m, LoraBitLinear)]
    assert len(wrapped) == 2 * 6 and all(isinstance(m.get_base_layer(), BitLinear) for m in wrapped)
    assert all(m.lora_A["default"].weight.dtype == torch.float32 for m in wrapped)
    initial = load_file(str(run / "base" / "model.safetensors"))
    for name, module in model.named_modules():
        if isinstance(module, BitLinear):
            key = name.replace("base_model.model.", "").replace(".base_layer", "") + ".weight"
            assert torch.equal(module.weight.detach().cpu(), initial[key]), f"{key} changed"
            assert not module.weight.requires_grad
    assert any(m.lora_B["default"].weight.abs().sum() > 0 for m in wrapped)  # the adapters did train
    val = [r["val/loss"] for r in metrics(run) if "val/loss" in r]
    assert len(val) == 2 and val[-1] < val[0]
    assert result["memory"]["base_format"] == "ternary"
    assert result["adapter_check"]["reload_max_abs_diff"] <= 1e-4
    # a ternary base cannot absorb the adapter
    with pytest.raises(TernaryMergeError, match="ternary"):
        merge_adapter(run / "adapter")
    reloaded, _ = load_adapter(run / "adapter", device="cpu")
    with pytest.raises(TernaryMergeError, match="load_adapter"):
        reloaded.merge_and_unload()


# -- sequence heads ----------------------------------------------------------------------------------------------


def _proteins(n: int = 48) -> list[tuple[str, str]]:
    out = []
    for record_id, sequence in iter_fasta(SAMPLE):
        out.append((record_id, sequence[:80]))
        if len(out) == n:
            return out


def _write_csv(path: Path) -> None:
    rows = ["id,sequence,label"] + [
        f"{i},{s},{'K-rich' if s.count('K') > len(s) * 0.06 else 'other'}" for i, s in _proteins()
    ]
    path.write_text("\n".join(rows) + "\n")


def test_classification_head_from_csv(tmp_path):
    _write_csv(tmp_path / "train.csv")
    result, run, trainer = run_in_process(
        tmp_path, head={"task": "classification", "train_file": str(tmp_path / "train.csv")}, data__validation_size=8,
    )
    assert trainer.label_names == ["K-rich", "other"]
    val = [r for r in metrics(run) if "val/loss" in r]
    assert [r["step"] for r in val] == [0, 2, 4] and all(0 <= r["val/accuracy"] <= 1 for r in val)
    assert val[-1]["val/proteins"] == 8
    keys = load_file(str(run / "adapter" / "adapter_model.safetensors")).keys()
    assert any("classifier" in k for k in keys) and any("lora_A" in k for k in keys)
    assert result["adapter_check"]["reload_max_abs_diff"] <= 1e-4
    reloaded, _ = load_adapter(run / "adapter", device="cpu")
    assert reloaded.config.id2label == {0: "K-rich", 1: "other"}
    assert reloaded(**batch()).logits.shape == (3, 2)


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu_with_a_head(tmp_path):
    """Real DDP (2 CPU processes): checkpoints keep the trainable weights under DDP names, validation gathers the
    proteins of both ranks, replicas stay equal."""
    _write_csv(tmp_path / "train.csv")
    cfg = write_config(tmp_path, head={"task": "classification", "train_file": str(tmp_path / "train.csv")},
                       data__validation_size=9)
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train" / "finetune_lora.py"),
         "--config", str(cfg), "--output-dir", str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["num_processes"] == 2 and summary["replicas_in_sync"] is True
    assert summary["val/proteins"] == 9 and summary["adapter_check"]["reload_max_abs_diff"] <= 1e-4
    stored = load_file(str(tmp_path / "ddp" / "checkpoints" / "checkpoint-00000004" / "model.safetensors"))
    assert stored and all("lora_" in k or "classifier.modules_to_save" in k for k in stored)
    # ... and the run resumes from them on two processes
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train" / "finetune_lora.py"),
         "--config", str(cfg), "--output-dir", str(tmp_path / "ddp"), "--resume", "--allow-config-change",
         "--set", "training.max_steps=6"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["step"] == 6


def test_regression_head_from_fasta_and_labels_file(tmp_path):
    proteins = _proteins()
    (tmp_path / "train.fasta").write_text("".join(f">{i} desc\n{s}\n" for i, s in proteins))
    (tmp_path / "labels.tsv").write_text(
        "id\tscore\n" + "".join(f"{i}\t{s.count('L') / len(s):.4f}\n" for i, s in proteins)
    )
    head = {"task": "regression", "train_file": str(tmp_path / "train.fasta"),
            "labels_file": str(tmp_path / "labels.tsv"), "label_column": "score"}
    result, run, _ = run_in_process(tmp_path, head=head, data__validation_size=8)
    val = [r for r in metrics(run) if "val/loss" in r]
    assert len(val) == 3 and all(r["val/rmse"] == pytest.approx(r["val/loss"] ** 0.5) for r in val)
    assert all(r["val/spearman"] is None or -1 <= r["val/spearman"] <= 1 for r in val)
    assert result["adapter_check"]["reload_max_abs_diff"] <= 1e-4
    reloaded, _ = load_adapter(run / "adapter", device="cpu")
    assert reloaded.config.problem_type == "regression" and reloaded(**batch()).logits.shape == (3, 1)


def test_labels_that_do_not_match_the_fasta_are_named(tmp_path):
    (tmp_path / "a.fasta").write_text(">p1\nMKV\n>p2\nMKL\n>p3\nMAA\n")
    (tmp_path / "labels.csv").write_text("id,label\np1,1\np2,0\n")
    with pytest.raises(LabelledDataError, match=r"1 record\(s\) .* no label .*\['p3'\]"):
        load_labelled_sequences(tmp_path / "a.fasta", tmp_path / "labels.csv")
    (tmp_path / "dup.csv").write_text("id,label\np1,1\np1,0\n")
    with pytest.raises(LabelledDataError, match=r"\['p1'\] more than once"):
        read_labels_file(tmp_path / "dup.csv")
    with pytest.raises(LabelledDataError, match="holds no labels; give head.labels_file"):
        load_labelled_sequences(tmp_path / "a.fasta")
    (tmp_path / "t.csv").write_text("seq,y\nMKV,1\n")
    with pytest.raises(LabelledDataError, match=r"no column\(s\) \['sequence', 'label'\].*head.sequence_column"):
        load_labelled_sequences(tmp_path / "t.csv")
    # a labels file listing ids of another FASTA is refused by the trainer
    (tmp_path / "other.csv").write_text("id,label\np1,1\np2,0\np3,1\nq9,0\n")
    head = {"task": "classification", "train_file": str(tmp_path / "a.fasta"),
            "labels_file": str(tmp_path / "other.csv")}
    with pytest.raises(LabelledDataError, match=r"match no FASTA record .*\['q9'\]"):
        LoraTrainer(
            load_config(write_config(tmp_path, head=head, data__validation_size=1, data__max_sequences=None)),
            tmp_path / "r",
        )


# -- resume --------------------------------------------------------------------------------------------------------


def test_resume_from_a_checkpoint_ends_with_the_uninterrupted_adapter(tmp_path):
    _, full, _ = run_in_process(tmp_path, "full", lora__dropout=0.1)  # dropout draws from the restored RNG
    # a run killed after its step-2 checkpoint: only that checkpoint exists (base/ is rebuilt from the seed)
    killed = tmp_path / "killed"
    shutil.copytree(full / "checkpoints" / "checkpoint-00000002", killed / "checkpoints" / "checkpoint-00000002")
    trainer = LoraTrainer(load_config(write_config(tmp_path, lora__dropout=0.1)), killed, resume=True)
    trainer.train()
    a = load_file(str(full / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(killed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in metrics(killed) if "val/loss" in r] == [4]  # no step-0 validation on resume


# -- bases straight from a checkpoint --------------------------------------------------------------------------------


def test_esm2_checkpoint_base_is_converted_to_long_and_loaded_in_4bit_without_a_copy(tmp_path, small_esm_kwargs):
    torch.manual_seed(0)
    esm = EsmForMaskedLM(EsmConfig(**small_esm_kwargs)).eval()
    esm.save_pretrained(tmp_path / "esm2")
    load_tokenizer().save_pretrained(tmp_path / "esm2")
    model_cfg = ModelConfig(config=None, from_pretrained=str(tmp_path / "esm2"), quantization=None,
                            attention_window=1024)
    source, config, tokenizer = prepare_base(model_cfg, max_length=2050, base_dir=tmp_path / "base")
    assert source == str(tmp_path / "esm2") and not (tmp_path / "base").exists()
    assert (config.attention_window, config.max_position_embeddings, tokenizer.model_max_length) == (1024, 2052, 2050)
    spec = BaseSpec(source=source, config=config.to_dict(), load_in_4bit=False)
    with torch.no_grad():  # a short protein: the long model computes what ESM-2 computes
        torch.testing.assert_close(load_base(spec, "cpu")(**batch()).logits, esm(**batch()).logits)
    assert memory_report(load_base(BaseSpec(**{**spec.__dict__, "load_in_4bit": True}), "cpu"))["base_format"] == "nf4"


# -- configuration and errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"lora__r": 0}, r"lora.r=0 is out of range"),
        ({"lora__quant_type": "int3"}, r"lora.quant_type='int3'.*nf4"),
        ({"lora__compute_dtype": "fp8"}, r"lora.compute_dtype='fp8'"),
        ({"lora__target_modules": "query"}, r"lora.target_modules='query' has the wrong type \(str\): expected a list"),
        ({"lora__dropout": 1.0}, r"lora.dropout=1.0"),
        ({"lora__rank": 8}, r"unknown key\(s\) \['rank'\] in 'config.lora'"),
        ({"model__quantization": "ternary"}, r"lora.load_in_4bit=True.*set lora.load_in_4bit: false"),
        ({"head": {"task": "ranking", "train_file": "x.csv"}}, r"head.task='ranking'"),
        ({"head": {"task": "regression"}}, r"head.train_file=None"),
        ({"head": {"task": "regression", "train_file": "x.csv", "num_labels": 3}}, r"head.num_labels=3"),
        ({"lora": None, "head": {"train_file": "x.csv"}}, r"head: section needs a lora: section"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, **sections))


def test_trainers_refuse_the_other_commands_configs(tmp_path):
    with pytest.raises(ConfigError, match="train it with 'bitesm lora'"):
        Trainer(load_config(write_config(tmp_path)), tmp_path / "a")
    with pytest.raises(ConfigError, match="bitesm lora needs a lora: section"):
        LoraTrainer(load_config(write_config(tmp_path, lora=None)), tmp_path / "b")


def test_bad_target_module_names_list_the_layers(tmp_path):
    model = load_base(base_spec(tmp_path, load_in_4bit=False), "cpu")
    with pytest.raises(ConfigError, match=r"\['qeury'\] match no Linear layer.*attention.self.query.*lm_head.dense"):
        resolve_target_modules(model, ["query", "qeury"])
    names = resolve_target_modules(model, ["dense"])
    assert names == [f"esm.encoder.layer.{i}.{p}" for i in range(2) for p in PER_LAYER if p.endswith("dense")]
    assert resolve_target_modules(model, ["lm_head.dense"]) == ["lm_head.dense"]
