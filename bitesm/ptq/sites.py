"""Activation quantization sites of an ESM-2 encoder for post-training quantization (PTQ4Protein).

PTQ4Protein (Peng et al., 2023, arXiv 2310.19624, Table I) studies where activation quantization hurts ESM-2:
the input and output of LayerNorm, the input and output of the attention softmax, and the input of the
feed-forward (Linear) layers. This module attaches one :class:`ActivationQuantizer` per tensor at those sites:

==================  ===========================================================================================
site                tensor quantized
==================  ===========================================================================================
layernorm_input     input of each encoder LayerNorm (the residual stream: wide, asymmetric ranges)
layernorm_output    output of each encoder LayerNorm
softmax_input       attention scores (scaled q.k plus mask) entering the softmax, per layer
softmax_output      attention probabilities leaving the softmax, per layer
ffn_input           input of every encoder Linear (query/key/value, attention output, both FFN projections)
==================  ===========================================================================================

The LM head, the contact head and the embeddings are left in floating point. Quantizers are child modules of the
module whose tensor they quantize (``...attention.LayerNorm.input_quantizer``), so their calibrated ranges
(buffers ``r_l``, ``r_u``) are saved in ``model.safetensors`` and restored by ``from_pretrained``; forward hooks
wire the LayerNorm and Linear sites, and :mod:`bitesm.ptq.attention` the softmax sites.
"""

from __future__ import annotations

import re

import torch
from torch import nn

SITES = ("layernorm_input", "layernorm_output", "softmax_input", "softmax_output", "ffn_input")
METHODS = ("uniform", "piecewise")

_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


