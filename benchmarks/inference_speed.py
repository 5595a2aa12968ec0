"""Inference speed and memory of ESM-2-shaped models: transformers fp32 / bf16, NF4, int8, bitesm ternary, in one table.

One run on one machine prints (and with ``--output`` writes as JSON):

1. **GEMM peaks**: the machine's measured rate (GOP/s) of an fp32, a bf16 and an int8 matrix multiply on the FFN
   shapes of the chosen models (``M`` = 4,096 tokens, ``K x N`` = ``h x ffn`` and ``ffn x h``). int8 on CPU is
   oneDNN's ``torch.ops.onednn.qlinear_pointwise`` (uint8 activations with zero point 128 times int8 weights
   prepacked by ``qlinear_prepack``, fp32 output: PyTorch's x86 int8 inference kernel) and ``torch._int_mm``
   (reported too; on AVX2 CPUs it is a slow reference loop); on CUDA ``torch._int_mm`` (int8 tensor cores). Each
   kind's peak is its best shape.
2. **Forward throughput**: tokens/s of one ``torch.inference_mode()`` forward (``EsmForMaskedLM`` outputs: logits for
   every token) of an ESM-2 8M- and 35M-shaped model (``data/esm2_hf_configs``, random weights) at batch 8 x 512
   and batch 1 x 1,024 tokens, for these rows (``--rows``):

   * ``fp32``: transformers ``EsmForMaskedLM``, sdpa attention, float32;
   * ``bf16``: the same under ``torch.autocast(device, dtype=torch.bfloat16)`` (emulated on CPUs without
     AVX512-BF16/AMX, hence slow);
   * ``nf4``: bitsandbytes NF4 (``bitesm.lora.nf4.bnb_config``: ``BitsAndBytesConfig(load_in_4bit=True,
     bnb_4bit_quant_type="nf4")``, double quantization, encoder Linear layers only), loaded by ``from_pretrained`` from
     a saved random fp32 checkpoint; compute dtype float32 on CPU (CPU repacking off, as bitesm does) and bfloat16
     on CUDA;
   * ``torchao-int8``: torchao ``quantize_(model.esm.encoder, Int8DynamicActivationInt8WeightConfig())`` (W8A8,
     per-token dynamic activations; eager, no ``torch.compile``: on CPU its matmul is ``torch._int_mm``, which
     torchao leaves for Inductor to fuse into oneDNN kernels);
   * ``torch-int8``: PyTorch's own dynamic int8 quantization, ``torch.ao.quantization.quantize_dynamic`` of the
     encoder Linear layers (fbgemm/x86 kernels; CPU only), the long-standing CPU reference for int8 inference;
   * ``ternary``: bitesm ``BitEsmForMaskedLM(quantization="ternary")`` (BitNet b1.58: ternary weights and int8
     activations; what trains): fp32 latent weights, and without gradients the integer GEMM on ternary codes
     it caches;
   * ``packed``: the same converted by ``bitesm.models.packed.to_packed`` (2-bit packed ternary weights, int8
     activations, integer GEMM);
   * ``free-linear``: not a model but the bound on all of them: the ``fp32`` model with every encoder Linear
     replaced by a layer that only allocates its zero output. Its speed-up over ``fp32`` is the most any
     quantization of the encoder Linear layers can give at this shape on this machine (attention, LayerNorm,
     GELU, rotary embeddings and the LM head are unchanged in every row).

   The encoder Linear layers (query, key, value, attention output, FFN in/out) are the quantized ones in every row;
   embeddings, LayerNorms, attention (sdpa) and the LM head stay in floating point. Columns: tokens/s, the median
   seconds per forward over ``n`` timed forwards, the model's effective GOP/s, the fraction of the relevant GEMM
   peak that is, the model's weight bytes (its state dict), and peak memory (model plus forward).

   Effective GOP/s counts, per token and per layer, ``2 (4 h^2 + 2 h ffn)`` for the encoder Linear layers plus
   ``4 T h`` for attention (``QK^T`` and ``PV`` over ``T`` tokens), times tokens/s; the LM head and the elementwise
   work are not counted. The relevant peak: fp32 for ``fp32`` (and ``free-linear``), bf16 for ``bf16``, the NF4
   compute dtype for ``nf4``, int8 for ``torchao-int8``, ``torch-int8``, ``ternary`` and ``packed``.
3. **QAT training step**: seconds per step (forward + backward + AdamW step, MLM loss on random tokens with 15% of
   the positions replaced by ``<mask>`` and scored) of a ternary ``BitEsmForMaskedLM`` and of the same model with
   ``quantization=None``, fp32 and bf16 autocast, batch 8 x 512, 8M shape (``--train-shapes``), and their ratio.
   Both models of a pair share one process and their timed steps alternate (``measure_train``), so the ratio
   is not at the mercy of the machine's drift between processes. On an x86 CPU the ternary step multiplies the
   forward codes on oneDNN's int8 GEMM (``bitesm.nn.int8_linear.training_codes_kernel``).

Method: every cell (one model, one row, one batch shape) runs in a fresh subprocess (``--in-process`` runs them in
this process instead, for smoke tests) so its peak memory is its own. In the cell: one forward (or step) of a tiny
model of the same row, which loads the code it runs; the memory baseline; build the model, one warm-up forward (or
step) at 64 tokens, then one forward at the full shape (untimed, the peak-memory measurement), then the
median of ``--repeats`` timed forwards; a cell whose full-shape forward took over ``--slow-seconds`` (bf16 on AVX2
CPUs, torchao on CPU) is timed ``--slow-repeats`` times instead. Peak memory on CPU: the process's peak RSS during
the full-shape forward (``VmHWM``, reset through ``/proc/self/clear_refs`` just before it) minus its RSS before the
model was built, so model, caches and activations count, the interpreter and libraries do not (the JSON also has
``resident_mib``, the memory held after the warm-up forward); on CUDA
``torch.cuda.max_memory_allocated`` beyond the memory allocated before the model was built. Threads: torch's
default. Memory allocator: each cell sets glibc's ``M_MMAP_THRESHOLD`` to 32 MiB and ``M_TRIM_THRESHOLD`` to 1 GiB
(``bitesm.runtime.steady_malloc``, as the ``bitesm`` command does), so a forward reuses the memory the previous one freed instead of page-faulting it back in (the
default made the first model of a process up to 1.8x slower, unevenly across rows). A row that fails prints its error
in the table and the run goes on.

Usage::

    python benchmarks/inference_speed.py                                 # CPU, 8M and 35M, all rows
    python benchmarks/inference_speed.py --shapes 8M --repeats 3 --output speed.json
    python benchmarks/inference_speed.py --device cuda --rows fp32,bf16,nf4,torchao-int8,ternary,packed
    python benchmarks/inference_speed.py --tiny                          # seconds: hidden 32, 2 layers, 1 x 16
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "8M": REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D",
    "35M": REPO / "data" / "esm2_hf_configs" / "esm2_t12_35M_UR50D",
}
#: ``--tiny``: the 8M config shrunk to seconds (smoke tests).
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}

#: row -> (label, GEMM kind of its peak; "compute" = the NF4 compute dtype of the device).
ROWS = {
    "fp32": ("transformers fp32 (sdpa)", "fp32"),
    "bf16": ("transformers bf16 autocast", "bf16"),
    "nf4": ("bitsandbytes NF4", "compute"),
    "torchao-int8": ("torchao int8 dynamic (W8A8)", "int8"),
    "torch-int8": ("torch.ao dynamic int8 (W8A8)", "int8"),
    "ternary": ("bitesm ternary, latent fp32 weights", "int8"),
    "packed": ("bitesm ternary 2-bit packed", "int8"),
    "free-linear": ("bound: fp32 with the encoder Linears free", "fp32"),
}
DEFAULT_ROWS = ("fp32", "bf16", "nf4", "torchao-int8", "torch-int8", "ternary", "packed", "free-linear")
TINY_ROWS = ("fp32", "ternary", "free-linear")
MARK = "@@inference_speed "
WARMUP_TOKENS = 64
MASK_ID, CLS_ID, EOS_ID = 32, 0, 2


class NotAvailable(RuntimeError):
    """A row whose implementation is not installed / importable here (printed as "not available")."""


# -- measurement helpers (run in the cell's process) ------------------------------------------------------------


def _status_mib(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


def _maxrss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _trim() -> None:
    """Collect garbage and give freed heap pages back to the OS (glibc), so RSS is what is live."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Memory:
    """Peak memory of one phase beyond a baseline taken before the model was built (module docstring)."""

    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")
        _trim()
        if self.cuda:
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            self.base = _status_mib("VmRSS") or _maxrss_mib()

    def start(self) -> None:
        _trim()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            self.reset = False  # ru_maxrss cannot be reset: the peak is then at least the build's peak

    def current_mib(self) -> float:
        """Memory held now beyond the baseline (after a garbage collection)."""
        _trim()
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**20 - self.base
        return (_status_mib("VmRSS") or _maxrss_mib()) - self.base

    def peak_mib(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() / 2**20 - self.base
        hwm = _status_mib("VmHWM") if self.reset else None
        return (hwm if hwm is not None else _maxrss_mib()) - self.base


def _tensor_bytes(obj, seen: set) -> int:
    """Bytes of the tensors in a state-dict value (plain, quantized, tensor subclasses, tuples of them)."""
    import torch

    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(o, seen) for o in obj)
    if not isinstance(obj, torch.Tensor):
        return 0
    if type(obj) not in (torch.Tensor, torch.nn.Parameter) and hasattr(obj, "__tensor_flatten__"):
        names, _ = obj.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(obj, n), seen) for n in names)
    key = (obj.data_ptr(), obj.numel(), obj.dtype)
    if key in seen:
        return 0
    seen.add(key)
    return obj.numel() * obj.element_size()


