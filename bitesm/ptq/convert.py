"""Post-training quantization of an ESM-2 or bitesm checkpoint (PTQ4Protein): weights, calibration, saving.

Flow (``bitesm ptq``): load the model in floating point (an ``EsmForMaskedLM`` checkpoint is converted with
:meth:`BitEsmForMaskedLM.from_esm`, a bitesm checkpoint loads as it is, ternary BitLinear layers included), build
the same model with a ``ptq`` config (activation quantizers at the chosen sites), copy the weights, quantize the
encoder Linear weights (symmetric uniform, per output channel by default; BitLinear weights are already ternary
and stay so), run the calibration sequences through the model with range observers, store the ranges, save.
The saved folder loads with ``from_pretrained`` and runs quantized.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from torch import nn

from ..data.collator import encode_protein
from ..data.tokenizer import load_tokenizer
from ..errors import UserInputError
from ..models import BitEsmForMaskedLM, bitesm_config_from_esm, load_masked_lm
from ..models.checkpoint_checks import read_checkpoint_config
from ..nn.bitlinear import BitLinear
from ..nn.quantized_linear import Int8Linear
from ..quant.observers import make_observer
from ..quant.primitives import fake_quantize_weight_symmetric
from .sites import SITES, activation_quantizers

logger = logging.getLogger(__name__)


class PTQInputError(UserInputError):
    """A checkpoint or setting that post-training quantization cannot use, or that would quantize nothing (a packed
    or already-quantized checkpoint, weight bits on ternary weights, no activation site); the message names the
    input and the fix."""


def load_fp_model(name_or_path: str | os.PathLike) -> tuple[BitEsmForMaskedLM, object]:
    """Load an ESM-2 (``model_type="esm"``) or bitesm checkpoint as a bitesm model without PTQ, plus its tokenizer.

    Args:
        name_or_path: checkpoint folder or Hub id (an ESM-2 checkpoint is converted to a floating-point bitesm
            model; a bitesm checkpoint, fp or ternary, loads as it is).

    Returns:
        ``(model, tokenizer)``, the model in eval mode.

    Raises:
        PTQInputError: a packed checkpoint (``bitesm export --format packed``: its weights are 2-bit codes for
            inference; quantize the latent checkpoint it was exported from), or one that already carries a PTQ
            config (quantize the original instead).
        CheckpointMismatchError: the checkpoint's files contradict each other or a weight file is damaged
            (:mod:`bitesm.models.checkpoint_checks`).
    """
    config, config_path = read_checkpoint_config(name_or_path)
    if config.get("model_type") == "bitesm" and config.get("weight_format") == "packed":
        raise PTQInputError(
            f"{name_or_path} is a packed checkpoint (weight_format 'packed' in {config_path}, written by 'bitesm "
            "export --format packed'): its ternary weights are stored as 2-bit codes for integer inference, so PTQ "
            "would quantize 0 weight tensors and mislabel the result. Fix: quantize the latent checkpoint, the one "
            "before 'bitesm export --format packed' (e.g. runs/NAME/model)"
        )
    if config.get("model_type") == "bitesm" and config.get("ptq"):
        raise PTQInputError(
            f"{name_or_path} is already post-training quantized (ptq in {config_path}); start from its unquantized "
            "checkpoint"
        )
    model = load_masked_lm(name_or_path, quantization=None)
    if model.config.ptq:
        raise PTQInputError(f"{name_or_path} is already post-training quantized; start from its unquantized checkpoint")
    return model.eval(), load_tokenizer(name_or_path)


def describe_weights(model: nn.Module) -> dict:
    """What weight PTQ would act on: the floating-point encoder Linear layers and the ternary (BitLinear) ones.

    Args:
        model: a bitesm or ESM-2 masked LM.

    Returns:
        ``{"fp_linear": n, "ternary": m}``: encoder ``nn.Linear`` layers (quantized by ``weight_bits``) and
        BitLinear layers (already ternary, left unchanged by weight PTQ).
    """
    fp = sum(1 for name, m in model.named_modules() if type(m) is nn.Linear and "encoder." in name)
    ternary = sum(1 for m in model.modules() if isinstance(m, BitLinear))
    return {"fp_linear": fp, "ternary": ternary}


def check_ptq_effect(model: nn.Module, ptq: dict, source: str = "the model") -> None:
    """Refuse PTQ settings that would leave ``model`` unchanged or write a result labelled with bits it does not
    have.

    Args:
        model: the model to quantize (from :func:`load_fp_model`).
        ptq: the settings (:func:`ptq_settings`).
        source: how messages name the model (its ``--model``).

    Raises:
        PTQInputError: ``weight_bits`` on a model without floating-point encoder Linear layers (a ternary model:
            weight PTQ leaves ternary weights unchanged, 0 tensors would be quantized); ``act_bits`` with no site;
            neither weights nor activations to quantize. Each message names the option and the fix.
    """
    layers = describe_weights(model)
    weight_bits, act_bits = ptq.get("weight_bits"), ptq.get("act_bits")
    if weight_bits is not None and layers["fp_linear"] == 0:
        kind = f"its {layers['ternary']} encoder Linear layers are ternary (BitLinear)" if layers["ternary"] else (
            "it has no floating-point encoder Linear layer")
        raise PTQInputError(
            f"--weight-bits {weight_bits}: {source} has no weights to quantize ({kind}; weight PTQ leaves ternary "
            f"weights unchanged), so 0 tensors would be quantized and the result mislabelled W{weight_bits}. Fix: "
            "pass --weight-bits 32 to quantize only the activations, or quantize a floating-point checkpoint"
        )
    if act_bits is not None and not ptq.get("sites"):
        raise PTQInputError(
            f"--act-bits {act_bits} with no --sites quantizes no activation. Fix: pass --sites (e.g. "
            "ffn_input,layernorm_output), or --act-bits 32"
        )
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    bad = [i for i in ptq.get("layers") or () if n_layers is not None and not -n_layers <= i < n_layers]
    if bad:
        raise PTQInputError(
            f"--layers {bad} out of range: {source} has {n_layers} encoder layers (0..{n_layers - 1}, or -1 for the "
            "last). Fix: pass layer indices in that range"
        )
    if weight_bits is None and act_bits is None:
        raise PTQInputError(
            f"--weight-bits 32 --act-bits 32 quantizes nothing: the output would be {source} unchanged. Fix: pass "
            "--weight-bits and/or --act-bits below 32 (e.g. 8)"
        )


def ptq_settings(
    weight_bits: int | None,
    act_bits: int | None,
    method: str = "piecewise",
    sites: Sequence[str] = SITES,
    layers: Sequence[int] | None = None,
    weight_granularity: str = "per_channel",
) -> dict:
    """The ``config.ptq`` dict; bit widths of 32 (or None) mean floating point (e.g. W8A32)."""
    as_bits = lambda b: None if b in (None, 32) else int(b)  # noqa: E731
    return {
        "weight_bits": as_bits(weight_bits),
        "act_bits": as_bits(act_bits),
        "method": method,
        "sites": list(sites),
        "layers": None if layers is None else list(layers),
        "weight_granularity": weight_granularity,
    }


def build_quantized_model(model: BitEsmForMaskedLM, ptq: dict) -> BitEsmForMaskedLM:
    """A copy of ``model`` with ``config.ptq = ptq``: quantized encoder weights, uncalibrated activation quantizers.

    Raises:
        ValueError: out-of-range PTQ settings (from :class:`BitEsmConfig` validation).
    """
    quantized = BitEsmForMaskedLM(bitesm_config_from_esm(model.config, ptq=ptq)).eval()
    missing, unexpected = quantized.load_state_dict(model.state_dict(), strict=False)
    quantizer_prefixes = tuple(f"{name}." for name in activation_quantizers(quantized))
    missing = [k for k in missing if not k.startswith(quantizer_prefixes)]  # calibrated later
    if missing or unexpected:
        raise ValueError(f"weights do not match the PTQ model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if ptq.get("weight_bits") is not None:
        quantize_encoder_weights_(quantized, ptq["weight_bits"], ptq.get("weight_granularity", "per_channel"))
    return quantized


@torch.no_grad()
def quantize_encoder_weights_(model: nn.Module, bits: int, granularity: str = "per_channel") -> int:
    """Replace every encoder ``nn.Linear`` weight by its symmetric b-bit fake-quantized value, in place.

    BitLinear layers (already ternary), the LM head, the contact head and the pooler are left unchanged.

    Returns:
        the number of weight matrices quantized.
    """
    count = 0
    for name, module in model.named_modules():
        if type(module) is nn.Linear and "encoder." in name:
            module.weight.copy_(fake_quantize_weight_symmetric(module.weight, bits, granularity == "per_channel"))
            count += 1
        elif isinstance(module, BitLinear) and bits is not None:
            logger.debug("%s is ternary (BitLinear); its weights keep their ternary grid", name)
    return count


@torch.no_grad()
def to_int8_weights(model: BitEsmForMaskedLM) -> BitEsmForMaskedLM:
    """The int8-stored form of a weight-quantized PTQ model: the same model with ``ptq["weight_format"] = "int8"``,
    whose encoder Linear layers are :class:`~bitesm.nn.quantized_linear.Int8Linear` (int8 codes ``[out, in]`` plus
    float32 scales ``[out, 1]`` or ``[1, 1]``) instead of fp32 weights on the grid.

    The codes are recovered from the fake-quantized weights (PTQ4Protein eq. 1-4: a weight on the grid quantizes
    to its own codes), the calibrated activation ranges are copied, so the result computes the same logits (up to
    float rounding of the recomputed scale) and saves about a quarter of the encoder weight bytes.

    Args:
        model: a model from :func:`quantize_model` / :func:`build_quantized_model` with ``weight_bits`` <= 8 and no
            ``weight_format`` (or ``"fake"``).

    Returns:
        a new model in eval mode (``model`` is unchanged).

    Raises:
        PTQInputError: the model has no weight quantization of at most 8 bits (nothing to store as int8).
    """
    ptq = dict(model.config.ptq or {})
    bits = ptq.get("weight_bits")
    if bits is None or bits > 8:
        raise PTQInputError(
            f"int8 weight storage needs weight_bits in 2..8, the model has weight_bits={bits!r}. Fix: quantize with "
            "--weight-bits 8 (or fewer), or keep --weight-format fake"
        )
    if ptq.get("weight_format") == "int8":
        return model
    ptq["weight_format"] = "int8"
    per_channel = ptq.get("weight_granularity", "per_channel") == "per_channel"
    stored = BitEsmForMaskedLM(bitesm_config_from_esm(model.config, ptq=ptq)).eval()
    state = model.state_dict()
    for name, module in stored.named_modules():
        if isinstance(module, Int8Linear):
            codes = Int8Linear.from_linear(model.get_submodule(name), bits, per_channel)
            state[f"{name}.weight"] = codes.weight
            state[f"{name}.weight_scale"] = codes.weight_scale
    stored.load_state_dict(state, strict=True)
    return stored.to(next(model.parameters()).device)


@torch.no_grad()
def calibrate(
    model: BitEsmForMaskedLM,
    tokenizer,
    sequences: Sequence[str],
    observer: str = "minmax",
    batch_size: int = 8,
    max_length: int = 1024,
    **observer_kwargs,
) -> dict[str, tuple[float, float]]:
    """Static range estimation: run ``sequences`` through ``model`` and set every activation quantizer's range.

    Args:
        model: a model with activation quantizers (from :func:`build_quantized_model`).
        tokenizer: its ESM-2 tokenizer.
        sequences: calibration proteins (strings); cropped to ``max_length - 2`` residues.
        observer: ``"minmax"``, ``"percentile"`` or ``"mse"`` (:func:`bitesm.quant.observers.make_observer`).
        batch_size: sequences per forward pass (padded; padding positions are excluded by the attention mask but
            do reach the observers of position-wise sites, as in PTQ4Protein's calibration).

    Returns:
        ``{quantizer name: (r_l, r_u)}``.

    Raises:
        ValueError: no sequences, or the model has no activation quantizers.
    """
    quantizers = activation_quantizers(model)
    if not sequences:
        raise ValueError("calibration needs at least one sequence")
    if not quantizers:
        raise ValueError("the model has no activation quantizers (ptq.act_bits is None or no sites were chosen)")
    for q in quantizers.values():
        # the MSE search minimises the error of the quantizer the site will use
        per_site = {"bits": q.bits, "method": q.method} if observer == "mse" else {}
        q.observer = _CalibrationObserver(make_observer(observer, **per_site, **observer_kwargs))
    device = next(model.parameters()).device
    model.eval()
    try:
        for start in range(0, len(sequences), batch_size):
            batch = [encode_protein(tokenizer, s[: max_length - 2]) for s in sequences[start : start + batch_size]]
            width = max(len(ids) for ids in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, tokens in enumerate(batch):
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
        ranges = {}
        for name, q in quantizers.items():
            r_l, r_u = q.observer.compute_range()
            q.set_range(r_l, r_u)  # widened to contain 0
            q.set_range(q.r_l, q.r_u, q.observer.breakpoint_scale(float(q.r_l), float(q.r_u)))
            ranges[name] = (float(q.r_l), float(q.r_u))
    finally:
        for q in quantizers.values():
            q.observer = None
    return ranges


class _CalibrationObserver:
    """A range observer plus the running moments of everything it saw (the scale of the piecewise breakpoints)."""

    def __init__(self, observer):
        self.observer = observer
        self.moments = torch.zeros(3, dtype=torch.float64)  # count, sum, sum of squares

    def update(self, x: torch.Tensor) -> None:
        self.observer.update(x)
        xf = x.detach().double()
        self.moments += torch.stack([torch.tensor(float(xf.numel()), dtype=torch.float64), xf.sum().cpu(), (xf * xf).sum().cpu()])

    def compute_range(self):
        return self.observer.compute_range()

    def breakpoint_scale(self, r_l: float, r_u: float) -> float:
        """The ``std`` normalising eq. 6 (:mod:`bitesm.quant.piecewise`): the standard deviation of the data when
        r_l < 0 < r_u, else the RMS distance from the bound nearer zero (the folded distribution's sigma)."""
        n, total, squares = self.moments.tolist()
        if not n:
            return float("nan")
        mean = total / n
        variance = max(squares / n - mean * mean, 0.0)
        if r_l < 0 < r_u:
            return variance**0.5
        anchor = r_l if r_l >= 0 else r_u
        return (variance + (mean - anchor) ** 2) ** 0.5


def quantize_model(
    model: BitEsmForMaskedLM,
    tokenizer,
    calibration_sequences: Sequence[str],
    weight_bits: int | None = 8,
    act_bits: int | None = 8,
    method: str = "piecewise",
    sites: Sequence[str] = SITES,
    layers: Sequence[int] | None = None,
    observer: str = "minmax",
    weight_granularity: str = "per_channel",
    batch_size: int = 8,
    max_length: int = 1024,
) -> BitEsmForMaskedLM:
    """Post-training quantize ``model`` (PTQ4Protein): the whole flow of :mod:`bitesm.ptq.convert`.

    Returns:
        a new calibrated model (``model`` itself is unchanged).
    """
    ptq = ptq_settings(weight_bits, act_bits, method, sites, layers, weight_granularity)
    quantized = build_quantized_model(model, ptq)
    if ptq["act_bits"] is not None and ptq["sites"]:
        calibrate(quantized, tokenizer, calibration_sequences, observer, batch_size, max_length)
    return quantized


def quantize_checkpoint(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    calibration: str | os.PathLike,
    num_calibration: int = 64,
    sampling: str = "uniform",
    seed: int = 0,
    weight_bits: int | None = 8,
    act_bits: int | None = 8,
    method: str = "piecewise",
    sites: Sequence[str] = SITES,
    layers: Sequence[int] | None = None,
    observer: str = "minmax",
    weight_granularity: str = "per_channel",
    batch_size: int = 8,
    max_length: int = 512,
    weight_format: str | None = None,
) -> dict:
    """``bitesm ptq``: load a checkpoint, check the settings change it, sample calibration proteins, quantize
    (:func:`quantize_model`) and save the quantized model, its tokenizer and ``ptq_report.json`` to ``output``.

    Args:
        model: checkpoint folder or Hub id (ESM-2 or a bitesm latent checkpoint; relative paths also resolve against
            the repository root).
        output: folder for the quantized model.
        calibration: FASTA (or ``.fasta.gz``) the calibration proteins are sampled from.
        num_calibration, sampling, seed: :func:`bitesm.ptq.calibration.sample_calibration_set`.
        weight_bits, act_bits, method, sites, layers, observer, weight_granularity, batch_size, max_length:
            :func:`quantize_model` (bit widths of 32 or ``None`` mean floating point).
        weight_format: how the encoder Linear weights are saved: ``"int8"`` (int8 codes plus float32 scales,
            :func:`to_int8_weights`; the default when ``weight_bits`` <= 8) or ``"fake"`` (fp32 weights on the
            grid; the default otherwise).

    Returns:
        the contents of ``ptq_report.json``: ``{"ptq": settings, "memory": weight memory report (analytic) plus
        ``file_bytes`` (measured size of the saved ``model*.safetensors``), "weight_layers":
        :func:`describe_weights`}``.

    Raises:
        PTQInputError: a packed checkpoint, settings that would quantize nothing (:func:`check_ptq_effect`), or
            ``weight_format="int8"`` with ``weight_bits`` above 8 or floating point.
        CheckpointMismatchError, FastaFormatError, UserInputError: an unusable checkpoint or calibration FASTA.
    """
    from pathlib import Path

    from ..io import atomic_write_json
    from ..training.config import resolve_path
    from .calibration import sample_calibration_set
    from .memory import weight_memory_report

    int8_ok = weight_bits is not None and weight_bits <= 8
    if weight_format is None:
        weight_format = "int8" if int8_ok else "fake"
    if weight_format not in ("int8", "fake"):
        raise PTQInputError(f"--weight-format {weight_format!r} is not a format; use int8 or fake")
    if weight_format == "int8" and not int8_ok:
        raise PTQInputError(
            f"--weight-format int8 with --weight-bits {weight_bits or 32}: int8 codes hold at most 8 bits. Fix: pass "
            "--weight-bits 8 (or fewer), or --weight-format fake"
        )
    loaded, tokenizer = load_fp_model(resolve_path(str(model)))
    check_ptq_effect(loaded, ptq_settings(weight_bits, act_bits, method, sites, layers, weight_granularity),
                     source=str(model))
    chosen = sample_calibration_set(resolve_path(str(calibration)), num_calibration, mode=sampling, seed=seed)
    quantized = quantize_model(
        loaded, tokenizer, [seq for _, seq in chosen], weight_bits=weight_bits, act_bits=act_bits, method=method,
        sites=sites, layers=layers, observer=observer, weight_granularity=weight_granularity,
        batch_size=batch_size, max_length=max_length,
    )
    output = Path(output)
    memory = weight_memory_report(quantized, quantized.config.ptq["weight_bits"], quantized.config.ptq["act_bits"])
    layers = describe_weights(quantized)
    if weight_format == "int8":
        quantized = to_int8_weights(quantized)
    quantized.save_pretrained(output)
    tokenizer.save_pretrained(output)
    memory["file_bytes"] = sum(f.stat().st_size for f in output.glob("model*.safetensors"))
    report = {"ptq": quantized.config.ptq, "memory": memory, "weight_layers": layers}
    atomic_write_json(output / "ptq_report.json", report)
    return report
