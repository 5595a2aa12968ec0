"""Post-training quantization (PTQ4Protein) of ESM-2 models.

``sites`` (activation quantizers at LayerNorm, softmax and Linear inputs), ``attention`` (the softmax sites),
``calibration`` (calibration sets sampled by sequence length), ``convert`` (weights, calibration, the quantized
model), ``memory`` (Table III), ``analysis`` (``bitesm ptq analyze``) and ``cli`` (``bitesm ptq``).
"""

from .sites import METHODS, SITES, ActivationQuantizer, activation_quantizers, attach_activation_quantizers

__all__ = ["METHODS", "SITES", "ActivationQuantizer", "activation_quantizers", "attach_activation_quantizers"]
