"""Long ESM-2 benchmark: sliding-window attention against transformers' sdpa global attention, batch 1.

For each length, an 8M-shaped ESM-2 (``data/esm2_hf_configs/esm2_t6_8M_UR50D``, random weights, fp32) runs one
forward pass (no grad) with transformers' ``EsmForMaskedLM`` (``attn_implementation="sdpa"``, global) and with the
bitesm long model (``attention_window=1024``, :mod:`bitesm.nn.sliding_window_attention`). Each (model, length) runs in
a fresh subprocess so peak memory is its own: on CPU the growth of the process's peak RSS over its state after a
warm-up forward at 64 tokens (``ru_maxrss``), on CUDA ``torch.cuda.max_memory_allocated`` beyond the weights.
Time is the median of ``--repeats`` forwards after one warm-up forward at that length.

Usage::

    python benchmarks/long_attention.py                       # CPU, lengths 1024 2048 4096 8192
    python benchmarks/long_attention.py --device cuda --lengths 2048 8192 16384

Prints a markdown table: time (s), peak memory (MiB), long/sdpa ratios, and the growth of the long model's time
from the first to the last length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"


def _measure(kind: str, length: int, window: int, device: str, repeats: int) -> dict:
    import torch
    from transformers import EsmConfig, EsmForMaskedLM

    from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

    torch.manual_seed(0)
    config = EsmConfig.from_pretrained(CONFIG)
    if kind == "sdpa":
        model = EsmForMaskedLM._from_config(config, attn_implementation="sdpa")
    else:
        model = BitEsmForMaskedLM(bitesm_config_from_esm(config, quantization=None, attention_window=window))
    model = model.eval().to(device)

    def forward(n: int) -> None:
        ids = torch.randint(4, 24, (1, n), device=device)
        with torch.no_grad():
            model(input_ids=ids)
        if device == "cuda":
            torch.cuda.synchronize()

    forward(64)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    forward(length)  # warm-up at this length (and the peak-memory measurement)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(length)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mib": peak / 2**20}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child[0], int(args.child[1]), args.window, args.device, args.repeats)))
        return 0

    rows = {}
    for length in args.lengths:
        for kind in ("sdpa", "long"):
            cmd = [sys.executable, __file__, "--child", kind, str(length), "--window", str(args.window),
                   "--device", args.device, "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
            rows[kind, length] = json.loads(out.strip().splitlines()[-1])
            print(f"# {kind} {length}: {rows[kind, length]}", file=sys.stderr, flush=True)

    print(f"Sliding window {args.window} vs sdpa global attention, ESM-2 8M shape, batch 1, {args.device}\n")
    print("| length | sdpa s | long s | time ratio | sdpa peak MiB | long peak MiB | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        s, w = rows["sdpa", length], rows["long", length]
        print(f"| {length} | {s['seconds']:.3f} | {w['seconds']:.3f} | {w['seconds'] / s['seconds']:.2f} | "
              f"{s['peak_mib']:.0f} | {w['peak_mib']:.0f} | {w['peak_mib'] / max(s['peak_mib'], 1e-9):.2f} |")
    last = args.lengths[-1]
    print()
    for first in args.lengths[:-1]:
        growth = rows["long", last]["seconds"] / rows["long", first]["seconds"]
        print(f"long-model time growth {first} -> {last} tokens: {growth:.2f}x (length ratio {last / first:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
