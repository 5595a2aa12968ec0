"""Push a bitesm (or ESM-2) checkpoint to the HuggingFace Hub with a generated model card.

:func:`push_to_hub` checks that the folder is a complete model folder (``config.json``, weights, tokenizer, and for
a bitesm model the custom code named by ``auto_map`` and every module that code imports), stages an upload folder
in a temporary directory (the user's folder is only read, never written), adds ``README.md``
(:func:`bitesm.hub.model_card.model_card`), ``training_config.yaml``, the ProteinGym results JSON under ``eval/`` and
the run's TensorBoard event files under ``runs/``, then creates the repository (and the branch), and uploads the
folder in one commit.

Network failures (connection errors, timeouts, HTTP 5xx and 429) are retried with exponential backoff; other HTTP
errors (401, 403, 404, ...) are not, and are raised as :class:`HubPushError` with the fix (log in, a write token,
the repository id).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from ..errors import UserInputError
from .model_card import TRAINING_CONFIG, find_evaluation, load_evaluation, model_card

__all__ = ["HubPushError", "push_to_hub", "resolve_model_dir", "validate_model_folder", "stage_upload_folder"]

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
TENSORBOARD_DIR = "tensorboard"
#: where the TensorBoard event files go in the Hub repository (the Hub's "Training metrics" tab reads ``runs/``).
TENSORBOARD_IN_REPO = "runs"
EVAL_IN_REPO = "eval"

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\s", flags=re.MULTILINE)
_RESAVE_FIX = (
    "re-save it with bitesm, which writes the model code next to config.json: "
    "model = AutoModelForMaskedLM.from_pretrained(DIR) (after 'import bitesm'); model.save_pretrained(DIR)"
)
_LOGIN_FIX = (
    "log in with 'hf auth login' (formerly 'huggingface-cli login'), set the HF_TOKEN environment variable, or pass "
    "--token with a write token from https://huggingface.co/settings/tokens"
)


class HubPushError(UserInputError):
    """A push to the Hub failed: a non-retryable HTTP error (bad token, no write access, no such namespace) or a
    network error that outlived the retries. The message says what failed and how to fix it; the original error is
    the ``__cause__``."""


# -- the folder ------------------------------------------------------------------------------------------------------


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """The model folder to push for ``path``: a model folder itself (has ``config.json``), or a training run folder
    (``model/`` and ``checkpoints/``, as ``bitesm train`` writes), whose ``model/`` is pushed.

    Args:
        path: a model folder or a run folder.

    Returns:
        the model folder.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is neither kind of folder (e.g. a run that has not finished
            and has no ``model/`` yet).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; give a model folder (with config.json) or a run folder")
    if (path / "config.json").is_file():
        return path
    if (path / MODEL_DIR / "config.json").is_file():
        return path / MODEL_DIR
    if (path / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"{path} is a training run without {path / MODEL_DIR / 'config.json'}: the run has not finished (bitesm "
            "train writes model/ at the end). Finish it with 'bitesm train --config CFG --output-dir "
            f"{path} --resume', or push a model folder"
        )
    raise FileNotFoundError(
        f"{path / 'config.json'} not found: {path} is not a model folder (config.json, weights, tokenizer, as "
        "save_pretrained writes) nor a run folder (model/, checkpoints/)"
    )


def _code_closure(model_dir: Path, modules: list[str]) -> tuple[list[str], list[str]]:
    """(present, missing) ``.py`` files of ``modules`` and every ``from .x import`` they contain, transitively."""
    present, missing, stack, seen = [], [], list(modules), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        file = model_dir / f"{name}.py"
        if not file.is_file():
            missing.append(file.name)
            continue
        present.append(file.name)
        stack.extend(_RELATIVE_IMPORT.findall(file.read_text(encoding="utf-8")))
    return sorted(present), sorted(missing)


