"""CPU inference throughput of ESM-2 shapes: transformers, esm.cpp and bitesm (issue 15 baseline).

Prints one markdown table: real tokens/s (median of --repeats after a warm-up), padding ratio, peak RSS (each row in
its own subprocess) and the speed ratio to transformers fp32 of the same shape and workload.

    python benchmarks/cpu_inference.py --shapes 8M --workloads batch,proteins
    python benchmarks/cpu_inference.py --smoke --rows hf-fp32,packed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"8M": REPO / "data/esm2_hf_configs/esm2_t6_8M_UR50D", "35M": REPO / "data/esm2_hf_configs/esm2_t12_35M_UR50D"}
FASTA = REPO / "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"
ROWS = {
    "hf-fp32": "transformers EsmForMaskedLM fp32",
    "hf-bf16": "transformers bf16 autocast",
    "esmcpp-fp32": "esm.cpp fp32",
    "esmcpp-int8": "esm.cpp int8",
    "packed": "bitesm packed ternary",
    "ptq-w8a8": "bitesm PTQ W8A8",
}
MAX_BATCH_TOKENS = 16384
DEFAULT_VENV = Path.home() / ".cache/bitesm/esm-cpp-venv"


def cpu_header(threads: int) -> list[str]:
    import torch

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.processor() or platform.machine()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        wanted = {"AVX2": "avx2", "AVX-512 VNNI": "avx512_vnni", "AVX-512 BF16": "avx512_bf16", "AMX": "amx_tile"}
        flag_text = ", ".join(f"{k} {'yes' if v in flags else 'no'}" for k, v in wanted.items())
    except OSError:
        flag_text = f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}"
    return [f"CPU: {name}", f"Flags: {flag_text}", f"torch {torch.__version__}, {threads} threads"]


# ---------------------------------------------------------------- workloads


def make_batches(workload: str, shape_cfg, num_proteins: int, seed: int = 0):
    """A list of (input_ids, attention_mask) int64 numpy arrays, and the number of real tokens."""
    import numpy as np

    if workload == "batch":
        rng = np.random.default_rng(seed)
        ids = rng.integers(4, 24, size=(8, 512)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        return [(ids, np.ones_like(ids))], ids.size
    from bitesm.data.collator import encode_protein
    from bitesm.data.fasta import iter_fasta
    from bitesm.data.tokenizer import load_tokenizer

    tok = load_tokenizer()
    limit = shape_cfg.max_position_embeddings - 2
    seqs = []
    for _, seq in iter_fasta(FASTA):
        if len(seq) <= limit - 2:
            seqs.append(seq)
        if len(seqs) >= num_proteins:
            break
    encoded = sorted((encode_protein(tok, s) for s in seqs), key=len)
    batches, current = [], []
    for e in encoded:
        if current and (len(current) + 1) * len(e) > MAX_BATCH_TOKENS:
            batches.append(current)
            current = []
        current.append(e)
    if current:
        batches.append(current)
    out = []
    for b in batches:
        width = max(len(e) for e in b)
        ids = np.full((len(b), width), tok.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(b):
            ids[i, : len(e)], mask[i, : len(e)] = e, 1
        out.append((ids, mask))
    return out, sum(len(e) for e in encoded)


def calibration_sequences(n: int = 8) -> list[str]:
    from bitesm.data.fasta import iter_fasta

    seqs = []
    for _, s in iter_fasta(FASTA):  # from the end of the first records' range: not the benchmark set's order matters
        seqs.append(s[:254])
        if len(seqs) >= n:
            break
    return seqs


# ---------------------------------------------------------------- models


def load_config(shape: str):
    from transformers import EsmConfig

    if shape == "smoke":
        return EsmConfig(vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=1026, position_embedding_type="rotary",
                         pad_token_id=1, mask_token_id=32, token_dropout=True, emb_layer_norm_before=False)
    return EsmConfig.from_pretrained(CONFIGS[shape])


def fp_model(shape: str, seed: int = 0):
    import torch
    from transformers import EsmForMaskedLM

    torch.manual_seed(seed)
    return EsmForMaskedLM(load_config(shape)).eval()


def build_torch_row(row: str, shape: str):
    """A callable (ids, mask) -> logits for a torch row."""
    import torch

    model = fp_model(shape)
    if row == "hf-fp32":
        return lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits
    if row == "hf-bf16":
        def run(ids, mask):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(input_ids=ids, attention_mask=mask).logits
        return run
    from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

    if row == "packed":
        from bitesm.models.packed import to_packed

        tern = BitEsmForMaskedLM(bitesm_config_from_esm(model.config, quantization="ternary")).eval()
        tern.load_state_dict(model.state_dict())  # strict: same weights as the transformers rows
        packed = to_packed(tern).eval()
        return lambda ids, mask: packed(input_ids=ids, attention_mask=mask).logits
    if row == "ptq-w8a8":
        from bitesm.data.tokenizer import load_tokenizer
        from bitesm.ptq.convert import quantize_model

        fp = BitEsmForMaskedLM(bitesm_config_from_esm(model.config, quantization=None)).eval()
        fp.load_state_dict(model.state_dict())  # strict: same weights as the transformers rows
        q = quantize_model(fp, load_tokenizer(), calibration_sequences(), weight_bits=8, act_bits=8).eval()
        return lambda ids, mask: q(input_ids=ids, attention_mask=mask).logits
    raise ValueError(row)


def run_row(args) -> dict:
    """In the row's own subprocess: build, warm up, time. Returns the measurements."""
    import torch

    torch.set_num_threads(args.threads)
    cfg = load_config(args.shape)
    batches, real = make_batches(args.workload, cfg, args.num_proteins)
    padded = sum(ids.size for ids, _ in batches)
    fn = build_torch_row(args.row, args.shape)
    tb = [(torch.from_numpy(i), torch.from_numpy(m)) for i, m in batches]
    times = []
    with torch.inference_mode():
        fn(*tb[0])
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for ids, mask in tb:
                fn(ids, mask)
            times.append(time.perf_counter() - t0)
    return {"tokens_per_s": real / statistics.median(times), "padding": padded / real,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---------------------------------------------------------------- esm.cpp (own virtual environment)


def esmcpp_python(args) -> str:
    if args.esmcpp_python:
        return args.esmcpp_python
    py = DEFAULT_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_VENV)], check=True, capture_output=True)
    probe = subprocess.run([str(py), "-c", "import esm_cpp"], capture_output=True)
    if probe.returncode:
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "esm-cpp==0.2.1", "numpy<2"], capture_output=True,
                           text=True)
        if r.returncode:
            raise RuntimeError("pip install esm-cpp failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:120])
    return str(py)


# ---------------------------------------------------------------- driver


def child_main(argv) -> int:
    args = parse(argv)
    try:
        result = run_row(args)
    except Exception as err:  # noqa: BLE001 - printed as the row
        result = {"error": f"n/a: {type(err).__name__}: {str(err).splitlines()[0][:150] if str(err) else ''}"}
    print("RESULT " + json.dumps(result))
    return 0


ESMCPP_WORKER = r"""
import json, sys, time, statistics
import numpy as np
import esm_cpp, resource
folder, data, row, repeats, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
model = esm_cpp.Model.load_from_safetensors(folder + "/model.safetensors")
# threads: esm.cpp follows OMP_NUM_THREADS (set by the parent)
check = None
z = np.load(data, allow_pickle=True)
if row == "esmcpp-fp32":
    ref = z["check_logits"]
    got = model.forward(z["check_ids"].astype(np.int32))
    check = float(np.abs(np.asarray(got).reshape(ref.shape) - ref).max())
if row == "esmcpp-int8":
    model.quantize_weights()
batches = [[np.ascontiguousarray(a, dtype=np.int32) for a in b] for b in z["batches"]]
model.forward_batch(batches[0])
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    for b in batches:
        model.forward_batch(b)
    times.append(time.perf_counter() - t0)
real = sum(a.size for b in batches for a in b)
print("RESULT " + json.dumps({"tokens_per_s": real / statistics.median(times), "padding": 1.0, "logit_check": check,
                              "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def esmcpp_folder(shape: str, cache: Path) -> Path:
    """The fp model's weights in the layout esm.cpp reads: LayerNorm .weight/.bias, per-layer rotary inv_freq."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = cache / f"esmcpp-{shape}"
    if (folder / "model.safetensors").exists():
        return folder
    model = fp_model(shape)
    model.save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    renamed = {}
    for k, v in tensors.items():
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
        k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
        renamed[k] = v.contiguous()
    sd = model.state_dict()
    for k in ("lm_head.decoder.weight", "lm_head.decoder.bias"):
        if k not in renamed and k in sd:
            renamed[k] = sd[k].clone().contiguous()
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    for i in range(cfg.num_hidden_layers):
        renamed[f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq"] = inv_freq.clone()
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def measure_esmcpp(row: str, shape: str, workload: str, args) -> dict:
    import numpy as np
    import tempfile
    import torch

    py = esmcpp_python(args)
    cache = Path(tempfile.gettempdir()) / "bitesm-cpu-inference"
    cache.mkdir(exist_ok=True)
    folder = esmcpp_folder(shape, cache)
    batches, _ = make_batches(workload, load_config(shape), args.num_proteins)
    unpadded = [[ids[i][mask[i] == 1] for i in range(len(ids))] for ids, mask in batches]
    from bitesm.data.collator import encode_protein
    from bitesm.data.tokenizer import load_tokenizer

    check_ids = np.asarray(encode_protein(load_tokenizer(), "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"), dtype=np.int64)
    with torch.inference_mode():
        check_logits = fp_model(shape)(input_ids=torch.from_numpy(check_ids)[None]).logits[0].numpy()
    data = cache / f"{shape}-{workload}-{args.num_proteins}.npz"
    arr = np.empty(len(unpadded), dtype=object)
    for i, b in enumerate(unpadded):
        arr[i] = b
    np.savez(data, batches=arr, check_ids=check_ids, check_logits=check_logits)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run([py, "-c", ESMCPP_WORKER, str(folder), str(data), row, str(args.repeats), str(args.threads)],
                          capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:150]
        return {"error": f"n/a: esm.cpp failed: {tail}"}
    return json.loads(lines[-1][7:])


def measure(row: str, shape: str, workload: str, args) -> dict:
    if row.startswith("esmcpp"):
        try:
            return measure_esmcpp(row, shape, workload, args)
        except Exception as err:  # noqa: BLE001
            return {"error": f"n/a: {type(err).__name__}: {str(err)[:150]}"}
    cmd = [sys.executable, __file__, "--child", "--row", row, "--shape", shape, "--workload", workload,
           "--num-proteins", str(args.num_proteins), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:150]
        return {"error": f"n/a: child failed: {tail}"}
    return json.loads(lines[-1][7:])


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="8M,35M")
    p.add_argument("--workloads", default="batch,proteins")
    p.add_argument("--num-proteins", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--esmcpp-python", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny shape (hidden 32, 2 layers), 8 proteins, 1 repeat")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.shapes, args.num_proteins, args.repeats = "smoke", 8, 1
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.child:
        return child_main(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    for line in cpu_header(args.threads):
        print(f"- {line}")
    print("- peak memory: max RSS of the row's own subprocess; esm.cpp takes unpadded sequences (forward_batch), "
          "so its padding ratio is 1")
    print()
    print("| shape | workload | row | real tokens/s | padding ratio | peak RSS (MiB) | speed vs transformers fp32 |")
    print("|---|---|---|---|---|---|---|")
    notes = []
    for shape in args.shapes.split(","):
        for workload in args.workloads.split(","):
            base = None
            for row in rows:
                r = measure(row, shape, workload, args)
                wl = "8 x 512 random" if workload == "batch" else f"{args.num_proteins} proteins"
                if "error" in r:
                    print(f"| {shape} | {wl} | {ROWS[row]} | {r['error']} | | | |", flush=True)
                    continue
                if r.get("logit_check") is not None and not any(n.startswith(f"{shape}:") for n in notes):
                    notes.append(f"{shape}: esm.cpp fp32 vs transformers fp32 logits, 33-residue protein: "
                                 f"max abs diff {r['logit_check']:.2e}")
                if row == "hf-fp32":
                    base = r["tokens_per_s"]
                ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else ""
                peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else ""
                print(f"| {shape} | {wl} | {ROWS[row]} | {r['tokens_per_s']:.0f} | {r['padding']:.3f} | {peak} | "
                      f"{ratio} |", flush=True)
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
