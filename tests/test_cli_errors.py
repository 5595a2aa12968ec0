"""A user's mistakes through the real ``bitesm`` command: each ends with exit code 2 and one message that names the
input, never a traceback (``BITESM_DEBUG=1`` shows it).

Every case runs the command in its own subprocess with stdin closed, no Hub token and the Hub offline.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ESM_DIR, REPO

pytestmark = pytest.mark.slow

ASSAY = "CCDB_ECOLI_Adkar_2012"
ASSAYS_DIR = REPO / "data" / "proteingym" / "substitutions"
REFERENCE = REPO / "data" / "proteingym" / "reference" / "DMS_substitutions.csv"
GOOD_FASTA = ">p1\nMKTAYIAKQRQISFVKSHFSRQ\n>p2\nMSEQNNTEMTFQIQRIYTKDISFEAPNAPHVFQK\n"


def _tiny_config_yaml(workdir: Path, **sections) -> str:
    """A tiny training config (2 layers of hidden 32, 4 steps) with ``sections`` merged in."""
    config = {
        "model": {"config": str(ESM_DIR), "quantization": "ternary",
                  "overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                "intermediate_size": 64}},
        "data": {"train_fasta": str(workdir / "train.fasta"), "max_length": 64, "validation_size": 4},
        "training": {"batch_size": 4, "max_steps": 4, "warmup_steps": 1, "eval_every": 0, "save_every": 2,
                     "log_every": 1, "mixed_precision": "no"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    import yaml

    return yaml.safe_dump(config)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Model folders and input files, good and bad, shared by every case."""
    import torch
    from transformers import EsmConfig, EsmForMaskedLM

    from bitesm.data.tokenizer import load_tokenizer
    from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm
    from bitesm.models.packed import to_packed

    d = tmp_path_factory.mktemp("cli_errors")
    tokenizer = load_tokenizer(str(ESM_DIR))
    esm_cfg = EsmConfig.from_pretrained(str(ESM_DIR), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64)
    torch.manual_seed(0)
    fp = EsmForMaskedLM(esm_cfg).eval()
    fp.save_pretrained(d / "fp")
    tokenizer.save_pretrained(d / "fp")
    ternary = BitEsmForMaskedLM(bitesm_config_from_esm(esm_cfg, quantization="ternary")).eval()
    ternary.save_pretrained(d / "ternary")
    tokenizer.save_pretrained(d / "ternary")
    packed = to_packed(ternary)
    packed.save_pretrained(d / "packed")
    tokenizer.save_pretrained(d / "packed")

    for name, model_type in (("as_esm", "esm"), ("as_bert", "bert")):
        shutil.copytree(d / "ternary", d / name)
        cfg = json.loads((d / name / "config.json").read_text())
        cfg["model_type"] = model_type
        (d / name / "config.json").write_text(json.dumps(cfg))
    shutil.copytree(d / "ternary", d / "truncated")
    weights = d / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (d / "no_config").mkdir()
    shutil.copy(d / "ternary" / "model.safetensors", d / "no_config")

    (d / "train.fasta").write_text(GOOD_FASTA * 8)
    (d / "good.fasta").write_text(GOOD_FASTA)
    (d / "empty.fasta").write_text("")
    (d / "bad_residues.fasta").write_text(">p1\nMKT?AY*J1\n")
    (d / "no_header.fasta").write_text("MKTAYIAKQRQ\n")
    (d / "binary.fasta").write_bytes(bytes(range(256)) * 4)
    (d / "corrupt.fasta.gz").write_bytes(gzip.compress(GOOD_FASTA.encode())[:20])
    (d / "a_folder").mkdir()
    (d / "a_file.txt").write_text("not a folder\n")

    (d / "assays_empty_csv").mkdir()
    (d / "assays_empty_csv" / f"{ASSAY}.csv").write_text("")
    (d / "assays_bad_columns").mkdir()
    (d / "assays_bad_columns" / f"{ASSAY}.csv").write_text("variant,fitness\nQ2M,0.1\n")
    (d / "assays_wrong_wt").mkdir()
    (d / "assays_wrong_wt" / f"{ASSAY}.csv").write_text(
        "mutant,mutated_sequence,DMS_score,DMS_score_bin\nW2M,MMF,0.1,1\n")
    (d / "assays_nan").mkdir()
    rows = gzip.decompress((ASSAYS_DIR / f"{ASSAY}.csv.gz").read_bytes()).decode().splitlines()
    header, *body = rows
    nan_rows = [",".join(r.split(",")[:2] + ["nan", "0"]) for r in body[:50]]
    (d / "assays_nan" / f"{ASSAY}.csv").write_text("\n".join([header, *nan_rows]) + "\n")
    (d / "not_a_result.json").write_text(json.dumps({"hello": 1}))
    (d / "broken.json").write_text("{not json")

    (d / "structures_bad").mkdir()
    (d / "structures_bad" / "x.pdb").write_text("this is not a PDB file\n")
    (d / "bad_terms.tsv").write_text("protein\tgo\nP1\tGO:0000001\n")

    (d / "cfg_ok.yaml").write_text(_tiny_config_yaml(d))
    (d / "cfg_invalid.yaml").write_text("model: [unclosed\n")
    (d / "cfg_unknown_key.yaml").write_text(_tiny_config_yaml(d, training={"batch_sise": 4}))
    (d / "cfg_missing_fasta.yaml").write_text(_tiny_config_yaml(d, data={"train_fasta": str(d / "nope.fasta")}))
    (d / "cfg_too_long.yaml").write_text(_tiny_config_yaml(d, data={"max_length": 2002}))
    (d / "cfg_bad_assays.yaml").write_text(
        _tiny_config_yaml(d, evaluation={"proteingym": {"assays": str(d / "no_assays_here")}}))
    (d / "cfg_float_steps.yaml").write_text(_tiny_config_yaml(d, training={"max_steps": 10.5}))
    (d / "cfg_bad_lora.yaml").write_text(
        _tiny_config_yaml(d, model={"quantization": None}, lora={"r": 4},
                          head={"task": "classification", "train_file": str(d / "no_labels.csv")}))

    # a finished run: reruns without --resume and resumes with another batch size are refused
    env = _env(d)
    proc = subprocess.run([sys.executable, "-m", "bitesm.cli", "train", "--config", str(d / "cfg_ok.yaml"),
                           "--output-dir", str(d / "run")], cwd=d, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d


def _env(workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "BITESM_DEBUG"))}
    env.update(HF_HOME=str(workdir / "hf_home"), HF_HUB_OFFLINE="1", HF_TOKEN="", TOKENIZERS_PARALLELISM="false",
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return env


#: (case id, command line, text the message must contain). ``{d}`` is the work folder.
CASES = [
    # model folders
    ("model-missing", "embed --model {d}/nope --fasta {d}/good.fasta --output {d}/o.safetensors", "nope"),
    ("model-no-config", "embed --model {d}/no_config --fasta {d}/good.fasta --output {d}/o.safetensors",
     "no_config"),
    ("model-truncated-weights", "embed --model {d}/truncated --fasta {d}/good.fasta --output {d}/o.safetensors",
     "model.safetensors"),
    ("model-type-edited-to-esm", "embed --model {d}/as_esm --fasta {d}/good.fasta --output {d}/o.safetensors",
     "config.json"),
    ("model-type-edited-to-bert", "eval proteingym --model {d}/as_bert --assays " + str(ASSAYS_DIR)
     + f" --assay-ids {ASSAY}", "config.json"),
    ("model-is-a-file", "embed --model {d}/a_file.txt --fasta {d}/good.fasta --output {d}/o.safetensors",
     "a_file.txt"),
    ("device-cuda-without-cuda", "embed --model {d}/ternary --fasta {d}/good.fasta --output {d}/o.safetensors "
     "--device cuda", "cuda"),
    ("device-unknown", "embed --model {d}/ternary --fasta {d}/good.fasta --output {d}/o.safetensors "
     "--device tpu9", "tpu9"),
    # FASTA inputs
    ("fasta-missing", "embed --model {d}/ternary --fasta {d}/nope.fasta --output {d}/o.safetensors", "nope.fasta"),
    ("fasta-is-a-folder", "embed --model {d}/ternary --fasta {d}/a_folder --output {d}/o.safetensors", "a_folder"),
    ("fasta-empty", "embed --model {d}/ternary --fasta {d}/empty.fasta --output {d}/o.safetensors", "empty.fasta"),
    ("fasta-bad-residues", "embed --model {d}/ternary --fasta {d}/bad_residues.fasta --output {d}/o.safetensors",
     "bad_residues.fasta"),
    ("fasta-no-header", "embed --model {d}/ternary --fasta {d}/no_header.fasta --output {d}/o.safetensors",
     "no_header.fasta"),
    ("fasta-binary", "embed --model {d}/ternary --fasta {d}/binary.fasta --output {d}/o.safetensors",
     "binary.fasta"),
    ("fasta-corrupt-gzip", "embed --model {d}/ternary --fasta {d}/corrupt.fasta.gz --output {d}/o.safetensors",
     "corrupt.fasta.gz"),
    ("embed-output-under-a-file", "embed --model {d}/ternary --fasta {d}/good.fasta "
     "--output {d}/a_file.txt/o.safetensors", "a_file.txt"),
    ("embed-layer-out-of-range", "embed --model {d}/ternary --fasta {d}/good.fasta --output {d}/o.safetensors "
     "--layer 99", "99"),
    # ProteinGym
    ("assays-missing", "eval proteingym --model {d}/ternary --assays {d}/no_assays", "no_assays"),
    ("assays-empty-csv", "eval proteingym --model {d}/ternary --assays {d}/assays_empty_csv", ASSAY),
    ("assays-bad-columns", "eval proteingym --model {d}/ternary --assays {d}/assays_bad_columns", ASSAY),
    ("assays-wrong-wild-type", "eval proteingym --model {d}/ternary --assays {d}/assays_wrong_wt", ASSAY),
    ("assays-all-nan-scores", "eval proteingym --model {d}/ternary --assays {d}/assays_nan", ASSAY),
    ("assay-id-unknown", "eval proteingym --model {d}/ternary --assays " + str(ASSAYS_DIR)
     + " --assay-ids NOT_AN_ASSAY", "NOT_AN_ASSAY"),
    ("reference-missing", "eval proteingym --model {d}/ternary --assays " + str(ASSAYS_DIR)
     + " --reference {d}/no_reference.csv", "no_reference.csv"),
    ("eval-output-under-a-file", "eval proteingym --model {d}/ternary --assays " + str(ASSAYS_DIR)
     + f" --assay-ids {ASSAY} --output {{d}}/a_file.txt/pg.json", "a_file.txt"),
    ("eval-run-unknown-suite", "eval run --model {d}/ternary --suite proteingym,fold --output {d}/er", "fold"),
    ("eval-watch-missing-run", "eval watch {d}/no_run --once", "no_run"),
    ("compare-not-a-result", "eval compare {d}/not_a_result.json {d}/not_a_result.json", "not_a_result.json"),
    ("compare-broken-json", "eval compare {d}/broken.json {d}/broken.json", "broken.json"),
    ("contacts-structures-missing", "eval contacts --model {d}/ternary --structures {d}/no_structures "
     "--output {d}/c.json", "no_structures"),
    ("contacts-structure-not-pdb", "eval contacts --model {d}/ternary --structures {d}/structures_bad/x.pdb "
     "--output {d}/c.json", "x.pdb"),
    ("go-obo-missing", "eval go --model {d}/ternary --output {d}/go --obo {d}/no.obo", "no.obo"),
    ("go-terms-bad-columns", "eval go --model {d}/ternary --output {d}/go --train-terms {d}/bad_terms.tsv",
     "bad_terms.tsv"),
    # training configs
    ("config-missing", "train --config {d}/nope.yaml --output-dir {d}/r1", "nope.yaml"),
    ("config-is-a-folder", "train --config {d}/a_folder --output-dir {d}/r1", "a_folder"),
    ("config-invalid-yaml", "train --config {d}/cfg_invalid.yaml --output-dir {d}/r1", "cfg_invalid.yaml"),
    ("config-unknown-key", "train --config {d}/cfg_unknown_key.yaml --output-dir {d}/r1", "batch_sise"),
    ("config-float-steps", "train --config {d}/cfg_float_steps.yaml --output-dir {d}/r1", "max_steps"),
    ("set-not-a-number", "train --config {d}/cfg_ok.yaml --output-dir {d}/r1 --set training.batch_size=abc",
     "training.batch_size"),
    ("set-fractional-int", "train --config {d}/cfg_ok.yaml --output-dir {d}/r1 --set training.max_steps=10.5",
     "training.max_steps"),
    ("set-bool-for-int", "train --config {d}/cfg_ok.yaml --output-dir {d}/r1 --set training.batch_size=true",
     "training.batch_size"),
    ("set-without-equals", "train --config {d}/cfg_ok.yaml --output-dir {d}/r1 --set training.max_steps",
     "training.max_steps"),
    ("set-unknown-key", "train --config {d}/cfg_ok.yaml --output-dir {d}/r1 --set training.nope=1", "nope"),
    ("train-fasta-missing", "train --config {d}/cfg_missing_fasta.yaml --output-dir {d}/r1", "nope.fasta"),
    ("train-max-length-over-positions", "train --config {d}/cfg_too_long.yaml --output-dir {d}/r1",
     "max_length"),
    ("train-eval-assays-missing", "train --config {d}/cfg_bad_assays.yaml --output-dir {d}/r1", "no_assays_here"),
    ("train-output-under-a-file", "train --config {d}/cfg_ok.yaml --output-dir {d}/a_file.txt/run",
     "a_file.txt"),
    ("train-existing-run-without-resume", "train --config {d}/cfg_ok.yaml --output-dir {d}/run", "--resume"),
    ("resume-with-changed-batch", "train --config {d}/cfg_ok.yaml --output-dir {d}/run --resume "
     "--set training.batch_size=8 --set training.max_steps=6", "batch_size"),
    ("lora-head-file-missing", "lora --config {d}/cfg_bad_lora.yaml --output-dir {d}/l1", "no_labels.csv"),
    ("lora-merge-adapter-missing", "lora merge --adapter {d}/no_adapter --output {d}/merged", "no_adapter"),
    # quantization, conversion, export
    ("ptq-on-packed", "ptq --model {d}/packed --weight-bits 8 --act-bits 8 --calibration {d}/train.fasta "
     "--num-calibration 4 --output {d}/ptq1", "packed"),
    ("ptq-calibration-missing", "ptq --model {d}/fp --weight-bits 8 --act-bits 8 --calibration {d}/nope.fasta "
     "--output {d}/ptq2", "nope.fasta"),
    ("ptq-bits-out-of-range", "ptq --model {d}/fp --weight-bits 1 --act-bits 8 --calibration {d}/train.fasta "
     "--output {d}/ptq3", "bits"),
    ("ptq-analyze-model-missing", "ptq analyze --model {d}/nope --output-dir {d}/pa", "nope"),
    ("export-fp-to-packed", "export --model {d}/fp --format packed --output {d}/fp-packed", "fp"),
    ("convert-long-bad-window", "convert long --model {d}/fp --window 1 --output {d}/long1", "window"),
    # push
    ("push-no-config", "push {d}/no_config --repo-id me/model --dry-run", "config.json"),
    ("push-no-token", "push {d}/ternary --repo-id me/model", "token"),
    ("push-bad-repo-id", "push {d}/ternary --repo-id 'not a repo id' --dry-run", "repo"),
    # process settings
    ("malloc-env-bad-value", "embed --model {d}/ternary --fasta {d}/good.fasta --output {d}/o.safetensors",
     "BITESM_MALLOC"),
]


def _run(work: Path, command: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    import shlex

    env = _env(work)
    env.update(extra_env or {})
    argv = shlex.split(command.format(d=work))
    return subprocess.run([sys.executable, "-m", "bitesm.cli", *argv], cwd=work, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


def _extra_env(case: str) -> dict | None:
    return {"BITESM_MALLOC": "sometimes"} if case == "malloc-env-bad-value" else None


@pytest.fixture(scope="module")
def outcomes(work) -> dict[str, subprocess.CompletedProcess]:
    """Every case's process, run two at a time (each is a fresh interpreter, mostly waiting on imports)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {case: pool.submit(_run, work, command, _extra_env(case)) for case, command, _ in CASES}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case,command,needle", CASES, ids=[c[0] for c in CASES])
def test_user_mistake_exits_2_with_one_message(outcomes, case, command, needle):
    proc = outcomes[case]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert needle in errors[0], f"{needle!r} not in:\n{proc.stderr[-2000:]}"


def test_enough_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 40


def test_debug_env_shows_the_traceback(work):
    proc = _run(work, "train --config {d}/nope.yaml --output-dir {d}/r1", {"BITESM_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_a_bug_keeps_its_traceback(work, tmp_path):
    """An exception that is not a user's mistake is not disguised as one."""
    code = ("import sys\nimport bitesm.runtime as runtime\n"
            "def boom():\n    raise ZeroDivisionError('a bug')\n"
            "runtime.steady_malloc = boom\n"
            "from bitesm import cli\n"
            "sys.exit(cli.main(['eval', 'watch', 'x', '--once']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ZeroDivisionError: a bug" in proc.stderr


def test_full_disk_names_the_path_and_what_was_kept():
    import errno

    from bitesm.cli import user_error_message

    message = user_error_message(OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.safetensors"))
    assert message.startswith("no space left on device while writing /runs/x/model.safetensors")
    assert "kept whole" in message and "--resume" in message
    assert user_error_message(OSError(errno.EIO, "Input/output error", "/x")) is None  # not the user's to fix
    assert user_error_message(RuntimeError("shape mismatch")) is None


def test_ctrl_c_exits_130_in_one_line(monkeypatch, capsys):
    import bitesm.runtime
    from bitesm.cli import main

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(bitesm.runtime, "steady_malloc", interrupted)
    assert main(["eval", "watch", "no_run", "--once"]) == 130
    assert capsys.readouterr().err == "bitesm eval watch: interrupted\n"
