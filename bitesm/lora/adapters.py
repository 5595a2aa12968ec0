"""LoRA adapters on 4-bit, fp and ternary bitesm / ESM-2 bases with peft: attach, save, reload, merge.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a Linear layer's weight ``W``
``[out, in]`` and trains ``A`` ``[r, in]`` and ``B`` ``[out, r]`` (``B`` starts at zero), so the layer computes
``y = base(x) + (alpha / r) * B @ A @ dropout(x)``. QLoRA (Dettmers et al. 2023) does the same on a base whose ``W``
is stored in 4-bit NF4; Long ESM-2's quantized models (arXiv 2501.07747) are trained that way. peft provides the
layers: ``peft.tuners.lora.bnb.Linear4bit`` on ``bnb.nn.Linear4bit`` and ``peft.tuners.lora.layer.Linear`` on
``nn.Linear``.

Ternary bases
-------------
On a ternary bitesm base the targets are :class:`~bitesm.nn.bitlinear.BitLinear` layers. They get
:class:`LoraBitLinear`, registered through peft's custom-module mapping (``LoraConfig._register_custom_module``):
the base path is BitLinear's own forward (ternary weights, 8-bit activations, frozen), the adapter path is full
precision on the layer's unquantized input. Such an adapter cannot be merged: BitLinear quantizes its latent weight
to ``{-g, 0, +g}`` (``g = mean|W|``) in every forward, so a merged ``W + (alpha / r) B A`` would be quantized again and
compute ``ternary(W + dW)``, not the trained ``ternary(W) x + dW x``. :meth:`LoraBitLinear.merge` and
:func:`merge_adapter` raise :class:`TernaryMergeError`; the adapter stays a separate file loaded on its base.

Files
-----
:func:`save_adapter` writes peft's ``adapter_model.safetensors`` (the A and B matrices, plus a sequence head) and
``adapter_config.json``, with ``lora_base.json`` (:class:`~bitesm.lora.base.BaseSpec`) and the tokenizer; the base is
not copied. :func:`load_adapter` rebuilds the base from ``lora_base.json`` and loads the adapter onto it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn

from ..data import load_tokenizer
from ..errors import UserInputError
from ..nn.bitlinear import BitLinear
from ..training import checkpoint as ckpt
from ..training.config import DEFAULT_LORA_TARGETS, ConfigError
from .base import BaseSpec, load_base
from .nf4 import FULL_PRECISION_MODULES

logger = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_FILE",
    "LoraBitLinear",
    "TernaryMergeError",
    "attach_lora",
    "load_adapter",
    "merge_adapter",
    "resolve_target_modules",
    "save_adapter",
]

#: peft's adapter weights file.
ADAPTER_FILE = "adapter_model.safetensors"

_TERNARY_MERGE = (
    "a LoRA adapter cannot be merged into a ternary (BitLinear) base: BitLinear re-quantizes its weight to "
    "{-g, 0, +g} in every forward, so the merged layer would compute ternary(W + dW) instead of the trained "
    "ternary(W) x + dW x. Keep the adapter separate and load it on its base with bitesm.lora.load_adapter(DIR)"
)


class TernaryMergeError(UserInputError):
    """Merging a LoRA adapter into a ternary BitLinear base was requested (see the module docstring)."""


class LoraBitLinear(PeftLoraLinear):
    """peft's LoRA ``Linear`` around a :class:`~bitesm.nn.bitlinear.BitLinear`: frozen ternary base, fp adapter.

    Forward: ``BitLinear(x) + (alpha / r) * B @ A @ dropout(x)``, input ``[..., in_features]``, output
    ``[..., out_features]`` (the adapter runs in its own dtype, fp32, and is cast to the base output's dtype).

    Raises:
        TernaryMergeError: from :meth:`merge` (peft's ``merge_and_unload`` calls it); see the module docstring.
    """

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise TernaryMergeError(_TERNARY_MERGE)


def register_bitlinear(lora_config) -> None:
    """Map :class:`BitLinear` targets to :class:`LoraBitLinear` in a ``peft.LoraConfig`` (peft's custom modules).

    The mapping is not saved in ``adapter_config.json``: register it again before ``PeftModel.from_pretrained`` on a
    ternary base (:func:`load_adapter` does).
    """
    lora_config._register_custom_module({BitLinear: LoraBitLinear})


def _is_lora_part(name: str) -> bool:
    return any(p.startswith("lora_") or p in ("modules_to_save", "original_module") for p in name.split("."))


def _in_head(name: str) -> bool:
    return any(p in FULL_PRECISION_MODULES for p in name.split("."))


def resolve_target_modules(model: nn.Module, names) -> list[str]:
    """The qualified names of the Linear layers that ``names`` select for LoRA.

    A name selects a Linear layer (``nn.Linear``, ``bnb.nn.Linear4bit``, ``BitLinear``) whose qualified name equals
    it or ends with ``"." + name`` (peft's rule): ``query`` selects ``esm.encoder.layer.<i>.attention.self.query``
    in every layer, ``dense`` the attention output and both FFN projections. Layers of the full-precision heads
    (``lm_head``, ``contact_head``, ``pooler``, ``classifier``) are selected only by a name that includes the head
    (``lm_head.dense``); train a whole head with ``modules_to_save`` instead.

    Args:
        model: the base model.
        names: iterable of module names (``lora.target_modules``).

    Returns:
        the matching qualified names, in model order, each once.

    Raises:
        ConfigError: a name selects nothing; the message lists the Linear layer names of one encoder layer and of
            the heads.
    """
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _is_lora_part(n)]
    selected: set[str] = set()
    unmatched = []
    for entry in names:
        entry = str(entry).strip().strip(".")
        heads_ok = _in_head(entry)
        hits = [n for n in linears if (n == entry or n.endswith("." + entry)) and (heads_ok or not _in_head(n))]
        if not hits:
            unmatched.append(entry)
        selected.update(hits)
    if unmatched:
        per_layer = sorted({n.split(".", 4)[-1] for n in linears if ".encoder.layer.0." in f".{n}"})
        heads = sorted(n for n in linears if _in_head(n))
        raise ConfigError(
            f"lora.target_modules {unmatched} match no Linear layer of the base. Names match a layer's qualified "
            f"name or its last components: each encoder layer has {per_layer} (e.g. query, key, value, dense); "
            f"the full-precision heads have {heads} (target them with their qualified name, or train them whole "
            f"with lora.modules_to_save)"
        )
    return [n for n in linears if n in selected]


def attach_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.05,
    target_modules=DEFAULT_LORA_TARGETS,
    modules_to_save: list[str] | None = None,
    gradient_checkpointing: bool = False,
):
    """Freeze ``model`` and add trainable LoRA adapters (a ``peft.PeftModel``).

    A 4-bit base first goes through ``peft.prepare_model_for_kbit_training`` (freezes it, keeps non-quantized
    parameters in fp32); any other base is frozen as it is. A sequence model gets peft's ``SEQ_CLS`` task, which also
    trains and saves its ``classifier`` head in full.

    Args:
        model: a base from :func:`bitesm.lora.base.load_base` (4-bit, fp or ternary; masked LM or sequence head).
        r: rank (>= 1). alpha: the update is scaled by ``alpha / r``. dropout: on the adapter input.
        target_modules: layer names (:func:`resolve_target_modules`); default query, key, value, dense.
        modules_to_save: modules trained in full and saved with the adapter (e.g. ``["lm_head"]``).
        gradient_checkpointing: recompute activations in the backward pass (non-reentrant ``torch.utils.checkpoint``).

    Returns:
        the ``PeftModel`` (``model`` is modified in place): adapters float32, ``requires_grad`` only on the
        adapters (and saved modules). Inputs and outputs as the base model's.

    Raises:
        ConfigError: a target name that selects no Linear layer.
    """
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import EsmForSequenceClassification

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.requires_grad_(False)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    targets = resolve_target_modules(model, target_modules)
    is_head = isinstance(model, EsmForSequenceClassification)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        bias="none",
        task_type=TaskType.SEQ_CLS if is_head else None,
    )
    register_bitlinear(config)
    return get_peft_model(model, config)


def save_adapter(model, directory: str | os.PathLike, spec: BaseSpec, tokenizer=None) -> Path:
    """Write the adapter alone, atomically: ``adapter_model.safetensors``, ``adapter_config.json`` (peft),
    ``lora_base.json`` (``spec``) and the tokenizer.

    Args:
        model: the trained ``PeftModel``.
        directory: the adapter folder (replaced if it exists).
        spec: the base it was trained on.
        tokenizer: saved alongside when given.

    Returns:
        ``directory`` as a ``Path``.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".tmp-{directory.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    spec.save(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    ckpt.replace_dir(tmp, directory)
    return directory


def _peft_config(directory: Path):
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(directory))
    register_bitlinear(config)
    return config


def load_adapter(directory: str | os.PathLike, device: str | torch.device | None = None, is_trainable: bool = False):
    """Load an adapter written by :func:`save_adapter` (``bitesm lora``'s ``<output_dir>/adapter``) on its base.

    The base is rebuilt from ``lora_base.json`` exactly as in training (4-bit or not, same checkpoint and
    architecture), so the model reproduces the trained one's outputs.

    Args:
        directory: the adapter folder.
        device: where to load (``None``: Accelerate's device for this process).
        is_trainable: keep the adapter trainable (continue training) instead of inference mode.

    Returns:
        ``(model, tokenizer)``: the ``PeftModel`` (in eval mode unless ``is_trainable``) and the tokenizer. Inputs
        ``input_ids`` / ``attention_mask`` LongTensors ``[batch, seq]``; outputs ``logits`` float ``[batch, seq, 33]``
        (MLM) or ``[batch, num_labels]`` (sequence head).

    Raises:
        FileNotFoundError: ``directory`` has no ``lora_base.json`` / ``adapter_config.json``.
    """
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{directory / 'adapter_config.json'} not found; pass the adapter folder of a run")
    spec = BaseSpec.load(directory)
    base = load_base(spec, device=device)
    model = PeftModel.from_pretrained(base, str(directory), config=_peft_config(directory), is_trainable=is_trainable)
    if not is_trainable:
        model.eval()
    return model, load_tokenizer(directory)


def merge_adapter(directory: str | os.PathLike, output: str | os.PathLike | None = None, device: str = "cpu"):
    """Merge an adapter into a floating-point copy of its base: a plain bitesm checkpoint, no peft needed.

    A 4-bit base is first dequantized to float32 (transformers' ``model.dequantize()``), so the merged model computes
    what the trained model computes (up to float rounding), not what the original fp base plus the adapter would.

    Args:
        directory: the adapter folder (:func:`save_adapter`).
        output: where to ``save_pretrained`` the merged model and tokenizer (atomically); ``None``: do not save.
        device: where to merge.

    Returns:
        the merged :class:`~bitesm.models.BitEsmForMaskedLM` (or sequence model), float32, in eval mode.

    Raises:
        TernaryMergeError: the base is ternary (see the module docstring).
        FileNotFoundError: not an adapter folder.
    """
    from peft import PeftModel

    directory = Path(directory)
    spec = BaseSpec.load(directory)
    if spec.is_ternary:
        raise TernaryMergeError(_TERNARY_MERGE)
    base = load_base(spec, device=device)
    if spec.load_in_4bit:
        base = base.dequantize(dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(directory), config=_peft_config(directory))
    merged = model.merge_and_unload().eval()
    if output is not None:
        output = Path(output)
        tmp = output.with_name(f".tmp-{output.name}")
        if tmp.exists():
            shutil.rmtree(tmp)
        merged.save_pretrained(tmp)
        load_tokenizer(directory).save_pretrained(tmp)
        ckpt.replace_dir(tmp, output)
    return merged
