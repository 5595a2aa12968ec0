"""PTQ4Protein: uniform against piecewise-linear activation quantization, over several calibration draws.

For a model (a ``bitesm train`` output such as ``runs/quickstart/model``, or an ESM-2 checkpoint), for each
calibration seed: sample ``--num-calibration`` proteins (uniform over sequence length), build W{b}A{b} models with
uniform and with piecewise activation quantization (same sites: all; same min/max ranges), and measure the validation
MLM loss (fixed masks, ``bitesm.evaluation.perplexity.evaluate_mlm``) on the held-out proteins the trainer uses.
Prints a markdown table of the loss changes from the FP model and which method is closer, per seed and on average.

Usage::

    python benchmarks/ptq_methods.py --model runs/quickstart/model --seeds 0 1 2 3 --bits 8
"""

from __future__ import annotations

import argparse
import statistics

from bitesm.data.dataset import load_fasta_dataset
from bitesm.evaluation.perplexity import evaluate_mlm
from bitesm.ptq.calibration import sample_calibration_set
from bitesm.ptq.analysis import DEFAULT_CALIBRATION
from bitesm.ptq.convert import load_fp_model, quantize_model
from bitesm.training.config import resolve_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--fasta", default=DEFAULT_CALIBRATION, help="calibration proteins and validation split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--bits", type=int, nargs="+", default=[8])
    parser.add_argument("--num-calibration", type=int, default=64)
    parser.add_argument("--validation-size", type=int, default=1000)
    parser.add_argument("--eval-max-length", type=int, default=256)
    args = parser.parse_args(argv)

    fasta = resolve_path(args.fasta)
    model, tokenizer = load_fp_model(resolve_path(args.model))
    validation = list(load_fasta_dataset(fasta, validation_size=args.validation_size, seed=0)["validation"]["sequence"])
    fp = evaluate_mlm(model, tokenizer, validation, max_length=args.eval_max_length)["loss"]
    rows = []
    for bits in args.bits:
        for seed in args.seeds:
            calibration = [s for _, s in sample_calibration_set(fasta, args.num_calibration, mode="uniform", seed=seed)]
            delta = {}
            for method in ("uniform", "piecewise"):
                quantized = quantize_model(model, tokenizer, calibration, bits, bits, method, max_length=512)
                delta[method] = evaluate_mlm(quantized, tokenizer, validation, max_length=args.eval_max_length)["loss"] - fp
            rows.append((bits, seed, delta["uniform"], delta["piecewise"]))
            print(f"# W{bits}A{bits} seed {seed}: {delta}", flush=True)

    print(f"\nFP validation loss {fp:.6f} nats ({len(validation)} proteins, {args.eval_max_length} tokens)\n")
    print("| config | calibration seed | delta loss uniform | delta loss piecewise | closer to FP |")
    print("|---|---:|---:|---:|---|")
    for bits, seed, uni, pw in rows:
        print(f"| W{bits}A{bits} | {seed} | {uni:+.6f} | {pw:+.6f} | {'piecewise' if abs(pw) < abs(uni) else 'uniform'} |")
    for bits in args.bits:
        sub = [r for r in rows if r[0] == bits]
        mean_u = statistics.mean(abs(r[2]) for r in sub)
        mean_p = statistics.mean(abs(r[3]) for r in sub)
        wins = sum(abs(r[3]) < abs(r[2]) for r in sub)
        print(f"| W{bits}A{bits} | mean abs | {mean_u:.6f} | {mean_p:.6f} | piecewise in {wins}/{len(sub)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
