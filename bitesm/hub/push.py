"""Push a bitesm (or ESM-2) checkpoint to the HuggingFace Hub with a generated model card.

:func:`push_to_hub` checks that the folder is a complete model folder (``config.json``, weights, tokenizer, and for
a bitesm model the custom code named by ``auto_map`` and every module that code imports), plans the upload
(:func:`plan_upload`: an allowlist of what a model folder is, never a dotfile, a dot-folder or a file reached through
a symbolic link that leaves the folder), stages it in a temporary directory (the user's folder is only read, never
written) with ``README.md`` (:func:`bitesm.hub.model_card.model_card`), ``training_config.yaml``, the ProteinGym
results JSON under ``eval/`` and the run's TensorBoard event files under ``runs/``, then creates the repository (and
the branch), and uploads the folder in one commit. ``dry_run=True`` stops after the plan: nothing is sent and no
token is needed.

Without a token (``token=``, ``HF_TOKEN`` or the cached ``hf auth login``) nothing is sent. Network failures
(connection resets, timeouts, HTTP 5xx and 429) are retried with exponential backoff; a host name that does not
resolve (DNS) and other HTTP errors (401, 403, 404, ...) are not, and are raised as :class:`HubPushError` with the fix
(log in, a write token, the repository id, the network or ``HF_ENDPOINT``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from ..errors import UserInputError
from .model_card import TRAINING_CONFIG, find_evaluation, load_evaluation, model_card

__all__ = [
    "HubPushError",
    "UploadPlan",
    "plan_upload",
    "push_to_hub",
    "resolve_model_dir",
    "stage_upload_folder",
    "validate_model_folder",
]

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


_NO_TOKEN_FIX = (
    "give a token with write access (https://huggingface.co/settings/tokens) with --token TOKEN (token= in Python), "
    "or set the HF_TOKEN environment variable, or log in once with 'hf auth login'; --dry-run lists the files "
    "without a token"
)


class HubPushError(UserInputError):
    """A push to the Hub cannot be done or failed: no token, a symbolic link leaving the model folder, a
    non-retryable HTTP error (bad token, no write access, no such namespace), a Hub host that does not resolve, or a
    network error that outlived the retries. The message says what failed and how to fix it; the original error (if
    any) is the ``__cause__``."""


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


def _auto_map_modules(config: dict) -> list[str]:
    """The module names (``modeling_bitesm``...) of the code references in ``config["auto_map"]``."""
    auto_map = config.get("auto_map")
    modules = []
    for target in auto_map.values() if isinstance(auto_map, dict) else ():
        for ref in target if isinstance(target, (list, tuple)) else [target]:
            if isinstance(ref, str) and "." in ref:
                modules.append(ref.split("--")[-1].rsplit(".", 1)[0])
    return modules


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
        CheckpointMismatchError: the folder's files contradict each other or a weight file is truncated or corrupt
            (:func:`bitesm.models.checkpoint_checks.check_checkpoint`).
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
        _, missing = _code_closure(model_dir, _auto_map_modules(config))
        if missing:
            raise FileNotFoundError(
                f"{model_dir / missing[0]} not found (model code named by auto_map in config.json or imported by it"
                + (f"; also missing: {', '.join(missing[1:])}" if len(missing) > 1 else "")
                + f"); {_RESAVE_FIX}"
            )
    from ..models.checkpoint_checks import check_checkpoint  # lazy: loads transformers

    check_checkpoint(model_dir)  # config.json agrees with itself and with the weights; no weight file is truncated
    return config


def _default_tensorboard_dir(model_dir: Path) -> Path | None:
    """``runs/X/tensorboard`` for a model folder ``runs/X/model``."""
    candidate = model_dir.parent / TENSORBOARD_DIR
    return candidate if model_dir.name == MODEL_DIR and candidate.is_dir() else None


# -- what is uploaded ------------------------------------------------------------------------------------------------

#: Top-level files of a model folder that are uploaded, besides the weights (``*.safetensors``, ``pytorch_model*.bin``
#: and their ``*.index.json``) and the code files that ``auto_map`` names (with the modules they import): the config,
#: the generation config, the tokenizer, the training record, the PTQ and LoRA memory reports and the PEFT adapter files. ``README.md`` is replaced by
#: the generated card; ``eval/`` contributes its JSON, markdown and PNG files, ``runs/`` its TensorBoard event files.
#: Anything else (and every dotfile or dot-folder) is left out and listed as skipped.
MODEL_FILES = frozenset({
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    TRAINING_CONFIG,
    "trainer_state.json",
    "adapter_config.json",
    "lora_base.json",
    "ptq_report.json",
    "memory_report.json",
})
_WEIGHT_PATTERN = re.compile(r"[^/]+\.safetensors(\.index\.json)?|pytorch_model(-\d+-of-\d+)?\.bin(\.index\.json)?")
_EVAL_SUFFIXES = (".json", ".md", ".png")
_EVENTS_PREFIX = "events.out.tfevents"
_CARD = "README.md"


@dataclass
class _Listing:
    """The files below a folder (relative POSIX path, path), what was left out unread (dot entries, ``__pycache__``,
    folders not descended, links back up the tree, broken links) and the symbolic links that may not be followed
    (relative path, link, its resolved target, why it is refused)."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[tuple[str, Path, Path, str]] = field(default_factory=list)


