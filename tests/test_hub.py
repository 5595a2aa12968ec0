"""bitesm.hub: the generated model card, ``push_to_hub`` against a fake HfApi (call arguments, staging, retries,
errors, the local folder left untouched), the uploaded folder loading in a fresh process without bitesm, ``bitesm
push`` and the trainer's push every N checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import torch
import urllib3
import yaml
from huggingface_hub import ModelCard
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from huggingface_hub.errors import HfHubHTTPError

import bitesm.hub.push as push_module
from bitesm.cli import main as bitesm_main
from bitesm.data import load_tokenizer
from bitesm.errors import UserInputError
from bitesm.hub import (
    HubPushError,
    evaluation_markdown,
    find_evaluation,
    model_card,
    push_to_hub,
    resolve_model_dir,
    validate_model_folder,
)
from bitesm.hub.model_card import count_parameters, quantization_summary
from bitesm.models import BitEsmConfig, BitEsmForMaskedLM
from bitesm.training.config import ConfigError, load_config
from bitesm.training.trainer import Trainer

from conftest import REPO

ESM8M = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"
SAMPLE = REPO / "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"

pytestmark = pytest.mark.usefixtures("one_thread")

# <cls>=0 <pad>=1 <eos>=2 <mask>=32; row 0 is padded.
INPUT_IDS = [[0, 5, 6, 7, 8, 9, 2, 1, 1, 1], [0, 10, 32, 12, 13, 32, 15, 16, 17, 2]]

TRAINING_CONFIG = {
    "model": {"config": "data/esm2_hf_configs/esm2_t6_8M_UR50D", "from_pretrained": None, "quantization": "ternary",
              "activation_bits": 8, "overrides": {"hidden_size": 64, "num_hidden_layers": 2}},
    "data": {"train_fasta": "data/pretrain/swissprot_2014-01_sample50k.fasta.gz", "max_length": 96,
             "mask_rate": 0.15, "validation_size": 50, "max_sequences": None},
    "training": {"batch_size": 32, "gradient_accumulation_steps": 2, "learning_rate": 0.005, "lr_scheduler": "linear",
                 "warmup_steps": 10, "max_steps": 250, "mixed_precision": "no", "weight_decay": 0.01},
}
TRAINER_STATE = {"step": 250, "epoch": 0, "batch_in_epoch": 500, "tokens": 1234567, "elapsed_seconds": 90.0}

#: a ProteinGym result in the newer format: ProteinGym's summary and per-assay AUC / MCC / NDCG / recall.
EVAL_RESULT = {
    "model": "BitEsmForMaskedLM",
    "strategy": "masked-marginals",
    "n_assays": 2,
    "mean_spearman": 0.1234,
    "mean_published_spearman_ESM2_8M": 0.146,
    "mean_published_spearman_ESM2_35M": 0.2199,
    "summary": {"spearman": 0.1111, "spearman_bootstrap_se": 0.0222, "auc": 0.5555, "auc_bootstrap_se": 0.0111,
                "mcc": 0.0777, "mcc_bootstrap_se": 0.0123, "ndcg": 0.6666, "ndcg_bootstrap_se": 0.0333,
                "recall": 0.1313, "recall_bootstrap_se": 0.0444},
    "published_summary": {"ESM2_8M": {"spearman": 0.1501}, "ESM2_35M": {"spearman": 0.2302}},
    "assays": [
        {"DMS_id": "BLAT_ECOLX_Stiffler_2015", "n_mutants": 4996, "spearman": 0.2468, "auc": 0.6123, "mcc": 0.1357,
         "ndcg": 0.7531, "recall": 0.2109, "published_spearman_ESM2_8M": 0.399, "published_spearman_ESM2_35M": 0.557},
        {"DMS_id": "SUMO1_HUMAN_Weile_2017", "n_mutants": 1700, "spearman": 0.0135, "auc": float("nan"),
         "published_spearman_ESM2_8M": 0.25, "published_spearman_ESM2_35M": None},
    ],
}


# -- fixtures ---------------------------------------------------------------------------------------------------


def _logits(model) -> torch.Tensor:
    ids = torch.tensor(INPUT_IDS)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=(ids != 1).long()).logits


@pytest.fixture()
def run_dir(tmp_path, small_esm_kwargs):
    """A training-run folder as ``bitesm train`` writes it: ``model/`` (tiny ternary bitesm model, tokenizer,
    training_config.yaml, trainer_state.json), ``checkpoints/``, ``tensorboard/`` and ``eval/proteingym.json``.
    Returns ``(run, logits of the original model on INPUT_IDS)``."""
    torch.manual_seed(4)
    model = BitEsmForMaskedLM(BitEsmConfig(activation_bits=8, **small_esm_kwargs)).eval()
    run = tmp_path / "runs" / "tiny"
    model_dir = run / "model"
    model.save_pretrained(model_dir)
    load_tokenizer(ESM8M).save_pretrained(model_dir)
    for folder in (run, model_dir):
        (folder / "training_config.yaml").write_text(yaml.safe_dump(TRAINING_CONFIG))
    (model_dir / "trainer_state.json").write_text(json.dumps(TRAINER_STATE))
    (run / "checkpoints" / "checkpoint-00000250").mkdir(parents=True)
    (run / "tensorboard" / "123.45").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"\x00event-data")
    (run / "tensorboard" / "123.45" / "events.out.tfevents.2.host.1.0").write_bytes(b"\x01hparams")
    (run / "eval").mkdir()
    (run / "eval" / "proteingym.json").write_text(json.dumps(EVAL_RESULT))
    return run, _logits(model)


class FakeHfApi:
    """Records ``create_repo``, ``create_branch`` and ``upload_folder`` calls and copies each uploaded folder to
    ``uploads/<n>``. ``failures[method]`` is a list of exceptions raised, one per call, before calls succeed."""

    def __init__(self, root: Path, token=None, failures: dict | None = None):
        self.root, self.token = Path(root), token
        self.calls: list[tuple[str, dict]] = []
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.uploads: list[Path] = []

    def _record(self, method: str, kwargs: dict) -> None:
        self.calls.append((method, kwargs))
        pending = self.failures.get(method)
        if pending:
            raise pending.pop(0)

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", {"repo_id": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self._record("create_branch", {"repo_id": repo_id, **kwargs})

    def upload_folder(self, **kwargs):
        self._record("upload_folder", kwargs)
        target = self.root / "uploads" / str(len(self.uploads))
        shutil.copytree(kwargs["folder_path"], target)
        self.uploads.append(target)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{len(self.uploads)}")

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch) -> list:
    """Replace ``HfApi`` in bitesm.hub.push by :class:`FakeHfApi`; returns the list of fakes made (one per push)."""
    made: list[FakeHfApi] = []

    def make(token=None):
        made.append(FakeHfApi(tmp_path / f"hub{len(made)}", token=token))
        return made[-1]

    monkeypatch.setattr(push_module, "HfApi", make)
    return made


@pytest.fixture(autouse=True)
def hub_token(tmp_path, monkeypatch) -> Path:
    """Every test pushes with ``HF_TOKEN=hf_test_token`` (the fakes never check it) and never sees the machine's
    cached login: huggingface_hub's token file is moved to ``tmp_path/hf_token`` (missing). Returns that path."""
    token_file = tmp_path / "hf_token"
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(token_file))
    monkeypatch.setattr(hub_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_stored_tokens"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    for name in ("HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    return token_file


@pytest.fixture()
def no_token(monkeypatch, hub_token) -> Path:
    """No token anywhere: ``HF_TOKEN`` empty, no cached login. Returns the (missing) token file's path."""
    monkeypatch.setenv("HF_TOKEN", "")
    return hub_token


def http_error(status: int, message: str = "") -> HfHubHTTPError:
    """An HfHubHTTPError with a real response of the HTTP client huggingface_hub uses."""
    response_cls = getattr(hub_errors, "Response", None)
    request_cls = getattr(sys.modules.get(getattr(response_cls, "__module__", ""), None), "Request", None)
    if response_cls is not None and request_cls is not None:
        response = response_cls(status, request=request_cls("POST", "https://huggingface.co/api/repos/create"))
    else:  # pragma: no cover  (another client: duck-typed response)
        response = SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(message or f"{status} Client Error", response=response)


def snapshot(folder: Path) -> dict:
    """``{relative path: (sha256, mtime_ns, mode)}`` of every file below ``folder``, plus the folder listing."""
    files = {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }
    return {"files": files, "dirs": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir())}


