"""Checkpoint consistency: a checkpoint whose files contradict each other is refused before it runs.

A model folder is ``config.json`` plus weight files. Edited or mixed-up folders load without complaint in
transformers and compute something else than what was trained: a ternary bitesm folder whose ``config.json`` says
``model_type: esm`` runs its latent weights in floating point, one that says ``bert`` runs random weights, packed
2-bit weights behind a config without ``weight_format: packed`` leave every encoder Linear at its random
initialisation. Every bitesm loader (evaluation and embeddings, ``bitesm ptq``, ``bitesm export``, ``bitesm convert
long``, the LoRA base, ``bitesm push``) runs the checks of this module:

* :func:`check_config` (``config.json`` alone): ``model_type`` is one bitesm runs as a masked LM (``bitesm`` or
  ``esm``); the bitesm fields it holds (:data:`BITESM_FIELDS`: ``quantization``, ``weight_format``, ``ptq``,
  ``attention_window``...) agree with ``model_type`` (an ``esm`` config carrying them is a bitesm config whose
  ``model_type`` was edited; a ``bitesm`` config without ``quantization`` is an ESM-2 config whose ``model_type``
  was edited, and would silently load as ternary); a bitesm config passes :class:`BitEsmConfig`'s validation.
* :func:`check_weight_files` (a local folder's weights, headers only, nothing loaded): every safetensors file is
  complete (a truncated or corrupt file is named); packed ternary weights (``weight_packed`` + ``weight_scale``,
  ``bitesm export --format packed``) go with ``weight_format: packed`` and latent ones with ``latent``; and the
  weight names and shapes are the ones the config's model has (built on the ``meta`` device: no memory), with
  transformers' own equivalences (ESM's ``lm_head.decoder.weight`` tied to the word embeddings and not stored,
  ``LayerNorm.gamma`` / ``beta`` legacy names mapped to ``weight`` / ``bias``, ``position_ids`` and rotary
  ``inv_freq`` buffers recomputed at load).
* :func:`check_loading_info`, after ``from_pretrained(..., output_loading_info=True)``: no missing, unexpected or
  mismatched keys beyond the same equivalences (Hub checkpoints, whose files are not read before loading).

:func:`check_checkpoint` runs the first two; :func:`load_checked` runs all three around ``from_pretrained``. Every
refusal is a :class:`CheckpointMismatchError` (a :class:`bitesm.errors.UserInputError`): one line naming the file
(``config.json`` or the weight file) and the fix.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError

from ..errors import UserInputError
from .configuration_bitesm import BitEsmConfig

__all__ = [
    "BITESM_FIELDS",
    "CheckpointNotFoundError",
    "looks_local",
    "MASKED_LM_MODEL_TYPES",
    "CheckpointMismatchError",
    "check_checkpoint",
    "check_config",
    "check_loading_info",
    "check_weight_files",
    "is_packed_checkpoint",
    "load_checked",
    "read_checkpoint_config",
]

#: ``model_type`` values bitesm runs as a masked LM.
MASKED_LM_MODEL_TYPES = ("bitesm", "esm")
#: ``config.json`` fields only a bitesm config has (:class:`BitEsmConfig`); an ``esm`` config carrying any of them
#: is a bitesm config whose ``model_type`` was changed.
BITESM_FIELDS = (
    "quantization", "weight_format", "ptq", "attention_window", "activation_bits", "weight_eps",
    "modules_to_not_convert",
)
#: Buffers recomputed at load (rotary frequencies, position ids): never a problem, stored or not.
_RECOMPUTED_BUFFERS = re.compile(r"(^|\.)(inv_freq|position_ids)$")
#: transformers 5 writes ESM LayerNorms under their legacy names and maps them back at load.
_LEGACY_NAMES = ((re.compile(r"\.gamma$"), ".weight"), (re.compile(r"\.beta$"), ".bias"))
_PACKED_SUFFIXES = (".weight_packed", ".weight_scale")
_SHOWN_KEYS = 6

_RESTORE_FIX = "restore the original config.json (the one saved with these weights)"
_BITESM_TYPE_FIX = (
    f'{_RESTORE_FIX}, with "model_type": "bitesm": a bitesm checkpoint loads as bitesm (after import bitesm, or '
    "with trust_remote_code=True), never as a plain ESM-2 model"
)
_ESM_TYPE_FIX = (
    "give an ESM-2 masked-LM checkpoint (model_type 'esm', e.g. facebook/esm2_t6_8M_UR50D) or a bitesm one "
    f"(model_type 'bitesm'), or {_RESTORE_FIX}"
)
_RESAVE_FIX = "copy or download the checkpoint again, or re-save it from its model with save_pretrained"


class CheckpointNotFoundError(UserInputError, FileNotFoundError):
    """No checkpoint where the user pointed: a local path that is not a model folder, or a Hub id that cannot be
    found or reached (offline, no cache). The message names the input and the fix."""


class CheckpointMismatchError(UserInputError):
    """A checkpoint's files contradict each other (``config.json`` against itself or against the weights) or a weight
    file is truncated or corrupt. The message names the file and the fix (restore the original ``config.json``,
    convert the checkpoint with the right command, or copy it again)."""


# -- config.json ------------------------------------------------------------------------------------------------------


def read_checkpoint_config(name_or_path: str | os.PathLike, **hub_kwargs) -> tuple[dict, str]:
    """The raw ``config.json`` of a checkpoint folder or Hub id, and how messages name that file.

    Args:
        name_or_path: a local folder, or a Hub id (read through transformers, from the network or its cache).
        **hub_kwargs: ``revision``, ``cache_dir``, ``token``, ``local_files_only`` for a Hub id.

    Returns:
        ``(config, config_path)``: the parsed JSON object, and the file's path (``<folder>/config.json``) or
        ``"config.json of <hub id>"``.

    Raises:
        CheckpointMismatchError: a local ``config.json`` that is not a JSON object.
        CheckpointNotFoundError: a local path that is no folder, or a Hub id that cannot be found or reached.
        FileNotFoundError: a local folder without ``config.json``.
    """
    folder = Path(name_or_path)
    if folder.is_dir():
        path = folder / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {folder} is not a model folder (config.json and weights, as save_pretrained "
                "writes them)"
            )
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise CheckpointMismatchError(
                f"{path} is not valid JSON ({_one_line(err)}). Fix: {_RESTORE_FIX}"
            ) from None
        if not isinstance(config, dict):
            raise CheckpointMismatchError(f"{path} is not a JSON object. Fix: {_RESTORE_FIX}")
        return config, str(path)
    if folder.exists() or looks_local(str(name_or_path)):
        what = "a file, not a model folder" if folder.exists() else "no such folder"
        raise CheckpointNotFoundError(
            f"model {name_or_path}: {what}. Fix: pass a checkpoint folder (config.json and weights, as "
            "save_pretrained writes them) or a Hub id ORG/NAME"
        )
    from transformers import PretrainedConfig

    try:
        config = PretrainedConfig.get_config_dict(str(name_or_path), **hub_kwargs)[0]
    except OSError as err:
        raise CheckpointNotFoundError(
            f"model {name_or_path}: not a local folder, and the Hub id cannot be loaded "
            f"({_one_line(err).split('. ')[0]}). Fix: pass a checkpoint folder, or a Hub id ORG/NAME with network "
            "access or in the Hugging Face cache"
        ) from err
    return config, f"config.json of {name_or_path}"


def looks_local(name: str) -> bool:
    """Whether a model or tokenizer reference can only be a local path, not a Hub id (``name`` or ``org/name``):
    absolute, starting with ``.`` or ``~``, two or more ``/``, a trailing ``/``, or the platform's own separator."""
    return (
        Path(name).expanduser().is_absolute()
        or name.startswith((".", "~"))
        or name.count("/") >= 2
        or name.endswith("/")
        or os.sep != "/" and os.sep in name
    )


