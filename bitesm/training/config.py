"""Typed, validated training configuration read from YAML (``configs/*.yaml``).

A config has four sections, each a dataclass below: ``model``, ``data``, ``training`` and ``evaluation``.
Unknown keys and out-of-range values raise :class:`ConfigError` naming the key, the value and the fix.
Relative paths are resolved against the current working directory first, then against the repository root
(the folder holding ``configs/``), so ``bitesm train --config configs/quickstart.yaml`` works from anywhere in a clone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
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
    """

    config: str | None = None
    from_pretrained: str | None = None
    tokenizer: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    quantization: str | None = "ternary"
    activation_bits: int | None = 8


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
        warmup_steps: linear warmup length in optimizer steps.
        max_steps: optimizer steps; the LR schedule spans them.
        max_tokens: stop once this many non-padding tokens were trained on (cramming budget), or ``None``.
        max_time_minutes: stop after this wall-clock time (cramming budget), or ``None``.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (Accelerate autocast).
        eval_every, save_every, log_every: intervals in optimizer steps (0 disables eval/save).
        keep_checkpoints: resumable checkpoints kept on disk (oldest deleted first).
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


@dataclass
class Config:
    """A whole training run: ``model``, ``data``, ``training``, ``evaluation``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

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
    kwargs = {}
    for name, value in values.items():
        sub = _SECTIONS.get((cls, name))
        kwargs[name] = _build(sub, value, f"{where}.{name}") if sub is not None else value
    return cls(**kwargs)


_SECTIONS = {
    (Config, "model"): ModelConfig,
    (Config, "data"): DataConfig,
    (Config, "training"): TrainingConfig,
    (Config, "evaluation"): EvaluationConfig,
    (EvaluationConfig, "proteingym"): ProteinGymEvalConfig,
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
    from transformers import SchedulerType

    names = [s.value for s in SchedulerType]
    _require(t.lr_scheduler in names, "training.lr_scheduler", t.lr_scheduler, f"use one of {names}")
    return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge and validate a YAML training config.

    Args:
        path: YAML file.
        overrides: dotted keys replacing values, e.g. ``{"training.max_steps": 10}``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: malformed YAML, unknown keys, or out-of-range values.
    """
    path = Path(resolve_path(str(path)))
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} not found; see configs/ for examples")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return validate(_build(Config, raw, "config"))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line override ``key.sub=value`` (value read as YAML: numbers, null, lists...)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. training.max_steps=100")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
