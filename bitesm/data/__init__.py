"""Data pipeline: validated FASTA reading, ESM-2 tokenizer, HF datasets, MLM collation."""

from .collator import MLMCollator, encode_protein, tokenize_residues
from .dataset import load_fasta_dataset
from .fasta import (
    ESM_RESIDUES,
    STANDARD_AMINO_ACIDS,
    FastaFormatError,
    InvalidResidueError,
    iter_fasta,
    read_fasta,
    validate_sequence,
)
from .tokenizer import DEFAULT_TOKENIZER_DIR, load_tokenizer

__all__ = [
    "DEFAULT_TOKENIZER_DIR",
    "ESM_RESIDUES",
    "STANDARD_AMINO_ACIDS",
    "FastaFormatError",
    "InvalidResidueError",
    "MLMCollator",
    "encode_protein",
    "iter_fasta",
    "load_fasta_dataset",
    "load_tokenizer",
    "read_fasta",
    "tokenize_residues",
    "validate_sequence",
]
