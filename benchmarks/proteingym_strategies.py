"""Check bitesm's ProteinGym scoring against an independent implementation, assay by assay and strategy by strategy.

For a model (default ``runs/quickstart/model``), every embedded assay and each strategy, compares the Spearman's rho
of ``bitesm.evaluation.evaluate_assay`` with the one computed by ``tests/reference_scoring.py`` (transformers + scipy,
one unbatched forward pass per masked copy, no bitesm code), and ProteinGym's summary with its recomputation from the
per-assay values. Pseudo-ppl costs one pass per residue of every mutant (hours for the 33,000 embedded mutants on a
CPU), so ``--pll-mutants K`` scores the first K mutants of each assay for it and ``--pll-max-residues N`` skips
the longer assays (the table says so).

Usage::

    python benchmarks/proteingym_strategies.py --model runs/quickstart/model --pll-mutants 24
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from bitesm.evaluation import STRATEGIES, evaluate_assay, find_assay_files, load_reference
from bitesm.evaluation.model_loading import load_masked_lm
from bitesm.evaluation.proteingym import summarize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import reference_scoring as ref  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "runs" / "quickstart" / "model"))
    parser.add_argument("--assays", default=str(REPO / "data" / "proteingym" / "substitutions"))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--pll-mutants", type=int, default=24, help="mutants per assay for pseudo-ppl (0 = all)")
    parser.add_argument("--pll-max-residues", type=int, default=0,
                        help="pseudo-ppl only on assays of at most this many residues (0 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    model, tokenizer = load_masked_lm(args.model, device="cpu")
    reference = load_reference(Path(args.assays).parent / "reference" / "DMS_substitutions.csv")
    seq_of = dict(zip(reference.DMS_id, reference.target_seq))
    window = model.config.max_position_embeddings - 2
    rows = []
    for strategy in args.strategies.split(","):
        per_assay = []
        for dms_id, path in find_assay_files(args.assays).items():
            if strategy == "pseudo-ppl" and args.pll_max_residues and len(seq_of[dms_id]) > args.pll_max_residues:
                continue
            df = pd.read_csv(path)
            if strategy == "pseudo-ppl" and args.pll_mutants:
                df = df.head(args.pll_mutants)
                path = Path("/tmp") / f"bitesm-pll-{dms_id}.csv"
                df.to_csv(path, index=False)
            t0 = time.perf_counter()
            res = evaluate_assay(model, tokenizer, path, seq_of[dms_id], assay_id=dms_id, strategy=strategy,
                                 batch_size=args.batch_size)
            t1 = time.perf_counter()
            expected = ref.STRATEGIES[strategy](model, tokenizer, seq_of[dms_id], df.mutant.tolist(), window)
            rho = ref.spearman(expected, df.DMS_score)
            t2 = time.perf_counter()
            rows.append((strategy, dms_id, len(df), res["spearman"], rho, abs(res["spearman"] - rho), t1 - t0, t2 - t1))
            per_assay.append(res)
            print(f"# {strategy} {dms_id}: bitesm {res['spearman']:+.6f} independent {rho:+.6f} "
                  f"|difference| {abs(res['spearman'] - rho):.1e} "
                  f"({t1 - t0:.1f} s / {t2 - t1:.1f} s)", flush=True)
        summary = summarize(per_assay, reference, n_bootstrap=1000)["summary"]["spearman"]
        recomputed = ref.proteingym_summary({r["DMS_id"]: r["spearman"] for r in per_assay}, reference)
        rows.append((strategy, "**ProteinGym summary**", sum(r["n_mutants"] for r in per_assay), summary, recomputed,
                     abs(summary - recomputed), float("nan"), float("nan")))

    print(f"\nmodel {args.model}; pseudo-ppl on the first {args.pll_mutants or 'all'} mutants of each assay"
          + (f" of at most {args.pll_max_residues} residues" if args.pll_max_residues else "") + "\n")
    print("| strategy | DMS_id | mutants | ρ bitesm | ρ independent | abs difference | s bitesm | s independent |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for strategy, dms_id, n, a, b, d, s1, s2 in rows:
        print(f"| {strategy} | {dms_id} | {n} | {a:+.6f} | {b:+.6f} | {d:.1e} | {s1:.1f} | {s2:.1f} |")
    worst = max(r[5] for r in rows)
    print(f"\nlargest |difference|: {worst:.2e} (bar: 1e-6)")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
