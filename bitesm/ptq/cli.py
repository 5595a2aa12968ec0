"""``bitesm ptq`` (quantize and save a model) and ``bitesm ptq analyze`` (PTQ4Protein's tables and figures)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..io import atomic_write_json
from ..training.config import resolve_path
from .sites import METHODS, SITES

DEFAULT_CALIBRATION = "data/pretrain/swissprot_2014-01_sample50k.fasta.gz"


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _site_list(text: str) -> list[str]:
    sites = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(sites) - set(SITES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown site(s) {unknown}; choose from {', '.join(SITES)}")
    return sites


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    from .calibration import CALIBRATION_MODES

    parser.add_argument("--model", help="checkpoint folder or Hub id (facebook/esm2 format or a bitesm model)")
    parser.add_argument("--calibration", default=DEFAULT_CALIBRATION, help="FASTA to sample calibration proteins from")
    parser.add_argument("--sampling", default="uniform", choices=CALIBRATION_MODES, help="calibration sampling mode")
    parser.add_argument("--num-calibration", type=int, default=64, help="number of calibration proteins")
    parser.add_argument("--observer", default="minmax", choices=("minmax", "percentile", "mse"), help="range estimator")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per calibration protein (cropped)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--weight-bits", type=int, default=8, help="encoder Linear weight bits (32 = floating point)")
    parser.add_argument("--act-bits", type=int, default=8, help="activation bits at --sites (32 = floating point)")
    parser.add_argument("--method", default="piecewise", choices=METHODS, help="activation quantizer")
    parser.add_argument("--sites", type=_site_list, default=list(SITES), help=f"comma list from {','.join(SITES)}")
    parser.add_argument("--layers", type=_int_list, default=None, help="encoder layers to quantize, e.g. -2,-1")
    parser.add_argument("--weight-granularity", default="per_channel", choices=("per_channel", "per_tensor"))
    parser.add_argument("--output", help="folder for the quantized model")
    commands = parser.add_subparsers(dest="ptq_command", metavar="analyze")
    analyze = commands.add_parser("analyze", help="PTQ4Protein tables I, II, III, V and figures 2, 3 for one model")
    from .analysis import add_cli_arguments as add_analysis_arguments

    add_common_arguments(analyze)
    add_analysis_arguments(analyze)


def cli_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.ptq_command == "analyze":
        from .analysis import cli_main as analyze_main

        return analyze_main(args)
    if not args.model or not args.output:
        raise SystemExit("bitesm ptq: error: --model and --output are required (or use 'bitesm ptq analyze')")
    from .calibration import sample_calibration_set
    from .convert import check_ptq_effect, describe_weights, load_fp_model, ptq_settings, quantize_model
    from .memory import weight_memory_report

    model, tokenizer = load_fp_model(resolve_path(args.model))
    check_ptq_effect(
        model,
        ptq_settings(args.weight_bits, args.act_bits, args.method, args.sites, args.layers, args.weight_granularity),
        source=args.model,
    )
    calibration = sample_calibration_set(
        resolve_path(args.calibration), args.num_calibration, mode=args.sampling, seed=args.seed
    )
    quantized = quantize_model(
        model,
        tokenizer,
        [seq for _, seq in calibration],
        weight_bits=args.weight_bits,
        act_bits=args.act_bits,
        method=args.method,
        sites=args.sites,
        layers=args.layers,
        observer=args.observer,
        weight_granularity=args.weight_granularity,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    output = Path(args.output)
    quantized.save_pretrained(output)
    tokenizer.save_pretrained(output)
    report = weight_memory_report(quantized, quantized.config.ptq["weight_bits"], quantized.config.ptq["act_bits"])
    atomic_write_json(output / "ptq_report.json",
                      {"ptq": quantized.config.ptq, "memory": report, "weight_layers": describe_weights(quantized)})
    print(json.dumps({"output": str(output), "ptq": quantized.config.ptq, "compression_ratio": report["compression_ratio"]}, indent=2))
    return 0
