"""Evaluation of ESM-2-style masked language models.

ProteinGym zero-shot substitution benchmark (scoring strategies masked-marginals, wt-marginals and pseudo-ppl with
ProteinGym's window rules, whole sequences for long models; ProteinGym's metrics, summary and statistics), results
cached by content for reruns, mutant-string utilities, and per-residue / protein embeddings of proteins of any length.
"""

from .context import attention_window
from .embeddings import ProteinEmbedding, embed_protein, embedding_windows
from .mutants import (
    ALLOWED_MUTANT_RESIDUES,
    MutantMismatchError,
    parse_mutant,
    validate_mutants,
)
from .context import default_max_residues
from .mutants import apply_mutant
from .proteingym import (
    evaluate_assay,
    evaluate_proteingym,
    find_assay_files,
    load_assay,
    load_published,
    load_reference,
    summarize,
)
from .scoring import (
    STRATEGIES,
    ProteinGymInputError,
    encode_sequence,
    get_optimal_window,
    masked_marginals_scores,
    overlapping_windows,
    pseudo_ppl_scores,
    score_mutants,
    scoring_window,
    wt_marginals_scores,
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
    "STRATEGIES",
    "apply_mutant",
    "overlapping_windows",
    "pseudo_ppl_scores",
    "score_mutants",
    "summarize",
    "wt_marginals_scores",
]