def validate_model_folder(model_dir: str | os.PathLike) -> dict:
    """Check that a folder is a complete, loadable bitesm or ESM-2 model folder; returns its ``config.json``.

    Required: ``config.json`` with ``model_type`` ``bitesm`` or ``esm``; weights (``model.safetensors``, a sharded
    index and all its shards, or ``pytorch_model.bin``); the tokenizer (``tokenizer_config.json`` and ``vocab.txt``
    or ``tokenizer.json``); for a bitesm model, ``auto_map`` in ``config.json`` and the code files it names plus every
    module they import (``from .bitlinear import ...`` -> ``bitlinear.py``), so ``trust_remote_code`` works where
    bitesm is not installed.

    Args:
        model_dir: the folder.

    Returns:
        the parsed ``config.json``.

    Raises:
        FileNotFoundError: a required file is missing; the message names it and the fix.
        ValueError: ``config.json`` is malformed, or not a bitesm / ESM model.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; save the model with model.save_pretrained({str(model_dir)!r})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}); save the model again with save_pretrained") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a JSON object; save the model again with save_pretrained")
    model_type = config.get("model_type")
    if model_type not in ("bitesm", "esm"):
        raise ValueError(
            f"{config_path} has model_type={model_type!r}; bitesm push uploads bitesm or ESM-2 (model_type 'esm') "
            "models only"
        )

    present = [name for name in _WEIGHT_FILES if (model_dir / name).is_file()]
    if not present:
        raise FileNotFoundError(
            f"no weights in {model_dir}: expected {model_dir / 'model.safetensors'} (or a sharded "
            "model.safetensors.index.json, or pytorch_model.bin); save the model with model.save_pretrained(DIR)"
        )
    for index_name in (n for n in present if n.endswith(".index.json")):
        try:
            shards = set(json.loads((model_dir / index_name).read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"{model_dir / index_name} is not a valid weight index ({err}); save the model again") from err
        for shard in sorted(shards):
            if not (model_dir / shard).is_file():
                raise FileNotFoundError(
                    f"{model_dir / shard} (a shard listed in {index_name}) not found; save the model again with "
                    "save_pretrained"
                )

    tokenizer_fix = (
        "save the tokenizer next to the model: tokenizer.save_pretrained(DIR) (bitesm.data.load_tokenizer() gives "
        "the ESM-2 tokenizer)"
    )
    if not (model_dir / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{model_dir / 'tokenizer_config.json'} not found; {tokenizer_fix}")
    if not ((model_dir / "vocab.txt").is_file() or (model_dir / "tokenizer.json").is_file()):
        raise FileNotFoundError(f"{model_dir / 'vocab.txt'} (the tokenizer vocabulary) not found; {tokenizer_fix}")

    if model_type == "bitesm":
        auto_map = config.get("auto_map")
        if not isinstance(auto_map, dict) or not ({"AutoModelForMaskedLM", "AutoModel"} & set(auto_map)):
            raise FileNotFoundError(
                f"{config_path} has no auto_map (the custom code entry points), so the model would not load with "
                f"trust_remote_code=True; {_RESAVE_FIX}"
            )
        modules = []
        for target in auto_map.values():
            for ref in target if isinstance(target, (list, tuple)) else [target]:
                if isinstance(ref, str) and "." in ref:
                    modules.append(ref.split("--")[-1].rsplit(".", 1)[0])
        _, missing = _code_closure(model_dir, modules)
        if missing:
            raise FileNotFoundError(
                f"{model_dir / missing[0]} not found (model code named by auto_map in config.json or imported by it"
                + (f"; also missing: {', '.join(missing[1:])}" if len(missing) > 1 else "")
                + f"); {_RESAVE_FIX}"
            )
    return config


def _default_tensorboard_dir(model_dir: Path) -> Path | None:
    """``runs/X/tensorboard`` for a model folder ``runs/X/model``."""
    candidate = model_dir.parent / TENSORBOARD_DIR
    return candidate if model_dir.name == MODEL_DIR and candidate.is_dir() else None


def _ignore_staging(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.startswith((".tmp-", ".old-")) or n.endswith((".tmp", ".pyc"))]


def stage_upload_folder(
    model_dir: str | os.PathLike,
    stage_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    eval_json: str | os.PathLike | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
    include_tensorboard: bool = True,
    license: str | None = None,
) -> list[str]:
    """Write the folder that :func:`push_to_hub` uploads into ``stage_dir`` (``model_dir`` is only read).

    It holds a copy of the model folder (temporary and cache files left out), ``README.md`` (the model card),
    ``training_config.yaml`` (from the folder or its run folder), the evaluation JSON as ``eval/<name>.json`` and the
    TensorBoard event files under ``runs/`` (their layout below the TensorBoard folder kept).

    Args:
        model_dir: a validated model folder.
        stage_dir: an empty or missing folder to write.
        repo_id, revision: for the card's loading example.
        eval_json: the ProteinGym results JSON; ``None`` uses the newest found by
            :func:`bitesm.hub.model_card.find_evaluation`.
        tensorboard_dir: folder of TensorBoard event files; ``None`` uses ``runs/X/tensorboard`` for a model folder
            ``runs/X/model``.
        include_tensorboard: ``False`` leaves the event files out.
        license: license id for the card's metadata.

    Returns:
        the staged files, relative to ``stage_dir``, sorted.

    Raises:
        FileNotFoundError: ``eval_json`` or ``tensorboard_dir`` given but missing.
        ValueError: ``eval_json`` is not a ProteinGym result.
    """
    model_dir, stage = Path(model_dir), Path(stage_dir)
    eval_path = Path(eval_json) if eval_json is not None else find_evaluation(model_dir)
    evaluation = load_evaluation(eval_path) if eval_path is not None else None
    if tensorboard_dir is not None and not Path(tensorboard_dir).is_dir():
        raise FileNotFoundError(f"TensorBoard folder {tensorboard_dir} not found")
    events_root = Path(tensorboard_dir) if tensorboard_dir is not None else _default_tensorboard_dir(model_dir)

    shutil.copytree(model_dir, stage, ignore=_ignore_staging, dirs_exist_ok=True)
    if not (stage / TRAINING_CONFIG).is_file() and (model_dir.parent / TRAINING_CONFIG).is_file():
        shutil.copy2(model_dir.parent / TRAINING_CONFIG, stage / TRAINING_CONFIG)
    if eval_path is not None:
        (stage / EVAL_IN_REPO).mkdir(exist_ok=True)
        shutil.copy2(eval_path, stage / EVAL_IN_REPO / eval_path.name)
    if include_tensorboard and events_root is not None:
        for event in sorted(events_root.rglob("events.out.tfevents*")):
            if event.is_file():
                target = stage / TENSORBOARD_IN_REPO / event.relative_to(events_root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(event, target)
    card = model_card(
        model_dir, evaluation, repo_id=repo_id, revision=revision, license=license, search_evaluation=False
    )
    (stage / "README.md").write_text(card, encoding="utf-8")
    return sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())


# -- retries ---------------------------------------------------------------------------------------------------------


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection / timeout exception types of the HTTP clients huggingface_hub may use (those installed)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (
        ("requests.exceptions", ("ConnectionError", "Timeout", "ChunkedEncodingError")),
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
        ("urllib3.exceptions", ("ProtocolError", "TimeoutError", "NewConnectionError")),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_retryable(err: BaseException) -> bool:
    if isinstance(err, OfflineModeIsEnabled):
        return False
    status = _status(err)
    if status is not None:
        return status >= 500 or status == 429
    if isinstance(err, HfHubHTTPError):  # no response: the request never completed
        return True
    return isinstance(err, _transport_errors())


def _retry_after(err: BaseException) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError, AttributeError):
        return None


def _http_error(err: BaseException, what: str, repo_id: str) -> HubPushError:
    status = _status(err)
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, OfflineModeIsEnabled):
        return HubPushError(f"{what} failed: huggingface_hub is in offline mode (HF_HUB_OFFLINE is set); unset it to push")
    if status == 401:
        fix = f"the Hub refused the token (401 Unauthorized): it is missing, invalid or expired; {_LOGIN_FIX}"
    elif status == 403:
        fix = (
            f"the token may not write to {repo_id!r} (403 Forbidden): use a token with write access to that namespace "
            f"(a 'write' or fine-grained token allowing it); {_LOGIN_FIX}"
        )
    elif status == 404:
        fix = (
            f"{repo_id!r} or its namespace was not found (404): check --repo-id ORG/NAME (your user name or an "
            f"organization you can write to); a missing or invalid token also gives 404; {_LOGIN_FIX}"
        )
    elif status == 400:
        fix = "the Hub rejected the request (400 Bad Request): check --repo-id and --revision (branch name)"
    else:
        fix = f"HTTP {status}" if status is not None else type(err).__name__
    return HubPushError(f"{what} failed for {repo_id!r}: {fix}. Hub said: {detail}")


def _with_retries(
    call: Callable[[], Any],
    what: str,
    repo_id: str,
    max_retries: int,
    retry_delay: float,
    max_delay: float,
    sleep: Callable[[float], None],
) -> Any:
    """``call()``, retried up to ``max_retries`` times on network errors with delays ``retry_delay * 2**k``."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Exception as err:  # noqa: BLE001  (classified below; anything else is re-raised as it is)
            if not _is_retryable(err):
                if _status(err) is not None or isinstance(err, (HfHubHTTPError, OfflineModeIsEnabled)):
                    raise _http_error(err, what, repo_id) from err
                raise
            if attempt == max_retries:
                raise HubPushError(
                    f"{what} failed for {repo_id!r} after {max_retries + 1} attempts (network error or Hub "
                    f"unavailable): {type(err).__name__}: {err}. Check the connection and push again"
                ) from err
            delay = min(max_delay, retry_delay * 2**attempt)
            delay = max(delay, min(_retry_after(err) or 0.0, max_delay))
            logger.warning("%s: %s: %s; retry %d/%d in %.1f s", what, type(err).__name__, err, attempt + 1,
                           max_retries, delay)
            sleep(delay)
    raise AssertionError("unreachable")