# -- evaluation table and card --------------------------------------------------------------------------------


def test_evaluation_markdown_renders_summary_and_per_assay_tables():
    text = evaluation_markdown(EVAL_RESULT)
    assert "| mean Spearman's ρ (2 assays) | 0.1234 | 0.1460 | 0.2199 |" in text
    assert "| Spearman's ρ | 0.111 ± 0.022 | 0.150 | 0.230 |" in text
    assert "| AUC | 0.555 ± 0.011 | – | – |" in text and "| NDCG | 0.667 ± 0.033 | – | – |" in text
    header = "| DMS_id | n | Spearman's ρ | AUC | MCC | NDCG | Recall (top 10%) | ESM-2 8M ρ (published) | ESM-2 35M ρ (published) |"
    assert header in text
    assert "| BLAT_ECOLX_Stiffler_2015 | 4,996 | 0.247 | 0.612 | 0.136 | 0.753 | 0.211 | 0.399 | 0.557 |" in text
    # NaN and missing values are dashes
    assert "| SUMO1_HUMAN_Weile_2017 | 1,700 | 0.013 | – | – | – | – | 0.250 | – |" in text


def test_evaluation_markdown_of_the_current_format_has_no_extra_columns():
    result = {k: v for k, v in EVAL_RESULT.items() if k != "summary"}
    result["assays"] = [{k: v for k, v in a.items() if k not in ("auc", "mcc", "ndcg", "recall")}
                        for a in EVAL_RESULT["assays"]]
    text = evaluation_markdown(result)
    assert "| DMS_id | n | Spearman's ρ | ESM-2 8M ρ (published) | ESM-2 35M ρ (published) |" in text
    assert "AUC" not in text and "aggregation" not in text
    assert "| BLAT_ECOLX_Stiffler_2015 | 4,996 | 0.247 | 0.399 | 0.557 |" in text
    with pytest.raises(ValueError, match="not a ProteinGym result"):
        evaluation_markdown({"foo": 1})