class ActivationQuantizer(nn.Module):
    """Static-range fake quantizer of one activation tensor (PTQ4Protein eq. 1-6).

    ``uniform`` is asymmetric unsigned b-bit quantization of [r_l, r_u] (eq. 1-4); ``piecewise`` is b-bit
    piecewise-linear quantization with breakpoints from eq. 6 (:func:`bitesm.quant.piecewise.fake_quantize_piecewise`).

    Buffers ``r_l`` and ``r_u`` (0-d float32) hold the calibrated clipping range and ``std`` the scale of the piecewise
    breakpoints (the standard deviation of the calibration activations, or their RMS for ranges on one side of 0);
    they are NaN until calibrated.
    While ``observer`` is set (during calibration) the quantizer only feeds its input to the observer and returns it
    unchanged.

    Args:
        bits: activation bit width b (2..16).
        method: ``"uniform"`` or ``"piecewise"``.
        site: the site name (one of :data:`SITES`), for messages and reports.

    Raises:
        ValueError: unknown method or bits out of range.
        RuntimeError: forward before calibration (message says to run ``bitesm ptq`` / ``calibrate``).
    """

    def __init__(self, bits: int, method: str, site: str):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"PTQ method {method!r} is not supported; use one of {METHODS}")
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"activation bits must be in [2, 16], got {bits!r}")
        self.bits, self.method, self.site = int(bits), method, site
        self.register_buffer("r_l", torch.tensor(float("nan")))
        self.register_buffer("r_u", torch.tensor(float("nan")))
        self.register_buffer("std", torch.tensor(float("nan")))
        self.observer = None
        self.enabled = True

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.r_l) and torch.isfinite(self.r_u))

    def set_range(self, r_l: torch.Tensor | float, r_u: torch.Tensor | float, std: float | None = None) -> None:
        """Store the clipping range [r_l, r_u] (widened to contain 0) and the calibration data's standard deviation.

        ``std`` scales the piecewise breakpoints: eq. 6, ``p = ln(m r + n)``, is PWLQ's fit for unit-variance data
        (Fang et al., 2020), so bitesm applies it to the range in units of ``std``: ``p = std * ln(m r / std + n)``;
        for a range on one side of zero (attention probabilities) ``std`` is the RMS distance from the bound at 0.
        """
        self.r_l.fill_(min(float(r_l), 0.0))
        self.r_u.fill_(max(float(r_u), 0.0))
        self.std.fill_(float("nan") if std is None or not std > 0 else float(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(x.detach())
            return x
        if not self.enabled:
            return x
        if not self.calibrated:
            raise RuntimeError(
                f"activation quantizer at site {self.site!r} has no calibrated range; calibrate the model first "
                "(bitesm ptq ... or bitesm.ptq.calibrate)"
            )
        from ..quant.piecewise import fake_quantize_piecewise, fake_quantize_uniform

        if self.method == "piecewise":
            std = self.std if torch.isfinite(self.std) else None
            return fake_quantize_piecewise(x, self.r_l, self.r_u, self.bits, std=std, use_ste=False)
        return fake_quantize_uniform(x, self.r_l, self.r_u, self.bits, symmetric=False, use_ste=False)

    def extra_repr(self) -> str:
        return f"site={self.site}, bits={self.bits}, method={self.method}, range=[{float(self.r_l):.4g}, {float(self.r_u):.4g}]"


def _quantize_input_hook(module: nn.Module, args):
    return (module.input_quantizer(args[0]), *args[1:])


def _quantize_output_hook(module: nn.Module, args, output):
    return module.output_quantizer(output)


def _layer_index(name: str) -> int | None:
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def _in_encoder(name: str) -> bool:
    return "encoder." in f".{name}" and not any(k in name for k in ("lm_head", "contact_head", "pooler"))


def attach_activation_quantizers(
    model: nn.Module, bits: int, method: str, sites, layers=None
) -> list[ActivationQuantizer]:
    """Attach activation quantizers at ``sites`` of the encoder layers ``layers`` of an ESM-2 model, in place.

    Args:
        model: an ``EsmModel`` / ``EsmForMaskedLM`` or bitesm model (fp or ternary).
        bits, method: see :class:`ActivationQuantizer`.
        sites: names from :data:`SITES`.
        layers: encoder layer indices to quantize (``None``: all; negative indices count from the end). The final
            ``emb_layer_norm_after`` counts as part of the last layer.

    Returns:
        the quantizers attached, in module order.

    Raises:
        ValueError: unknown site names or layer indices out of range.
    """
    unknown = sorted(set(sites) - set(SITES))
    if unknown:
        raise ValueError(f"unknown PTQ site(s) {unknown}; choose from {SITES}")
    n_layers = model.config.num_hidden_layers
    chosen = None
    if layers is not None:
        bad = [i for i in layers if not -n_layers <= i < n_layers]
        if bad:
            raise ValueError(f"PTQ layers {bad} out of range for a {n_layers}-layer model")
        chosen = {i % n_layers for i in layers}

    def selected(name: str) -> bool:
        if not _in_encoder(name):
            return False
        index = _layer_index(name)
        if index is None:  # encoder.emb_layer_norm_after
            index = n_layers - 1
        return chosen is None or index in chosen

    attached = []
    for name, module in list(model.named_modules()):
        if not selected(name):
            continue
        if isinstance(module, nn.LayerNorm):
            if "layernorm_input" in sites:
                module.input_quantizer = ActivationQuantizer(bits, method, "layernorm_input")
                module.register_forward_pre_hook(_quantize_input_hook)
                attached.append(module.input_quantizer)
            if "layernorm_output" in sites:
                module.output_quantizer = ActivationQuantizer(bits, method, "layernorm_output")
                module.register_forward_hook(_quantize_output_hook)
                attached.append(module.output_quantizer)
        elif isinstance(module, nn.Linear) and "ffn_input" in sites:
            module.input_quantizer = ActivationQuantizer(bits, method, "ffn_input")
            module.register_forward_pre_hook(_quantize_input_hook)
            attached.append(module.input_quantizer)
        elif type(module).__name__ == "EsmSelfAttention":
            if "softmax_input" in sites:
                module.softmax_input_quantizer = ActivationQuantizer(bits, method, "softmax_input")
                attached.append(module.softmax_input_quantizer)
            if "softmax_output" in sites:
                module.softmax_output_quantizer = ActivationQuantizer(bits, method, "softmax_output")
                attached.append(module.softmax_output_quantizer)
    return attached


def activation_quantizers(model: nn.Module) -> dict[str, ActivationQuantizer]:
    """All :class:`ActivationQuantizer` modules of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ActivationQuantizer)}


__all__ = ["SITES", "METHODS", "ActivationQuantizer", "attach_activation_quantizers", "activation_quantizers"]
