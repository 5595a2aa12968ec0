"""Preemption: SIGTERM / SIGINT stop a run after the current optimizer step with a resumable checkpoint, and the
resumed run ends with the weights of an uninterrupted one."""

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
from safetensors.torch import load_file
from test_training import REPO, metric_steps, run_cli, write_config

from bitesm.training import TrainingInterrupted, load_config
from bitesm.training.trainer import Trainer

#: every step logged (the test waits for rows), no periodic checkpoint (the signal's is the only one), 30 steps.
PREEMPTIBLE = {"training__max_steps": 30, "training__save_every": 0, "training__log_every": 1,
               "training__eval_every": 10}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs after the interrupted run was resumed"


def _logged_rows(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _wait_for_rows(child: subprocess.Popen, run: Path, rows: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while _logged_rows(run) < rows and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_resume_equals_the_uninterrupted_run(tmp_path):
    cfg = write_config(tmp_path, **PREEMPTIBLE)
    reference = tmp_path / "reference"
    proc = run_cli(["train", "--config", str(cfg), "--output-dir", str(reference)])
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = tmp_path / "preempted"
    child = subprocess.Popen(
        [sys.executable, "-m", "bitesm.cli", "train", "--config", str(cfg), "--output-dir", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    _wait_for_rows(child, run, 2)  # two optimizer steps done
    child.send_signal(signal.SIGTERM)
    child.send_signal(signal.SIGTERM)  # a second signal while stopping is ignored
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("bitesm train: stopped by SIGTERM")]
    assert len(stopped) == 1 and "--resume" in stopped[0], stderr[-3000:]
    step = int(stopped[0].split("after step ")[1].split(":")[0])
    assert 2 <= step < 30, "the run finished before the signal arrived"
    # the checkpoint of that step, complete (published under its final name), and no final model
    checkpoint = run / "checkpoints" / f"checkpoint-{step:08d}"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == step
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [checkpoint.name]
    assert not (run / "model").exists()
    assert metric_steps(run)["train/loss"] == list(range(1, step + 1))

    resumed = run_cli(["train", "--config", str(cfg), "--output-dir", str(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoint}" in resumed.stderr
    _assert_same_weights(reference, run)
    assert metric_steps(run) == metric_steps(reference) == {"train/loss": list(range(1, 31)), "val/loss": [10, 20, 30]}


class _InterruptedAtStart(Trainer):
    """Sends itself SIGINT (Ctrl-C) twice as training starts, and SIGTERM while its checkpoint is being written: the
    run must still finish its first optimizer step and write a complete checkpoint."""

    def on_train_start(self, bar) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    def save_checkpoint(self) -> Path:
        os.kill(os.getpid(), signal.SIGTERM)
        return super().save_checkpoint()


def test_sigint_stops_after_the_step_with_a_checkpoint_and_restores_the_handlers(tmp_path, one_thread, capfd):
    cfg = load_config(write_config(tmp_path, training__max_steps=6, training__save_every=0, training__log_every=1))
    reference = tmp_path / "reference"
    Trainer(cfg, reference).train()

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as err:
        _InterruptedAtStart(cfg, run).train()
    assert (err.value.signum, err.value.step, err.value.exit_code) == (signal.SIGINT, 1, 130)
    assert err.value.checkpoint == run / "checkpoints" / "checkpoint-00000001"
    assert "stopped by SIGINT after step 1" in str(err.value) and "--resume" in str(err.value)
    assert isinstance(err.value, KeyboardInterrupt)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    stderr = capfd.readouterr().err
    assert "SIGINT received: training stops after the current optimizer step" in stderr
    assert "SIGINT received again: ignored" in stderr and "SIGTERM received again: ignored" in stderr
    assert json.loads((err.value.checkpoint / "trainer_state.json").read_text())["step"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-00000001"]  # no temporary folder left

    Trainer(cfg, run, resume=True).train()
    _assert_same_weights(reference, run)
    assert metric_steps(run) == metric_steps(reference)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


@pytest.mark.slow
def test_sigterm_stops_every_data_parallel_process_at_the_same_step(tmp_path):
    """``accelerate launch`` forwards SIGTERM to both processes; they agree on the step and write one checkpoint."""
    cfg = write_config(tmp_path, **PREEMPTIBLE)
    run = tmp_path / "ddp"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train" / "pretrain.py"),
        "--config", str(cfg), "--output-dir", str(run),
    ]
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_rows(launcher, run, 2)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=300)
    stopped = [line for line in stderr.splitlines() if line.startswith("bitesm train: stopped by SIGTERM")]
    assert len(stopped) == 1, stderr[-3000:]  # printed by the main process only
    [checkpoint] = list((run / "checkpoints").iterdir())
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    assert 2 <= step < 30 and f"after step {step}:" in stopped[0]
    assert {p.name for p in checkpoint.glob("collator_rng_*.pt")} == {"collator_rng_0.pt", "collator_rng_1.pt"}
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600, env=env, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{"):])
    assert summary["step"] == 30 and summary["replicas_in_sync"] is True
    assert metric_steps(run) == {"train/loss": list(range(1, 31)), "val/loss": [10, 20, 30]}