def test_model_card_metadata_and_sections(run_dir):
    run, _ = run_dir
    text = model_card(run / "model", repo_id="my-org/tiny-ternary", license="mit")
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "fill-mask" and data["license"] == "mit"
    assert {"protein-language-model", "esm", "bitnet", "ternary", "bitesm"} <= set(data["tags"])
    assert data["datasets"] == ["swissprot_2014-01_sample50k"]
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(0.1111)  # ProteinGym's summary
    body = card.text
    for section in ("## Model", "## Quantization", "## Training", "## How to load", "## Evaluation"):
        assert section in body
    assert "## Long attention window" not in body
    n_params = count_parameters(run / "model")
    assert f"| parameters | {n_params:,} " in body and n_params > 10_000
    assert "| layers | 2 |" in body and "| hidden size | 64 |" in body and "| attention heads | 4 |" in body
    assert "Ternary BitNet b1.58" in body and "absmean" in body and "8-bit per-token absmax activations" in body
    assert "12 BitLinear layers" in body
    assert "| tokens seen | 1,234,567 " in body and "| steps | 250 of 250 |" in body
    assert "32 sequences per optimizer step (2 accumulation steps)" in body and "0.005 peak" in body
    assert "`data/pretrain/swissprot_2014-01_sample50k.fasta.gz`" in body and "| context | 96 tokens" in body
    assert 'AutoModelForMaskedLM.from_pretrained("my-org/tiny-ternary", trust_remote_code=True)' in body
    assert evaluation_markdown(EVAL_RESULT).strip() in body


def test_quantization_summary_of_ptq_fp_and_long_configs(tmp_path, run_dir):
    text, tags = quantization_summary({"model_type": "bitesm", "quantization": None, "ptq": {
        "weight_bits": 8, "act_bits": 6, "method": "piecewise", "sites": ["ffn_input"], "layers": None,
        "weight_granularity": "per_channel"}})
    assert "PTQ4Protein), W8A6" in text and "piecewise" in text and "`ffn_input`" in text and "w8a6" in tags
    text, tags = quantization_summary({"model_type": "esm"})
    assert "Full precision" in text and tags == ["full-precision"]
    text, _ = quantization_summary({"model_type": "bitesm", "quantization": "ternary", "activation_bits": None})
    assert "weight-only ternary" in text
    # a long model gets its attention-window section and tags
    run, _ = run_dir
    config = json.loads((run / "model" / "config.json").read_text())
    long_dir = tmp_path / "long"
    shutil.copytree(run / "model", long_dir)
    (long_dir / "config.json").write_text(json.dumps({**config, "attention_window": 1024}))
    card = ModelCard(model_card(long_dir, search_evaluation=False))
    assert "## Long attention window" in card.text and "1,024-token band" in card.text
    assert "long-context" in card.data.tags and "Not evaluated yet" in card.text


def test_find_evaluation_takes_the_newest_result(run_dir):
    run, _ = run_dir
    model_dir = run / "model"
    assert find_evaluation(model_dir) == run / "eval" / "proteingym.json"
    newer = model_dir / "eval" / "later.json"
    newer.parent.mkdir()
    newer.write_text(json.dumps({**EVAL_RESULT, "mean_spearman": 0.5}))
    not_a_result = run / "eval" / "notes.json"
    not_a_result.write_text(json.dumps({"hello": "world"}))
    os.utime(run / "eval" / "proteingym.json", ns=(1_000_000_000, 1_000_000_000))
    os.utime(newer, ns=(2_000_000_000, 2_000_000_000))
    os.utime(not_a_result, ns=(3_000_000_000, 3_000_000_000))
    assert find_evaluation(model_dir) == newer