def _weights_mib(model) -> float | None:
    """MiB of the model's state dict (what a checkpoint holds: packed / quantized weights at their size)."""
    try:
        seen: set = set()
        return sum(_tensor_bytes(v, seen) for v in model.state_dict().values()) / 2**20
    except Exception:  # noqa: BLE001 - a quantized format whose state dict is not plain tensors
        return None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, slow_seconds: float, slow_repeats: int, memory: _Memory | None = None):
    """Run ``fn`` once (the peak-memory run when ``memory`` is given), then time it; returns a result dict."""
    if memory is not None:
        memory.start()
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    peak = memory.peak_mib() if memory is not None else None
    n = repeats if first <= slow_seconds else min(repeats, slow_repeats)
    times = []
    for _ in range(max(n, 1)):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "n": len(times), "first_seconds": first, "peak_mib": peak}


def _esm_config(shape: str):
    from transformers import EsmConfig

    if shape == "tiny":
        return EsmConfig.from_dict({**EsmConfig.from_pretrained(CONFIGS["8M"]).to_dict(), **TINY})
    return EsmConfig.from_pretrained(CONFIGS[shape])


def _tokens(batch: int, length: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 24, (batch, length), generator=g)
    ids[:, 0], ids[:, -1] = CLS_ID, EOS_ID
    return ids.to(device)