# -- the push --------------------------------------------------------------------------------------------------------


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    eval_json: str | os.PathLike | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
    api: HfApi | None = None,
    max_retries: int = 5,
    retry_delay: float = 2.0,
    max_retry_delay: float = 60.0,
    include_tensorboard: bool = True,
    license: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Upload a model folder (or a training run's ``model/``) to a Hub model repository with a generated card.

    Steps: resolve and validate the folder (:func:`resolve_model_dir`, :func:`validate_model_folder`); stage the
    upload in a temporary directory (:func:`stage_upload_folder`: the folder, ``README.md``, ``training_config.yaml``,
    ``eval/*.json``, TensorBoard events under ``runs/``); ``create_repo(repo_id, private=private, exist_ok=True)``;
    ``create_branch(repo_id, branch=revision, exist_ok=True)`` when ``revision`` is given; ``upload_folder`` in one
    commit. ``model_dir`` itself is never written.

    Args:
        model_dir: a model folder (``config.json``, weights, tokenizer, code) or a run folder (``model/``,
            ``checkpoints/``).
        repo_id: ``ORG/NAME`` (or ``NAME`` in your user namespace).
        private: create the repository private (an existing repository keeps its visibility).
        revision: branch to push to (created from main if missing); ``None`` pushes to ``main``.
        token: Hub token; ``None`` uses huggingface_hub's usual sources (``HF_TOKEN``, the cached login).
        commit_message: default ``"Upload <name> with bitesm"`` (plus the training step when known).
        eval_json: ProteinGym results JSON for the card's evaluation; ``None``: the newest ``*.json`` result in
            ``<dir>/eval/`` or ``<dir>/../eval/``.
        tensorboard_dir: TensorBoard folder to include; ``None``: ``runs/X/tensorboard`` for ``runs/X/model``.
        api: an :class:`~huggingface_hub.HfApi` (or an object with the same ``create_repo``, ``create_branch`` and
            ``upload_folder``); ``None`` makes ``HfApi(token=token)``.
        max_retries: retries of each Hub call after a network error, a timeout, HTTP 5xx or 429.
        retry_delay: first backoff delay in seconds, doubled on every retry (capped by ``max_retry_delay``; a
            ``Retry-After`` header lengthens it).
        max_retry_delay: the longest single wait.
        include_tensorboard: ``False`` leaves the TensorBoard event files out.
        license: license id for the card's metadata (e.g. ``"mit"``).
        sleep: the wait function (tests pass a no-op).

    Returns:
        ``{"repo_id", "revision", "repo_url", "commit_url", "commit_message", "model_dir", "files"}`` (``files``: the
        uploaded paths, relative to the repository root).

    Raises:
        FileNotFoundError: the folder or one of its required files is missing (the message names the file and the
            fix), or ``eval_json`` / ``tensorboard_dir`` is missing.
        ValueError: a malformed ``config.json``, a model that is not bitesm / ESM, an invalid ``repo_id`` or
            ``max_retries``, or an ``eval_json`` that is not a ProteinGym result.
        HubPushError: the Hub refused the push (401: log in or set ``HF_TOKEN``; 403: no write access; 404: unknown
            namespace) or network errors outlived ``max_retries``.
    """
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"repo_id={repo_id!r}: give the Hub repository as ORG/NAME, e.g. --repo-id my-org/ternary-esm2")
    try:
        validate_repo_id(repo_id)
    except ValueError as err:
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repository id ({err}); use ORG/NAME") from err
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r}: use a non-negative int")
    model_dir = resolve_model_dir(model_dir)
    validate_model_folder(model_dir)
    if commit_message is None:
        state_path = model_dir / "trainer_state.json"
        step = None
        if state_path.is_file():
            try:
                step = json.loads(state_path.read_text(encoding="utf-8")).get("step")
            except (ValueError, AttributeError):
                step = None
        name = model_dir.parent.name if model_dir.name == MODEL_DIR else model_dir.name
        commit_message = f"Upload {name} with bitesm" + (f" (step {step})" if isinstance(step, int) else "")
    if api is None:
        api = HfApi(token=token)

    def retried(call: Callable[[], Any], what: str) -> Any:
        return _with_retries(call, what, repo_id, max_retries, retry_delay, max_retry_delay, sleep)

    with tempfile.TemporaryDirectory(prefix="bitesm-push-") as tmp:
        stage = Path(tmp) / "upload"
        files = stage_upload_folder(
            model_dir, stage, repo_id=repo_id, revision=revision, eval_json=eval_json,
            tensorboard_dir=tensorboard_dir, include_tensorboard=include_tensorboard, license=license,
        )
        repo_url = retried(
            lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token),
            "creating the repository",
        )
        if revision is not None:
            retried(
                lambda: api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model", token=token),
                f"creating the branch {revision!r}",
            )
        info = retried(
            lambda: api.upload_folder(
                repo_id=repo_id, folder_path=str(stage), commit_message=commit_message, revision=revision,
                repo_type="model", token=token,
            ),
            "uploading the folder",
        )
    commit_url = getattr(info, "commit_url", None)
    logger.info("pushed %s to %s%s: %s", model_dir, repo_id, f"@{revision}" if revision else "", commit_url or "")
    return {
        "repo_id": repo_id,
        "revision": revision,
        "repo_url": str(repo_url) if repo_url is not None else None,
        "commit_url": commit_url,
        "commit_message": commit_message,
        "model_dir": str(model_dir),
        "files": files,
    }