def _list_folder(root: Path, descend: Callable[[str], bool]) -> _Listing:
    """List ``root`` without reading any file: dot entries and ``__pycache__`` are skipped unopened, folders are
    entered when ``descend(relative path)`` says so, symbolic links are followed only where they resolve inside
    ``root`` to a path without a dot component (others are ``refused``)."""
    real_root = root.resolve()
    listing = _Listing()

    def visit(folder: Path, prefix: str, stack: tuple[Path, ...]) -> None:
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            rel, path = prefix + entry.name, Path(entry.path)
            if entry.name.startswith(".") or entry.name == "__pycache__":
                listing.skipped.append(rel + ("/" if entry.is_dir(follow_symlinks=False) else ""))
                continue
            if entry.is_symlink():
                target = path.resolve()
                if target != real_root and not target.is_relative_to(real_root):
                    listing.refused.append((rel, path, target, f"outside the folder {root}"))
                    continue
                if any(part.startswith(".") for part in target.relative_to(real_root).parts):
                    listing.refused.append((rel, path, target, f"a hidden entry of the folder {root}"))
                    continue
            if entry.is_dir():
                real = path.resolve()
                if real in stack or not descend(rel):  # a link back up the tree, or a folder that is not uploaded
                    listing.skipped.append(rel + "/")
                else:
                    visit(path, rel + "/", stack + (real,))
            elif entry.is_file():
                listing.files.append((rel, path))
            else:  # a broken link, a socket, a pipe
                listing.skipped.append(rel)

    visit(root, "", (real_root,))
    return listing


def _refuse_links(refused: list[tuple[str, Path, Path, str]]) -> None:
    """Raise :class:`HubPushError` naming the first refused link (and the others), if any."""
    if not refused:
        return
    _, link, target, why = refused[0]
    others = [str(r[1]) for r in refused[1:]]
    raise HubPushError(
        f"{link} is a symbolic link to {target}, {why}: bitesm push uploads only the files inside the model folder "
        "and sends nothing while such a link is there. Copy the file into the folder in place of the link, or "
        "remove the link" + (f" (other such links: {', '.join(others)})" if others else "")
    )


def _uploadable(rel: str, code_files: frozenset[str], include_tensorboard: bool) -> bool:
    """Whether the model folder's file ``rel`` is part of the upload (see :data:`MODEL_FILES`)."""
    parts = rel.split("/")
    name = parts[-1]
    if len(parts) == 1:
        return name in MODEL_FILES or name in code_files or _WEIGHT_PATTERN.fullmatch(name) is not None
    if parts[0] == EVAL_IN_REPO:
        return name.lower().endswith(_EVAL_SUFFIXES)
    if parts[0] == TENSORBOARD_IN_REPO:
        return include_tensorboard and name.startswith(_EVENTS_PREFIX)
    return False