def check_config(config: dict, config_path: str) -> None:
    """Refuse a ``config.json`` that bitesm cannot run as a masked LM, or whose fields contradict each other.

    Args:
        config: the parsed ``config.json``.
        config_path: how messages name it (:func:`read_checkpoint_config`).

    Raises:
        CheckpointMismatchError: ``model_type`` is not ``bitesm`` or ``esm``; an ``esm`` config carries bitesm fields
            (:data:`BITESM_FIELDS`) or points at bitesm code; a ``bitesm`` config has no ``quantization`` (an ESM-2
            config with ``model_type`` edited) or fails :class:`BitEsmConfig` validation (e.g. ``weight_format:
            packed`` without ``quantization: ternary``). The message names ``config_path`` and the fix.
    """
    model_type = config.get("model_type")
    leftovers = _bitesm_leftovers(config)
    if model_type not in MASKED_LM_MODEL_TYPES:
        if leftovers:
            raise CheckpointMismatchError(
                f"{config_path} has model_type={model_type!r} but holds a bitesm checkpoint ({_describe(leftovers)}); "
                f"loaded as {model_type!r} it would run random weights. Fix: {_BITESM_TYPE_FIX}"
            )
        raise CheckpointMismatchError(
            f"{config_path} has model_type={model_type!r}; bitesm runs ESM-2 masked language models only "
            f"(model_type 'esm' or 'bitesm'). Fix: {_ESM_TYPE_FIX}"
        )
    if model_type == "esm":
        if leftovers:
            raise CheckpointMismatchError(
                f"{config_path} has model_type='esm' but carries bitesm fields ({_describe(leftovers)}): "
                "transformers' EsmForMaskedLM ignores them and would run the weights as a plain floating-point "
                f"ESM-2 model, not as trained. Fix: {_BITESM_TYPE_FIX}"
            )
        return
    if "quantization" not in config:
        architectures = config.get("architectures") or []
        raise CheckpointMismatchError(
            f"{config_path} has model_type='bitesm' but none of bitesm's fields (quantization, weight_format, ...)"
            + (f" and architectures={architectures}" if architectures else "")
            + ": it is an ESM-2 config whose model_type was changed, and would load as a ternary model "
            "(the default). Fix: restore \"model_type\": \"esm\" (the original config.json); to make a bitesm model "
            "of an ESM-2 checkpoint use BitEsmForMaskedLM.from_esm, or a training config's model.from_pretrained"
        )
    values = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    try:
        BitEsmConfig.from_dict(values)
    except (ValueError, TypeError, StrictDataclassError) as err:
        cause = err.__cause__ if isinstance(err.__cause__, (ValueError, TypeError)) else err
        raise CheckpointMismatchError(
            f"{config_path} contradicts itself: {_one_line(cause)}. Fix: {_RESTORE_FIX}"
        ) from None