def _encoder_linears(model) -> list[str]:
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}"]


def _save_checkpoint(shape: str, path: str) -> dict:
    """A random fp32 ``EsmForMaskedLM`` of ``shape`` saved to ``path`` (the NF4 row loads it)."""
    import torch
    from transformers import EsmForMaskedLM

    torch.manual_seed(0)
    EsmForMaskedLM._from_config(_esm_config(shape), attn_implementation="sdpa").save_pretrained(path)
    return {"path": path}


def _FreeLinear(out_features: int):
    """Stand-in for an encoder Linear that costs only its zero output (the ``free-linear`` bound row)."""
    import torch

    class FreeLinear(torch.nn.Module):
        def forward(self, x):
            return x.new_zeros(*x.shape[:-1], out_features)

    return FreeLinear()


def _build(row: str, shape: str, device: str, checkpoint: str | None):
    """The model of ``row`` on ``device`` in eval mode, and the autocast context its forward runs under."""
    import torch
    from transformers import EsmForMaskedLM

    config = _esm_config(shape)
    torch.manual_seed(0)
    autocast = nullcontext()
    if row in ("fp32", "bf16", "torchao-int8", "torch-int8"):
        model = EsmForMaskedLM._from_config(config, attn_implementation="sdpa").eval().to(device)
        if row == "bf16":
            autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        elif row == "torchao-int8":
            try:
                from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
            except ImportError as e:
                raise NotAvailable(f"torchao: {e}") from e
            quantize_(model.esm.encoder, Int8DynamicActivationInt8WeightConfig())
        elif row == "torch-int8":
            if torch.device(device).type != "cpu":
                raise NotAvailable("CPU only (fbgemm/x86 kernels)")
            from torch.ao.quantization import quantize_dynamic

            n_before = len(_encoder_linears(model))
            quantize_dynamic(model.esm.encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
            if len(_encoder_linears(model)) == n_before:
                raise RuntimeError("quantize_dynamic converted no Linear layer")
    elif row == "nf4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise NotAvailable(f"bitsandbytes: {e}") from e
        from bitesm.lora.nf4 import bnb_config, disable_cpu_weight_repacking

        compute = "float32" if torch.device(device).type == "cpu" else "bfloat16"
        model = EsmForMaskedLM.from_pretrained(
            checkpoint, quantization_config=bnb_config("nf4", double_quant=True, compute_dtype=compute),
            dtype=torch.float32, device_map={"": device}, attn_implementation="sdpa",
        ).eval()
        if disable_cpu_weight_repacking(model) == 0:
            raise RuntimeError("no bitsandbytes Linear4bit layer after loading")
    elif row == "free-linear":
        model = EsmForMaskedLM._from_config(config, attn_implementation="sdpa").eval().to(device)
        for name in _encoder_linears(model):
            parent, _, child = name.rpartition(".")
            linear = model.get_submodule(name)
            setattr(model.get_submodule(parent), child, _FreeLinear(linear.out_features))
    elif row in ("ternary", "packed"):
        from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

        model = BitEsmForMaskedLM(bitesm_config_from_esm(config, quantization="ternary")).eval().to(device)
        if row == "packed":
            try:
                from bitesm.models.packed import to_packed
            except ImportError as e:
                raise NotAvailable(f"bitesm.models.packed: {e}") from e
            model = to_packed(model)
    else:
        raise ValueError(f"unknown row {row!r}; use one of {sorted(ROWS)}")
    return model, autocast


def measure_forward(spec: dict) -> dict:
    """One forward cell: ``spec`` has row, shape, batch, length, device, repeats, slow_seconds, slow_repeats and
    checkpoint (NF4)."""
    import torch

    device, row = spec["device"], spec["row"]

    def forward(model, autocast, x):
        with torch.inference_mode(), autocast:
            model(input_ids=x)

    # Load the code this row runs (modules, kernels, library pages) on a tiny model first, so the memory baseline
    # below already holds it and the peak counts only what the real model needs.
    with tempfile.TemporaryDirectory(prefix="bitesm-speed-prewarm-") as tmp:
        if row == "nf4":
            _save_checkpoint("tiny", tmp)
        forward(*_build(row, "tiny", device, tmp), _tokens(1, 16, device, seed=2))
    memory = _Memory(device)
    model, autocast = _build(row, spec["shape"], device, spec.get("checkpoint"))
    weights = _weights_mib(model)
    forward(model, autocast, _tokens(1, min(WARMUP_TOKENS, spec["length"]), device, seed=1))
    resident = memory.current_mib()
    ids = _tokens(spec["batch"], spec["length"], device)
    result = _timed(lambda: forward(model, autocast, ids), device, spec["repeats"], spec["slow_seconds"],
                    spec["slow_repeats"], memory)
    return {**result, "weights_mib": weights, "resident_mib": resident, "threads": torch.get_num_threads()}


def measure_train(spec: dict) -> dict:
    """One training-step cell: the fp and the ternary model of one shape and precision in one process, timed in
    alternation so that a slower or faster spell of the machine hits both alike (their ratio is the result; on a
    shared 2-core machine separate processes minutes apart differ by 10-20%). ``spec`` has shape, precision (fp32 /
    bf16), batch, length, device, repeats, slow_seconds, slow_repeats. Returns ``{"fp": {...}, "ternary": {...}}``
    with seconds (median), n, first_seconds and peak_mib each."""
    import torch

    from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

    device = spec["device"]
    autocast = ((lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16))
                if spec["precision"] == "bf16" else nullcontext)

    def build(shape, quantization):
        torch.manual_seed(0)
        model = BitEsmForMaskedLM(bitesm_config_from_esm(_esm_config(shape),
                                                         quantization=quantization)).train().to(device)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4)

    def batch(n, length, seed):
        ids = _tokens(n, length, device, seed)
        g = torch.Generator().manual_seed(seed + 100)
        picked = (torch.rand(ids.shape, generator=g) < 0.15).to(device)
        picked[:, 0] = picked[:, -1] = False
        picked[:, 1] |= ~picked.any(dim=1)  # at least one scored position per sequence
        labels = torch.where(picked, ids, torch.full_like(ids, -100))
        return ids.masked_fill(picked, MASK_ID), labels

    def step(model, optimizer, inputs):
        ids, labels = inputs
        with autocast():
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return loss

    for quantization in ("ternary", None):
        step(*build("tiny", quantization), batch(1, 16, 2))  # load the code first (see measure_forward)
    full = batch(spec["batch"], spec["length"], 0)
    models, results = {}, {}
    for name, quantization in (("fp", None), ("ternary", "ternary")):
        memory = _Memory(device)  # baseline: everything built before this model
        models[name] = build(spec["shape"], quantization)
        step(*models[name], batch(1, min(WARMUP_TOKENS, spec["length"]), 1))
        memory.start()
        start = time.perf_counter()
        step(*models[name], full)
        results[name] = {"first_seconds": time.perf_counter() - start, "peak_mib": memory.peak_mib(), "times": []}
    slow = max(r["first_seconds"] for r in results.values()) > spec["slow_seconds"]
    for _ in range(max(min(spec["repeats"], spec["slow_repeats"]) if slow else spec["repeats"], 1)):
        for name in ("fp", "ternary"):
            start = time.perf_counter()
            step(*models[name], full)
            results[name]["times"].append(time.perf_counter() - start)
    for r in results.values():
        times = r.pop("times")
        r.update(seconds=statistics.median(times), n=len(times), threads=torch.get_num_threads())
    return results


