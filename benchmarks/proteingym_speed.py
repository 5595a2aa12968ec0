"""ProteinGym scoring speed and the cost of a cached rerun.

1. Masked-marginals scoring of every embedded assay (or ``--assays``) with an ESM-2 8M-shaped model (the real
   ``esm2_t6_8M_UR50D`` config with random weights, or ``--model``), through ``bitesm eval run`` into a fresh cache:
   per assay the unique positions (= forward sequences), the longest pass, seconds and positions per second.
2. The same ``bitesm eval run`` again on the same checkpoint with the same cache: its time as a fraction of the
   first (issue bar: under 10%) and whether every number is identical.

Usage::

    python benchmarks/proteingym_speed.py                      # 8M-shaped random model, 18 embedded assays
    python benchmarks/proteingym_speed.py --model runs/quickstart/model --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

from bitesm.evaluation.cache import ResultCache
from bitesm.evaluation.run import EvalSettings, run_evaluation

REPO = Path(__file__).resolve().parents[1]
ESM8M = REPO / "data" / "esm2_hf_configs" / "esm2_t6_8M_UR50D"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: 8M-shaped random ESM-2)")
    parser.add_argument("--assays", default=None, help="assay folder (default: the 18 embedded assays)")
    parser.add_argument("--assay-ids", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--strategy", default="masked-marginals")
    parser.add_argument("--workdir", default=None, help="where the model, cache and results go (default: a temp dir)")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bitesm-pg-speed-"))
    model = args.model
    if model is None:
        model = work / "esm2_8M_random"
        torch.manual_seed(0)
        EsmForMaskedLM(EsmConfig.from_pretrained(str(ESM8M))).save_pretrained(model)
        EsmTokenizer.from_pretrained(str(ESM8M)).save_pretrained(model)
    settings = EvalSettings(assays=args.assays, assay_ids=args.assay_ids, batch_size=args.batch_size,
                            strategy=args.strategy)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, model {model}", flush=True)
    t0 = time.perf_counter()
    first = run_evaluation(model, "proteingym", work / "first", settings, ResultCache(work / "cache"), progress=False)
    t1 = time.perf_counter()
    second = run_evaluation(model, "proteingym", work / "second", settings, ResultCache(work / "cache"),
                            progress=False)
    t2 = time.perf_counter()

    result = first["results"]["proteingym"]
    print(f"\n{args.strategy} scoring, batch {args.batch_size}, fp32, {torch.device('cpu')}\n")
    print("| DMS_id | residues | mutants | positions | longest pass (tokens) | seconds | positions/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    positions = 0
    for a in result["assays"]:
        positions += a["n_positions"]
        print(f"| {a['DMS_id']} | {a['seq_len']} | {a['n_mutants']} | {a['n_positions']} | {a['max_forward_tokens']} "
              f"| {a['seconds']:.1f} | {a['positions_per_second']:.1f} |")
    scoring = sum(a["seconds"] for a in result["assays"])
    print(f"| **all {len(result['assays'])}** | | {sum(a['n_mutants'] for a in result['assays'])} | {positions} | "
          f"| {scoring:.1f} | {positions / scoring:.1f} |")
    a = json.loads((work / "first" / "proteingym.json").read_text())
    b = json.loads((work / "second" / "proteingym.json").read_text())
    same = [x["scores"] for x in a["assays"]] == [x["scores"] for x in b["assays"]] and a["summary"] == b["summary"]
    print(f"\nfirst bitesm eval run: {t1 - t0:.1f} s (scoring {scoring:.1f} s, {scoring / 60:.1f} min); "
          f"second (cached): {t2 - t1:.2f} s = {100 * (t2 - t1) / (t1 - t0):.2f}% of the first; "
          f"identical numbers: {same}; ProteinGym summary Spearman {result['summary']['spearman']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
