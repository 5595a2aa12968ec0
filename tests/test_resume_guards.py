"""Checks a training run makes before computing: the resumed config against its checkpoint's, input paths, the
output folder, data.max_length against the model, and a run folder that would be overwritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_training import REPO, TINY, write_config

from bitesm.training import resume as run_resume
from bitesm.training.config import ConfigError, load_config
from bitesm.training.preflight import max_length_limit
from bitesm.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

#: 6 steps, a checkpoint every 3, every step logged, validation every 3.
SHORT = {"training__max_steps": 6, "training__save_every": 3, "training__log_every": 1, "training__eval_every": 3}


def _config(tmp_path: Path, **overrides):
    return load_config(write_config(tmp_path, **{**SHORT, **overrides}))


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _steps(run: Path, metric: str) -> list[int]:
    return [r["step"] for r in _rows(run) if metric in r]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]


def _no_data(self):
    raise AssertionError("the data were read before the checks")


@pytest.fixture()
def killed_run(tmp_path):
    """A finished 6-step run, its final weights, and a copy of it as if killed at step 5: newest checkpoint 3, the
    metrics of steps 4-6 already logged."""
    full = tmp_path / "full"
    Trainer(_config(tmp_path), full).train()
    weights = _weights(full)
    killed = tmp_path / "killed"
    shutil.copytree(full, killed)
    shutil.rmtree(killed / "checkpoints" / "checkpoint-00000006")
    shutil.rmtree(killed / "model")
    assert _steps(killed, "train/loss") == [1, 2, 3, 4, 5, 6]
    return killed, weights


# -- --resume with a changed config --------------------------------------------------------------------------------


def test_resume_with_a_changed_batch_size_or_max_length_is_refused_with_the_keys(tmp_path, killed_run, monkeypatch):
    killed, _ = killed_run
    before = {name: (killed / name).read_text() for name in ("metrics.jsonl", "training_config.yaml",
                                                             "config_history.jsonl")}
    changed = _config(tmp_path, training__batch_size=16, data__max_length=64, training__log_every=2)
    monkeypatch.setattr(Trainer, "load_datasets", _no_data)
    with pytest.raises(ConfigError) as err:
        Trainer(changed, killed, resume=True)
    message = str(err.value)
    assert "training.batch_size: 8 -> 16" in message and "data.max_length: 48 -> 64" in message
    assert "checkpoint-00000003" in message and "--allow-config-change" in message
    assert "log_every" not in message  # safe to change: not listed
    assert {name: (killed / name).read_text() for name in before} == before  # nothing touched


def test_resume_with_safe_changes_is_exact_and_logs_no_step_twice(tmp_path, killed_run):
    killed, reference = killed_run
    result = Trainer(_config(tmp_path, training__log_every=2, training__eval_every=2), killed, resume=True).train()
    assert result["step"] == 6
    # rows of steps 4-6 from before the kill were dropped, then logged again at the new intervals
    assert _steps(killed, "train/loss") == [1, 2, 3, 4, 6]
    assert _steps(killed, "val/loss") == [3, 4, 6]
    got = _weights(killed)
    assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)
    # training_config.yaml stays the original; the history records both segments
    assert yaml.safe_load((killed / "training_config.yaml").read_text())["training"]["log_every"] == 1
    history = _history(killed)
    assert [h["step"] for h in history] == [0, 3]
    assert history[1]["resumed_from"] == "checkpoint-00000003"
    assert history[1]["changes"] == {"training.eval_every": [3, 2], "training.log_every": [1, 2]}
    assert history[1]["config"]["training"]["log_every"] == 2


def test_allow_config_change_continues_and_records_the_segment(tmp_path, killed_run):
    killed, _ = killed_run
    longer = _config(tmp_path, training__max_steps=8)
    with pytest.raises(ConfigError, match=r"training.max_steps: 6 -> 8"):
        Trainer(longer, killed, resume=True)
    result = Trainer(longer, killed, resume=True, allow_config_change=True).train()
    assert result["step"] == 8
    assert _steps(killed, "train/loss") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert yaml.safe_load((killed / "training_config.yaml").read_text())["training"]["max_steps"] == 6
    history = _history(killed)
    assert [h["step"] for h in history] == [0, 3] and history[1]["changes"] == {"training.max_steps": [6, 8]}
    # the newest checkpoint now holds the changed config: resuming the finished run with it needs no flag, and
    # logs nothing twice (its final validation at step 8 is already in metrics.jsonl)
    Trainer(_config(tmp_path, training__max_steps=8), killed, resume=True).train()
    assert _steps(killed, "train/loss") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert _steps(killed, "val/loss") == [3, 6, 8]
    assert [h["step"] for h in _history(killed)] == [0, 3, 8]


def _fake_checkpoint(tmp_path: Path, config) -> Path:
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-00000004"
    (checkpoint / "model").mkdir(parents=True)
    (checkpoint / "model" / "training_config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    return checkpoint


@pytest.mark.parametrize(
    "changes, refused",
    [
        ({"training__log_every": 7, "training__save_every": 2, "training__keep_checkpoints": 5,
          "training__max_time_minutes": 3.0, "training__max_tokens": 10_000}, []),
        ({"training__learning_rate": 1e-3, "training__seed": 4}, ["training.learning_rate", "training.seed"]),
        ({"training__gradient_accumulation_steps": 4, "training__mixed_precision": "bf16"},
         ["training.gradient_accumulation_steps", "training.mixed_precision"]),
        ({"data__mask_rate": 0.25, "data__validation_size": 8, "data__max_sequences": 500},
         ["data.mask_rate", "data.validation_size", "data.max_sequences"]),
        ({"model__quantization": None}, ["model.quantization"]),
        ({"training__weight_decay": 0.1, "training__adam_beta2": 0.95, "training__warmup_steps": 1},
         ["training.weight_decay", "training.adam_beta2", "training.warmup_steps"]),
    ],
)
def test_which_keys_may_change_on_resume(tmp_path, changes, refused):
    checkpoint = _fake_checkpoint(tmp_path, _config(tmp_path))
    changed = _config(tmp_path, **changes)
    if not refused:
        found = run_resume.check_resume_config(changed, checkpoint, tmp_path / "run")
        assert len(found) == len(changes)
        return
    with pytest.raises(ConfigError) as err:
        run_resume.check_resume_config(changed, checkpoint, tmp_path / "run")
    assert all(key in str(err.value) for key in refused)
    assert run_resume.check_resume_config(changed, checkpoint, tmp_path / "run", allow_config_change=True)


def test_model_shape_change_lists_the_override_and_evaluation_is_free(tmp_path):
    checkpoint = _fake_checkpoint(tmp_path, _config(tmp_path))
    shape = dict(TINY["model"]["overrides"])
    shape["hidden_size"] = 64
    with pytest.raises(ConfigError, match=r"model.overrides.hidden_size: 32 -> 64"):
        run_resume.check_resume_config(_config(tmp_path, model__overrides=shape), checkpoint, tmp_path / "run")
    pg = {"assays": str(REPO / "data/proteingym/substitutions"),
          "reference": str(REPO / "data/proteingym/reference/DMS_substitutions.csv")}
    with_eval = _config(tmp_path, evaluation__proteingym=pg)
    assert "evaluation.proteingym.assays" in run_resume.check_resume_config(with_eval, checkpoint, tmp_path / "run")


def test_max_steps_may_change_with_a_constant_schedule(tmp_path):
    checkpoint = _fake_checkpoint(tmp_path, _config(tmp_path, training__lr_scheduler="constant_with_warmup"))
    longer = _config(tmp_path, training__lr_scheduler="constant_with_warmup", training__max_steps=60)
    assert run_resume.check_resume_config(longer, checkpoint, tmp_path / "run") == {"training.max_steps": (6, 60)}


def test_cli_has_allow_config_change_for_train_and_lora():
    from bitesm.cli import build_parser
    from bitesm.cli.train import run_options

    parser = build_parser()
    for command in ("train", "lora"):
        args = parser.parse_args([command, "--config", "c.yaml", "--output-dir", "o", "--resume",
                                  "--allow-config-change"])
        assert run_options(args) == {"resume": True, "allow_config_change": True}
        assert run_options(parser.parse_args([command, "--config", "c", "--output-dir", "o"])) == {
            "resume": False, "allow_config_change": False}


# -- checks before computing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data__train_fasta": "/nonexistent/train.fasta"},
         r"data.train_fasta='/nonexistent/train.fasta': no such file"),
        ({"evaluation__proteingym": {"assays": "/nonexistent/assays"}},
         r"evaluation.proteingym.assays='/nonexistent/assays': no such folder"),
        ({"evaluation__proteingym": {"reference": "/nonexistent/ref.csv"}},
         r"evaluation.proteingym.reference='/nonexistent/ref.csv': no such file"),
        ({"evaluation__proteingym": {"assay_ids": ["NOT_AN_ASSAY"]}},
         r"evaluation.proteingym.assay_ids: \['NOT_AN_ASSAY'\] have no <id>.csv"),
        ({"model__config": "/nonexistent/esm2"}, r"model.config='/nonexistent/esm2': no such folder"),
        ({"data__max_length": 2002}, (r"data.max_length=2002 tokens is longer than the model takes: "
                                     r"max_position_embeddings=1026 .* allows 1024 tokens.*model.attention_window")),
    ],
)
def test_input_mistakes_are_named_before_any_data_is_read(tmp_path, monkeypatch, changes, message):
    pg = changes.get("evaluation__proteingym")
    if pg is not None:  # a complete section with one wrong entry
        changes = {**changes, "evaluation__proteingym": {
            "assays": str(REPO / "data/proteingym/substitutions"),
            "reference": str(REPO / "data/proteingym/reference/DMS_substitutions.csv"), **pg}}
    monkeypatch.setattr(Trainer, "load_datasets", _no_data)
    with pytest.raises(ConfigError, match=message):
        Trainer(_config(tmp_path, **changes), tmp_path / "run")


def test_max_length_limit_follows_the_model(tmp_path):
    assert max_length_limit(_config(tmp_path, data__max_length=1024))[0] == 1024  # ESM-2: 1,026 positions
    bigger = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 2052}
    assert max_length_limit(_config(tmp_path, model__overrides=bigger))[0] == 2050
    # Long ESM-2: the model is grown to data.max_length, no limit
    assert max_length_limit(_config(tmp_path, model__attention_window=32, data__max_length=2002))[0] is None


def test_unwritable_output_dir_is_named(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(Trainer, "load_datasets", _no_data)
    with pytest.raises(ConfigError, match=r"--output-dir .*a-file/run is under .*a-file, which is a file, not a folder"):
        Trainer(_config(tmp_path), tmp_path / "a-file" / "run")


def test_run_folders_are_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "load_datasets", _no_data)
    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-00000003").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-00000003" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(newest checkpoint-00000003\); pass --resume"):
        Trainer(_config(tmp_path), run)
    finished = tmp_path / "finished"  # a run with save_every: 0 leaves only its model
    (finished / "model").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"already holds a finished run \(model/\)"):
        Trainer(_config(tmp_path), finished)
    with pytest.raises(ConfigError, match=r"--resume given but --output-dir .* has no complete checkpoint"):
        Trainer(_config(tmp_path), finished, resume=True)


def test_allowed_model_shape_change_that_cannot_load_names_the_keys(tmp_path, killed_run):
    killed, _ = killed_run
    wider = _config(tmp_path, model__overrides=dict(TINY["model"]["overrides"], hidden_size=64))
    with pytest.raises(ConfigError, match=r"cannot be loaded with the changed config \(model.overrides.hidden_size\): "
                                          r"RuntimeError: .*size mismatch.*cannot change on resume"):
        Trainer(wider, killed, resume=True, allow_config_change=True).train()
