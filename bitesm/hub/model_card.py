"""The model card (``README.md``) of a pushed checkpoint, generated from the files of its folder.

Everything on the card is read from what ``bitesm train`` (or ``bitesm ptq``, ``bitesm convert long``,
``save_pretrained``) wrote: the architecture and the quantization scheme from ``config.json``, the parameter count
from the safetensors headers (no weights are loaded), the training data and budget from ``training_config.yaml``
and ``trainer_state.json``, and the latest ProteinGym evaluation from a results JSON of
:func:`bitesm.evaluation.proteingym.evaluate_proteingym`. The YAML metadata (library, tags, pipeline, datasets,
license, ``model-index``) is built with huggingface_hub's :class:`~huggingface_hub.ModelCardData` and the card is a
:class:`~huggingface_hub.ModelCard`.

This module imports neither torch nor the models, so cards can be written (and tested) cheaply.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "model_card",
    "evaluation_markdown",
    "find_evaluation",
    "load_evaluation",
    "count_parameters",
    "quantization_summary",
]

#: where ``bitesm train`` writes the config of a run (copied into ``model/`` too) and its progress.
TRAINING_CONFIG = "training_config.yaml"
TRAINER_STATE = "trainer_state.json"

#: ESM-2 modules a ternary bitesm model keeps in full precision when ``modules_to_not_convert`` is null
#: (:data:`bitesm.nn.bitlinear.DEFAULT_MODULES_TO_NOT_CONVERT`; repeated here to keep this module torch-free).
DEFAULT_FULL_PRECISION_MODULES = ("lm_head", "contact_head", "pooler")

#: per-assay / summary metric keys of a ProteinGym result and how the card names them.
METRIC_LABELS = {
    "spearman": "Spearman's ρ",
    "auc": "AUC",
    "mcc": "MCC",
    "ndcg": "NDCG",
    "recall": "Recall (top 10%)",
}
_PER_ASSAY_EXTRA = ("auc", "mcc", "ndcg", "recall")
_PUBLISHED = (("ESM2_8M", "ESM-2 8M"), ("ESM2_35M", "ESM-2 35M"))


# -- reading the folder --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_yaml(path: Path) -> dict | None:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return value if isinstance(value, dict) else None


def _first_existing(model_dir: Path, name: str) -> Path | None:
    """``model_dir/name``, else ``model_dir/../name`` (a run folder holding ``model/``), else None."""
    for folder in (model_dir, model_dir.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def _trainer_state(model_dir: Path) -> dict | None:
    """``trainer_state.json`` of the model folder, else of the run's newest checkpoint."""
    found = _first_existing(model_dir, TRAINER_STATE)
    if found is not None:
        return _read_json(found)
    checkpoints = sorted((model_dir.parent / "checkpoints").glob("checkpoint-*/" + TRAINER_STATE))
    return _read_json(checkpoints[-1]) if checkpoints else None


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def count_parameters(model_dir: str | os.PathLike) -> int | None:
    """Number of values stored in a folder's safetensors weights, read from the file headers (nothing is loaded).

    Tied weights are stored once, so this equals ``sum(p.numel() for p in model.parameters())`` plus the few
    persistent buffers (rotary frequencies, PTQ ranges).

    Args:
        model_dir: a ``save_pretrained`` folder (``model.safetensors`` or a sharded ``model.safetensors.index.json``).

    Returns:
        the count, or ``None`` when the weights are not safetensors or cannot be read.
    """
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        data = _read_json(index) or {}
        files = sorted(set((data.get("weight_map") or {}).values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    total = 0
    try:
        for name in files:
            for info in _safetensors_header(model_dir / name).values():
                total += math.prod(info["shape"])
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return total


# -- evaluation ------------------------------------------------------------------------------------------------------


def _is_proteingym_result(value: Any) -> bool:
    return isinstance(value, dict) and (
        isinstance(value.get("assays"), list) or "mean_spearman" in value or isinstance(value.get("summary"), dict)
    )


def load_evaluation(path: str | os.PathLike) -> dict:
    """Read a ProteinGym results JSON (as written by :func:`bitesm.evaluation.proteingym.evaluate_proteingym`).

    Args:
        path: the JSON file.

    Returns:
        the parsed result dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not JSON, or not a ProteinGym result (no ``assays`` list, ``mean_spearman`` or
            ``summary``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluation file {path} not found; write one with 'bitesm eval proteingym --model DIR --output FILE.json'"
        )
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"evaluation file {path} is not valid JSON: {err}") from err
    if not _is_proteingym_result(value):
        raise ValueError(
            f"evaluation file {path} is not a ProteinGym result (expected the JSON of 'bitesm eval proteingym': "
            "'assays', 'mean_spearman', ...)"
        )
    return value


def find_evaluation(model_dir: str | os.PathLike) -> Path | None:
    """The newest ProteinGym results JSON of a model folder: ``<dir>/eval/*.json`` or ``<dir>/../eval/*.json``.

    The second is the layout of a training run (``runs/X/model`` and ``runs/X/eval/proteingym.json``). JSON files
    that are not ProteinGym results are skipped.

    Args:
        model_dir: the model folder.

    Returns:
        the newest (by modification time) result file, or ``None`` if there is none.
    """
    model_dir = Path(model_dir)
    candidates = []
    for folder in (model_dir / "eval", model_dir.parent / "eval"):
        if folder.is_dir():
            candidates.extend(p for p in folder.glob("*.json") if p.is_file())
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        if _is_proteingym_result(_read_json(path)):
            return path
    return None


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "–"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return str(value)


def _short(n: int) -> str:
    """1234567 -> '1.2M' (k, M, B)."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.{2 if abs(n) < 10 * scale else 1}f}{suffix}"
    return str(n)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def evaluation_markdown(result: dict) -> str:
    """Markdown tables of a ProteinGym evaluation: a summary table and a per-assay table.

    The summary compares the mean Spearman's ρ over assays with the published ESM-2 8M and 35M values of the same
    assays; when the result has a ``summary`` dict (ProteinGym's aggregation: ``spearman``, ``auc``, ``mcc``,
    ``ndcg``, ``recall``, ``spearman_bootstrap_se``...) a second table lists it. The per-assay table has the DMS id,
    the number of mutants, Spearman's ρ, the AUC / MCC / NDCG / recall columns present in any assay, and the
    published ESM-2 8M / 35M Spearman. Missing or NaN values are shown as ``–``; unknown keys are ignored.

    Args:
        result: the dict written by :func:`bitesm.evaluation.proteingym.evaluate_proteingym` (``model``,
            ``strategy``, ``n_assays``, ``mean_spearman``, ``mean_published_spearman_ESM2_8M``,
            ``mean_published_spearman_ESM2_35M``, ``assays``: ``[{"DMS_id", "n_mutants", "spearman",
            "published_spearman_ESM2_8M", ...}]``, optionally ``summary``).

    Returns:
        markdown text (no top-level heading), ending with a newline.

    Raises:
        ValueError: ``result`` is not a ProteinGym result dict (none of ``assays``, ``mean_spearman``, ``summary``).
    """
    if not _is_proteingym_result(result):
        raise ValueError(
            "not a ProteinGym result: expected a dict with 'assays', 'mean_spearman' or 'summary' "
            "(the JSON of 'bitesm eval proteingym')"
        )
    assays = [a for a in result.get("assays") or [] if isinstance(a, dict)]
    n_assays = result.get("n_assays", len(assays))
    strategy = result.get("strategy", "masked-marginals")
    parts = [
        f"Zero-shot fitness prediction on {n_assays} ProteinGym DMS substitution assays, mutants scored by "
        f"{strategy} (Spearman's ρ between model scores and measured fitness; published ESM-2 values are those of "
        "the ProteinGym leaderboard on the same assays)."
    ]

    published_means = [result.get(f"mean_published_spearman_{key}") for key, _ in _PUBLISHED]
    if "mean_spearman" in result or any(v is not None for v in published_means):
        parts.append(
            _table(
                ["", "this model", *(f"{label} (published)" for _, label in _PUBLISHED)],
                [[f"mean Spearman's ρ ({n_assays} assays)", _number(result.get("mean_spearman"), 4),
                  *(_number(v, 4) for v in published_means)]],
                ["---", "---:", "---:", "---:"],
            )
        )

    summary = result.get("summary")
    if isinstance(summary, dict) and summary:
        published = result.get("published_summary") or {}
        header = ["metric", "this model", *(f"{label} (published)" for _, label in _PUBLISHED)]
        rows = []
        for key, value in summary.items():
            if key.endswith("_bootstrap_se"):
                continue
            se = summary.get(f"{key}_bootstrap_se")
            text = _number(value, 3) + (f" ± {_number(se, 3)}" if isinstance(se, (int, float)) else "")
            rows.append([METRIC_LABELS.get(key, key), text,
                         *(_number((published.get(k) or {}).get(key), 3) for k, _ in _PUBLISHED)])
        parts.append(
            "ProteinGym's aggregation (mean per UniProt ID and selection type, then per coarse selection type, then "
            "overall, of per-assay values rounded to 3 decimals; ± bootstrap standard error, 10,000 resamples "
            "stratified by selection type):\n\n"
            + _table(header, rows, ["---", "---:", "---:", "---:"])
        )

    if assays:
        extra = [k for k in _PER_ASSAY_EXTRA if any(k in a for a in assays)]
        header = ["DMS_id", "n", "Spearman's ρ", *(METRIC_LABELS[k] for k in extra),
                  *(f"{label} ρ (published)" for _, label in _PUBLISHED)]
        rows = [
            [
                a.get("DMS_id", "?"),
                _number(a.get("n_mutants")),
                _number(a.get("spearman")),
                *(_number(a.get(k)) for k in extra),
                *(_number(a.get(f"published_spearman_{key}")) for key, _ in _PUBLISHED),
            ]
            for a in assays
        ]
        parts.append("Per assay:\n\n" + _table(header, rows, ["---"] + ["---:"] * (len(header) - 1)))
    return "\n\n".join(parts) + "\n"


# -- the sections ----------------------------------------------------------------------------------------------------


def _bits(value: Any) -> str:
    return "fp" if value is None or value == 32 else f"{value}-bit"


def quantization_summary(config: dict) -> tuple[str, list[str]]:
    """What a model's ``config.json`` says about its quantization, as card text and Hub tags.

    Reads ``quantization`` (``"ternary"``: BitNet b1.58), ``activation_bits``, ``weight_eps``,
    ``modules_to_not_convert`` and ``ptq`` (PTQ4Protein ``weight_bits``, ``act_bits``, ``method``, ``sites``,
    ``layers``, ``weight_granularity``) of a bitesm config; an ``esm`` config (or a bitesm one with neither) is full
    precision.

    Args:
        config: the parsed ``config.json``.

    Returns:
        ``(markdown, tags)``: a paragraph (or list) describing the scheme and tags such as ``["bitnet", "ternary",
        "b1.58"]``, ``["ptq", "w8a8"]`` or ``["full-precision"]``.
    """
    lines, tags = [], []
    scheme = config.get("quantization") if config.get("model_type") == "bitesm" else None
    ptq = config.get("ptq") if config.get("model_type") == "bitesm" else None
    if scheme == "ternary":
        act = config.get("activation_bits")
        keep = config.get("modules_to_not_convert")
        keep = list(DEFAULT_FULL_PRECISION_MODULES) if keep is None else list(keep)
        layers = config.get("num_hidden_layers")
        if isinstance(layers, int) and config.get("modules_to_not_convert") is None:
            n_bitlinear = f"{6 * layers} BitLinear layers, 6 per encoder layer: query, key, value, attention output, FFN in and out"
        else:
            n_bitlinear = "every Linear layer not listed below is a BitLinear layer"
        activation = (
            f"**{act}-bit per-token absmax activations**: each token's input to a BitLinear layer is scaled by "
            f"max|x| / {2 ** (act - 1) - 1} and rounded to {act}-bit integers"
            if isinstance(act, int) else "activations in floating point (weight-only ternary)"
        )
        lines += [
            f"**Ternary BitNet b1.58** (quantization-aware training, as in 2Bits of Protein): every encoder Linear "
            f"layer is a BitLinear layer ({n_bitlinear}).",
            "",
            "* **Ternary absmean weights**: W is divided by its per-tensor mean absolute value γ, rounded and clipped "
            f"to {{-1, 0, +1}}, and multiplied back by γ (eps {config.get('weight_eps', 1e-5)}); 1.58 bits per "
            "weight.",
            f"* {activation}.",
            f"* Full precision: the embeddings, LayerNorms and {', '.join(keep) if keep else 'nothing else'}.",
            "* The checkpoint stores the latent full-precision weights; BitLinear quantizes them in every forward "
            "pass, so the outputs are exactly those of the ternary model (straight-through estimators in training).",
        ]
        tags += ["bitnet", "ternary", "b1.58", "quantization-aware-training"]
    if isinstance(ptq, dict):
        wb, ab = ptq.get("weight_bits"), ptq.get("act_bits")
        name = f"W{wb or 32}A{ab or 32}"
        sites = ptq.get("sites") or []
        layers = ptq.get("layers")
        if lines:
            lines.append("")
        lines += [
            f"**Post-training quantization (PTQ4Protein), {name}**:",
            "",
            f"* Encoder Linear weights: {_bits(wb)}"
            + (f" symmetric uniform, {ptq.get('weight_granularity', 'per_channel').replace('_', ' ')}" if wb else "")
            + ".",
            f"* Activations: {_bits(ab)}"
            + (f" {ptq.get('method', 'uniform')} quantizers with statically calibrated ranges at "
               f"{', '.join(f'`{s}`' for s in sites) or 'no sites'}" if ab else "")
            + (f", encoder layers {layers}" if layers is not None else ", all encoder layers")
            + ".",
        ]
        tags += ["ptq", "post-training-quantization", name.lower()]
    if not lines:
        lines.append("**Full precision** (no quantization): floating-point weights and activations throughout.")
        tags.append("full-precision")
    return "\n".join(lines), tags


def _looks_like_hub_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch(r"[\w.-]+/[\w.-]+", value) is not None
        and not Path(value).exists()
        and not value.startswith((".", "/", "data/", "runs/"))
    )


def _dataset_name(path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    name = Path(path).name
    for suffix in (".gz", ".fasta", ".fa", ".faa", ".fas"):
        name = name.removesuffix(suffix)
    return name or None


def _public_path(value: Any) -> str:
    """A path as a public card may show it: relative paths and Hub ids as written, absolute local paths reduced to
    ``.../<parent>/<name>`` (a card must not publish a user's home or cluster layout)."""
    text = str(value)
    if not Path(text).is_absolute():
        return text
    parts = Path(text).parts
    return ".../" + "/".join(parts[-2:])


def _architecture(config: dict, model_dir: Path) -> str:
    hidden, layers, heads = config.get("hidden_size"), config.get("num_hidden_layers"), config.get("num_attention_heads")
    n_params = count_parameters(model_dir)
    max_pos, pad = config.get("max_position_embeddings"), config.get("pad_token_id")
    architecture = (config.get("architectures") or ["?"])[0]
    rows = [
        ["architecture", f"`{architecture}` (`model_type: {config.get('model_type', '?')}`), an ESM-2-style "
                         "Transformer encoder (masked language model)"],
        ["layers", _number(layers)],
        ["hidden size", _number(hidden)],
        ["attention heads", _number(heads)],
        ["FFN size", _number(config.get("intermediate_size"))],
        ["parameters", f"{n_params:,} ({_short(n_params)})" if n_params is not None else "–"],
        ["position embeddings", str(config.get("position_embedding_type", "–"))],
    ]
    if isinstance(max_pos, int) and isinstance(pad, int):
        tokens = max_pos - pad - 1
        rows.append(["input limit", f"{tokens - 2:,} residues ({tokens:,} tokens with `<cls>` and `<eos>`)"])
    rows.append(["vocabulary", f"{_number(config.get('vocab_size'))} tokens (ESM-2 alphabet)"])
    return _table(["", ""], rows, ["---", "---"])


def _attention_window(config: dict) -> str | None:
    window = config.get("attention_window")
    if not isinstance(window, int):
        return None
    return (
        f"Local sliding-window attention (Long ESM-2, arXiv 2501.07747): each token attends to the keys within "
        f"±{window // 2} positions (a {window:,}-token band, Longformer-style), shifted inward at either end of the "
        f"protein so every query sees min(n, {window + 1:,}) keys. Proteins of at most {window + 1:,} tokens get "
        "exactly global attention; longer ones cost time and memory linear in their length. Attention maps "
        "(`output_attentions`, contact prediction) need global attention and are not available."
    )


def _training(training_config: dict | None, state: dict | None) -> str | None:
    if not training_config and not state:
        return None
    cfg = training_config or {}
    model, data, t = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("training") or {}
    rows = []
    if model.get("from_pretrained"):
        rows.append(["initialised from", f"`{_public_path(model['from_pretrained'])}`"])
    elif model.get("config"):
        overrides = model.get("overrides") or {}
        rows.append(["initialised from", f"random weights, architecture of `{_public_path(model['config'])}`"
                     + (f" with {', '.join(f'{k}={v}' for k, v in overrides.items())}" if overrides else "")])
    if data.get("train_fasta"):
        limit = data.get("max_sequences")
        rows.append(["training data", f"`{_public_path(data['train_fasta'])}`"
                     + (f" (first {limit:,} sequences)" if isinstance(limit, int) else "")
                     + (f", {data['validation_size']:,} held out for validation" if data.get("validation_size") else "")])
    if data.get("max_length"):
        rows.append(["context", f"{data['max_length']:,} tokens (longer proteins randomly cropped)"])
    if data.get("mask_rate") is not None:
        rows.append(["MLM mask rate", f"{data['mask_rate']} (80% `<mask>`, 10% random, 10% unchanged)"])
    if state and state.get("step") is not None:
        rows.append(["steps", f"{state['step']:,}" + (f" of {t['max_steps']:,}" if t.get("max_steps") else "")])
    if state and state.get("tokens") is not None:
        rows.append(["tokens seen", f"{state['tokens']:,} ({_short(state['tokens'])}, non-padding)"])
    if t.get("batch_size"):
        rows.append(["batch size", f"{t['batch_size']:,} sequences per optimizer step"
                     + (f" ({t['gradient_accumulation_steps']} accumulation steps)"
                        if t.get("gradient_accumulation_steps", 1) > 1 else "")])
    if t.get("learning_rate") is not None:
        rows.append(["learning rate", f"{t['learning_rate']:g} peak (AdamW), {t.get('lr_scheduler', 'linear')} "
                     f"schedule, {t.get('warmup_steps', 0):,} warmup steps, weight decay {t.get('weight_decay', 0):g}"])
    if t.get("mixed_precision"):
        rows.append(["precision", {"no": "fp32"}.get(t["mixed_precision"], f"{t['mixed_precision']} autocast")])
    budgets = [f"{k} {t[k]:,}" if isinstance(t[k], int) else f"{k} {t[k]:g}" for k in ("max_tokens", "max_time_minutes")
               if isinstance(t.get(k), (int, float)) and not isinstance(t.get(k), bool)]
    if budgets:
        rows.append(["budget", ", ".join(budgets)])
    if state and state.get("elapsed_seconds") is not None:
        seconds = state["elapsed_seconds"]
        rows.append(["training time", f"{seconds:.0f} s" if seconds < 120 else
                     f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"])
    if cfg.get("lora"):
        rows.append(["LoRA", ", ".join(f"{k}={v}" for k, v in cfg["lora"].items() if k in ("r", "alpha", "load_in_4bit"))])
    text = _table(["", ""], rows, ["---", "---"])
    if training_config:
        text += f"\n\nThe full configuration is in `{TRAINING_CONFIG}` (train again with " \
                f"`bitesm train --config {TRAINING_CONFIG} --output-dir DIR`)."
    return text


def _how_to_load(repo_id: str, revision: str | None, remote_code: bool) -> str:
    rev = f', revision="{revision}"' if revision else ""
    trust = ", trust_remote_code=True" if remote_code else ""
    code = f"""```python
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

model = AutoModelForMaskedLM.from_pretrained("{repo_id}"{rev}{trust}).eval()
tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{rev})

inputs = tokenizer(["MKTAYIAKQRQISFVKSHFSRQ<mask>EERLGLIEVQ"], return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits  # [batch, tokens, 33]
masked = inputs["input_ids"][0] == tokenizer.mask_token_id
print(tokenizer.convert_ids_to_tokens(logits[0, masked].argmax(-1)))
```"""
    if remote_code:
        note = (
            "`trust_remote_code=True` runs the model code stored in this repository (`modeling_bitesm.py` and the "
            "modules it imports), so bitesm need not be installed. With bitesm installed, `import bitesm` registers "
            "the `bitesm` model type and `trust_remote_code` is not needed."
        )
    else:
        note = "A standard transformers ESM-2 checkpoint: no custom code is needed."
    return code + "\n\n" + note


# -- the card --------------------------------------------------------------------------------------------------------


def model_card(
    model_dir: str | os.PathLike,
    evaluation: dict | str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    search_evaluation: bool = True,
) -> str:
    """The ``README.md`` of a model folder: YAML metadata plus model, quantization, attention, training, loading
    and evaluation sections.

    Sources: ``config.json`` (architecture, ``quantization`` / ``activation_bits`` / ``ptq`` / ``attention_window``),
    the safetensors headers (parameter count), ``training_config.yaml`` and ``trainer_state.json`` from the folder
    or its run folder (``runs/X/model`` -> ``runs/X``; trainer state also from the newest checkpoint), and the
    evaluation. The metadata has ``library_name: transformers``, ``pipeline_tag: fill-mask``, tags
    (``protein-language-model``, ``esm``, the quantization scheme, ``long-context`` for a windowed model),
    ``datasets`` (the training FASTA's name), ``base_model`` (a Hub id the model was trained from), ``license`` if
    given, and a ``model-index`` entry with the mean ProteinGym Spearman.

    Args:
        model_dir: the model folder (``config.json``, weights, tokenizer).
        evaluation: a ProteinGym result dict or a path to its JSON; ``None`` uses the newest result of
            :func:`find_evaluation` (when ``search_evaluation``).
        repo_id: Hub repository the card is for (used in the loading example and as the model name; default
            ``ORG/NAME`` placeholder and the folder name).
        revision: branch the model is pushed to, shown in the loading example.
        license: license identifier for the metadata (e.g. ``"mit"``); omitted when ``None``.
        datasets: dataset names for the metadata; default the training FASTA's name.
        search_evaluation: look for an evaluation when ``evaluation`` is ``None``.

    Returns:
        the card text (``---`` YAML front matter, then markdown).

    Raises:
        FileNotFoundError: no ``config.json`` in ``model_dir``, or ``evaluation`` is a path that does not exist.
        ValueError: ``config.json`` is not a JSON object, or ``evaluation`` is not a ProteinGym result.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: a model card needs a save_pretrained folder")
    config = _read_json(config_path)
    if config is None:
        raise ValueError(f"{config_path} is not a JSON object")

    eval_source = None
    if evaluation is None and search_evaluation:
        found = find_evaluation(model_dir)
        if found is not None:
            evaluation, eval_source = load_evaluation(found), found
    elif isinstance(evaluation, (str, os.PathLike)):
        eval_source = Path(evaluation)
        evaluation = load_evaluation(eval_source)
    if evaluation is not None and not _is_proteingym_result(evaluation):
        raise ValueError("evaluation is not a ProteinGym result dict (the JSON of 'bitesm eval proteingym')")

    training_config_path = _first_existing(model_dir, TRAINING_CONFIG)
    training_config = _read_yaml(training_config_path) if training_config_path else None
    state = _trainer_state(model_dir)
    quant_text, quant_tags = quantization_summary(config)
    window = _attention_window(config)
    is_bitesm = config.get("model_type") == "bitesm"

    name = repo_id.split("/")[-1] if repo_id else (model_dir.parent.name if model_dir.name == "model" else model_dir.name)
    name = name or "bitesm-model"
    tags = ["protein-language-model", "esm", "esm2", "masked-language-modeling", "biology"]
    tags += (["bitesm"] if is_bitesm else []) + quant_tags + (["long-context", "sliding-window-attention"] if window else [])
    if datasets is None:
        fasta = ((training_config or {}).get("data") or {}).get("train_fasta")
        datasets = [d for d in [_dataset_name(fasta)] if d]
    base = ((training_config or {}).get("model") or {}).get("from_pretrained")
    eval_results = None
    # ProteinGym's aggregated Spearman when the result has it (the leaderboard number), else the plain mean.
    aggregated = ((evaluation or {}).get("summary") or {}).get("spearman")
    mean = aggregated if aggregated is not None else (evaluation or {}).get("mean_spearman")
    metric_name = "Spearman's rho (ProteinGym aggregation)" if aggregated is not None else "mean Spearman's rho"
    if isinstance(mean, (int, float)) and not isinstance(mean, bool) and math.isfinite(mean):
        n = evaluation.get("n_assays", len(evaluation.get("assays") or []))
        eval_results = [
            EvalResult(
                task_type="fill-mask",
                task_name=f"zero-shot mutation effect prediction ({evaluation.get('strategy', 'masked-marginals')})",
                dataset_type="proteingym",
                dataset_name=f"ProteinGym DMS substitutions ({n} assays)",
                metric_type="spearmanr",
                metric_name=metric_name,
                metric_value=float(mean),
            )
        ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=list(dict.fromkeys(tags)),
        license=license,
        datasets=datasets or None,
        base_model=base if _looks_like_hub_id(base) else None,
        model_name=name if eval_results else None,
        eval_results=eval_results,
    )

    scheme = {"ternary": "ternary (BitNet b1.58)"}.get(config.get("quantization")) if is_bitesm else None
    if is_bitesm and config.get("ptq"):
        scheme = (scheme + " + " if scheme else "") + "post-training-quantized"
    intro = (
        f"A {scheme or 'full-precision'} ESM-2-style protein language model (masked LM)"
        + (" with sliding-window attention for long proteins" if window else "")
        + (", trained with bitesm (HuggingFace-native low-bit ESM-2)." if training_config
           else ", saved with bitesm (HuggingFace-native low-bit ESM-2).")
    )
    sections = [f"# {name}", intro, "## Model", _architecture(config, model_dir), "## Quantization", quant_text]
    if window:
        sections += ["## Long attention window", window]
    training = _training(training_config, state)
    if training:
        sections += ["## Training", training]
    sections += ["## How to load", _how_to_load(repo_id or "ORG/NAME", revision, is_bitesm)]
    sections.append("## Evaluation")
    if evaluation is not None:
        source = f" (`{eval_source.name}`)" if eval_source is not None else ""
        sections.append(f"Latest evaluation{source}:\n\n" + evaluation_markdown(evaluation).rstrip())
    else:
        sections.append(
            "Not evaluated yet. Score it with `bitesm eval proteingym --model DIR --output eval/proteingym.json` and "
            "push again."
        )
    body = "\n\n".join(sections) + "\n"
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return str(card)