def _bitesm_leftovers(config: dict) -> dict:
    """The bitesm-only content of ``config``: :data:`BITESM_FIELDS`, bitesm ``architectures`` and ``auto_map``."""
    found = {k: config[k] for k in BITESM_FIELDS if k in config}
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str) and a.startswith("BitEsm")]
    if architectures:
        found["architectures"] = architectures
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and any("bitesm" in str(v) for v in auto_map.values()):
        found["auto_map"] = "bitesm code"
    return found


def _describe(fields: dict) -> str:
    """``quantization: 'ternary', weight_format: 'latent', ...``: the fields with a value first."""
    items = sorted(fields.items(), key=lambda kv: kv[1] is None)
    shown = ", ".join(f"{k}: {v!r}" for k, v in items[:_SHOWN_KEYS // 2])
    return shown + (f" and {len(items) - _SHOWN_KEYS // 2} more" if len(items) > _SHOWN_KEYS // 2 else "")


# -- weight files -----------------------------------------------------------------------------------------------------


def _weight_files(folder: Path) -> list[Path] | None:
    """The safetensors files of a folder (single or sharded); ``None`` when its weights are not safetensors.

    Raises:
        CheckpointMismatchError: an unreadable shard index, or a shard it lists is missing.
    """
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise CheckpointMismatchError(
                f"{index} is not a valid weight index ({_one_line(err)}). Fix: {_RESAVE_FIX}"
            ) from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointMismatchError(
                f"{folder / missing[0]} (a shard listed in {index.name}) not found. Fix: {_RESAVE_FIX}"
            )
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else None


def _read_headers(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str, Path]]:
    """``{key: (shape, dtype, file)}`` of every tensor, from the safetensors headers (nothing loaded).

    Raises:
        CheckpointMismatchError: a file is truncated or corrupt (its header cannot be read or does not cover the
            file).
    """
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, tuple[tuple[int, ...], str, Path]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118  (a safetensors handle, not a dict)
                    sl = f.get_slice(key)
                    tensors[key] = (tuple(sl.get_shape()), sl.get_dtype(), file)
        except (SafetensorError, OSError) as err:
            if isinstance(err, OSError) and not file.exists():
                raise
            raise CheckpointMismatchError(
                f"{file} is truncated or corrupt ({_one_line(err)}; {file.stat().st_size:,} bytes). "
                f"Fix: {_RESAVE_FIX}"
            ) from None
    return tensors


def is_packed_checkpoint(keys) -> bool:
    """Whether weight names are those of packed ternary layers (``*.weight_packed``, ``bitesm export``)."""
    return any(k.endswith(".weight_packed") for k in keys)


def check_weight_files(folder: str | os.PathLike, config: dict, config_path: str) -> None:
    """Refuse a local folder whose weight files are damaged or do not fit its (checked) ``config.json``.

    Only the safetensors headers are read. Folders with ``pytorch_model.bin`` weights are not inspected here (their
    keys are checked after loading, :func:`check_loading_info`).

    Args:
        folder: the checkpoint folder.
        config: its ``config.json``, already accepted by :func:`check_config`.
        config_path: how messages name ``config.json``.

    Raises:
        CheckpointMismatchError: a truncated or corrupt safetensors file (named); packed weights behind a config
            without ``weight_format: packed``, or latent weights behind one with it; weight names or shapes that
            differ from the config's model (the first keys are listed).
    """
    folder = Path(folder)
    files = _weight_files(folder)
    if files is None:
        return
    tensors = _read_headers(files)
    weights = ", ".join(sorted({f.name for _, _, f in tensors.values()})) or files[0].name
    packed_weights = is_packed_checkpoint(tensors)
    packed_config = config.get("model_type") == "bitesm" and config.get("weight_format") == "packed"
    if packed_weights and not packed_config:
        says = (f"weight_format={config.get('weight_format', 'latent')!r}" if config.get("model_type") == "bitesm"
                else f"model_type={config.get('model_type')!r}")
        raise CheckpointMismatchError(
            f"{folder / weights} holds packed ternary weights (uint8 weight_packed + weight_scale, written by "
            f"'bitesm export --format packed') but {config_path} says {says}, so every encoder Linear layer would "
            f"keep its random initialisation. Fix: {_RESTORE_FIX}; a packed checkpoint's config.json has model_type 'bitesm', "
            "quantization 'ternary' and weight_format 'packed'"
        )
    if packed_config and not packed_weights:
        raise CheckpointMismatchError(
            f"{config_path} says weight_format='packed' but {folder / weights} holds latent (full-precision) "
            f"weights. Fix: {_RESTORE_FIX}, whose weight_format is 'latent'; to pack the latent checkpoint run "
            "'bitesm export --model DIR --format packed --output NEW_DIR'"
        )
    expected = _expected_tensors(config)
    stored = {}
    for key, (shape, _, _) in tensors.items():
        if not _RECOMPUTED_BUFFERS.search(key):
            stored[_modern_name(key, expected)] = shape
    missing = [k for k in expected if k not in stored and not _satisfied_by_alias(k, expected, stored)]
    unexpected = [k for k in stored if k not in expected]
    mismatched = [f"{k}: {list(stored[k])} stored, {list(expected[k][0])} expected"
                  for k in expected if k in stored and tuple(stored[k]) != expected[k][0]]
    problems = _problems(missing_keys=missing, unexpected_keys=unexpected, mismatched_keys=mismatched)
    if problems:
        raise CheckpointMismatchError(
            f"the weights in {folder / weights} do not fit the model {config_path} describes ({problems}). "
            f"Fix: {_RESTORE_FIX}: its architecture fields (hidden_size, num_hidden_layers, intermediate_size, "
            "vocab_size, ptq...) must be those the weights were saved with"
        )


def _expected_tensors(config: dict) -> dict[str, tuple[tuple[int, ...], list[str]]]:
    """``{key: (shape, aliases)}`` of the model ``config`` describes, built on the meta device (no memory); aliases
    are the other names of a tied tensor (ESM's ``lm_head.decoder.weight`` is the word-embedding matrix)."""
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, EsmConfig

    values = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    config_class = BitEsmConfig if config["model_type"] == BitEsmConfig.model_type else EsmConfig
    model_config = config_class.from_dict(values)
    architectures = " ".join(a for a in config.get("architectures") or [] if isinstance(a, str))
    if "ForSequenceClassification" in architectures:
        auto = AutoModelForSequenceClassification
    elif "ForMaskedLM" in architectures or not architectures:
        auto = AutoModelForMaskedLM
    else:
        auto = AutoModel
    with torch.device("meta"):
        model = auto.from_config(model_config)
    state = model.state_dict(keep_vars=True)
    names_of: dict[int, list[str]] = {}
    for key, tensor in state.items():
        names_of.setdefault(id(tensor), []).append(key)
    return {
        key: (tuple(tensor.shape), [k for k in names_of[id(tensor)] if k != key])
        for key, tensor in state.items()
        if not _RECOMPUTED_BUFFERS.search(key)
    }


def _modern_name(key: str, expected: dict) -> str:
    if key in expected:
        return key
    for pattern, suffix in _LEGACY_NAMES:
        renamed = pattern.sub(suffix, key)
        if renamed != key and renamed in expected:
            return renamed
    return key


def _satisfied_by_alias(key: str, expected: dict, stored: dict) -> bool:
    return any(alias in stored for alias in expected[key][1])


def _problems(**lists: list[str]) -> str:
    parts = []
    for name, keys in lists.items():
        if keys:
            keys = sorted(keys)
            more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
            parts.append(f"{name} {keys[:_SHOWN_KEYS]}{more}")
    return "; ".join(parts)


# -- the whole check, and loading ---------------------------------------------------------------------------------


def check_checkpoint(name_or_path: str | os.PathLike, check_weights: bool = True, **hub_kwargs) -> dict:
    """Every check that needs no loading: :func:`check_config`, and for a local folder :func:`check_weight_files`.

    Args:
        name_or_path: a checkpoint folder or Hub id.
        check_weights: also read the weight files' headers (local folders).
        **hub_kwargs: ``revision``, ``cache_dir``, ``token``, ``local_files_only`` for a Hub id.

    Returns:
        the checkpoint's ``config.json`` as a dict.

    Raises:
        CheckpointMismatchError: see :func:`check_config` and :func:`check_weight_files`.
        OSError: no ``config.json`` (folder without one, Hub id not found or not reachable).
    """
    config, config_path = read_checkpoint_config(name_or_path, **hub_kwargs)
    check_config(config, config_path)
    if check_weights and Path(name_or_path).is_dir():
        check_weight_files(name_or_path, config, config_path)
    return config


def check_loading_info(
    info: dict,
    source,
    allow_missing: tuple[str, ...] = (),
    allow_unexpected: tuple[str, ...] = (),
) -> None:
    """Raise when ``from_pretrained(..., output_loading_info=True)`` reports missing, unexpected or mismatched keys.

    ``position_ids`` and rotary ``inv_freq`` buffers (recomputed at load) are not problems; transformers itself
    resolves tied weights and ESM's legacy ``gamma`` / ``beta`` LayerNorm names before it reports.

    Args:
        info: the loading report (``missing_keys``, ``unexpected_keys``, ``mismatched_keys``).
        source: the checkpoint (folder or Hub id), for the message.
        allow_missing, allow_unexpected: key prefixes that are expected to be absent / extra (e.g. a fresh
            ``classifier.`` head replacing ``lm_head.``).

    Raises:
        CheckpointMismatchError: naming ``source``'s ``config.json``, the offending keys, and the fix.
    """
    def kept(keys, allowed: tuple[str, ...]) -> list[str]:
        keys = [str(k) for k in keys or ()]
        return sorted(k for k in keys if not _RECOMPUTED_BUFFERS.search(k) and not k.startswith(tuple(allowed)))

    missing = kept(info.get("missing_keys"), allow_missing)
    unexpected = kept(info.get("unexpected_keys"), allow_unexpected)
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    problems = _problems(missing_keys=missing, unexpected_keys=unexpected, mismatched_keys=mismatched)
    if problems:
        config_path = Path(source) / "config.json" if Path(str(source)).is_dir() else f"config.json of {source}"
        raise CheckpointMismatchError(
            f"checkpoint {source} does not match the model ({problems}). Check that it is an ESM-2 masked-LM "
            f"checkpoint of the same shape ({config_path}) and that the weight files are complete. Fix: "
            f"{_RESTORE_FIX}, or {_RESAVE_FIX}"
        )


def load_checked(model_class, name_or_path: str | os.PathLike, checked: bool = True, **kwargs):
    """``model_class.from_pretrained(name_or_path, **kwargs)`` with every check of this module around it.

    Args:
        model_class: e.g. ``transformers.AutoModelForMaskedLM`` (an ESM-2 checkpoint loads as transformers'
            ``EsmForMaskedLM``, unchanged) or :class:`~bitesm.models.BitEsmForMaskedLM`.
        name_or_path: a checkpoint folder or Hub id.
        checked: run :func:`check_checkpoint` first (``False`` when the caller already did).
        **kwargs: passed to ``from_pretrained`` (``dtype``, ``config``, ``revision``...); ``allow_missing`` and
            ``allow_unexpected`` go to :func:`check_loading_info`.

    Returns:
        the loaded model.

    Raises:
        CheckpointMismatchError: :func:`check_checkpoint`, :func:`check_loading_info`; a weight file that
            transformers cannot read, or weights whose shapes do not fit the config.
        OSError: the checkpoint cannot be found.
    """
    from safetensors import SafetensorError

    allow = {k: kwargs.pop(k) for k in ("allow_missing", "allow_unexpected") if k in kwargs}
    hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
    source = str(name_or_path)
    if checked:
        check_checkpoint(source, **hub_kwargs)
    try:
        model, info = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    except SafetensorError as err:
        raise CheckpointMismatchError(
            f"a weight file of {source} is truncated or corrupt ({_one_line(err)}). Fix: {_RESAVE_FIX}"
        ) from None
    except RuntimeError as err:
        if "ignore_mismatched_sizes" not in str(err):
            raise
        raise CheckpointMismatchError(
            f"the weights of {source} do not have the shapes its config.json describes (transformers' load report "
            f"above lists them). Fix: {_RESTORE_FIX}"
        ) from None
    check_loading_info(info, source, **allow)
    return model


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