def measure_gemm(spec: dict) -> dict:
    """GEMM rates (GOP/s) on ``spec["shapes"]`` ``[(M, K, N), ...]``: fp32, bf16 and int8 (module docstring)."""
    import torch
    import torch.nn.functional as F

    device, cpu = spec["device"], torch.device(spec["device"]).type == "cpu"
    results = []

    def run(backend, kind, shape, fn):
        m, k, n = shape
        try:
            r = _timed(fn, device, spec["repeats"], spec["slow_seconds"], spec["slow_repeats"])
            results.append({"backend": backend, "kind": kind, "M": m, "K": k, "N": n, "seconds": r["seconds"],
                            "n": r["n"], "gops": 2 * m * k * n / r["seconds"] / 1e9})
        except Exception as e:  # noqa: BLE001 - report the backend as failed, keep the others
            results.append({"backend": backend, "kind": kind, "M": m, "K": k, "N": n, "error": _short(e)})

    for m, k, n in spec["shapes"]:
        shape = (m, k, n)
        x = torch.randn(m, k, device=device)
        w = torch.randn(n, k, device=device) / k**0.5
        run("fp32 F.linear", "fp32", shape, lambda: F.linear(x, w))
        xb, wb = x.bfloat16(), w.bfloat16()
        run("bf16 F.linear", "bf16", shape, lambda: F.linear(xb, wb))
        xi = torch.randint(-127, 128, (m, k), dtype=torch.int8, device=device)
        wt = torch.randint(-1, 2, (n, k), dtype=torch.int8, device=device)
        if cpu:
            try:
                packed = torch.ops.onednn.qlinear_prepack(wt, None)
                xu = (xi.to(torch.int16) + 128).to(torch.uint8)
                ones, zeros = torch.ones(n), torch.zeros(n, dtype=torch.int64)
                run("int8 onednn qlinear_pointwise", "int8", shape, lambda: torch.ops.onednn.qlinear_pointwise(
                    xu, 1.0, 128, packed, ones, zeros, None, 1.0, 0, torch.float32, "none", [None], ""))
            except Exception as e:  # noqa: BLE001
                results.append({"backend": "int8 onednn qlinear_pointwise", "kind": "int8", "M": m, "K": k, "N": n,
                                "error": _short(e)})
        wk = wt.t().contiguous()
        run("int8 torch._int_mm", "int8", shape, lambda: torch._int_mm(xi, wk))
    peaks = {}
    for r in results:
        if "gops" in r and r["gops"] > peaks.get(r["kind"], {}).get("gops", 0):
            peaks[r["kind"]] = {"gops": r["gops"], "backend": r["backend"], "shape": [r["M"], r["K"], r["N"]]}
    return {"gemms": results, "peaks": peaks, "threads": torch.get_num_threads()}


