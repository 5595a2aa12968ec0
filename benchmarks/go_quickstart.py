"""GO function prediction end to end on the shipped CAFA5-style data: embeddings -> MLP per ontology -> cafaeval Fmax.

1. Embeds the 25,000 training and 3,000 validation proteins of ``data/go`` (mean over residues of the final
   representation; proteins longer than the model's window embedded from windows) with ``--model`` (default
   ``runs/quickstart/model``; train it first with ``bitesm train --config configs/quickstart.yaml --output-dir
   runs/quickstart``). Embeddings are saved to ``<output>/embeddings/`` (safetensors, named by the model's content
   hash) and reused by a rerun on the same model.
2. Fits one MLP per ontology (BPO, CCO, MFO) on the training proteins. **Protocol** (the issue's, and Long ESM-2's,
   arXiv 2501.07747): train on train, select on valid (early stopping reads the validation loss), report valid;
   ``--selection train-split`` early-stops on 10% of train instead.
3. Scores the MLP and CAFA's naive frequency baseline (top 300 terms per ontology) with cafaeval, on all validation
   proteins and on those longer than 1,024 residues, with information accretion computed from the training
   annotations; prints the table, the baseline against PROVENANCE's reference (Fmax BPO 0.485 / CCO 0.665 /
   MFO 0.431; must agree within 0.01) and the wall time per stage (issue bar: 20 minutes on a 2-core CPU).

Usage::

    python benchmarks/go_quickstart.py                                   # runs/quickstart/model
    python benchmarks/go_quickstart.py --model runs/qs1/model --output runs/qs1/eval/go
    python benchmarks/go_quickstart.py --baseline-only                   # frequency baseline vs PROVENANCE, no model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bitesm.data import read_fasta
from bitesm.evaluation.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from bitesm.evaluation.embeddings import embed_sequences
from bitesm.evaluation.go_prediction import DEFAULT_GO_DATA, evaluate_go, markdown_table
from bitesm.evaluation.ontology import load_ontology, read_terms_tsv

REPO = Path(__file__).resolve().parents[1]
#: PROVENANCE.md: naive term-frequency predictor (propagated train frequencies, top-300 terms), 2014 GO, valid set.
REFERENCE_BASELINE = {"BPO": 0.485, "CCO": 0.665, "MFO": 0.431}
BAR_SECONDS = 20 * 60


def _embed(model, tokenizer, records, path: Path, model_hash: str, args) -> tuple[EmbeddingSet, float, bool]:
    ids = [r[0] for r in records]
    if path.is_file() and not args.no_reuse:
        emb = load_embeddings(path)
        if emb.ids == ids and emb.metadata.get("model_hash") == model_hash:
            return emb, 0.0, True
    t = time.perf_counter()
    emb = embed_sequences(model, tokenizer, records, layer=args.layer, max_tokens=args.max_tokens, progress=True)
    seconds = time.perf_counter() - t
    emb = emb._replace(metadata={**emb.metadata, "model_hash": model_hash})
    save_embeddings(emb, path)
    return emb, seconds, False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "runs" / "quickstart" / "model"),
                        help="checkpoint folder or Hub id (default runs/quickstart/model)")
    parser.add_argument("--output", default=None, help="results folder (default <model>/../eval/go)")
    parser.add_argument("--selection", choices=("valid", "train-split"), default="valid")
    parser.add_argument("--min-count", type=int, default=50)
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=16_384)
    parser.add_argument("--max-train", type=int, default=None, help="first N training proteins only")
    parser.add_argument("--n-cpu", type=int, default=None, help="cafaeval threads (default min(4, cores))")
    parser.add_argument("--no-reuse", action="store_true", help="embed again even if saved embeddings match")
    parser.add_argument("--baseline-only", action="store_true",
                        help="only the frequency baseline on the full validation set (no model)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    stages: dict[str, float] = {}

    t = time.perf_counter()
    ontology = load_ontology(DEFAULT_GO_DATA["obo"])
    train_df = read_terms_tsv(DEFAULT_GO_DATA["train_terms"], ontology)
    valid_df = read_terms_tsv(DEFAULT_GO_DATA["valid_terms"], ontology)
    train_records = read_fasta(DEFAULT_GO_DATA["train_fasta"])
    valid_records = read_fasta(DEFAULT_GO_DATA["valid_fasta"])
    if args.max_train is not None:
        train_records = train_records[: args.max_train]
        train_df = train_df[train_df.EntryID.isin({r[0] for r in train_records})]
    lengths = {rid: len(seq) for rid, seq in valid_records}
    stages["read data + ontology"] = time.perf_counter() - t

    if args.baseline_only:
        output = Path(args.output or REPO / "runs" / "go_baseline")
        zeros = lambda recs: ([r[0] for r in recs], np.zeros((len(recs), 1), np.float32))  # noqa: E731
        train_emb, valid_emb = zeros(train_records), zeros(valid_records)
        methods = ["frequency"]
    else:
        import torch

        from bitesm.evaluation.cache import model_fingerprint
        from bitesm.evaluation.model_loading import load_masked_lm

        if not Path(args.model).exists() and not str(args.model).count("/") == 1:
            print(f"model {args.model} not found. Train the quickstart model first:\n"
                  "  bitesm train --config configs/quickstart.yaml --output-dir runs/quickstart", file=sys.stderr)
            return 2
        output = Path(args.output or Path(args.model).parent / "eval" / "go")
        t = time.perf_counter()
        model, tokenizer = load_masked_lm(args.model, "float32", "cpu")
        model_hash = model_fingerprint(model)
        stages["load model"] = time.perf_counter() - t
        print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
              f"hidden {model.config.hidden_size}), {torch.get_num_threads()} torch threads", flush=True)
        emb_dir = output / "embeddings"
        tag = f"{model_hash[:16]}-layer{args.layer if args.layer is not None else 'final'}"
        n_res = sum(len(s) for _, s in train_records)
        print(f"embedding {len(train_records)} training proteins ({n_res:,} residues)", flush=True)
        train_emb, sec, reused = _embed(model, tokenizer, train_records, emb_dir / f"train-{tag}.safetensors",
                                        model_hash, args)
        stages["embed train" + (" (reused)" if reused else "")] = sec
        if not reused:
            print(f"  {sec:.0f} s, {n_res / max(sec, 1e-9):,.0f} residues/s", flush=True)
        print(f"embedding {len(valid_records)} validation proteins", flush=True)
        valid_emb, sec, reused = _embed(model, tokenizer, valid_records, emb_dir / f"valid-{tag}.safetensors",
                                        model_hash, args)
        stages["embed valid" + (" (reused)" if reused else "")] = sec
        methods = ["mlp", "frequency"]

    t = time.perf_counter()
    result = evaluate_go(train_emb, valid_emb, train_df, valid_df, ontology, output, lengths=lengths, ia="compute",
                         methods=methods, selection=args.selection, min_count=args.min_count, n_cpu=args.n_cpu,
                         progress=True)
    stages["evaluate_go (propagate, IA, MLPs, baseline, cafaeval)"] = time.perf_counter() - t
    for k, v in result["seconds"].items():
        if k != "total":
            stages[f"  evaluate_go: {k}"] = v
    total = time.perf_counter() - t0

    print()
    print(markdown_table(result))
    print()
    base = result["results"]["frequency"]["all"]
    ok = all(abs(base[a]["fmax"] - ref) <= 0.01 for a, ref in REFERENCE_BASELINE.items())
    print("frequency baseline vs PROVENANCE reference (top-300, 2014 GO): "
          + ", ".join(f"{a} {base[a]['fmax']:.4f} (ref {ref:.3f})" for a, ref in REFERENCE_BASELINE.items())
          + (" -> agree within 0.01" if ok else " -> DISAGREE"))
    if "training" in result:
        print("MLP early stopping: " + ", ".join(
            f"{a} best epoch {r['best_epoch']}/{r['epochs']} ({result['terms'][a]} terms)"
            for a, r in result["training"].items()))
        where = ("valid (train on train, select on valid, report valid)" if args.selection == "valid"
                 else "10% of train")
        print(f"protocol: fit on train, early stopping on {where}")
    print()
    print("| stage | seconds |\n| --- | --- |")
    for k, v in stages.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **wall time** | **{total:.1f}** ({total / 60:.1f} min; bar {BAR_SECONDS // 60} min: "
          f"{'met' if total <= BAR_SECONDS else 'NOT met'}) |")
    summary = {"wall_seconds": total, "stages": stages, "baseline_matches_reference": ok,
               "summary": result["summary"]}
    (output / "benchmark.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {output / 'go.json'}, {output / 'go.md'}, {output / 'benchmark.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
