"""``bitesm convert long``, over :func:`bitesm.models.long.convert_to_long`. The parser imports only the standard
library."""

from __future__ import annotations

import argparse
import json
import logging

from ._model_options import check_at_least, check_output, required_group

#: :data:`bitesm.models.long.DEFAULT_MAX_LENGTH` and ``DEFAULT_WINDOW`` (a test checks they agree).
DEFAULT_MAX_LENGTH, DEFAULT_WINDOW = 2048, 1024

DESCRIPTION = (
    "Convert an ESM-2 or bitesm checkpoint to Long ESM-2 (arXiv 2501.07747): Longformer-style sliding-window "
    "attention of --window tokens and an input limit of --max-length residues. The weights are unchanged, so proteins "
    "that fit in the window get exactly the original outputs."
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bitesm convert`` and its ``long`` conversion to the ``bitesm`` subparsers ``commands``."""
    convert = commands.add_parser("convert", help="convert a checkpoint", description="Convert a checkpoint.")
    conversions = convert.add_subparsers(dest="conversion", required=True, metavar="CONVERSION")
    long = conversions.add_parser(
        "long", help="Long ESM-2 (arXiv 2501.07747): sliding-window attention and a longer input (2,048 residues)",
        description=DESCRIPTION)
    required = required_group(long)
    required.add_argument("--model", required=True,
                          help="checkpoint folder or Hub id: ESM-2 (facebook/esm2 format) or a bitesm model")
    required.add_argument("--output", required=True, help="folder for the long model and its tokenizer")
    long.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                      help=f"longest protein in residues (default {DEFAULT_MAX_LENGTH}, the paper's; ESM-2 takes 1022)")
    long.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                      help=f"sliding-window width in tokens, half on each side (default {DEFAULT_WINDOW})")
    long.set_defaults(handler=run_long)


def run_long(args: argparse.Namespace) -> int:
    """``bitesm convert long``: convert, save (with remote code) and print a JSON summary; returns 0.

    Raises:
        UserInputError: an option out of range, an unusable checkpoint, a model already long with these settings,
            an output folder that cannot be written.
    """
    check_at_least(args.max_length, "--max-length")
    check_at_least(args.window, "--window", 2)
    check_output(args.output, folder=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..models.long import convert_checkpoint_to_long

    print(json.dumps(convert_checkpoint_to_long(args.model, args.output, max_length=args.max_length,
                                                window=args.window), indent=2))
    return 0