@dataclass
class UploadPlan:
    """What :func:`push_to_hub` uploads, made by :func:`plan_upload`.

    Attributes:
        model_dir: the model folder.
        sources: ``{path in the repository: the local file, or the generated content (the card) as bytes}``.
        skipped: what the model folder holds that is left out, relative to it (a folder ends in ``/``).
    """

    model_dir: Path
    sources: dict[str, Path | bytes]
    skipped: list[str]

    @property
    def files(self) -> list[tuple[str, int]]:
        """``(path in the repository, size in bytes)`` of every uploaded file, sorted by path."""
        return [(rel, len(src) if isinstance(src, bytes) else src.stat().st_size)
                for rel, src in sorted(self.sources.items())]

    @property
    def total_bytes(self) -> int:
        """The size of the upload in bytes."""
        return sum(size for _, size in self.files)

    def lines(self) -> list[str]:
        """The plan as text lines: a header, one ``SIZE  PATH`` line per file, then the skipped paths."""
        files = self.files
        width = max((len(f"{size:,}") for _, size in files), default=1)
        out = [f"files to upload from {self.model_dir} ({len(files)} files, {self.total_bytes:,} bytes):"]
        out += [f"  {size:>{width},}  {rel}" for rel, size in files]
        if self.skipped:
            out.append(f"skipped ({len(self.skipped)}, not part of a model folder; never uploaded):")
            out += [f"  {rel}" for rel in self.skipped]
        return out

    def write(self, stage_dir: str | os.PathLike) -> list[str]:
        """Copy the planned files into ``stage_dir`` (links followed: their content is copied) and write the card.

        Args:
            stage_dir: an empty or missing folder.

        Returns:
            the written files, relative to ``stage_dir``, sorted.
        """
        stage = Path(stage_dir)
        for rel, src in sorted(self.sources.items()):
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                target.write_bytes(src)
            else:
                shutil.copy2(src, target)
        return sorted(self.sources)


