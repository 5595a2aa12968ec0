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
and ``mean_spearman_<N>_assays``, the plain mean of masked-marginals Spearman's rho over the N chosen ProteinGym
assays (not ProteinGym's summary), each with its change from the baseline.

The baseline row is the model as loaded, labelled for what it is (:func:`baseline_label`): ``FP32 (W32A32)`` for a
floating-point model, ``ternary W1.58A8 (as trained)`` for a ternary one. For a ternary model the ``note`` column
says where weight PTQ leaves the ternary weights unchanged (W8A32 then equals the baseline). A progress bar counts
the configurations evaluated.
"""

from __future__ import annotations

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
DEFAULT_CALIBRATION = "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"
DEFAULT_ASSAYS_DIR = "data/proteingym/substitutions"
DEFAULT_REFERENCE = "data/proteingym/reference/DMS_substitutions.csv"

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


class _Evaluator:
    """Accuracy of one model: MLM loss / perplexity on held-out proteins and the mean ProteinGym Spearman's rho over
    the chosen assays."""

    def __init__(self, tokenizer, sequences, assays, reference, assay_ids: list[str], eval_max_length: int):
        self.tokenizer, self.sequences = tokenizer, sequences
        self.assays, self.reference, self.assay_ids, self.eval_max_length = assays, reference, assay_ids, eval_max_length

    def __call__(self, model) -> dict:
        mlm = evaluate_mlm(model, self.tokenizer, self.sequences, max_length=self.eval_max_length)
        row = {"val_loss": mlm["loss"], "perplexity": mlm["perplexity"]}
        if self.assay_ids:
            pg = evaluate_proteingym(
                model, self.tokenizer, resolve_path(self.assays), resolve_path(self.reference),
                assay_ids=self.assay_ids, progress=False,
            )
            row[spearman_column(len(self.assay_ids))] = pg["mean_spearman"]
        return row


def spearman_column(n_assays: int) -> str:
    """The tables' Spearman column: the plain mean of masked-marginals Spearman's rho over the ``n_assays`` chosen
    ProteinGym assays (not ProteinGym's summary, which averages per protein and selection type)."""
    return f"mean_spearman_{n_assays}_assays"


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
    for key in ("val_loss", "perplexity", *(k for k in fp if k.startswith("mean_spearman_"))):
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


def analyze(
    model: str,
    output_dir: str | Path,
    *,
    calibration: str = DEFAULT_CALIBRATION,
    sampling: str = "uniform",
    num_calibration: int = 64,
    observer: str = "minmax",
    max_length: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    assays: str = DEFAULT_ASSAYS_DIR,
    reference: str = DEFAULT_REFERENCE,
    assay_ids: str | list[str] | None = DEFAULT_ASSAYS,
    validation_size: int = 1000,
    eval_max_length: int = 256,
    progress: bool = True,
) -> dict:
    """Run the whole study (see the module docstring) on one checkpoint and write its tables and figures.

    Args:
        model: checkpoint folder or Hub id (ESM-2 or bitesm).
        output_dir: folder for the tables (CSV, markdown), ``tables.md``, ``analysis.json`` and the figures.
        calibration: FASTA the calibration proteins and the held-out validation proteins are drawn from.
        sampling: calibration sampling mode of Tables I and II (one of ``CALIBRATION_MODES``).
        num_calibration: calibration proteins per configuration.
        observer: activation range estimator (``minmax``, ``percentile``, ``mse``).
        max_length: tokens per calibration protein (cropped).
        batch_size: calibration batch size.
        seed: seed of the calibration draw and of the validation split.
        assays, reference: ProteinGym assay folder and reference file.
        assay_ids: assays of the Spearman column (comma list or list; empty or ``None``: no Spearman column).
        validation_size: held-out proteins of the MLM loss.
        eval_max_length: tokens per protein of the MLM loss.
        progress: show a progress bar over the configurations.

    Returns:
        ``{table name: DataFrame}``.

    Raises:
        UserInputError: the checkpoint, FASTA or assays cannot be used (messages name them).
    """
    start = time.time()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = model
    model, tokenizer = load_fp_model(resolve_path(source))
    fasta = resolve_path(calibration)
    held_out = load_fasta_dataset(fasta, validation_size=validation_size, seed=seed)["validation"]
    if isinstance(assay_ids, str):
        assay_ids = [a for a in assay_ids.split(",") if a]
    evaluate = _Evaluator(tokenizer, list(held_out["sequence"]), assays, reference, list(assay_ids or []),
                          eval_max_length)

    def calibration_set(mode: str) -> list[str]:
        return [s for _, s in sample_calibration_set(fasta, num_calibration, mode=mode, seed=seed)]

    uniform_set = calibration_set(sampling)
    weight_layers = describe_weights(model)
    ternary = weight_layers["ternary"] > 0 and weight_layers["fp_linear"] == 0  # weight PTQ changes none of them
    progress = tqdm(
        total=1 + len(TABLE1) + len(TABLE2) + len(CALIBRATION_MODES), desc="ptq analyze", unit="config",
        disable=not progress,
    )

    def run(label, weight_bits, act_bits, method, sites=SITES, layers=None, sequences=uniform_set) -> dict:
        progress.set_postfix_str(label)
        quantized = quantize_model(
            model, tokenizer, sequences, weight_bits=weight_bits, act_bits=act_bits, method=method, sites=sites,
            layers=layers, observer=observer, batch_size=batch_size, max_length=max_length,
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
            {**run(f"W8A8 piecewise, {mode}", 8, 8, "piecewise", sequences=calibration_set(mode)), "sampling": mode}
            for mode in CALIBRATION_MODES
        ],
        fp,
    )
    progress.close()
    tables["table3_memory"] = _memory_table(model, resolve_path(source), ternary)

    titles = {
        "table1_sites": "Table I: quantization sites (uniform activation quantization)",
        "table2_methods": "Table II: uniform vs piecewise-linear activation quantization",
        "table3_memory": (
            "Table III: weight files of the ternary model (latent checkpoint, and 'bitesm export --format packed'; "
            f"{TERNARY_WEIGHTS_NOTE}; their compact form is the packed export)"
            if ternary else "Table III: weight memory and compression ratio (parameters, analytic)"
        ),
        "table5_calibration": f"Table V: calibration sampling ({num_calibration} proteins, W8A8 piecewise)",
    }
    markdown = [f"# PTQ analysis of {source}\n"]
    markdown += [_write(frame, out, name, titles[name]) for name, frame in tables.items()]
    figures = _figures(model, tokenizer, evaluate.sequences[:8], out, eval_max_length)
    markdown.append("\n".join(f"![{f}]({f})" for f in figures) + "\n")
    (out / "tables.md").write_text("\n".join(markdown))
    atomic_write_json(out / "analysis.json", {
        "model": str(source), "seconds": time.time() - start, "figures": figures,
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
