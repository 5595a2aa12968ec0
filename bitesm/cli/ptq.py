"""``bitesm ptq`` (quantize and save a model) and ``bitesm ptq analyze`` (PTQ4Protein's tables and figures), over
:mod:`bitesm.ptq`. The parsers import only the standard library."""

from __future__ import annotations

import argparse
import json
import logging

from ._model_options import check_at_least, check_output, required_group

#: Defaults and choices the library defines (tests check they agree): :data:`bitesm.ptq.sites.SITES`,
#: :data:`bitesm.ptq.sites.METHODS`, :data:`bitesm.ptq.calibration.CALIBRATION_MODES`,
#: :data:`bitesm.ptq.analysis.DEFAULT_CALIBRATION` and ``DEFAULT_ASSAYS``.
SITES = ("layernorm_input", "layernorm_output", "softmax_input", "softmax_output", "ffn_input")
METHODS = ("uniform", "piecewise")
CALIBRATION_MODES = ("random", "prefer-short", "prefer-long", "uniform")
OBSERVERS = ("minmax", "percentile", "mse")
DEFAULT_CALIBRATION = "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"
DEFAULT_ASSAYS = "CCDB_ECOLI_Adkar_2012,TAT_HV1BR_Fernandes_2016,SUMO1_HUMAN_Weile_2017"

DESCRIPTION = (
    "Post-training quantization of an ESM-2 or bitesm checkpoint (PTQ4Protein): uniform symmetric per-channel weights "
    "and static-range activation quantizers (uniform or piecewise-linear) at the chosen sites, calibrated on "
    "proteins sampled from a FASTA file. The output folder loads with from_pretrained and runs quantized. "
    "'bitesm ptq analyze' writes PTQ4Protein's tables and figures for one model instead."
)
ANALYZE_DESCRIPTION = (
    "PTQ4Protein's study of one checkpoint: Table I (quantization sites), Table II (uniform against piecewise "
    "activations at W8A8 and W6A6), Table III (weight memory), Table V (calibration sampling) and Figures 2 and 3, "
    "with validation MLM loss, perplexity and the mean Spearman's rho over a few ProteinGym assays."
)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of layer indices, e.g. -2,-1") from None