TASKS = {"forward": measure_forward, "train": measure_train, "gemm": measure_gemm, "save": None}


def _short(e: BaseException, limit: int = 160) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    text = " ".join(line.strip() for line in text[:3])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_spec(spec: dict) -> dict:
    """Measure one cell in this process; errors come back as ``{"error": ...}`` (``"not available"`` for rows whose
    implementation is missing)."""
    from bitesm.runtime import steady_malloc  # the allocator settings of the bitesm command (module docstring)

    steady = steady_malloc()
    try:
        if spec["task"] == "save":
            return _save_checkpoint(spec["shape"], spec["path"])
        return {**TASKS[spec["task"]](spec), "steady_malloc": steady}
    except NotAvailable as e:
        return {"error": f"not available ({e})", "not_available": True}
    except Exception as e:  # noqa: BLE001 - the table shows the error, the run continues
        traceback.print_exc(file=sys.stderr)
        return {"error": _short(e)}


def run_cell(spec: dict, in_process: bool, timeout: float) -> dict:
    """Measure one cell, in a fresh subprocess unless ``in_process``."""
    if in_process:
        return run_spec(spec)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
    return {"error": f"exit code {proc.returncode}: {tail[0][:160]}"}


# -- the parent: cells, tables, JSON -------------------------------------------------------------------------------


