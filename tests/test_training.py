"""Training: config validation, an end-to-end run, exact resume after SIGKILL, two-process data parallel on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bitesm.training.config import ConfigError, load_config, parse_override

from conftest import REPO

TINY = {
    "model": {
        "config": str(REPO / "data/esm2_hf_configs/esm2_t6_8M_UR50D"),
        "overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        "quantization": "ternary",
    },
    "data": {
        "train_fasta": str(REPO / "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"),
        "max_length": 48,
        "mask_rate": 0.15,
        "validation_size": 16,
        "max_sequences": 600,
    },
    "training": {
        "seed": 3,
        "batch_size": 8,
        "gradient_accumulation_steps": 2,
        "learning_rate": 5e-3,
        "warmup_steps": 2,
        "max_steps": 12,
        "mixed_precision": "no",
        "eval_every": 6,
        "save_every": 3,
        "log_every": 3,
        "keep_checkpoints": 2,
    },
}


def write_config(tmp_path: Path, **section_overrides) -> Path:
    cfg = json.loads(json.dumps(TINY))
    for dotted, value in section_overrides.items():
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bitesm.cli", *args], capture_output=True, text=True, timeout=600, **kwargs
    )


# -- config ----------------------------------------------------------------------------------------------------


def test_config_unknown_key_is_named(tmp_path):
    path = write_config(tmp_path, training__learning_rte=1e-3)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rte'\] in 'config.training'"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"data.mask_rate": 1.5}, r"data.mask_rate=1.5 is out of range"),
        ({"training.mixed_precision": "fp8"}, r"training.mixed_precision='fp8'"),
        ({"training.batch_size": 9}, r"divisible by gradient_accumulation_steps=2"),
        ({"model.quantization": "int4"}, r"model.quantization='int4'"),
        ({"training.lr_scheduler": "warmup"}, r"training.lr_scheduler='warmup'"),
    ],
)
def test_config_out_of_range_values_are_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path), override)


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.batch_size=abc", r"training.batch_size='abc' has the wrong type \(str\): expected an int"),
        ("training.max_steps=10.5", r"training.max_steps=10.5 has the wrong type \(float\): expected an int"),
        ("training.batch_size=true", r"training.batch_size=True has the wrong type \(bool\): expected an int"),
        ("training.learning_rate=fast", r"training.learning_rate='fast' has the wrong type \(str\): expected a number"),
        ("training.mixed_precision=no", (r"training.mixed_precision=False has the wrong type \(bool\): expected a "
                                        r"string \(YAML reads unquoted yes/no")),
        ("training.max_tokens=[1]", (r"training.max_tokens=\[1\] has the wrong type \(list\): expected an int "
                                    r"\(a whole number\) or null")),
        ("data.train_fasta=3", r"data.train_fasta=3 has the wrong type \(int\): expected a string"),
        ("training.hub_private=1", r"training.hub_private=1 has the wrong type \(int\): expected true or false"),
        ("model.overrides=5", r"model.overrides=5 has the wrong type \(int\): expected a mapping"),
        ("evaluation.proteingym.assay_ids=[1, 2]", (r"evaluation.proteingym.assay_ids=\[1, 2\] has the wrong type "
                                                   r"\(list\): expected a list of strings or null")),
        ("training.learning_rte=0.1", (r"unknown key\(s\) \['learning_rte'\] in 'config.training'; allowed: "
                                      r"\['adam_beta1', .*'learning_rate'")),
        ("training.max_steps.x=3", r"override training.max_steps.x=3: training.max_steps is a value"),
    ],
)
def test_set_overrides_are_type_checked_and_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path), dict([parse_override(override)]))


def test_values_in_the_yaml_file_are_type_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"training.warmup_steps='ten' has the wrong type \(str\): expected an int"):
        load_config(write_config(tmp_path, training__warmup_steps="ten"))
    with pytest.raises(ConfigError, match=r"data.max_length=48.5 has the wrong type"):
        load_config(write_config(tmp_path, data__max_length=48.5))


def test_numbers_are_converted_to_their_field_types(tmp_path):
    overrides = dict(parse_override(o) for o in (
        "training.max_steps=10.0", "training.learning_rate=1e-3", "training.weight_decay=0", "training.max_tokens=2e4",
        "training.max_time_minutes=null",
    ))
    t = load_config(write_config(tmp_path), overrides).training
    got = (t.max_steps, t.learning_rate, t.weight_decay, t.max_tokens, t.max_time_minutes)
    assert got == (10, 1e-3, 0.0, 20000, None)
    assert type(t.max_steps) is int and type(t.weight_decay) is float and type(t.max_tokens) is int


def test_shortening_a_run_clips_the_warmup(tmp_path, caplog):
    # the README's way to shorten the quickstart: warmup_steps 50 > max_steps 30 is clipped, not refused
    with caplog.at_level("WARNING", logger="bitesm.training.config"):
        t = load_config(REPO / "configs/quickstart.yaml", {"training.max_steps": 30}).training
    assert (t.max_steps, t.warmup_steps) == (30, 30)
    assert "warmup clipped to 30 steps" in caplog.text
    assert load_config(REPO / "configs/quickstart.yaml", {"training.max_steps": 100}).training.warmup_steps == 50
    # both overridden, or both in the file: the user chose them, an error names them
    with pytest.raises(ConfigError, match=r"warmup_steps=40 is out of range: use an int in \[0, max_steps=30\]"):
        load_config(REPO / "configs/quickstart.yaml", {"training.max_steps": 30, "training.warmup_steps": 40})
    with pytest.raises(ConfigError, match=r"training.warmup_steps=20 is out of range"):
        load_config(write_config(tmp_path, training__warmup_steps=20))


def test_parse_override_reads_yaml_values():
    assert parse_override("training.max_steps=100") == ("training.max_steps", 100)
    assert parse_override("evaluation.proteingym=null") == ("evaluation.proteingym", None)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("training.max_steps")


def test_shipped_configs_are_valid():
    for name in ("quickstart", "crammed-ternary-esm2-8m", "crammed-esm2-8m", "long-esm2-t6", "qlora-long-esm2-t6"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.training.max_steps >= 1
    qlora = load_config(REPO / "configs/qlora-long-esm2-t6.yaml")  # Long ESM-2, 4-bit NF4 base, LoRA (QLoRA)
    assert (qlora.model.attention_window, qlora.model.quantization) == (1024, None)
    assert (qlora.lora.load_in_4bit, qlora.lora.quant_type, qlora.lora.double_quant) == (True, "nf4", True)
    assert qlora.lora.target_modules == ["query", "key", "value", "dense"] and qlora.head is None
    ternary = load_config(REPO / "configs/crammed-ternary-esm2-8m.yaml")
    fp = load_config(REPO / "configs/crammed-esm2-8m.yaml")
    # 2Bits of Protein appendix A.1
    assert (ternary.training.learning_rate, fp.training.learning_rate) == (5e-3, 1e-3)
    assert ternary.model.quantization == "ternary" and fp.model.quantization is None
    for cfg in (ternary, fp):
        t = cfg.training
        assert (t.warmup_steps, t.max_steps, t.batch_size, t.gradient_accumulation_steps) == (1000, 50000, 256, 8)
        assert (cfg.data.max_length, t.mixed_precision, t.weight_decay) == (512, "bf16", 0.01)


# -- end to end ------------------------------------------------------------------------------------------------


def metric_steps(run: Path) -> dict[str, list[int]]:
    """The steps of ``metrics.jsonl``'s training and validation rows."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {kind: [r["step"] for r in rows if kind in r] for kind in ("train/loss", "val/loss")}


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.mark.slow
def test_train_writes_model_tensorboard_metrics_and_refuses_to_overwrite(tmp_path):
    cfg = write_config(tmp_path)
    run = tmp_path / "run"
    proc = run_cli(["train", "--config", str(cfg), "--output-dir", str(run)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert summary["step"] == 12 and summary["replicas_in_sync"] is True
    assert 0 < summary["val/loss"] < 10 and summary["val/perplexity"] == pytest.approx(
        torch.tensor(summary["val/loss"]).exp().item(), rel=1e-6
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [3, 6, 9, 12]
    assert all(r["train/tokens_per_second"] > 0 and r["train/grad_norm"] > 0 for r in records if "train/loss" in r)
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    # only the newest keep_checkpoints=2 checkpoints remain, no temporary folders
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["checkpoint-00000009", "checkpoint-00000012"]
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(run / "model")
    assert type(model).__name__ == "BitEsmForMaskedLM" and model.config.hidden_size == 32
    # a second run into the same folder must not overwrite it: one line, exit code 2
    again = run_cli(["train", "--config", str(cfg), "--output-dir", str(run)])
    assert again.returncode == 2 and "pass --resume" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    cfg = write_config(tmp_path, training__max_steps=40, training__save_every=5, training__eval_every=10)
    reference = tmp_path / "reference"
    proc = run_cli(["train", "--config", str(cfg), "--output-dir", str(reference)])
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-m", "bitesm.cli", "train", "--config", str(cfg), "--output-dir", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = killed / "checkpoints" / "checkpoint-00000010"
    deadline = time.time() + 300
    while not target.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model").exists()

    resumed = run_cli(["train", "--config", str(cfg), "--output-dir", str(killed), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a, b = _final_weights(reference), _final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    # the run really trained (weights moved from their initial values)
    assert json.loads((killed / "model" / "trainer_state.json").read_text())["step"] == 40
    # rows the killed run logged after checkpoint 10 were dropped on resume: every step once, as uninterrupted
    assert metric_steps(killed) == metric_steps(reference)


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu_keeps_replicas_equal(tmp_path):
    cfg = write_config(tmp_path, training__max_steps=4, training__save_every=2)
    run = tmp_path / "ddp"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            str(REPO / "train" / "pretrain.py"), "--config", str(cfg), "--output-dir", str(run),
        ],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert summary["num_processes"] == 2
    assert summary["replicas_in_sync"] is True  # parameter fingerprints gathered from both ranks are equal
    # each rank keeps its own collator RNG state in the checkpoint
    assert {p.name for p in (run / "checkpoints" / "checkpoint-00000004").glob("collator_rng_*.pt")} == {
        "collator_rng_0.pt",
        "collator_rng_1.pt",
    }