# -- push ------------------------------------------------------------------------------------------------------


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    ids = torch.tensor({ids})
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != 1).long()).logits
    torch.save({{"logits": logits, "module": type(model).__module__,
                "bitesm_imported": "bitesm" in sys.modules or any(k.startswith("bitesm.") for k in sys.modules)}},
               "out.pt")
    """
)


def test_push_uploads_card_and_files_and_the_upload_loads_without_bitesm(run_dir, tmp_path):
    run, expected = run_dir
    before = snapshot(run)
    api = FakeHfApi(tmp_path / "hub")
    result = push_to_hub(run / "model", "my-org/tiny-ternary", private=True, revision="v1", commit_message="first",
                         api=api, token="hf_x")
    assert api.methods() == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (kwargs for _, kwargs in api.calls)
    assert (create["repo_id"], create["private"], create["exist_ok"], create["token"]) == (
        "my-org/tiny-ternary", True, True, "hf_x")
    assert (branch["repo_id"], branch["branch"], branch["exist_ok"]) == ("my-org/tiny-ternary", "v1", True)
    assert (upload["repo_id"], upload["revision"], upload["commit_message"]) == ("my-org/tiny-ternary", "v1", "first")
    assert not Path(upload["folder_path"]).exists(), "the staging folder is temporary"
    assert result["commit_url"].endswith("/commit/1") and result["revision"] == "v1"

    uploaded = api.uploads[0]
    names = {str(p.relative_to(uploaded)) for p in uploaded.rglob("*") if p.is_file()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt",
            "modeling_bitesm.py", "configuration_bitesm.py", "bitlinear.py", "primitives.py",
            "training_config.yaml", "trainer_state.json", "eval/proteingym.json",
            "runs/events.out.tfevents.1.host.1.0", "runs/123.45/events.out.tfevents.2.host.1.0"} <= names
    assert sorted(names) == result["files"]
    readme = (uploaded / "README.md").read_text()
    assert "library_name: transformers" in readme and "- protein-language-model" in readme
    assert "Ternary BitNet b1.58" in readme
    assert "| BLAT_ECOLX_Stiffler_2015 | 4,996 | 0.247 |" in readme and "0.111 ± 0.022" in readme
    assert 'from_pretrained("my-org/tiny-ternary", revision="v1", trust_remote_code=True)' in readme
    assert snapshot(run) == before, "push_to_hub wrote to the local folder"

    # a fresh process that never imports bitesm loads the upload through its remote code
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "hf_modules"), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT.format(ids=INPUT_IDS), str(uploaded)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = torch.load(work / "out.pt")
    assert out["bitesm_imported"] is False
    assert out["module"].startswith("transformers_modules"), out["module"]
    assert (out["logits"] - expected).abs().max().item() <= 1e-6


def test_push_of_a_run_folder_pushes_its_model(run_dir, tmp_path):
    run, _ = run_dir
    assert resolve_model_dir(run) == run / "model"
    api = FakeHfApi(tmp_path / "hub")
    result = push_to_hub(run, "me/tiny", api=api, eval_json=run / "eval" / "proteingym.json")
    assert result["model_dir"] == str(run / "model")
    assert api.methods() == ["create_repo", "upload_folder"]  # no revision: no branch
    create, upload = (kwargs for _, kwargs in api.calls)
    assert create["private"] is False and upload["revision"] is None
    assert upload["commit_message"] == "Upload tiny with bitesm (step 250)"
    assert (api.uploads[0] / "config.json").is_file()
    # an unfinished run (checkpoints, no model/) is named as such
    (run / "model").rename(run / "elsewhere")
    with pytest.raises(FileNotFoundError, match="has not finished"):
        resolve_model_dir(run)


@pytest.mark.parametrize(
    "break_folder, message",
    [
        (lambda d: (d / "vocab.txt").unlink(), r"vocab.txt.*tokenizer.save_pretrained"),
        (lambda d: (d / "tokenizer_config.json").unlink(), r"tokenizer_config.json not found"),
        (lambda d: (d / "model.safetensors").unlink(), r"model.safetensors.*save_pretrained"),
        (lambda d: (d / "configuration_bitesm.py").unlink(), r"configuration_bitesm.py not found.*save_pretrained"),
        (lambda d: (d / "bitlinear.py").unlink(), r"bitlinear.py not found \(model code"),
        (lambda d: (d / "config.json").write_text(json.dumps(
            {k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "auto_map"})),
         r"has no auto_map.*save_pretrained"),
    ],
)
def test_missing_files_are_named_with_the_fix(run_dir, tmp_path, break_folder, message):
    run, _ = run_dir
    break_folder(run / "model")
    api = FakeHfApi(tmp_path / "hub")
    with pytest.raises(FileNotFoundError, match=message):
        push_to_hub(run / "model", "me/tiny", api=api)
    assert api.calls == [], "nothing is sent for an incomplete folder"


def test_validate_model_folder_refuses_other_models_and_accepts_esm(tmp_path, small_esm_kwargs):
    from transformers import BertConfig, BertForMaskedLM, EsmConfig, EsmForMaskedLM

    esm = tmp_path / "esm"
    EsmForMaskedLM(EsmConfig(**small_esm_kwargs)).save_pretrained(esm)
    load_tokenizer(ESM8M).save_pretrained(esm)
    assert validate_model_folder(esm)["model_type"] == "esm"
    card = model_card(esm, search_evaluation=False)
    assert "Full precision" in card and "trust_remote_code" not in card
    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
                    ).save_pretrained(bert)
    with pytest.raises(ValueError, match="model_type='bert'"):
        validate_model_folder(bert)
    with pytest.raises(ValueError, match="not a valid Hub repository id"):
        push_to_hub(esm, "a/b/c", api=FakeHfApi(tmp_path))


def test_network_errors_are_retried_with_backoff(run_dir, tmp_path):
    run, _ = run_dir
    api = FakeHfApi(tmp_path / "hub", failures={"upload_folder": [
        requests.exceptions.ConnectionError("connection reset"), TimeoutError("read timed out")]})
    delays = []
    result = push_to_hub(run / "model", "me/tiny", api=api, retry_delay=0.5, sleep=delays.append)
    assert api.methods() == ["create_repo", "upload_folder", "upload_folder", "upload_folder"]
    assert delays == [0.5, 1.0] and result["commit_url"]
    # 5xx and 429 are retried too
    api = FakeHfApi(tmp_path / "hub2", failures={"create_repo": [http_error(503), http_error(429)]})
    push_to_hub(run / "model", "me/tiny", api=api, retry_delay=0.0, sleep=lambda s: None)
    assert api.methods() == ["create_repo"] * 3 + ["upload_folder"]


def test_retries_run_out_with_a_clear_error(run_dir, tmp_path):
    run, _ = run_dir
    before = snapshot(run)
    api = FakeHfApi(tmp_path / "hub", failures={"upload_folder": [http_error(502)] * 3})
    with pytest.raises(HubPushError, match=r"after 3 attempts"):
        push_to_hub(run / "model", "me/tiny", api=api, max_retries=2, retry_delay=0.0, sleep=lambda s: None)
    assert api.methods().count("upload_folder") == 3
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "status, message",
    [(401, r"401 Unauthorized.*hf auth login.*huggingface-cli login.*HF_TOKEN"), (403, r"403 Forbidden.*write access"),
     (404, r"not found \(404\).*--repo-id")],
)
def test_client_errors_are_not_retried(run_dir, tmp_path, status, message):
    run, _ = run_dir
    before = snapshot(run)
    api = FakeHfApi(tmp_path / "hub", failures={"create_repo": [http_error(status)]})
    with pytest.raises(HubPushError, match=message) as info:
        push_to_hub(run / "model", "me/tiny", api=api, sleep=lambda s: pytest.fail("a client error was retried"))
    assert isinstance(info.value.__cause__, HfHubHTTPError)
    assert api.methods() == ["create_repo"]
    assert snapshot(run) == before, "a failed push changed the local folder"


# -- what is sent ----------------------------------------------------------------------------------------------

OUTSIDE_SECRET = "SECRET-OUTSIDE-THE-FOLDER"


def _add_unwanted_files(model_dir: Path, outside: Path) -> Path:
    """Put into ``model_dir`` what a push must never send (a ``.env``, a ``.git/`` folder, notes, a stray ``.py``,
    ``__pycache__/``) plus ``eval/summary.md`` and a link to it (inside: followed), and a symbolic link
    ``credentials.json`` to the file ``outside`` (written here). Returns the link."""
    (model_dir / ".env").write_text("HF_TOKEN=SECRET-IN-DOTENV\n")
    (model_dir / ".git" / "objects").mkdir(parents=True)
    (model_dir / ".git" / "config").write_text("[remote]\n url = SECRET-IN-GIT\n")
    (model_dir / ".git" / "objects" / "ab12").write_bytes(b"SECRET-IN-GIT-OBJECT")
    (model_dir / "notes.txt").write_text("private notes")
    (model_dir / "scratch.py").write_text("print('not model code')\n")
    (model_dir / "__pycache__").mkdir()
    (model_dir / "__pycache__" / "scratch.cpython-311.pyc").write_bytes(b"pyc")
    (model_dir / "eval").mkdir()
    (model_dir / "eval" / "summary.md").write_text("# evaluation\n")
    os.symlink("summary.md", model_dir / "eval" / "latest.md")
    outside.write_text(OUTSIDE_SECRET)
    link = model_dir / "credentials.json"
    os.symlink(outside, link)
    return link


def test_push_sends_only_model_files_and_refuses_links_leaving_the_folder(run_dir, tmp_path, fake_hub, no_token):
    run, _ = run_dir
    model_dir = run / "model"
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    link = _add_unwanted_files(model_dir, secret)

    # a link leaving the folder: refused, naming the link and its target, dry run or not; nothing is sent
    with pytest.raises(HubPushError) as info:
        push_to_hub(model_dir, "me/tiny", dry_run=True)
    message = str(info.value)
    assert isinstance(info.value, UserInputError)
    assert str(link) in message and str(secret) in message and "outside the folder" in message
    assert "remove the link" in message and "Copy the file into the folder" in message
    with pytest.raises(HubPushError, match="credentials.json"):
        push_to_hub(model_dir, "me/tiny", token="hf_x")
    assert fake_hub == [], "HfApi was made although the folder was refused"
    # a link to a hidden file of the folder is refused too
    link.unlink()
    os.symlink(".env", link)
    with pytest.raises(HubPushError, match=r"credentials.json is a symbolic link to .*\.env, a hidden entry"):
        push_to_hub(model_dir, "me/tiny", dry_run=True)
    link.unlink()

    # without the link: the plan (no token needed) lists the model files only, with their sizes
    before = snapshot(run)
    lines: list[str] = []
    result = push_to_hub(model_dir, "me/tiny", dry_run=True, report=lines.append)
    assert fake_hub == [] and result["dry_run"] is True and result["commit_url"] is None
    planned = dict(result["plan"])
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt", "modeling_bitesm.py",
            "configuration_bitesm.py", "bitlinear.py", "README.md", "training_config.yaml", "trainer_state.json",
            "eval/proteingym.json", "eval/summary.md", "eval/latest.md", "runs/events.out.tfevents.1.host.1.0",
            "runs/123.45/events.out.tfevents.2.host.1.0"} <= set(planned)
    assert not any(p.startswith(".") or "/." in p for p in planned), planned
    assert not {"notes.txt", "scratch.py", "credentials.json"} & set(planned)
    assert not any("pycache" in p or p.endswith(".pyc") for p in planned)
    for name in ("config.json", "model.safetensors", "vocab.txt", "eval/latest.md"):
        assert planned[name] == (model_dir / name).stat().st_size
    assert result["skipped"] == [".env", ".git/", "__pycache__/", "notes.txt", "scratch.py"]
    assert result["total_bytes"] == sum(planned.values()) and result["files"] == sorted(planned)
    assert lines[0].startswith(f"files to upload from {model_dir} ({len(planned)} files")
    size = planned["model.safetensors"]
    assert any(line.split() == [f"{size:,}", "model.safetensors"] for line in lines)
    assert lines[lines.index(next(l for l in lines if l.startswith("skipped"))) + 1:] == [
        "  .env", "  .git/", "  __pycache__/", "  notes.txt", "  scratch.py"]
    assert snapshot(run) == before, "a dry run wrote to the folder"

    # the push sends exactly the plan, and no secret
    result = push_to_hub(model_dir, "me/tiny", token="hf_x")
    uploaded = fake_hub[0].uploads[0]
    names = sorted(str(p.relative_to(uploaded)) for p in uploaded.rglob("*") if p.is_file())
    assert names == sorted(planned) == result["files"]
    assert not any(b"SECRET" in p.read_bytes() for p in uploaded.rglob("*") if p.is_file())
    assert (uploaded / "eval" / "latest.md").read_text() == "# evaluation\n"
    assert snapshot(run) == before


def test_no_token_stops_before_any_hub_call(run_dir, fake_hub, no_token, capsys):
    run, _ = run_dir
    with pytest.raises(HubPushError, match=r"no Hub token found.*nothing was sent.*--token.*HF_TOKEN.*hf auth login"):
        push_to_hub(run / "model", "me/tiny")
    assert fake_hub == [], "HfApi was made without a token"
    assert bitesm_main(["push", str(run), "--repo-id", "me/tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bitesm push: error: no Hub token found") and "Traceback" not in err
    assert fake_hub == []
    # the token file 'hf auth login' writes is found, and used for every call
    no_token.write_text("hf_cached_login\n")
    push_to_hub(run / "model", "me/tiny")
    api = fake_hub[0]
    assert api.token == "hf_cached_login"
    assert [kwargs["token"] for _, kwargs in api.calls] == ["hf_cached_login"] * 2


def _dns_failure(kind: str) -> BaseException:
    """A failed DNS lookup as the HTTP clients raise it (host ``hub.example.invalid``, except ``bare``)."""
    gaierror = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    if kind == "requests":
        return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(
            None, "/api/repos/create", reason=urllib3.exceptions.NameResolutionError("hub.example.invalid", None,
                                                                                      gaierror)))
    if kind == "httpx":
        httpx = pytest.importorskip(hub_errors.Response.__module__.split(".")[0])
        if not hasattr(httpx, "ConnectError"):
            pytest.skip("huggingface_hub does not use httpx")
        err = httpx.ConnectError(str(gaierror), request=httpx.Request("POST", "https://hub.example.invalid/api/x"))
        err.__cause__ = gaierror
        return err
    # macOS wording, no host in the error: the message names the endpoint the api talks to
    err = requests.exceptions.ConnectionError("connection failed")
    err.__cause__ = OSError(8, "nodename nor servname provided, or not known")
    return err


@pytest.mark.parametrize("kind", ["requests", "httpx", "bare"])
def test_a_host_that_does_not_resolve_is_not_retried(run_dir, tmp_path, kind):
    run, _ = run_dir
    for method in ("create_repo", "upload_folder"):
        api = FakeHfApi(tmp_path / f"hub-{method}", failures={method: [_dns_failure(kind)] * 3})
        api.endpoint = "https://my-mirror.example"
        with pytest.raises(HubPushError) as info:
            push_to_hub(run / "model", "me/tiny", api=api, sleep=lambda s: pytest.fail("a DNS failure was retried"))
        assert api.methods().count(method) == 1
        message = str(info.value)
        host = "my-mirror.example" if kind == "bare" else "hub.example.invalid"
        assert f"the host {host!r} does not resolve" in message and "not retried" in message
        assert "HF_ENDPOINT" in message and "network" in message
    # a 503 (and a connection reset) is retried, counted
    api = FakeHfApi(tmp_path / "hub-503", failures={"create_repo": [http_error(503)], "upload_folder": [
        requests.exceptions.ConnectionError("Connection reset by peer")]})
    delays: list[float] = []
    push_to_hub(run / "model", "me/tiny", api=api, retry_delay=0.25, sleep=delays.append)
    assert api.methods() == ["create_repo", "create_repo", "upload_folder", "upload_folder"] and delays == [0.25] * 2


# -- CLI -------------------------------------------------------------------------------------------------------


def test_cli_push_with_the_hfapi_constructor_replaced(run_dir, tmp_path, monkeypatch, capsys, fake_hub):
    run, _ = run_dir
    made = fake_hub
    code = bitesm_main(["push", str(run), "--repo-id", "org/name", "--private", "--revision", "dev",
                        "--commit-message", "from the CLI", "--token", "hf_abc",
                        "--eval", str(run / "eval" / "proteingym.json")])
    assert code == 0, capsys.readouterr().err
    api = made[0]
    assert api.token == "hf_abc"
    assert api.methods() == ["create_repo", "create_branch", "upload_folder"]
    upload = api.calls[-1][1]
    assert (upload["repo_id"], upload["revision"], upload["commit_message"]) == ("org/name", "dev", "from the CLI")
    assert api.calls[0][1]["private"] is True
    assert json.loads(capsys.readouterr().out)["repo_id"] == "org/name"

    # errors: exit code 2 and 'bitesm push: error: ...'
    monkeypatch.setattr(push_module, "HfApi", lambda token=None: FakeHfApi(tmp_path / "x", failures={
        "create_repo": [http_error(401)]}))
    assert bitesm_main(["push", str(run), "--repo-id", "org/name"]) == 2
    err = capsys.readouterr().err  # the list of files to upload, then the error in one line
    assert err.startswith("files to upload from ") and "  config.json\n" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("bitesm push: error: ") and "HF_TOKEN" in last
    (run / "model" / "vocab.txt").unlink()
    assert bitesm_main(["push", str(run), "--repo-id", "org/name"]) == 2
    assert "vocab.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bitesm_main(["push", "--help"])
    assert "--repo-id" in capsys.readouterr().out


class _RecordingHub(BaseHTTPRequestHandler):
    """A stand-in Hub on 127.0.0.1: records every request and answers 503."""

    def _answer(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def local_hub():
    """A :class:`_RecordingHub` server on 127.0.0.1 (``.seen``: the requests it got)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHub)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_cli_dry_run_in_a_fresh_process_lists_the_files_and_sends_nothing(run_dir, tmp_path, local_hub):
    run, _ = run_dir
    model_dir = run / "model"
    link = _add_unwanted_files(model_dir, tmp_path / "secret.txt")
    env = {k: v for k, v in os.environ.items() if k not in (
        "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE", "BITESM_DEBUG")}
    env.update(HF_TOKEN="", HF_HOME=str(tmp_path / "hf_home"),
               HF_ENDPOINT=f"http://127.0.0.1:{local_hub.server_address[1]}")

    def bitesm_push(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bitesm.cli", "push", str(model_dir), "--repo-id", "a/b", *args],
                              check=False, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    proc = bitesm_push("--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bitesm push: error: ") and f"{link} is a symbolic link to {tmp_path / 'secret.txt'}" in last
    assert "model.safetensors" not in proc.stdout

    link.unlink()
    proc = bitesm_push("--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    upload, _, skipped = proc.stdout.partition("\nskipped (")
    upload += "\n"
    size = (model_dir / "model.safetensors").stat().st_size
    assert f"  {size:,}  model.safetensors\n" in upload
    for name in ("config.json", "tokenizer_config.json", "vocab.txt", "modeling_bitesm.py", "README.md"):
        assert f"  {name}\n" in upload
    assert ".env" not in upload and ".git" not in upload and "notes.txt" not in upload and "SECRET" not in upload
    assert skipped.splitlines()[1:6] == ["  .env", "  .git/", "  __pycache__/", "  notes.txt", "  scratch.py"]
    assert proc.stdout.rstrip().endswith("dry run: nothing was sent to a/b")

    # no token: the error says how to give one, before any request
    proc = bitesm_push()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bitesm push: error: no Hub token found")
    assert "--token" in last and "HF_TOKEN" in last and "hf auth login" in last
    assert local_hub.seen == [], "a request reached the Hub endpoint"

    # control: with a token the real client does reach this endpoint, and its 503 is retried
    proc = bitesm_push("--token", "hf_x", "--max-retries", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bitesm push: error: creating the repository failed") and "after 2 attempts" in last
    assert [r for r in local_hub.seen if r.startswith("POST /api/repos/")] == ["POST /api/repos/create"] * 2, \
        local_hub.seen


# -- training --------------------------------------------------------------------------------------------------


def _training_config(tmp_path: Path, **training) -> Path:
    cfg = {
        "model": {"config": str(ESM8M), "quantization": "ternary",
                  "overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                "intermediate_size": 64}},
        "data": {"train_fasta": str(SAMPLE), "max_length": 32, "validation_size": 8, "max_sequences": 100},
        "training": {"seed": 0, "batch_size": 4, "learning_rate": 5e-3, "warmup_steps": 0, "max_steps": 4,
                     "mixed_precision": "no", "eval_every": 0, "save_every": 2, "log_every": 2,
                     "push_to_hub_repo": "org/tiny-run", "push_every_checkpoints": 1, **training},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    "training, message",
    [
        ({"push_every_checkpoints": -1}, r"training.push_every_checkpoints=-1 is out of range"),
        ({"push_to_hub_repo": None}, r"push_every_checkpoints=1 needs training.push_to_hub_repo"),
        ({"save_every": 0}, r"training.save_every=0 is out of range.*push_every_checkpoints"),
        ({"hub_private": "yes"}, r"training.hub_private='yes'"),
        ({"push_to_hub_repo": "not/a/repo"}, r"training.push_to_hub_repo='not/a/repo' is not a valid"),
    ],
)
def test_hub_config_errors_name_the_key(tmp_path, training, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_training_config(tmp_path, **training))
    # off by default
    assert load_config(_training_config(tmp_path, push_to_hub_repo=None, push_every_checkpoints=0)).training.hub_private is False


def test_trainer_pushes_every_n_checkpoints_and_survives_failures(tmp_path, monkeypatch, caplog, fake_hub):
    made = fake_hub
    run = tmp_path / "run"
    result = Trainer(load_config(_training_config(tmp_path, hub_private=True)), run).train()
    assert result["step"] == 4
    # checkpoints at step 2 (in the loop) and 4 (the end): both pushed
    uploads = [kwargs for api in made for method, kwargs in api.calls if method == "upload_folder"]
    assert [u["commit_message"] for u in uploads] == ["checkpoint step 2", "checkpoint step 4"]
    assert all(u["repo_id"] == "org/tiny-run" and u["revision"] is None for u in uploads)
    assert all(kwargs["private"] is True for api in made for m, kwargs in api.calls if m == "create_repo")
    first = made[0].uploads[0]
    assert json.loads((first / "trainer_state.json").read_text())["step"] == 2
    assert (first / "README.md").is_file() and (first / "modeling_bitesm.py").is_file()
    assert list((first / "runs").rglob("events.out.tfevents*"))

    # every 2nd checkpoint, and an API that always fails: training still finishes, a warning is logged
    made.clear()
    monkeypatch.setattr(push_module, "HfApi", lambda token=None: FakeHfApi(tmp_path / "down", failures={
        "create_repo": [http_error(401)] * 10}))
    with caplog.at_level(logging.WARNING, logger="bitesm.training.trainer"):
        result = Trainer(load_config(_training_config(tmp_path, max_steps=6, push_every_checkpoints=2)),
                         tmp_path / "run2").train()
    assert result["step"] == 6 and (tmp_path / "run2" / "model" / "config.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if "push of checkpoint" in r.getMessage()]
    assert len(warnings) == 1 and "checkpoint step 4" in warnings[0] and "HF_TOKEN" in warnings[0]


def test_resumed_run_counts_the_checkpoints_before_it(tmp_path, fake_hub):
    made = fake_hub
    run = tmp_path / "run"
    Trainer(load_config(_training_config(tmp_path, save_every=1, push_every_checkpoints=2)), run).train()
    # checkpoints 1..4 (steps 1-4): the 2nd and 4th are pushed; resumed to 6 steps: the 6th (step 6) is pushed
    Trainer(load_config(_training_config(tmp_path, save_every=1, push_every_checkpoints=2, max_steps=6)), run,
            resume=True, allow_config_change=True).train()
    messages = [kwargs["commit_message"] for api in made for m, kwargs in api.calls if m == "upload_folder"]
    assert messages == ["checkpoint step 2", "checkpoint step 4", "checkpoint step 6"]


def test_card_never_publishes_absolute_local_paths():
    from bitesm.hub.model_card import _public_path

    assert _public_path("/home/alice/cluster/data/uniref50.fasta.gz") == ".../data/uniref50.fasta.gz"
    assert _public_path("data/pretrain/x.fasta.gz") == "data/pretrain/x.fasta.gz"
    assert _public_path("facebook/esm2_t6_8M_UR50D") == "facebook/esm2_t6_8M_UR50D"
