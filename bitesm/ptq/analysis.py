"""``bitesm ptq analyze``: PTQ4Protein's study on any ESM-2 / bitesm checkpoint.

Writes, into ``--output-dir``, each table as CSV and markdown (``table1_sites``, ``table2_methods``,
``table3_memory``, ``table5_calibration``) plus ``tables.md`` with all of them, and two figures:

* Table I (where quantization hurts): FP, W8A8, W32A8, W8A32, then W32A8 at one activation site at a time (softmax
  input, softmax output, FFN input, LayerNorm output, LayerNorm input, LayerNorm input of the last layer only), with
  uniform quantization as in the paper;
* Table II: uniform against piecewise-linear activation quantization at W8A8 and W6A6;
* Table III: weight memory and compression ratio per configuration (analytic, :mod:`bitesm.ptq.memory`);
* Table V: the calibration sampling modes (random, prefer-short, prefer-long, uniform over length) at W8A8 piecewise;
* ``fig2_layernorm_input_ranges.png``: per-layer distribution and range of the LayerNorm inputs (Figure 2);
* ``fig3_layernorm_output_dequantized.png``: a LayerNorm output in floating point and dequantized by 8-bit uniform
  and piecewise quantizers (Figure 3).

Accuracy columns: validation MLM loss and perplexity (fixed masks, :func:`bitesm.evaluation.perplexity.evaluate_mlm`)
and mean ProteinGym masked-marginals Spearman's rho on the chosen assays, each with its change from the FP model.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import torch

from ..data.dataset import load_fasta_dataset
from ..evaluation.perplexity import evaluate_mlm
from ..evaluation.proteingym import evaluate_proteingym
from ..io import atomic_write_json
from ..training.config import resolve_path
from .calibration import CALIBRATION_MODES, sample_calibration_set
from .convert import load_fp_model, quantize_model
from .memory import format_bytes, weight_memory_report
from .sites import SITES

logger = logging.getLogger(__name__)

DEFAULT_ASSAYS = "CCDB_ECOLI_Adkar_2012,TAT_HV1BR_Fernandes_2016,SUMO1_HUMAN_Weile_2017"

#: Table I rows: (label, weight bits, activation bits, sites, layers); uniform activation quantization.
TABLE1 = [
    ("W8A8", 8, 8, SITES, None),
    ("W32A8", None, 8, SITES, None),
    ("W8A32", 8, None, (), None),
    ("W32A8 softmax input", None, 8, ("softmax_input",), None),
    ("W32A8 softmax output", None, 8, ("softmax_output",), None),
    ("W32A8 FFN input", None, 8, ("ffn_input",), None),
    ("W32A8 LayerNorm output", None, 8, ("layernorm_output",), None),
    ("W32A8 LayerNorm input", None, 8, ("layernorm_input",), None),
    ("W32A8 LayerNorm input, last layer", None, 8, ("layernorm_input",), (-1,)),
]
TABLE2 = [(f"W{b}A{b} {m}", b, m) for b in (8, 6) for m in ("uniform", "piecewise")]
TABLE3 = [("W32A32", None, None), ("W16A16", 16, 16), ("W8A32", 8, None), ("W32A8", None, 8), ("W8A16", 8, 16),
          ("W8A8", 8, 8), ("W6A6", 6, 6), ("W4A16", 4, 16)]


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, help="folder for the tables (CSV, markdown) and figures (PNG)")
    parser.add_argument("--assays", default="data/proteingym/substitutions", help="folder of ProteinGym assay CSVs")
    parser.add_argument("--reference", default="data/proteingym/reference/DMS_substitutions.csv")
    parser.add_argument("--assay-ids", default=DEFAULT_ASSAYS, help="comma list of assays for the Spearman column")
    parser.add_argument("--validation-size", type=int, default=1000, help="held-out proteins for the MLM loss")
    parser.add_argument("--eval-max-length", type=int, default=256, help="tokens per protein for the MLM loss")


class _Evaluator:
    """Accuracy of one model: MLM loss / perplexity on held-out proteins and ProteinGym Spearman's rho."""

    def __init__(self, tokenizer, sequences, args):
        self.tokenizer, self.sequences, self.args = tokenizer, sequences, args
        self.assay_ids = [a for a in args.assay_ids.split(",") if a] if args.assay_ids else []

    def __call__(self, model) -> dict:
        mlm = evaluate_mlm(model, self.tokenizer, self.sequences, max_length=self.args.eval_max_length)
        row = {"val_loss": mlm["loss"], "perplexity": mlm["perplexity"]}
        if self.assay_ids:
            pg = evaluate_proteingym(
                model, self.tokenizer, resolve_path(self.args.assays), resolve_path(self.args.reference),
                assay_ids=self.assay_ids, progress=False,
            )
            row["spearman"] = pg["mean_spearman"]
        return row


def _with_deltas(rows: list[dict], fp: dict) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for key in ("val_loss", "perplexity", "spearman"):
        if key in frame:
            frame[f"delta_{key}"] = frame[key] - fp[key]
    return frame


def _write(frame: pd.DataFrame, out: Path, name: str, title: str) -> str:
    frame.to_csv(out / f"{name}.csv", index=False)
    text = f"## {title}\n\n{frame.to_markdown(index=False, floatfmt='.6f')}\n"
    (out / f"{name}.md").write_text(text)
    return text


