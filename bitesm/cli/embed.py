"""``bitesm embed``: the parser and handler over :mod:`bitesm.evaluation.embeddings`.

The parser imports only the standard library; the handler imports the library when it runs.
"""

from __future__ import annotations

import argparse

from ._model_options import (
    MODEL_HELP,
    add_device_options,
    add_embedding_options,
    check_at_least,
    check_device,
    check_output,
    required_group,
)

#: ``--max-tokens`` default: that of :func:`bitesm.evaluation.embeddings.embed_sequences`.
MAX_TOKENS = 16_384


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bitesm embed`` to the ``bitesm`` subparsers ``commands``; returns its parser (handler
    :func:`run_embed`)."""
    parser = commands.add_parser(
        "embed", help="per-protein (and per-residue) embeddings of a FASTA file, proteins of any length, to "
                      "safetensors",
        description="Embed the proteins of a FASTA file with a masked language model and write one mean-pooled "
                    "vector per protein, and optionally one per residue, to a safetensors file. Proteins longer "
                    "than the model's context are embedded from windows, so every residue counts.")
    required = required_group(parser)
    required.add_argument("--model", required=True, help=MODEL_HELP)
    required.add_argument("--fasta", required=True, help="proteins to embed (FASTA, .gz allowed)")
    required.add_argument("--output", required=True, help="safetensors file to write")
    add_embedding_options(parser, MAX_TOKENS)
    parser.add_argument("--per-residue", action="store_true", help="also store one vector per residue")
    parser.add_argument("--max-residues", type=int, default=None,
                        help="residues per pass (default: the model's maximum; unlimited for a long model)")
    add_device_options(parser)
    parser.set_defaults(handler=run_embed)
    return parser


def run_embed(args: argparse.Namespace) -> int:
    """``bitesm embed``: :func:`bitesm.evaluation.embeddings.embed_sequences` of the FASTA records, written by
    :func:`~bitesm.evaluation.embeddings.save_embeddings`; prints what was written.

    ``--max-tokens``, ``--max-residues``, ``--device`` and that ``--output`` can be written are checked before the
    model is loaded; ``--layer`` is checked against the model's layers before anything is embedded.

    Args:
        args: the parsed options of :func:`register`'s parser.

    Returns:
        0.

    Raises:
        bitesm.errors.UserInputError: a bad option, device or output path; ModelLoadError; a malformed FASTA file
            (FastaFormatError, InvalidResidueError); EmbeddingInputError (``--layer`` or ``--max-residues`` out of
            the model's range, an empty protein), each naming the input and the fix.
    """
    from ..data.fasta import read_fasta
    from ..evaluation.embeddings import embed_sequences, save_embeddings
    from ..evaluation.model_loading import load_masked_lm

    check_at_least(args.max_tokens, "--max-tokens")
    check_at_least(args.max_residues, "--max-residues")
    device = check_device(args.device)
    check_output(args.output, "--output")
    model, tokenizer = load_masked_lm(args.model, dtype=args.dtype, device=device)
    records = read_fasta(args.fasta)
    result = embed_sequences(model, tokenizer, records, layer=args.layer, per_residue=args.per_residue,
                             max_residues=args.max_residues, max_tokens=args.max_tokens, progress=True)
    save_embeddings(result, args.output)
    print(f"wrote {args.output}: {len(result.ids)} proteins x {result.mean.shape[1]} "
          f"({'per residue and ' if result.per_residue is not None else ''}mean over residues)")
    return 0
