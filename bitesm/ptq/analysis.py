"""``bitesm ptq analyze``: PTQ4Protein's study on any ESM-2 / bitesm checkpoint.

Writes, into ``--output-dir``, each table as CSV and markdown (``table1_sites``, ``table2_methods``,
``table3_memory``, ``table5_calibration``) plus ``tables.md`` with all of them, and two figures:

* Table I (where quantization hurts): FP, W8A8, W32A8, W8A32, then W32A8 at one activation site at a time (softmax
  input, softmax output, FFN input, LayerNorm output, LayerNorm input, LayerNorm input of the last layer only), with
  uniform quantization as in the paper;
* Table II: uniform against piecewise-linear activation quantization at W8A8 and W6A6;
* Table III: weight memory and compression ratio per configuration (analytic, :mod:`bitesm.ptq.memory`); for a
  ternary model, whose weights weight PTQ leaves unchanged, the sizes of the weight files of its latent checkpoint and
  of what ``bitesm export --format packed`` writes, measured the same way as that command (so the ratios agree);
* Table V: the calibration sampling modes (random, prefer-short, prefer-long, uniform over length) at W8A8 piecewise;
* ``fig2_layernorm_input_ranges.png``: per-layer distribution and range of the LayerNorm inputs (Figure 2);
* ``fig3_layernorm_output_dequantized.png``: a LayerNorm output in floating point and dequantized by 8-bit uniform
  and piecewise quantizers (Figure 3).

Accuracy columns: validation MLM loss and perplexity (fixed masks, :func:`bitesm.evaluation.perplexity.evaluate_mlm`)
and mean ProteinGym masked-marginals Spearman's rho on the chosen assays, each with its change from the FP model.

The baseline row is the model as loaded, labelled for what it is (:func:`baseline_label`): ``FP32 (W32A32)`` for a
floating-point model, ``ternary W1.58A8 (as trained)`` for a ternary one. For a ternary model the ``note`` column
says where weight PTQ leaves the ternary weights unchanged (W8A32 then equals the baseline). A progress bar counts
the configurations evaluated.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.dataset import load_fasta_dataset
from ..evaluation.perplexity import evaluate_mlm
from ..evaluation.proteingym import evaluate_proteingym
from ..io import atomic_write_json
from ..training.config import resolve_path
from .calibration import CALIBRATION_MODES, sample_calibration_set
from .convert import describe_weights, load_fp_model, quantize_model
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


#: The ``note`` of a ternary model's rows that quantize weights (weight PTQ leaves ternary weights unchanged).
TERNARY_WEIGHTS_NOTE = "weight PTQ leaves the ternary weights unchanged"


def baseline_label(model) -> str:
    """The name of a model's own precision, for the baseline row of the tables.

    Args:
        model: the loaded model (a bitesm or ESM-2 masked LM).

    Returns:
        ``"ternary W1.58A8 (as trained)"`` for a ternary model (``A32`` when its activations are not quantized),
        ``"FP32 (W32A32)"`` for a floating-point model (``BF16`` / ``FP16`` for one held in that dtype).
    """
    config = getattr(model, "config", None)
    if getattr(config, "quantization", None) == "ternary":
        bits = getattr(config, "activation_bits", None)
        return f"ternary W1.58A{bits if bits is not None else 32} (as trained)"
    dtype = next(model.parameters()).dtype
    name = {torch.bfloat16: "BF16", torch.float16: "FP16"}.get(dtype, "FP32")
    return f"{name} (W32A32)" if name == "FP32" else f"{name} (W16A16)"


def _ternary_note(weight_bits, act_bits) -> str:
    """The ``note`` of a ternary model's row: weight PTQ leaves its weights unchanged."""
    if weight_bits is None:
        return "ternary weights (W32: no weight PTQ)"
    if act_bits is None:
        return f"{TERNARY_WEIGHTS_NOTE}: equals the baseline"
    return TERNARY_WEIGHTS_NOTE


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
    weight_layers = describe_weights(model)
    ternary = weight_layers["ternary"] > 0 and weight_layers["fp_linear"] == 0  # weight PTQ changes none of them
    progress = tqdm(
        total=1 + len(TABLE1) + len(TABLE2) + len(CALIBRATION_MODES), desc="ptq analyze", unit="config",
        disable=not getattr(args, "progress", True),
    )

    def run(label, weight_bits, act_bits, method, sites=SITES, layers=None, sequences=uniform_set) -> dict:
        progress.set_postfix_str(label)
        quantized = quantize_model(
            model, tokenizer, sequences, weight_bits=weight_bits, act_bits=act_bits, method=method, sites=sites,
            layers=layers, observer=args.observer, batch_size=args.batch_size, max_length=args.max_length,
        )
        row = {"configuration": label, "method": method if act_bits else "-", **evaluate(quantized)}
        if ternary:
            row["note"] = _ternary_note(weight_bits, act_bits)
        logger.info("%s: %s", label, row)
        progress.update()
        return row

    progress.set_postfix_str("baseline")
    fp = {"configuration": baseline_label(model), "method": "-", **evaluate(model)}
    if ternary:
        fp["note"] = "the model as trained"
    progress.update()
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
    progress.close()
    tables["table3_memory"] = _memory_table(model, resolve_path(args.model), ternary)

    titles = {
        "table1_sites": "Table I: quantization sites (uniform activation quantization)",
        "table2_methods": "Table II: uniform vs piecewise-linear activation quantization",
        "table3_memory": (
            "Table III: weight files of the ternary model (latent checkpoint, and 'bitesm export --format packed'; "
            f"{TERNARY_WEIGHTS_NOTE}; their compact form is the packed export)"
            if ternary else "Table III: weight memory and compression ratio (parameters, analytic)"
        ),
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


def _memory_table(model, source, ternary: bool) -> pd.DataFrame:
    """Table III. A floating-point model: the analytic weight memory of each :data:`TABLE3` configuration. A ternary
    model: its latent checkpoint's weight files and the packed export's, measured as ``bitesm export`` measures them
    (:func:`bitesm.models.packed.packed_size_report`), so the compression ratio is the one that command prints."""
    if not ternary:
        rows = []
        for label, w, a in TABLE3:
            report = weight_memory_report(model, w, a)
            rows.append({"configuration": label, "weight_bits": w or 32, "act_bits": a or 32,
                         "model_bytes": report["total_bytes"], "model_size": format_bytes(report["total_bytes"]),
                         "compression_ratio": report["compression_ratio"],
                         "measures": "parameters (analytic)"})
        return pd.DataFrame(rows)
    from ..models.packed import packed_size_report

    sizes = packed_size_report(model, source)
    act = getattr(model.config, "activation_bits", None) or 32
    measures = "model.safetensors bytes, as 'bitesm export --format packed' reports them"
    return pd.DataFrame([
        {"configuration": "latent checkpoint (FP32 weights, ternary in every forward)", "weight_bits": 32,
         "act_bits": act, "model_bytes": sizes["latent_bytes"], "model_size": format_bytes(sizes["latent_bytes"]),
         "compression_ratio": 1.0, "measures": measures},
        {"configuration": f"ternary W1.58A{act} packed (bitesm export --format packed)", "weight_bits": 1.58,
         "act_bits": act, "model_bytes": sizes["packed_bytes"], "model_size": format_bytes(sizes["packed_bytes"]),
         "compression_ratio": sizes["ratio"], "measures": measures},
    ])


def cli_main(args: argparse.Namespace) -> int:
    if not args.model:
        raise SystemExit("bitesm ptq analyze: error: --model is required")
    tables = analyze(args)
    print((Path(args.output_dir) / "tables.md").read_text())
    return 0 if tables else 1