def plan_upload(
    model_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    eval_json: str | os.PathLike | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
    include_tensorboard: bool = True,
    license: str | None = None,
) -> UploadPlan:
    """Decide what is uploaded for a model folder; reads, never writes, and sends nothing.

    From the folder: only what a model folder is (:data:`MODEL_FILES`, the weights, the code files ``auto_map`` in
    ``config.json`` names and the modules they import, ``eval/*.json|md|png``, ``runs/**/events.out.tfevents*``),
    never a dotfile or anything under a dot-folder; everything else is listed in ``skipped``. A symbolic link is
    followed only where it resolves inside the folder (and not to a hidden entry). Added: ``README.md`` (the generated
    model card, replacing the folder's), ``training_config.yaml`` of the run folder when the model folder has none,
    the evaluation JSON as ``eval/<name>.json`` and the TensorBoard event files under ``runs/``.

    Args:
        model_dir: a validated model folder (:func:`validate_model_folder`).
        repo_id, revision: for the card's loading example.
        eval_json: the ProteinGym results JSON; ``None`` uses the newest found by
            :func:`bitesm.hub.model_card.find_evaluation`.
        tensorboard_dir: folder of TensorBoard event files; ``None`` uses ``runs/X/tensorboard`` for a model folder
            ``runs/X/model``.
        include_tensorboard: ``False`` leaves every event file out.
        license: license id for the card's metadata.

    Returns:
        the :class:`UploadPlan`.

    Raises:
        HubPushError: a symbolic link in the folder (or an event file's link in the TensorBoard folder) resolves
            outside it or to a hidden entry; the message names the link, its target and the fix.
        FileNotFoundError: ``eval_json`` or ``tensorboard_dir`` given but missing.
        ValueError: ``eval_json`` is not a ProteinGym result.
    """
    model_dir = Path(model_dir)
    listing = _list_folder(model_dir, descend=lambda rel: rel.split("/")[0] in (EVAL_IN_REPO, TENSORBOARD_IN_REPO))
    _refuse_links(listing.refused)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    code_files = frozenset(_code_closure(model_dir, _auto_map_modules(config if isinstance(config, dict) else {}))[0])
    sources: dict[str, Path | bytes] = {}
    skipped = list(listing.skipped)
    for rel, path in listing.files:
        if rel == _CARD:
            continue  # replaced by the generated card
        if _uploadable(rel, code_files, include_tensorboard):
            sources[rel] = path
        else:
            skipped.append(rel)

    eval_path = Path(eval_json) if eval_json is not None else find_evaluation(model_dir)
    evaluation = load_evaluation(eval_path) if eval_path is not None else None
    if tensorboard_dir is not None and not Path(tensorboard_dir).is_dir():
        raise FileNotFoundError(f"TensorBoard folder {tensorboard_dir} not found")
    events_root = Path(tensorboard_dir) if tensorboard_dir is not None else _default_tensorboard_dir(model_dir)

    run_config = model_dir.parent / TRAINING_CONFIG
    if TRAINING_CONFIG not in sources and run_config.is_file():
        if run_config.is_symlink():
            run_listing = _list_folder(model_dir.parent, descend=lambda rel: False)
            _refuse_links([r for r in run_listing.refused if r[0] == TRAINING_CONFIG])
        sources[TRAINING_CONFIG] = run_config
    if eval_path is not None:
        sources[f"{EVAL_IN_REPO}/{eval_path.name}"] = eval_path
    if include_tensorboard and events_root is not None:
        events = _list_folder(events_root, descend=lambda rel: True)
        _refuse_links([r for r in events.refused if r[0].rsplit("/", 1)[-1].startswith(_EVENTS_PREFIX)])
        for rel, path in events.files:
            if rel.rsplit("/", 1)[-1].startswith(_EVENTS_PREFIX):
                sources[f"{TENSORBOARD_IN_REPO}/{rel}"] = path
    card = model_card(
        model_dir, evaluation, repo_id=repo_id, revision=revision, license=license, search_evaluation=False
    )
    sources[_CARD] = card.encode("utf-8")
    return UploadPlan(model_dir=model_dir, sources=sources, skipped=sorted(skipped))


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
    """Write the folder that :func:`push_to_hub` uploads into ``stage_dir`` (``model_dir`` is only read): the files
    of :func:`plan_upload` (the allowlisted files of the model folder, ``README.md`` (the model card),
    ``training_config.yaml`` (from the folder or its run folder), the evaluation JSON as ``eval/<name>.json`` and the
    TensorBoard event files under ``runs/``, their layout below the TensorBoard folder kept).

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
        HubPushError: a symbolic link leaves the folder (see :func:`plan_upload`).
        FileNotFoundError: ``eval_json`` or ``tensorboard_dir`` given but missing.
        ValueError: ``eval_json`` is not a ProteinGym result.
    """
    plan = plan_upload(
        model_dir, repo_id=repo_id, revision=revision, eval_json=eval_json, tensorboard_dir=tensorboard_dir,
        include_tensorboard=include_tensorboard, license=license,
    )
    return plan.write(stage_dir)


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


_DNS_MESSAGE = re.compile(
    r"Name or service not known|nodename nor servname|Temporary failure in name resolution|getaddrinfo failed|"
    r"No address associated with hostname|Failed to resolve|Could not resolve host",
    flags=re.IGNORECASE,
)
_HOST_IN_MESSAGE = re.compile(r"Failed to resolve '([^']+)'|host='([^']+)'")


def _error_graph(err: BaseException) -> list[BaseException]:
    """``err`` and every exception it wraps: ``__cause__``, ``__context__``, exceptions among its ``args`` and the
    ``reason`` of urllib3's ``MaxRetryError`` (how requests nests the socket error)."""
    seen: list[BaseException] = []
    todo = [err]
    while todo and len(seen) < 50:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo += [e for e in linked if isinstance(e, BaseException)]
    return seen


def _unresolved_host(err: BaseException) -> str | None:
    """For a failed DNS lookup in ``err``'s chain (``socket.gaierror``, urllib3's ``NameResolutionError``, or the
    resolver's message), the host name when it can be read (else ``""``); ``None`` for any other error."""
    if _status(err) is not None:
        return None
    chain = _error_graph(err)
    if not any(
        isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" or _DNS_MESSAGE.search(str(e))
        for e in chain
    ):
        return None
    for e in chain:
        host = getattr(e, "_host", None)
        if isinstance(host, str) and host:
            return host
        try:  # httpx's errors raise RuntimeError when no request is attached
            url = getattr(getattr(e, "request", None), "url", None)
        except Exception:  # noqa: BLE001
            url = None
        host = getattr(url, "host", None) or (urlsplit(url).hostname if isinstance(url, str) else None)
        if isinstance(host, str) and host:
            return host
        match = _HOST_IN_MESSAGE.search(str(e))
        if match:
            return match.group(1) or match.group(2)
    return ""