def ops_per_token(shape: str, length: int) -> float:
    """Encoder Linear plus attention operations per token (module docstring): ``L (2 (4 h^2 + 2 h ffn) + 4 T h)``."""
    c = _esm_config(shape)
    h, ffn, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    return layers * (2 * (4 * h * h + 2 * h * ffn) + 4 * length * h)


def _parse_batches(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        b, _, t = item.strip().lower().partition("x")
        out.append((int(b), int(t)))
    return out


def _names(text: str, allowed, what: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; use some of {list(allowed)}")
    return names


def _machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


def _versions() -> dict:
    out = {}
    for pkg in ("torch", "transformers", "bitsandbytes", "torchao"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _fmt(value, spec: str = ".0f") -> str:
    return "" if value is None else format(value, spec)


def _num(value: float) -> str:
    """Three significant figures, without exponent or trailing noise for large values."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _cell_text(text: str) -> str:
    return text.replace("|", "/")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=None, help="comma list of 8M, 35M (default both; 'tiny' with --tiny)")
    parser.add_argument("--rows", default=None, help=f"comma list of {','.join(ROWS)} (default: all)")
    parser.add_argument("--batches", default=None, help="comma list of BATCHxLENGTH (default 8x512,1x1024)")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per cell, median (default 5)")
    parser.add_argument("--slow-seconds", type=float, default=20.0,
                        help="a cell whose full-shape run takes longer is timed --slow-repeats times (default 20)")
    parser.add_argument("--slow-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--gemm", default="on", choices=("on", "off"), help="measure the GEMM peaks (default on)")
    parser.add_argument("--gemm-m", type=int, default=None, help="GEMM rows M (default 4096; 16 with --tiny)")
    parser.add_argument("--train-shapes", default=None, help="shapes of the training-step table (default 8M; none)")
    parser.add_argument("--train-precisions", default="fp32,bf16", help="comma list of fp32, bf16 (or none)")
    parser.add_argument("--train-batch", default=None, help="BATCHxLENGTH of the training step (default 8x512)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke test: hidden 32, 2 layers, batch 1x16, 1 repeat, rows fp32,ternary,free-linear, "
                             "in-process")
    parser.add_argument("--in-process", action="store_true",
                        help="measure every cell in this process (no clean peak memory; for smoke tests)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per cell subprocess")
    parser.add_argument("--output", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(MARK + json.dumps(run_spec(json.loads(args.child))), flush=True)
        return 0

    tiny = args.tiny
    shapes = _names(args.shapes or ("tiny" if tiny else "8M,35M"), ("tiny", *CONFIGS), "shapes")
    rows = _names(args.rows or ",".join(TINY_ROWS if tiny else DEFAULT_ROWS), ROWS, "rows")
    batches = _parse_batches(args.batches or ("1x16" if tiny else "8x512,1x1024"))
    repeats = args.repeats or (1 if tiny else 5)
    train_shapes = _names(args.train_shapes or ("tiny" if tiny else "8M"), ("tiny", *CONFIGS), "train shapes")
    train_precisions = _names(args.train_precisions, ("fp32", "bf16"), "train precisions")
    train_batch = _parse_batches(args.train_batch or ("1x16" if tiny else "8x512"))[0]
    in_process = args.in_process or tiny
    device = args.device
    common = {"device": device, "repeats": repeats, "slow_seconds": args.slow_seconds,
              "slow_repeats": args.slow_repeats}

    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")

    def cell(spec: dict, what: str) -> dict:
        start = time.perf_counter()
        result = run_cell({**common, **spec}, in_process, args.timeout)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k != "gemms"}
        print(f"# {what}: {shown} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        return result

    report = {"device": device, "machine": _machine(device), "versions": _versions(), "repeats": repeats,
              "in_process": in_process, "gemm": None, "forward": [], "train": []}

    # 1. GEMM peaks on the FFN shapes of the chosen models
    peaks: dict = {}
    if args.gemm == "on":
        m = args.gemm_m or (16 if tiny else 4096)
        gemm_shapes = []
        for shape in shapes:
            c = _esm_config(shape)
            for k, n in ((c.hidden_size, c.intermediate_size), (c.intermediate_size, c.hidden_size)):
                if [m, k, n] not in gemm_shapes:
                    gemm_shapes.append([m, k, n])
        report["gemm"] = cell({"task": "gemm", "shapes": gemm_shapes}, "gemm")
        peaks = report["gemm"].get("peaks", {})
    nf4_peak = "fp32" if torch.device(device).type == "cpu" else "bf16"

    # 2. forward throughput
    with tempfile.TemporaryDirectory(prefix="bitesm-inference-speed-") as tmp:
        checkpoints = {}
        for shape in shapes:
            if "nf4" in rows:
                path = str(Path(tmp) / f"esm_{shape}")
                saved = cell({"task": "save", "shape": shape, "path": path}, f"save {shape} checkpoint")
                checkpoints[shape] = None if "error" in saved else path
            for row in rows:
                for b, t in batches:
                    spec = {"task": "forward", "row": row, "shape": shape, "batch": b, "length": t,
                            "checkpoint": checkpoints.get(shape)}
                    if row == "nf4" and checkpoints.get(shape) is None:
                        result = {"error": "the random fp32 checkpoint could not be saved"}
                    else:
                        result = cell(spec, f"{shape} {row} {b}x{t}")
                    entry = {"shape": shape, "row": row, "label": ROWS[row][0], "batch": b, "length": t, **result}
                    if "seconds" in result:
                        entry["tokens_per_s"] = b * t / result["seconds"]
                        entry["gops"] = ops_per_token(shape, t) * entry["tokens_per_s"] / 1e9
                        kind = nf4_peak if ROWS[row][1] == "compute" else ROWS[row][1]
                        entry["peak_kind"] = kind
                        if kind in peaks:
                            entry["fraction_of_peak"] = entry["gops"] / peaks[kind]["gops"]
                    report["forward"].append(entry)

    # 3. QAT training step, ternary against floating point
    tb, tt = train_batch
    for shape in train_shapes:
        for precision in train_precisions:
            spec = {"task": "train", "shape": shape, "precision": precision, "batch": tb, "length": tt}
            pair = cell(spec, f"train {shape} fp and ternary {precision} {tb}x{tt}")
            if "error" in pair:
                pair = {"fp": pair, "ternary": pair}
            entry = {"shape": shape, "precision": precision, "batch": tb, "length": tt,
                     "ternary": pair["ternary"], "fp": pair["fp"]}
            if "seconds" in pair["ternary"] and "seconds" in pair["fp"]:
                entry["ratio"] = pair["ternary"]["seconds"] / pair["fp"]["seconds"]
            report["train"].append(entry)

    print_tables(report)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_tables(report: dict) -> None:
    v = report["versions"]
    steady = [e.get("steady_malloc") for e in report["forward"] if "seconds" in e]
    allocator = ("; glibc malloc steady (bitesm.runtime)" if steady and all(steady) else
                 "; glibc malloc adaptive (timings depend on the process's history)" if steady else "")
    print(f"Inference speed, {report['device']} ({report['machine']}); torch {v['torch']}, transformers "
          f"{v['transformers']}, bitsandbytes {v['bitsandbytes']}, torchao {v['torchao']}; median of "
          f"{report['repeats']} after warm-up{'; in-process (memory not isolated)' if report['in_process'] else ''}"
          f"{allocator}\n")

    gemm = report["gemm"]
    if gemm is not None:
        print("| GEMM | M x K x N | GOP/s | n |")
        print("|---|---|---:|---:|")
        if "error" in gemm:
            print(f"| failed: {_cell_text(gemm['error'])} | | | |")
        for g in gemm.get("gemms", []):
            shape = f"{g['M']} x {g['K']} x {g['N']}"
            if "error" in g:
                print(f"| {g['backend']} | {shape} | failed: {_cell_text(g['error'])} | |")
            else:
                print(f"| {g['backend']} | {shape} | {_num(g['gops'])} | {g['n']} |")
        peaks = gemm.get("peaks", {})
        shown = [f"{k} {_num(p['gops'])} GOP/s ({p['backend']}, {' x '.join(map(str, p['shape']))})"
                 for k, p in peaks.items()]
        print("\nPeaks: " + ", ".join(shown) + "\n")

    if report["forward"]:
        print("| model | row | batch x tokens | tokens/s | s/forward | n | GOP/s | of peak | weights MiB | peak MiB |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for e in report["forward"]:
            head = f"| {e['shape']} | {e['label']} | {e['batch']} x {e['length']} |"
            if "error" in e:
                print(f"{head} {_cell_text(e['error'])} | | | | | | |")
                continue
            frac = (f"{e['fraction_of_peak']:.2f} {e['peak_kind']}" if "fraction_of_peak" in e else "")
            print(f"{head} {_num(e['tokens_per_s'])} | {e['seconds']:.3g} | {e['n']} | {_num(e['gops'])} | {frac} | "
                  f"{_fmt(e.get('weights_mib'), '.1f')} | {_fmt(e.get('peak_mib'))} |")
        print("\nGOP/s: encoder Linear + attention operations per token (L (2 (4 h^2 + 2 h ffn) + 4 T h)) x tokens/s; "
              "of peak: that over the GEMM peak of the row's compute kind. weights: state dict; peak: model + forward "
              "(RSS on CPU, allocated on CUDA) beyond the process before the model was built.\n")

    if report["train"]:
        print("| model | precision | batch x tokens | fp s/step | ternary s/step | ternary/fp | fp tokens/s | "
              "ternary tokens/s | fp peak MiB | ternary peak MiB |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for e in report["train"]:
            fp, tq = e["fp"], e["ternary"]
            tokens = e["batch"] * e["length"]

            def secs(r):
                return _cell_text(r["error"]) if "error" in r else f"{r['seconds']:.3f} (n={r['n']})"

            def tps(r):
                return f"{tokens / r['seconds']:.0f}" if "seconds" in r else ""

            print(f"| {e['shape']} | {e['precision']} | {e['batch']} x {e['length']} | {secs(fp)} | {secs(tq)} | "
                  f"{_fmt(e.get('ratio'), '.2f')} | {tps(fp)} | {tps(tq)} | {_fmt(fp.get('peak_mib'))} | "
                  f"{_fmt(tq.get('peak_mib'))} |")
        print("\nTraining step: forward + backward + AdamW step, MLM loss (15% of positions masked and scored); "
              "ternary = BitEsmForMaskedLM(quantization='ternary'), fp = quantization=None; peak: model + optimizer "
              "state + step.")


if __name__ == "__main__":
    raise SystemExit(main())