@torch.no_grad()
def _layernorm_activations(model, tokenizer, sequences, max_length: int) -> dict[str, torch.Tensor]:
    """Inputs and outputs of every encoder LayerNorm on a few proteins (for the figures)."""
    from ..data.collator import encode_protein

    captured: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm) and "encoder." in name:
            def hook(mod, args, output, name=name):
                captured.setdefault(f"{name}:input", []).append(args[0].detach().flatten())
                captured.setdefault(f"{name}:output", []).append(output.detach().flatten())
            handles.append(module.register_forward_hook(hook))
    try:
        for seq in sequences:
            model(input_ids=torch.tensor([encode_protein(tokenizer, seq[: max_length - 2])]))
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in captured.items()}


def _figures(model, tokenizer, sequences, out: Path, max_length: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..quant.piecewise import fake_quantize_piecewise, fake_quantize_uniform

    acts = _layernorm_activations(model, tokenizer, sequences, max_length)
    inputs = {k.split(":")[0]: v for k, v in acts.items() if k.endswith(":input")}
    names = list(inputs)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    ax.boxplot([inputs[n].numpy() for n in names], whis=(0, 100), showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [n.replace("esm.encoder.", "").replace("layer.", "L") for n in names],
                  rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("activation value")
    ax.set_title("LayerNorm inputs per layer: quartiles, full range (Fig. 2)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "fig2_layernorm_input_ranges.png", dpi=120)
    plt.close(fig)

    widest = max(names, key=lambda n: float(inputs[n].max() - inputs[n].min()))
    x = acts[f"{widest}:output"]
    r_l, r_u = x.min(), x.max()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for ax, (title, values) in zip(axes, [
        ("floating point", x),
        ("8-bit uniform, dequantized", fake_quantize_uniform(x, r_l, r_u, 8, symmetric=False, use_ste=False)),
        ("8-bit piecewise, dequantized", fake_quantize_piecewise(x, r_l, r_u, 8, std=x.std(), use_ste=False)),
    ]):
        ax.hist(values.numpy(), bins=200, log=True)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"LayerNorm output of {widest} (PTQ4Protein Fig. 3)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "fig3_layernorm_output_dequantized.png", dpi=120)
    plt.close(fig)
    return ["fig2_layernorm_input_ranges.png", "fig3_layernorm_output_dequantized.png"]


def analyze(args: argparse.Namespace) -> dict:
    """Run the whole study (see the module docstring); returns ``{table name: DataFrame}`` and writes the files."""
    start = time.time()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_fp_model(resolve_path(args.model))
    fasta = resolve_path(args.calibration)
    held_out = load_fasta_dataset(fasta, validation_size=args.validation_size, seed=args.seed)["validation"]
    evaluate = _Evaluator(tokenizer, list(held_out["sequence"]), args)

    def calibration(mode: str) -> list[str]:
        return [s for _, s in sample_calibration_set(fasta, args.num_calibration, mode=mode, seed=args.seed)]

    uniform_set = calibration(args.sampling)

    def run(label, weight_bits, act_bits, method, sites=SITES, layers=None, sequences=uniform_set) -> dict:
        quantized = quantize_model(
            model, tokenizer, sequences, weight_bits=weight_bits, act_bits=act_bits, method=method, sites=sites,
            layers=layers, observer=args.observer, batch_size=args.batch_size, max_length=args.max_length,
        )
        row = {"configuration": label, "method": method if act_bits else "-", **evaluate(quantized)}
        logger.info("%s: %s", label, row)
        return row

    fp = {"configuration": "FP (W32A32)", "method": "-", **evaluate(model)}
    tables = {}
    tables["table1_sites"] = _with_deltas(
        [fp] + [run(label, w, a, "uniform", sites, layers) for label, w, a, sites, layers in TABLE1], fp
    )
    tables["table2_methods"] = _with_deltas([fp] + [run(label, b, b, m) for label, b, m in TABLE2], fp)
    tables["table5_calibration"] = _with_deltas(
        [fp] + [
            {**run(f"W8A8 piecewise, {mode}", 8, 8, "piecewise", sequences=calibration(mode)), "sampling": mode}
            for mode in CALIBRATION_MODES
        ],
        fp,
    )
    memory_rows = []
    for label, w, a in TABLE3:
        report = weight_memory_report(model, w, a)
        memory_rows.append({"configuration": label, "weight_bits": w or 32, "act_bits": a or 32,
                            "model_bytes": report["total_bytes"], "model_size": format_bytes(report["total_bytes"]),
                            "compression_ratio": report["compression_ratio"]})
    tables["table3_memory"] = pd.DataFrame(memory_rows)

    titles = {
        "table1_sites": "Table I: quantization sites (uniform activation quantization)",
        "table2_methods": "Table II: uniform vs piecewise-linear activation quantization",
        "table3_memory": "Table III: weight memory and compression ratio",
        "table5_calibration": f"Table V: calibration sampling ({args.num_calibration} proteins, W8A8 piecewise)",
    }
    markdown = [f"# PTQ analysis of {args.model}\n"]
    markdown += [_write(frame, out, name, titles[name]) for name, frame in tables.items()]
    figures = _figures(model, tokenizer, evaluate.sequences[:8], out, args.eval_max_length)
    markdown.append("\n".join(f"![{f}]({f})" for f in figures) + "\n")
    (out / "tables.md").write_text("\n".join(markdown))
    atomic_write_json(out / "analysis.json", {
        "model": str(args.model), "seconds": time.time() - start, "figures": figures,
        **{name: frame.to_dict(orient="records") for name, frame in tables.items()},
    })
    return tables


def cli_main(args: argparse.Namespace) -> int:
    if not args.model:
        raise SystemExit("bitesm ptq analyze: error: --model is required")
    tables = analyze(args)
    print((Path(args.output_dir) / "tables.md").read_text())
    return 0 if tables else 1