def _dns_error(err: BaseException, host: str, what: str, repo_id: str, endpoint: str | None) -> HubPushError:
    if not endpoint:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT  # HF_ENDPOINT, else https://huggingface.co
    host = host or urlsplit(endpoint).hostname or endpoint
    return HubPushError(
        f"{what} failed for {repo_id!r}: the host {host!r} does not resolve (DNS lookup failed: {_one_line(err)}); "
        "not retried. Check the network connection (and proxy settings), and the HF_ENDPOINT environment "
        f"variable if it is set (the Hub endpoint in use is {endpoint})"
    )


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (the Hub's errors add lines of advice the command's one-line error drops)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


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
    endpoint: str | None = None,
) -> Any:
    """``call()``, retried up to ``max_retries`` times on network errors with delays ``retry_delay * 2**k``; a host
    that does not resolve is not retried (``endpoint``: the Hub endpoint named in that message)."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Exception as err:  # noqa: BLE001  (classified below; anything else is re-raised as it is)
            host = _unresolved_host(err)
            if host is not None:
                raise _dns_error(err, host, what, repo_id, endpoint) from err
            if not _is_retryable(err):
                if _status(err) is not None or isinstance(err, (HfHubHTTPError, OfflineModeIsEnabled)):
                    raise _http_error(err, what, repo_id) from err
                raise
            if attempt == max_retries:
                raise HubPushError(
                    f"{what} failed for {repo_id!r} after {max_retries + 1} attempts (network error or Hub "
                    f"unavailable): {_one_line(err)}. Check the connection and push again"
                ) from err
            delay = min(max_delay, retry_delay * 2**attempt)
            delay = max(delay, min(_retry_after(err) or 0.0, max_delay))
            logger.warning("%s: %s: %s; retry %d/%d in %.1f s", what, type(err).__name__, err, attempt + 1,
                           max_retries, delay)
            sleep(delay)
    raise AssertionError("unreachable")


# -- the push --------------------------------------------------------------------------------------------------------


def _find_token(token: str | None, api: Any, repo_id: str) -> str:
    """The token to push with: ``token``, else ``api.token``, else ``huggingface_hub.get_token()`` (``HF_TOKEN``,
    then the cached login); raises :class:`HubPushError` when there is none. Makes no network call (unless
    huggingface_hub is configured for an OIDC token exchange)."""
    if isinstance(token, str) and token.strip():
        return token.strip()
    api_token = getattr(api, "token", None) if api is not None else None
    if isinstance(api_token, str) and api_token.strip():
        return api_token.strip()
    try:
        found = get_token()
    except Exception as err:  # e.g. an OIDC token exchange that failed
        raise HubPushError(f"reading the Hub token failed ({_one_line(err)}); {_NO_TOKEN_FIX}") from err
    if isinstance(found, str) and found.strip():
        return found.strip()
    raise HubPushError(f"no Hub token found to push to {repo_id!r}, so nothing was sent; {_NO_TOKEN_FIX}")


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
    dry_run: bool = False,
    report: Callable[[str], None] | None = None,
) -> dict:
    """Upload a model folder (or a training run's ``model/``) to a Hub model repository with a generated card.

    Steps: resolve and validate the folder (:func:`resolve_model_dir`, :func:`validate_model_folder`); find the token
    (unless ``dry_run``); plan the upload (:func:`plan_upload`: the allowlisted model files, never a dotfile, a
    dot-folder or a link leaving the folder, plus ``README.md``, ``training_config.yaml``, ``eval/*.json``, TensorBoard
    events under ``runs/``) and report it (paths and sizes, then the skipped paths); stop there when ``dry_run``;
    stage the upload in a temporary directory; ``create_repo(repo_id, private=private, exist_ok=True)``;
    ``create_branch(repo_id, branch=revision, exist_ok=True)`` when ``revision`` is given; ``upload_folder`` in one
    commit. ``model_dir`` itself is never written.

    Args:
        model_dir: a model folder (``config.json``, weights, tokenizer, code) or a run folder (``model/``,
            ``checkpoints/``).
        repo_id: ``ORG/NAME`` (or ``NAME`` in your user namespace).
        private: create the repository private (an existing repository keeps its visibility).
        revision: branch to push to (created from main if missing); ``None`` pushes to ``main``.
        token: Hub token; ``None``: the token of ``api`` if it has one, else ``HF_TOKEN`` or the cached
            ``hf auth login`` (``huggingface_hub.get_token()``). Without any, nothing is sent.
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
        dry_run: plan and report the upload, then stop: no token needed, no network call, nothing sent.
        report: called with each line of the plan (:meth:`UploadPlan.lines`) before anything is sent; ``None`` logs
            the lines at INFO level.

    Returns:
        ``{"repo_id", "revision", "repo_url", "commit_url", "commit_message", "model_dir", "files", "plan",
        "skipped", "total_bytes", "dry_run"}``: ``files``, the uploaded (or, with ``dry_run``, planned) paths relative
        to the repository root, sorted; ``plan``, ``(path, bytes)`` of each; ``skipped``, what the model folder holds
        that is not uploaded, relative to it (a folder ends in ``/``); ``repo_url`` and ``commit_url`` are ``None``
        with ``dry_run``.

    Raises:
        FileNotFoundError: the folder or one of its required files is missing (the message names the file and the
            fix), or ``eval_json`` / ``tensorboard_dir`` is missing.
        ValueError: a malformed ``config.json``, a model that is not bitesm / ESM, an invalid ``repo_id`` or
            ``max_retries``, or an ``eval_json`` that is not a ProteinGym result.
        HubPushError: no token was found (before any network call); a symbolic link in the folder resolves outside
            it (nothing is sent); the Hub refused the push (401: log in or set ``HF_TOKEN``; 403: no write access;
            404: unknown namespace); the Hub's host does not resolve (not retried: check the network or
            ``HF_ENDPOINT``); or network errors outlived ``max_retries``.
    """
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or not repo_id:
        raise HubPushError(f"repo_id={repo_id!r}: give the Hub repository as ORG/NAME, e.g. --repo-id "
                           "my-org/ternary-esm2")
    try:
        validate_repo_id(repo_id)
    except ValueError as err:
        raise HubPushError(f"--repo-id {repo_id!r} is not a valid Hub repository id ({' '.join(str(err).split())}); "
                           "use ORG/NAME") from err
    if not isinstance(max_retries, int) or max_retries < 0:
        raise HubPushError(f"max_retries={max_retries!r}: use a non-negative int")
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
    if not dry_run:
        token = _find_token(token, api, repo_id)
    plan = plan_upload(
        model_dir, repo_id=repo_id, revision=revision, eval_json=eval_json, tensorboard_dir=tensorboard_dir,
        include_tensorboard=include_tensorboard, license=license,
    )
    for line in plan.lines():
        (report or logger.info)(line)
    summary = {
        "repo_id": repo_id,
        "revision": revision,
        "repo_url": None,
        "commit_url": None,
        "commit_message": commit_message,
        "model_dir": str(model_dir),
        "files": sorted(plan.sources),
        "plan": plan.files,
        "skipped": plan.skipped,
        "total_bytes": plan.total_bytes,
        "dry_run": bool(dry_run),
    }
    if dry_run:
        return summary
    if api is None:
        api = HfApi(token=token)
    endpoint = getattr(api, "endpoint", None)

    def retried(call: Callable[[], Any], what: str) -> Any:
        return _with_retries(call, what, repo_id, max_retries, retry_delay, max_retry_delay, sleep,
                             endpoint=endpoint if isinstance(endpoint, str) else None)

    with tempfile.TemporaryDirectory(prefix="bitesm-push-") as tmp:
        stage = Path(tmp) / "upload"
        files = plan.write(stage)
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
    return summary | {
        "repo_url": str(repo_url) if repo_url is not None else None,
        "commit_url": commit_url,
        "files": files,
    }
