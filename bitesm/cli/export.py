"""``bitesm export``, over :func:`bitesm.models.packed.export_packed`. The parser imports only the standard
library."""

from __future__ import annotations

import argparse

from ._model_options import check_output, required_group

DESCRIPTION = (
    "Export a trained ternary bitesm checkpoint for inference. --format packed stores every BitLinear weight as 2-bit "
    "ternary codes with one scale per layer (about 12x smaller weight files) and runs it with an integer GEMM; the "
    "folder loads with from_pretrained and gives the latent model's logits."
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bitesm export`` to the ``bitesm`` subparsers ``commands``."""
    parser = commands.add_parser(
        "export", help="export a ternary checkpoint: --format packed (2-bit weights, integer inference, ~12x smaller)",
        description=DESCRIPTION)
    required = required_group(parser)
    required.add_argument("--model", required=True, help="ternary bitesm checkpoint folder (or Hub id)")
    required.add_argument("--output", required=True, help="new folder for the exported checkpoint")
    parser.add_argument("--format", choices=("packed",), default="packed",
                        help="packed: 2-bit ternary weights + per-layer scales, integer inference (default)")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """``bitesm export``: pack ``--model`` into ``--output`` and print the sizes; returns 0.

    Raises:
        UserInputError: nothing to pack (floating-point or already packed checkpoint), an unusable checkpoint, an
            output folder that exists and is not empty or cannot be written.
    """
    check_output(args.output, folder=True)
    from ..models.packed import export_packed

    info = export_packed(args.model, args.output)
    ratio = f", {info['ratio']:.1f}x smaller" if info["ratio"] else ""
    print(f"wrote {args.output}: {info['packed_layers']} packed layers, weights {info['output_bytes']:,} bytes "
          f"(from {info['input_bytes']:,}{ratio})")
    return 0
