"""The base a LoRA run trains on: which checkpoint, which architecture, which head, loaded how (4-bit or as it is).

A :class:`BaseSpec` says how to rebuild a run's frozen base; ``bitesm lora`` writes it next to the adapter as
``lora_base.json`` so :func:`bitesm.lora.adapters.load_adapter` reloads the adapter on exactly the base it was
trained on. The base is one of

* **a checkpoint loaded directly** (``model.from_pretrained``: an ESM-2 checkpoint such as
  ``facebook/esm2_t6_8M_UR50D`` or a bitesm one, fp or ternary), with Long ESM-2's sliding-window attention when
  ``model.attention_window`` is set: for ESM-2's rotary positions that is a config change only
  (:func:`bitesm.models.long.long_config`), so even a 4-bit base is quantized straight from the checkpoint without
  an fp copy in memory;
* **a base folder** written into the run (``<output_dir>/base``, fp32 safetensors) when the weights exist only in
  memory: a ``model.config`` architecture with random initialisation, or a learned position table grown for a long
  model (:func:`bitesm.models.long.convert_to_long`). It is built by :func:`bitesm.training.trainer.build_model`,
  the pretraining trainer's model builder.

A 4-bit base is then loaded through transformers' bitsandbytes integration (:func:`bitesm.lora.nf4.bnb_config`),
with the CPU repacking fix applied at load (:func:`bitesm.lora.nf4.disable_cpu_weight_repacking`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data import load_tokenizer
from ..io import atomic_write_json
from ..models import BitEsmConfig, BitEsmForMaskedLM, BitEsmForSequenceClassification
from ..models.checkpoint_checks import check_checkpoint, check_loading_info
from ..models.long import SPECIAL_TOKENS, long_config, max_residues
from ..models.modeling_bitesm import bitesm_config_from_esm, checkpoint_model_type, load_esm_config
from ..training import checkpoint as ckpt
from ..training.config import ConfigError, resolve_path
from ..training.trainer import build_model, check_checkpoint_quantization
from .nf4 import bnb_config, disable_cpu_weight_repacking

logger = logging.getLogger(__name__)

__all__ = ["BASE_DIR", "BASE_SPEC_FILE", "TASKS", "BaseSpec", "load_base", "prepare_base"]

#: Tasks: continued masked-LM pretraining, or a sequence-level head.
TASKS = ("mlm", "classification", "regression")
#: Folder of a run's base when it is written into the run; file of the spec next to the adapter.
BASE_DIR = "base"
BASE_SPEC_FILE = "lora_base.json"


@dataclass
class BaseSpec:
    """How to load a LoRA run's frozen base (saved as ``lora_base.json``).

    Attributes:
        source: checkpoint folder or Hub id that ``from_pretrained`` reads. In ``lora_base.json`` a folder inside
            the run is written relative to the adapter folder (``../base``), so a moved run folder still loads.
        config: the base's :class:`~bitesm.models.BitEsmConfig` as a dict (architecture, ``quantization``,
            ``attention_window``, ``max_position_embeddings``), applied over the checkpoint's own.
        load_in_4bit, quant_type, double_quant, compute_dtype: the 4-bit storage (:func:`bitesm.lora.nf4.bnb_config`).
        task: ``"mlm"`` (:class:`~bitesm.models.BitEsmForMaskedLM`) or ``"classification"`` / ``"regression"``
            (:class:`~bitesm.models.BitEsmForSequenceClassification`).
        label_names: classification classes in output order (``None`` otherwise).
    """

    source: str
    config: dict
    load_in_4bit: bool = True
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "float32"
    task: str = "mlm"
    label_names: list[str] | None = None

    @property
    def num_labels(self) -> int | None:
        """Outputs of the head: the classes, 1 for regression, ``None`` for MLM."""
        if self.task == "classification":
            return len(self.label_names or ())
        return 1 if self.task == "regression" else None

    @property
    def is_ternary(self) -> bool:
        return self.config.get("quantization") == "ternary"

    def save(self, adapter_dir: str | os.PathLike) -> Path:
        """Write ``lora_base.json`` into ``adapter_dir``; a base folder inside the run (the adapter folder's parent)
        is written relative to ``adapter_dir`` (``../base``), any other folder as an absolute path."""
        adapter_dir = Path(adapter_dir)
        values = asdict(self)
        source = Path(self.source)
        if source.is_dir():
            source, run = source.resolve(), adapter_dir.resolve().parent
            inside = source.is_relative_to(run)
            values["source"] = os.path.relpath(source, adapter_dir.resolve()) if inside else str(source)
        path = adapter_dir / BASE_SPEC_FILE
        atomic_write_json(path, values)
        return path

    @classmethod
    def load(cls, adapter_dir: str | os.PathLike) -> BaseSpec:
        """Read ``lora_base.json`` from ``adapter_dir``; a relative ``source`` is resolved against it.

        Raises:
            FileNotFoundError: no ``lora_base.json`` (not an adapter written by ``bitesm lora``).
        """
        path = Path(adapter_dir) / BASE_SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {adapter_dir} is not an adapter folder written by 'bitesm lora' (it holds "
                "adapter_model.safetensors, adapter_config.json and lora_base.json)"
            )
        values = json.loads(path.read_text())
        candidate = Path(adapter_dir) / values["source"]
        if not Path(values["source"]).is_absolute() and candidate.exists():
            values["source"] = str(candidate.resolve())
        return cls(**values)


def _direct_config(model_cfg, max_length: int) -> tuple[str, BitEsmConfig] | None:
    """``(checkpoint, config)`` when the base loads straight from ``model.from_pretrained``; ``None`` when its
    weights must be built in memory first (random init, or a learned position table that grows).

    Mirrors :func:`bitesm.training.trainer.build_model` (same checks, same long conversion), after the checkpoint
    consistency checks of :func:`bitesm.models.checkpoint_checks.check_checkpoint`.

    Raises:
        CheckpointMismatchError: the checkpoint's files contradict each other (e.g. a bitesm ``config.json`` edited
            to ``model_type: esm``, packed weights behind a latent config) or a weight file is damaged.
        ConfigError: as :func:`prepare_base`.
    """
    if model_cfg.from_pretrained is None:
        return None
    source = resolve_path(model_cfg.from_pretrained)
    raw = check_checkpoint(source)
    if raw.get("weight_format") == "packed":
        raise ConfigError(
            f"model.from_pretrained={source!r} is a packed checkpoint (bitesm export --format packed): inference "
            "only. Fix: train LoRA on the latent checkpoint it was exported from"
        )
    model_type = checkpoint_model_type(source)
    if model_type == BitEsmConfig.model_type:
        config = BitEsmConfig.from_pretrained(source)
        check_checkpoint_quantization(model_cfg, source, config.quantization)
    elif model_type == "esm":
        config = bitesm_config_from_esm(
            load_esm_config(source), quantization=model_cfg.quantization, activation_bits=model_cfg.activation_bits
        )
    else:
        raise ConfigError(
            f"model.from_pretrained={model_cfg.from_pretrained!r} has model_type={model_type!r}; LoRA bases are ESM-2 "
            "checkpoints (facebook/esm2_*) or bitesm ones"
        )
    if (config.ptq or {}).get("weight_bits") is not None or (config.ptq or {}).get("act_bits") is not None:
        raise ConfigError(
            f"model.from_pretrained={source!r} is post-training quantized (config.ptq); train LoRA on its "
            "unquantized checkpoint instead (lora.load_in_4bit gives the 4-bit base)"
        )
    window = model_cfg.attention_window
    if window is not None:
        current, wanted = max_residues(config), max_length - SPECIAL_TOKENS
        if wanted > current:
            if config.position_embedding_type == "absolute":
                return None  # the learned table grows: convert_to_long in memory
            config = long_config(config, wanted, window, source)
        elif config.attention_window != window:
            config = long_config(config, current, window, source)
    return source, config


def _is_complete_base(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def prepare_base(
    model_cfg, max_length: int, seed: int = 0, base_dir: str | os.PathLike | None = None, reuse: bool = False
) -> tuple[str, BitEsmConfig, object]:
    """Decide where a run's base loads from, writing ``base_dir`` when the weights exist only in memory.

    Args:
        model_cfg: the ``model`` section (:class:`bitesm.training.config.ModelConfig`).
        max_length: ``data.max_length`` in tokens (<cls> and <eos> included).
        seed: random initialisation seed of a ``model.config`` base.
        base_dir: where to write a base built in memory (``<output_dir>/base``); written atomically by the main
            process only, the others wait.
        reuse: keep an existing complete ``base_dir`` (a resumed run) instead of rebuilding it.

    Returns:
        ``(source, config, tokenizer)``: the folder or Hub id to load, the base's ``BitEsmConfig``, and the
        tokenizer (``model_max_length`` = the base's longest input in tokens).

    Raises:
        ConfigError: a checkpoint whose quantization disagrees with ``model.quantization``, a PTQ checkpoint, a
            checkpoint that is not ESM-2 / bitesm; ``base_dir`` missing when the base must be written.
    """
    from accelerate import PartialState

    direct = _direct_config(model_cfg, max_length)
    if direct is not None:
        source, config = direct
        tokenizer = load_tokenizer(resolve_path(model_cfg.tokenizer) or source)
        if config.attention_window is not None:
            tokenizer.model_max_length = max_residues(config) + SPECIAL_TOKENS
        return source, config, tokenizer
    if base_dir is None:
        raise ConfigError(
            "this base (model.config random init, or a learned position table grown to data.max_length) exists only "
            "in memory: give a base_dir to write it to"
        )
    base_dir = Path(base_dir)
    state = PartialState()
    if state.is_main_process and not (reuse and _is_complete_base(base_dir)):
        model, tokenizer = build_model(model_cfg, seed=seed, max_length=max_length)
        tmp = base_dir.with_name(f".tmp-{base_dir.name}")
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        ckpt.replace_dir(tmp, base_dir)
        logger.info("base written to %s (fp32, %s)", base_dir, model.config.quantization or "full precision")
    state.wait_for_everyone()
    config = BitEsmConfig.from_pretrained(base_dir)
    return str(base_dir), config, load_tokenizer(base_dir)


def _head_config(config: BitEsmConfig, spec: BaseSpec) -> BitEsmConfig:
    config.num_labels = spec.num_labels
    if spec.task == "classification":
        config.problem_type = "single_label_classification"
        config.id2label = dict(enumerate(spec.label_names))
        config.label2id = {name: i for i, name in enumerate(spec.label_names)}
    else:
        config.problem_type = "regression"
    return config


def load_base(spec: BaseSpec, device: str | torch.device | None = None, seed: int = 0):
    """Load the frozen base of ``spec``: 4-bit (bitsandbytes) or as stored, with a fresh head for sequence tasks.

    Args:
        spec: the base.
        device: where to load it (``None``: Accelerate's device for this process, e.g. ``cuda:1`` or ``cpu``).
        seed: seeds the random initialisation of a sequence head (replaced by the trained one when an adapter is
            loaded).

    Returns:
        a :class:`~bitesm.models.BitEsmForMaskedLM` or :class:`~bitesm.models.BitEsmForSequenceClassification` on
        ``device``: encoder Linear layers ``bnb.nn.Linear4bit`` when ``spec.load_in_4bit`` (CPU repacking off),
        everything else float32; the contact head frozen.

    Raises:
        CheckpointMismatchError: the checkpoint's files contradict each other or its weights do not fit the base
            (missing or unexpected keys other than a sequence head replacing the LM head); a ``ValueError``.
        ValueError: a sequence task without labels.
    """
    from accelerate import PartialState
    from accelerate.utils import set_seed

    if spec.task not in TASKS:
        raise ValueError(f"task={spec.task!r}; use one of {TASKS}")
    config = BitEsmConfig.from_dict(dict(spec.config))
    cls = BitEsmForMaskedLM
    if spec.task != "mlm":
        if spec.task == "classification" and (spec.num_labels or 0) < 2:
            raise ValueError(f"classification needs at least 2 classes, got label_names={spec.label_names!r}")
        config, cls = _head_config(config, spec), BitEsmForSequenceClassification
    kwargs = {}
    if spec.load_in_4bit:
        if config.quantization is not None:
            raise ValueError(
                f"{spec.source} is {config.quantization!r}: its BitLinear weights cannot be loaded in 4 bits; "
                "set lora.load_in_4bit: false"
            )
        kwargs["quantization_config"] = bnb_config(spec.quant_type, spec.double_quant, spec.compute_dtype)
    device = torch.device(device) if device is not None else PartialState().device
    check_checkpoint(spec.source)
    set_seed(seed)
    model, info = cls.from_pretrained(
        spec.source, config=config, dtype=torch.float32, device_map={"": device}, output_loading_info=True, **kwargs
    )
    _check_loading(info, spec)
    if spec.load_in_4bit:
        disable_cpu_weight_repacking(model)
    model.esm.contact_head.requires_grad_(False)
    return model


def _check_loading(info: dict, spec: BaseSpec) -> None:
    """The loading report of a base (:func:`check_loading_info`); a sequence head replaces the LM head."""
    head = spec.task != "mlm"
    check_loading_info(
        info, spec.source, allow_missing=("classifier.",) if head else (), allow_unexpected=("lm_head.",) if head else ()
    )
