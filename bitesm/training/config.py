"""Typed, validated training configuration read from YAML (``configs/*.yaml``).

A config has four sections, each a dataclass below: ``model``, ``data``, ``training`` and ``evaluation``, plus, for
``bitesm lora`` (:mod:`bitesm.lora`), ``lora`` (4-bit base and LoRA adapters) and optionally ``head`` (a
sequence-level classification or regression head trained from labelled proteins instead of MLM).
Unknown keys, values of the wrong type and out-of-range values raise :class:`ConfigError` naming the key, the
value and the fix.

Types: every value, from the YAML file or from a ``--set`` override, is checked against its field's annotation:
``int`` fields take whole numbers (not ``true``/``false``, not ``10.5``; ``10.0`` and ``1e4`` are read as 10 and
10000), ``float`` fields take any number (``1e-3`` too, which YAML 1.1 reads as a string), ``str`` fields a string
(quote ``"no"``: YAML reads unquoted yes / no / on / off as booleans), ``bool`` fields ``true`` / ``false``, lists a
list of strings, ``X | None`` also ``null``.

Shortened runs: when ``training.max_steps`` is overridden (``--set training.max_steps=30``, the ``overrides`` of
:func:`load_config`) below the config's ``training.warmup_steps`` and ``warmup_steps`` is not overridden too, the
warmup is clipped to ``max_steps`` (logged as a warning) instead of refused, so a config can be smoke-tested in a
few steps as written. A ``warmup_steps`` above ``max_steps`` in the file itself, or in two overrides, is an error.

Relative paths are resolved against the current working directory first, then against the repository root
(the folder holding ``configs/``), so ``bitesm train --config configs/quickstart.yaml`` works from anywhere in a clone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parents[2]

logger = logging.getLogger(__name__)


class ConfigError(UserInputError):
    """A training config is malformed or a value is out of range; the message names the key and the fix."""


@dataclass
class ModelConfig:
    """Which model to train.

    Attributes:
        config: folder or Hub id with an ESM-2 ``config.json`` giving the architecture (e.g.
            ``data/esm2_hf_configs/esm2_t6_8M_UR50D`` or ``facebook/esm2_t6_8M_UR50D``); weights start random.
        from_pretrained: instead, a pretrained ESM-2 / bitesm checkpoint (folder or Hub id) to continue training.
        tokenizer: tokenizer folder or Hub id; ``None`` uses ``config`` / ``from_pretrained`` or the packaged ESM-2 one.
        overrides: ``EsmConfig`` fields replacing those of ``config`` (e.g. a smaller ``hidden_size``).
        quantization: ``"ternary"`` (BitNet b1.58 BitLinear) or ``None`` (full precision).
        activation_bits: BitLinear activation bits (8) or ``None``.
        attention_window: Long ESM-2 local sliding-window attention (arXiv 2501.07747): the band's total width in
            tokens (1,024 in the paper), or ``None`` for ESM-2's global attention (a ``from_pretrained`` checkpoint
            keeps its own attention). With a window the model takes proteins of
            ``data.max_length`` tokens: an ESM-2 ``from_pretrained`` checkpoint is converted as by
            :func:`bitesm.models.long.convert_to_long` (``max_position_embeddings`` grown, learned positions copied),
            a ``config`` architecture gets ``max_position_embeddings`` to match.
    """

    config: str | None = None
    from_pretrained: str | None = None
    tokenizer: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    quantization: str | None = "ternary"
    activation_bits: int | None = 8
    attention_window: int | None = None


@dataclass
class DataConfig:
    """Pretraining data.

    Attributes:
        train_fasta: FASTA (or ``.fasta.gz``) of training sequences (UniRef50, or the embedded Swiss-Prot sample).
        max_length: context length in tokens including <cls> and <eos>; longer proteins are randomly cropped.
        mask_rate: fraction of residues selected for MLM (0.15 ESM-2, 0.25 crammed), replaced 80/10/10.
        validation_size: number of held-out sequences for validation loss and perplexity.
        max_sequences: use only the first N records of the FASTA (``None``: all).

    The FASTA is converted once to a memory-mapped Arrow dataset (cached by ``datasets``), which scales to
    UniRef50-sized files without holding them in memory and gives the random access that exact resume needs.
    """

    train_fasta: str = "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"
    max_length: int = 512
    mask_rate: float = 0.15
    validation_size: int = 1000
    max_sequences: int | None = None


@dataclass
class TrainingConfig:
    """Optimisation and budget.

    Attributes:
        batch_size: effective batch in sequences per optimizer step, over all processes and accumulation steps.
        gradient_accumulation_steps: micro-batches per optimizer step; the micro-batch per process is
            ``batch_size / (gradient_accumulation_steps * num_processes)``.
        learning_rate: peak AdamW learning rate (5e-3 ternary, 1e-3 fp in 2Bits of Protein).
        lr_scheduler: a transformers scheduler name (``linear``, ``cosine``, ``constant_with_warmup``...).
        warmup_steps: linear warmup length in optimizer steps, at most ``max_steps`` (clipped to an overridden
            ``max_steps``: see the module docstring).
        max_steps: optimizer steps; the LR schedule spans them.
        max_tokens: stop once this many non-padding tokens were trained on (cramming budget), or ``None``.
        max_time_minutes: stop after this wall-clock time (cramming budget), or ``None``.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (Accelerate autocast).
        eval_every, save_every, log_every: intervals in optimizer steps (0 disables eval/save).
        keep_checkpoints: resumable checkpoints kept on disk (oldest deleted first).
        push_to_hub_repo: HuggingFace Hub model repository (``ORG/NAME``) that checkpoints are pushed to, with a
            generated model card (:func:`bitesm.hub.push.push_to_hub`; the token comes from ``HF_TOKEN`` or the
            cached login), or ``None``.
        push_every_checkpoints: push the model after every N-th checkpoint (commit message ``checkpoint step S``);
            0 never pushes. A failed push is logged and training continues. Not supported by ``bitesm lora``.
        hub_private: create the Hub repository private.
    """

    seed: int = 0
    batch_size: int = 256
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "linear"
    warmup_steps: int = 1000
    max_steps: int = 50000
    max_tokens: int | None = None
    max_time_minutes: float | None = None
    max_grad_norm: float = 1.0
    mixed_precision: str = "bf16"
    eval_every: int = 500
    save_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 2
    push_to_hub_repo: str | None = None
    push_every_checkpoints: int = 0
    hub_private: bool = False


@dataclass
class ProteinGymEvalConfig:
    """ProteinGym zero-shot evaluation run after training (``None`` section: skipped)."""

    assays: str = "data/proteingym/substitutions"
    reference: str = "data/proteingym/reference/DMS_substitutions.csv"
    assay_ids: list[str] | None = None
    batch_size: int = 32


@dataclass
class EvaluationConfig:
    proteingym: ProteinGymEvalConfig | None = None


#: LoRA's default targets: the attention projections and every ``dense`` Linear of the encoder (attention output,
#: FFN in and out), i.e. all six Linear layers of an ESM-2 layer.
DEFAULT_LORA_TARGETS = ("query", "key", "value", "dense")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
QUANT_TYPES = ("nf4", "fp4")
HEAD_TASKS = ("classification", "regression")


@dataclass
class LoraTrainConfig:
    """``lora:`` section of ``bitesm lora``: how the base is loaded and which LoRA adapters train on it.

    QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"): the base's Linear weights are
    stored in 4-bit NormalFloat (bitsandbytes), frozen, and only low-rank adapters ``W + (alpha / r) B A`` (LoRA,
    Hu et al. 2021) train, in full precision. Long ESM-2's quantized models (arXiv 2501.07747) are trained this way.

    Attributes:
        load_in_4bit: store the base's encoder Linear weights in 4 bits (bitsandbytes ``Linear4bit``); ``False``
            keeps the base as it is (fp32, or ternary BitLinear for ``model.quantization: ternary``, which cannot be
            4-bit: its weights are ternary already).
        quant_type: ``"nf4"`` (NormalFloat, QLoRA) or ``"fp4"``.
        double_quant: also quantize the per-block absmax constants to 8 bits (QLoRA's double quantization, ~0.37
            bits per weight saved).
        compute_dtype: dtype the 4-bit weights are dequantized to for the matmul: ``float32`` (CPUs),
            ``bfloat16`` (GPUs, QLoRA's choice) or ``float16``.
        r: LoRA rank.
        alpha: LoRA scale numerator; the update is ``(alpha / r) * B @ A``.
        dropout: dropout on the adapter input (training only).
        target_modules: Linear layers that get adapters, named as peft does (a name matches a layer whose qualified
            name equals it or ends with ``.name``): the default ``query, key, value, dense`` covers all six Linear
            layers of every encoder layer. Heads kept in full precision (``lm_head``, ``classifier``, ...) are only
            targeted by a name that includes them (``lm_head.dense``).
        modules_to_save: modules trained in full and saved with the adapter (e.g. ``[lm_head]``); a sequence head's
            ``classifier`` always is.
        gradient_checkpointing: recompute activations in the backward pass (QLoRA's memory saver; ~30% slower).
        merge: after training, also write ``merged/``: the adapter merged into a floating-point copy of the base (a
            4-bit base is dequantized first), a plain bitesm checkpoint. Not possible on a ternary base.
    """

    load_in_4bit: bool = True
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "float32"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    modules_to_save: list[str] | None = None
    gradient_checkpointing: bool = True
    merge: bool = False


@dataclass
class HeadConfig:
    """``head:`` section of ``bitesm lora``: a sequence-level head instead of continued MLM pretraining.

    The head is transformers' ESM classification head (``<cls>`` token, dense + tanh, output projection),
    trained in full with the LoRA adapters. ``data.max_length`` (tokens, proteins cropped at random in training,
    their start in validation), ``data.validation_size`` and ``data.max_sequences`` apply; ``data.train_fasta``
    and ``data.mask_rate`` do not.

    Attributes:
        task: ``"classification"`` (cross-entropy; validation accuracy) or ``"regression"`` (one output, MSE;
            validation RMSE and Spearman's rho).
        train_file: a CSV / TSV with ``sequence_column`` and ``label_column``, or a FASTA (``.fasta``, ``.fa``,
            ``.faa``, optionally ``.gz``) whose labels are in ``labels_file``.
        labels_file: with a FASTA, a CSV / TSV with ``id_column`` (the FASTA record ids) and ``label_column``.
        validation_file: held-out proteins in the same format (their labels in the same ``labels_file``);
            ``None`` holds out ``data.validation_size`` proteins of ``train_file`` (seeded).
        sequence_column, label_column, id_column: column names.
        num_labels: classes for classification (``None``: the number of distinct training labels).
    """

    task: str = "classification"
    train_file: str | None = None
    labels_file: str | None = None
    validation_file: str | None = None
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str = "id"
    num_labels: int | None = None


@dataclass
class Config:
    """A whole training run: ``model``, ``data``, ``training``, ``evaluation`` (and ``lora``, ``head`` for
    ``bitesm lora``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    lora: LoraTrainConfig | None = None
    head: HeadConfig | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_path(path: str | None) -> str | None:
    """``path`` as given if it exists relative to the working directory, else relative to the repository root.

    Hub ids (``org/name`` that exist nowhere locally) are returned unchanged.
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return str(p)
    candidate = REPO_ROOT / p
    return str(candidate) if candidate.exists() else str(p)


def _build(cls, values: Any, where: str):
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {type(values).__name__}: {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in '{where}'; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        sub = _SECTIONS.get((cls, name))
        key = name if where == "config" else f"{where.removeprefix('config.')}.{name}"
        if sub is not None:
            if value is None and not _allows_none(hints[name]):
                raise ConfigError(f"'{where}.{name}' must be a mapping, got null; give the section's keys or remove it")
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        else:
            kwargs[name] = check_type(key, value, hints[name])
    return cls(**kwargs)


class _WrongType(Exception):
    """Internal: a value does not fit an annotation."""


#: A number in exponent notation without a dot (``1e-3``, ``5E4``), which YAML 1.1 (PyYAML) reads as a string.
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _allows_none(hint: Any) -> bool:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return hint is Any or (union and type(None) in typing.get_args(hint))


def _describe(hint: Any) -> str:
    """How an error message names the type an annotation expects."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return {int: "an int (a whole number)", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as the annotation ``hint`` wants it (ints for integral numbers, floats for numbers), or _WrongType."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _WrongType:
                pass
        raise _WrongType
    if isinstance(value, str) and hint in (int, float) and _EXPONENT_NUMBER.match(value.strip()):
        value = float(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _WrongType
    if hint is int:
        if isinstance(value, bool):
            raise _WrongType
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _WrongType
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _WrongType
    if hint is str:
        if isinstance(value, str):
            return value
        raise _WrongType
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _WrongType
        return [_coerce(v, args[0]) for v in value] if args else list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _WrongType
        if not args:
            return dict(value)
        return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _WrongType
    return value


def check_type(key: str, value: Any, hint: Any) -> Any:
    """Check a config value against its field's annotation (``int``, ``float``, ``str``, ``bool``, ``list[str]``,
    ``dict[str, Any]``, ``X | None``).

    ``int`` takes whole numbers only (``10.0`` and ``"1e4"`` become 10 and 10000; booleans and ``10.5`` are refused),
    ``float`` takes ints too (converted), and a string in exponent notation such as ``"1e-3"`` (YAML 1.1 reads
    ``1e-3`` as a string), ``X | None`` takes ``None``.

    Args:
        key: dotted key the error names, e.g. ``training.batch_size``.
        value: the value read from YAML or a ``--set`` override.
        hint: the field's annotation (:func:`typing.get_type_hints`).

    Returns:
        ``value``, converted where said above.

    Raises:
        ConfigError: naming the key, the value, its type and the type expected.
    """
    try:
        return _coerce(value, hint)
    except _WrongType:
        pass
    note = ""
    if isinstance(value, bool) and str in (hint, *typing.get_args(hint)):
        note = " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the string, e.g. \"no\")"
    raise ConfigError(
        f"{key}={value!r} has the wrong type ({type(value).__name__}): expected {_describe(hint)}{note}"
    )


_SECTIONS = {
    (Config, "model"): ModelConfig,
    (Config, "data"): DataConfig,
    (Config, "training"): TrainingConfig,
    (Config, "evaluation"): EvaluationConfig,
    (EvaluationConfig, "proteingym"): ProteinGymEvalConfig,
    (Config, "lora"): LoraTrainConfig,
    (Config, "head"): HeadConfig,
}


def _require(condition: bool, key: str, value: Any, fix: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is out of range: {fix}")


def validate(config: Config) -> Config:
    """Check every value's range; returns ``config``.

    Raises:
        ConfigError: naming the first offending key, its value and the allowed range.
    """
    m, d, t = config.model, config.data, config.training
    _require((m.config is None) != (m.from_pretrained is None), "model.config / model.from_pretrained",
             (m.config, m.from_pretrained), "set exactly one of them")
    _require(m.quantization in (None, "ternary"), "model.quantization", m.quantization, "use 'ternary' or null")
    _require(m.activation_bits is None or 2 <= m.activation_bits <= 16, "model.activation_bits", m.activation_bits,
             "use an int in [2, 16] or null")
    _require(m.attention_window is None or (type(m.attention_window) is int and m.attention_window >= 2),
             "model.attention_window", m.attention_window,
             "use an int >= 2 (1024 for Long ESM-2) or null for global attention")
    _require(d.max_length >= 3, "data.max_length", d.max_length, "use at least 3 (<cls>, a residue, <eos>)")
    _require(0.0 < d.mask_rate < 1.0, "data.mask_rate", d.mask_rate, "use a fraction in (0, 1), e.g. 0.15")
    _require(d.validation_size >= 1, "data.validation_size", d.validation_size, "use a positive int")
    _require(t.batch_size >= 1, "training.batch_size", t.batch_size, "use a positive int")
    _require(t.gradient_accumulation_steps >= 1, "training.gradient_accumulation_steps",
             t.gradient_accumulation_steps, "use a positive int")
    _require(t.batch_size % t.gradient_accumulation_steps == 0, "training.batch_size", t.batch_size,
             f"must be divisible by gradient_accumulation_steps={t.gradient_accumulation_steps}")
    _require(t.learning_rate > 0 and math.isfinite(t.learning_rate), "training.learning_rate", t.learning_rate,
             "use a positive float, e.g. 5e-3 (ternary) or 1e-3 (fp)")
    _require(t.weight_decay >= 0, "training.weight_decay", t.weight_decay, "use a non-negative float")
    _require(0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1, "training.adam_beta1/2", (t.adam_beta1, t.adam_beta2),
             "use values in [0, 1)")
    _require(t.max_steps >= 1, "training.max_steps", t.max_steps, "use a positive int")
    _require(0 <= t.warmup_steps <= t.max_steps, "training.warmup_steps", t.warmup_steps,
             f"use an int in [0, max_steps={t.max_steps}]")
    _require(t.max_tokens is None or t.max_tokens > 0, "training.max_tokens", t.max_tokens, "use a positive int or null")
    _require(t.max_time_minutes is None or t.max_time_minutes > 0, "training.max_time_minutes", t.max_time_minutes,
             "use a positive number or null")
    _require(t.max_grad_norm > 0, "training.max_grad_norm", t.max_grad_norm, "use a positive float")
    _require(t.mixed_precision in ("no", "bf16", "fp16"), "training.mixed_precision", t.mixed_precision,
             "use 'no', 'bf16' or 'fp16'")
    for key in ("eval_every", "save_every"):
        _require(getattr(t, key) >= 0, f"training.{key}", getattr(t, key), "use a non-negative int (0 disables)")
    _require(t.log_every >= 1, "training.log_every", t.log_every, "use a positive int")
    _require(t.keep_checkpoints >= 1, "training.keep_checkpoints", t.keep_checkpoints, "use a positive int")
    _validate_hub(t, config)
    from transformers import SchedulerType

    names = [s.value for s in SchedulerType]
    _require(t.lr_scheduler in names, "training.lr_scheduler", t.lr_scheduler, f"use one of {names}")
    if config.lora is not None:
        _validate_lora(config.lora, m)
    if config.head is not None:
        _validate_head(config.head, config)
    return config


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_hub(t: TrainingConfig, config: Config) -> None:
    """The Hub push keys of ``training``: ``push_to_hub_repo``, ``push_every_checkpoints``, ``hub_private``."""
    _require(_is_int(t.push_every_checkpoints) and t.push_every_checkpoints >= 0, "training.push_every_checkpoints",
             t.push_every_checkpoints, "use a non-negative int (0 never pushes)")
    _require(isinstance(t.hub_private, bool), "training.hub_private", t.hub_private, "use true or false")
    repo = t.push_to_hub_repo
    _require(repo is None or (isinstance(repo, str) and repo.strip() != ""), "training.push_to_hub_repo", repo,
             "use a Hub repository id ORG/NAME, or null")
    if repo is not None:
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(repo)
        except ValueError as err:
            raise ConfigError(f"training.push_to_hub_repo={repo!r} is not a valid Hub repository id ({err}): "
                              "use ORG/NAME") from err
    if t.push_every_checkpoints == 0:
        return
    if repo is None:
        raise ConfigError(
            f"training.push_every_checkpoints={t.push_every_checkpoints} needs training.push_to_hub_repo: set it to "
            "the Hub repository ORG/NAME, or set push_every_checkpoints to 0"
        )
    _require(t.save_every > 0, "training.save_every", t.save_every,
             f"push_every_checkpoints={t.push_every_checkpoints} pushes after checkpoints, but save_every=0 saves "
             "none: set save_every > 0, or push_every_checkpoints to 0")
    if config.lora is not None:
        raise ConfigError(
            "training.push_every_checkpoints is not supported by bitesm lora (an adapter is not a standalone model "
            "folder); set it to 0, or push a merged model with 'bitesm push'"
        )


def _validate_lora(lora: LoraTrainConfig, m: ModelConfig) -> None:
    for key in ("load_in_4bit", "double_quant", "gradient_checkpointing", "merge"):
        _require(isinstance(getattr(lora, key), bool), f"lora.{key}", getattr(lora, key), "use true or false")
    _require(lora.quant_type in QUANT_TYPES, "lora.quant_type", lora.quant_type, f"use one of {list(QUANT_TYPES)}")
    _require(lora.compute_dtype in COMPUTE_DTYPES, "lora.compute_dtype", lora.compute_dtype,
             f"use one of {list(COMPUTE_DTYPES)} (float32 on CPUs, bfloat16 on GPUs)")
    _require(_is_int(lora.r) and lora.r >= 1, "lora.r", lora.r, "use a positive int rank, e.g. 8")
    _require(isinstance(lora.alpha, (int, float)) and not isinstance(lora.alpha, bool) and lora.alpha > 0,
             "lora.alpha", lora.alpha, "use a positive number, e.g. 16 (the update is scaled by alpha / r)")
    _require(isinstance(lora.dropout, (int, float)) and 0.0 <= lora.dropout < 1.0, "lora.dropout", lora.dropout,
             "use a fraction in [0, 1), e.g. 0.05")
    for key in ("target_modules", "modules_to_save"):
        names = getattr(lora, key)
        if key == "modules_to_save" and names is None:
            continue
        _require(isinstance(names, list) and (len(names) > 0 or key == "modules_to_save")
                 and all(isinstance(n, str) and n.strip() for n in names), f"lora.{key}", names,
                 "use a list of module names, e.g. [query, key, value, dense]")
    _require(not (lora.load_in_4bit and m.quantization == "ternary"), "lora.load_in_4bit", lora.load_in_4bit,
             "a ternary base (model.quantization: ternary) has BitLinear weights, already 1.58-bit, that are not "
             "loaded in 4 bits: set lora.load_in_4bit: false (LoRA then trains on the frozen ternary base)")


def _validate_head(head: HeadConfig, config: Config) -> None:
    _require(head.task in HEAD_TASKS, "head.task", head.task, f"use one of {list(HEAD_TASKS)}")
    _require(isinstance(head.train_file, str) and bool(head.train_file), "head.train_file", head.train_file,
             "give a CSV (sequence and label columns) or a FASTA plus head.labels_file")
    for key in ("sequence_column", "label_column", "id_column"):
        _require(isinstance(getattr(head, key), str) and bool(getattr(head, key)), f"head.{key}",
                 getattr(head, key), "use a column name")
    if head.num_labels is not None:
        _require(_is_int(head.num_labels) and head.num_labels >= 2 and head.task == "classification",
                 "head.num_labels", head.num_labels,
                 "use an int >= 2 for classification, or null (inferred; regression has one output)")
    if config.lora is None:
        raise ConfigError("a head: section needs a lora: section (sequence heads train through 'bitesm lora')")
    if config.evaluation.proteingym is not None:
        raise ConfigError(
            "evaluation.proteingym scores a masked LM, not a sequence head; remove it from a config with a head: "
            "section"
        )


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge and validate a YAML training config.

    Args:
        path: YAML file.
        overrides: dotted keys replacing values, e.g. ``{"training.max_steps": 10}`` (``--set``); typed like the
            file's values. An overridden ``training.max_steps`` below the file's ``warmup_steps`` clips the warmup
            (module docstring).

    Returns:
        the validated :class:`Config`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: a folder, not a file; malformed YAML (line and column named), unknown keys (the allowed ones listed), values of the wrong type (the type
            expected named), or out-of-range values.
    """
    path = Path(resolve_path(str(path)))
    if path.is_dir():
        raise ConfigError(f"training config {path} is a folder; give a YAML file, e.g. configs/quickstart.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} not found; see configs/ for examples")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"training config {path} is not UTF-8 text ({err.reason}); give a YAML file") from err
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"{path} is not valid YAML{at}: {problem}. Fix: correct the YAML (see configs/ for "
                          "examples)") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, data:, training:...), got "
                          f"{type(raw).__name__}")
    overrides = dict(overrides or {})
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            if node.get(key) is None:
                node[key] = {}
            if not isinstance(node[key], dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(
                    f"override {dotted}={value!r}: {where} is a value ({node[key]!r}), not a section with keys; "
                    f"use --set {where}=VALUE"
                )
            node = node[key]
        node[leaf] = value
    config = _build(Config, raw, "config")
    _clip_warmup_to_overridden_max_steps(config, overrides)
    return validate(config)


def _clip_warmup_to_overridden_max_steps(config: Config, overrides: dict[str, Any]) -> None:
    """The shortened-run rule of the module docstring: ``--set training.max_steps=N`` below the file's
    ``warmup_steps`` clips the warmup to N (unless ``warmup_steps`` is overridden too)."""
    t = config.training
    if (
        "training.max_steps" in overrides
        and "training.warmup_steps" not in overrides
        and t is not None
        and t.max_steps >= 1
        and t.warmup_steps > t.max_steps
    ):
        logger.warning(
            "training.max_steps=%d (overridden) is below training.warmup_steps=%d: warmup clipped to %d steps "
            "(set training.warmup_steps too to choose another)", t.max_steps, t.warmup_steps, t.max_steps,
        )
        t.warmup_steps = t.max_steps


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line override ``key.sub=value`` (value read as YAML: numbers, null, lists...)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. training.max_steps=100")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