def _site_list(text: str) -> list[str]:
    sites = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(sites) - set(SITES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown site(s) {unknown}; choose from {', '.join(SITES)}")
    return sites


def _bits(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a bit width (an int in 2..16, or 32)") from None
    if bits != 32 and not 2 <= bits <= 16:
        raise argparse.ArgumentTypeError(f"{bits} bits is out of range; use an int in 2..16, or 32 for floating point")
    return bits


def _add_common(parser: argparse.ArgumentParser, model_required: bool) -> None:
    model_help = "checkpoint folder or Hub id (facebook/esm2 format or a bitesm latent checkpoint)"
    if model_required:
        required_group(parser).add_argument("--model", required=True, help=model_help)
    else:
        parser.add_argument("--model", help=model_help + " (required)")
    parser.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                        help="FASTA (or .fasta.gz) to sample calibration proteins from (default: the embedded "
                        "Swiss-Prot sample)")
    parser.add_argument("--sampling", default="uniform", choices=CALIBRATION_MODES,
                        help="calibration sampling over sequence length (default uniform, PTQ4Protein's)")
    parser.add_argument("--num-calibration", type=int, default=64, help="number of calibration proteins (default 64)")
    parser.add_argument("--observer", default="minmax", choices=OBSERVERS,
                        help="activation range estimator (default minmax)")
    parser.add_argument("--max-length", type=int, default=512,
                        help="tokens per calibration protein, longer ones cropped (default 512)")
    parser.add_argument("--batch-size", type=int, default=8, help="calibration proteins per forward pass (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration draw (default 0)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bitesm ptq`` and ``bitesm ptq analyze`` to the ``bitesm`` subparsers ``commands``."""
    parser = commands.add_parser(
        "ptq", help="post-training quantization (PTQ4Protein): 'bitesm ptq --model ... --output DIR' or "
        "'bitesm ptq analyze'", description=DESCRIPTION)
    _add_common(parser, model_required=False)
    parser.add_argument("--weight-bits", type=_bits, default=8,
                        help="encoder Linear weight bits, 2..16, or 32 = floating point (default 8)")
    parser.add_argument("--act-bits", type=_bits, default=8,
                        help="activation bits at --sites, 2..16, or 32 = floating point (default 8)")
    parser.add_argument("--method", default="piecewise", choices=METHODS,
                        help="activation quantizer (default piecewise)")
    parser.add_argument("--sites", type=_site_list, default=list(SITES),
                        help=f"comma list of activation sites from {','.join(SITES)} (default all)")
    parser.add_argument("--layers", type=_int_list, default=None,
                        help="encoder layers to quantize, e.g. -2,-1 (default all)")
    parser.add_argument("--weight-granularity", default="per_channel", choices=("per_channel", "per_tensor"),
                        help="one weight scale per output channel or per tensor (default per_channel)")
    parser.add_argument("--weight-format", default=None, choices=("int8", "fake"),
                        help="how encoder Linear weights are saved: int8 codes plus float32 scales (default for "
                        "--weight-bits <= 8) or fake = fp32 weights on the grid (default otherwise)")
    parser.add_argument("--output", help="folder for the quantized model (required)")
    parser.set_defaults(handler=run_ptq)
    sub = parser.add_subparsers(dest="ptq_command", metavar="analyze")
    analyze = sub.add_parser("analyze", help="PTQ4Protein tables I, II, III, V and figures 2, 3 for one model",
                             description=ANALYZE_DESCRIPTION)
    _add_common(analyze, model_required=True)
    required_group(analyze).add_argument("--output-dir", required=True,
                                         help="folder for the tables (CSV, markdown) and figures (PNG)")
    analyze.add_argument("--assays", default="data/proteingym/substitutions",
                         help="folder of ProteinGym assay CSVs (default: the embedded assays)")
    analyze.add_argument("--reference", default="data/proteingym/reference/DMS_substitutions.csv",
                         help="ProteinGym reference file (default: the embedded one)")
    analyze.add_argument("--assay-ids", default=DEFAULT_ASSAYS,
                         help="comma list of assays whose mean Spearman's rho is the tables' Spearman column "
                         "(empty: no Spearman column)")
    analyze.add_argument("--validation-size", type=int, default=1000,
                         help="held-out proteins of the MLM loss (default 1000)")
    analyze.add_argument("--eval-max-length", type=int, default=256,
                         help="tokens per protein of the MLM loss (default 256)")
    analyze.set_defaults(handler=run_analyze)


def _check_common(args: argparse.Namespace) -> None:
    for option in ("num_calibration", "max_length", "batch_size"):
        check_at_least(getattr(args, option), "--" + option.replace("_", "-"))


def run_ptq(args: argparse.Namespace) -> int:
    """``bitesm ptq``: quantize ``--model``, save it to ``--output`` with ``ptq_report.json``, print a JSON
    summary; returns 0.

    Raises:
        UserInputError: ``--model`` or ``--output`` missing, an option out of range, an unusable checkpoint
            (packed, or settings that quantize nothing), FASTA or output folder.
    """
    from ..errors import UserInputError

    if not args.model or not args.output:
        missing = " and ".join(o for o, v in (("--model", args.model), ("--output", args.output)) if not v)
        raise UserInputError(f"{missing} required: bitesm ptq --model CHECKPOINT --output DIR [options] "
                             "(or 'bitesm ptq analyze --model ... --output-dir ...')")
    _check_common(args)
    check_output(args.output, folder=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..ptq.convert import quantize_checkpoint

    report = quantize_checkpoint(
        args.model, args.output, calibration=args.calibration, num_calibration=args.num_calibration,
        sampling=args.sampling, seed=args.seed, weight_bits=args.weight_bits, act_bits=args.act_bits,
        method=args.method, sites=args.sites, layers=args.layers, observer=args.observer,
        weight_granularity=args.weight_granularity, batch_size=args.batch_size, max_length=args.max_length,
        weight_format=args.weight_format,
    )
    print(json.dumps({"output": str(args.output), "ptq": report["ptq"],
                      "compression_ratio": report["memory"]["compression_ratio"],
                      "file_bytes": report["memory"]["file_bytes"]}, indent=2))
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    """``bitesm ptq analyze``: run :func:`bitesm.ptq.analysis.analyze` and print ``tables.md``; returns 0.

    Raises:
        UserInputError: an option out of range, an unusable checkpoint, FASTA, assays or output folder.
    """
    _check_common(args)
    check_at_least(args.validation_size, "--validation-size")
    check_at_least(args.eval_max_length, "--eval-max-length", 3)
    out = check_output(args.output_dir, option="--output-dir", folder=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..ptq.analysis import analyze

    analyze(
        args.model, args.output_dir, calibration=args.calibration, sampling=args.sampling,
        num_calibration=args.num_calibration, observer=args.observer, max_length=args.max_length,
        batch_size=args.batch_size, seed=args.seed, assays=args.assays, reference=args.reference,
        assay_ids=args.assay_ids, validation_size=args.validation_size, eval_max_length=args.eval_max_length,
    )
    print((out / "tables.md").read_text())
    return 0
