"""Data pipeline: validated FASTA reading, ESM-2 tokenizer, HF datasets, MLM collation, labelled proteins."""

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
from .labelled import LabelledDataError, SequenceLabelCollator, load_labelled_sequences
from .tokenizer import DEFAULT_TOKENIZER_DIR, load_tokenizer

__all__ = [
    "DEFAULT_TOKENIZER_DIR",
    "ESM_RESIDUES",
    "STANDARD_AMINO_ACIDS",
    "FastaFormatError",
    "InvalidResidueError",
    "LabelledDataError",
    "MLMCollator",
    "SequenceLabelCollator",
    "encode_protein",
    "iter_fasta",
    "load_fasta_dataset",
    "load_labelled_sequences",
    "load_tokenizer",
    "read_fasta",
    "tokenize_residues",
    "validate_sequence",
]
