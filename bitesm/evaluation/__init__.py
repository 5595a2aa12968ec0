"""Evaluation of ESM-2-style masked language models.

ProteinGym zero-shot substitution benchmark (masked-marginals scoring, ProteinGym's ESM-2
strategy and long-sequence window policy; whole sequences for long models), mutant-string
utilities, and per-residue / protein embeddings of proteins of any length.
"""

from .context import attention_window
from .embeddings import ProteinEmbedding, embed_protein, embedding_windows
from .mutants import (
    ALLOWED_MUTANT_RESIDUES,
    MutantMismatchError,
    parse_mutant,
    validate_mutants,
)
from .proteingym import (
    ProteinGymInputError,
    add_cli_arguments,
    cli_main,
    default_max_residues,
    encode_sequence,
    evaluate_assay,
    evaluate_proteingym,
    find_assay_files,
    get_optimal_window,
    load_assay,
    load_published,
    load_reference,
    masked_marginals_scores,
    scoring_window,
)

__all__ = [
    "ProteinEmbedding",
    "attention_window",
    "embed_protein",
    "embedding_windows",
    "ALLOWED_MUTANT_RESIDUES",
    "MutantMismatchError",
    "parse_mutant",
    "validate_mutants",
    "ProteinGymInputError",
    "add_cli_arguments",
    "cli_main",
    "default_max_residues",
    "encode_sequence",
    "evaluate_assay",
    "evaluate_proteingym",
    "find_assay_files",
    "get_optimal_window",
    "load_assay",
    "load_published",
    "load_reference",
    "masked_marginals_scores",
    "scoring_window",
]
