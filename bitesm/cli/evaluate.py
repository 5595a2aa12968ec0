"""``bitesm eval proteingym | run | watch | compare | contacts | go``: parsers and handlers over
:mod:`bitesm.evaluation`.

The parsers import only the standard library: choices and defaults that the library defines are written here as
literals (tests check they equal the library's), and defaults that point at the repository's ``data/`` folder are
left ``None`` for the handler to resolve through the library. Each handler imports the library when it runs, checks
the cheap things first (option ranges, ``--device``, that ``--output`` can be written, that input files exist), then
loads the model and computes. A user's mistake raises :class:`bitesm.errors.UserInputError` (or an OS error about a
path), which :func:`bitesm.cli.main` prints in one line with exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._model_options import (
    MODEL_HELP,
    add_device_options,
    add_embedding_options,
    check_at_least,
    check_device,
    check_output,
    required_group,
)

#: ``--strategy`` choices: :data:`bitesm.evaluation.scoring.STRATEGIES`.
STRATEGIES = ("masked-marginals", "wt-marginals", "pseudo-ppl")
#: Suites of ``bitesm eval run`` / ``watch``: the names in :data:`bitesm.evaluation.run.SUITES`.
SUITE_NAMES = ("contacts", "go", "proteingym")
#: ``bitesm eval go --selection`` choices: :data:`bitesm.evaluation.go_prediction.SELECTIONS`.
GO_SELECTIONS = ("valid", "train-split")
#: ``bitesm eval contacts`` defaults: :data:`bitesm.evaluation.contacts.DEFAULT_N_TRAIN` and ``DEFAULT_C``.
CONTACTS_N_TRAIN, CONTACTS_C = 4, 0.15
#: ``bitesm eval go`` defaults: ``min_count`` and ``max_tokens`` of :data:`bitesm.evaluation.go_prediction.SUITE_DEFAULTS`.
GO_MIN_COUNT, GO_MAX_TOKENS = 50, 16_384
#: The GO file options and the file of the repository's ``data/go`` each defaults to (resolved by the handler).
GO_FILE_OPTIONS = {
    "train_fasta": "train_sequences.fasta.gz",
    "train_terms": "train_terms.tsv.gz",
    "valid_fasta": "valid_sequences.fasta.gz",
    "valid_terms": "valid_terms.tsv.gz",
    "obo": "go_2014-01_metastudent.obo.gz",
}

DESCRIPTION = (
    "Evaluate a masked protein language model: ProteinGym fitness prediction, unsupervised contact precision and GO "
    "function prediction, alone or as cached multi-suite runs, on every checkpoint of a training run as it appears, "
    "and compare the results of several models."
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bitesm eval`` and its subcommands to the ``bitesm`` subparsers ``commands``."""
    evaluate = commands.add_parser("eval", help="evaluate a model", description=DESCRIPTION)
    suites = evaluate.add_subparsers(dest="suite", required=True, metavar="SUITE")
    add_proteingym_parser(suites)
    add_run_parser(suites)
    add_watch_parser(suites)
    add_contacts_parser(suites)
    add_go_parser(suites)
    add_compare_parser(suites)


# ----------------------------------------------------------------------------------------------
# bitesm eval proteingym
# ----------------------------------------------------------------------------------------------
def add_proteingym_parser(suites: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``proteingym`` to the ``bitesm eval`` subparsers; returns its parser (handler :func:`run_proteingym`)."""
    parser = suites.add_parser(
        "proteingym", help="ProteinGym zero-shot DMS Spearman by masked-marginals",
        description="Score every mutant of ProteinGym's DMS substitution assays with a masked language model and "
                    "report ProteinGym's metrics per assay and its summary. Prints one row per assay next to the "
                    "published ESM-2 values, and writes the full result as JSON with --output.")
    required = required_group(parser)
    required.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--assays", default=None,
                        help="folder of ProteinGym <DMS_id>.csv / .csv.gz substitution files (default: the 18 "
                             "assays in the repository's data/proteingym/substitutions; required when bitesm is "
                             "installed without the repository)")
    parser.add_argument("--reference", default=None,
                        help="ProteinGym DMS_substitutions.csv (default: <assays>/../reference/DMS_substitutions.csv, "
                             "else the repository's data/proteingym/reference/DMS_substitutions.csv)")
    parser.add_argument("--output", default=None, help="write the results JSON here (default: print only)")
    parser.add_argument("--assay-ids", default=None,
                        help="comma-separated DMS_ids to evaluate (default: all in --assays)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="masked-marginals",
                        help="ProteinGym scoring strategy (default masked-marginals, the ESM-2 leaderboard's; "
                             "pseudo-ppl costs one forward pass per residue of every mutant)")
    parser.add_argument("--batch-size", type=int, default=32, help="masked sequences per forward pass (default 32)")
    add_device_options(parser, "dtype of the model weights (default float32; log-softmax is always float32)")
    parser.set_defaults(handler=run_proteingym)
    return parser


def _assays_and_reference(assays: str | None, reference: str | None) -> tuple[Path, Path]:
    """``--assays`` (default: the repository's embedded assays, when present) and ``--reference`` (default:
    :func:`bitesm.evaluation.proteingym.default_reference`)."""
    from ..errors import UserInputError
    from ..evaluation.proteingym import DEFAULT_ASSAYS_DIR, default_reference

    if assays is None:
        if not DEFAULT_ASSAYS_DIR.is_dir():
            raise UserInputError("--assays is required (folder of ProteinGym <DMS_id>.csv / .csv.gz files): this "
                                 f"installation has no embedded assays at {DEFAULT_ASSAYS_DIR}.")
        assays_dir = DEFAULT_ASSAYS_DIR
    else:
        assays_dir = Path(assays)
    return assays_dir, Path(reference) if reference else default_reference(assays_dir)


def run_proteingym(args: argparse.Namespace) -> int:
    """``bitesm eval proteingym``: score the assays with the model, print the per-assay table and the Spearman lines.

    Checks ``--batch-size``, ``--device``, that ``--output`` can be written and that the assays folder and the
    reference file exist before loading the model (:func:`bitesm.evaluation.model_loading.load_masked_lm`), then
    runs :func:`bitesm.evaluation.proteingym.evaluate_proteingym` and prints
    :func:`~bitesm.evaluation.proteingym.format_results_table` and
    :func:`~bitesm.evaluation.proteingym.describe_spearman`.

    Args:
        args: the parsed options of :func:`add_proteingym_parser`.

    Returns:
        0.

    Raises:
        bitesm.errors.UserInputError: a bad option, device, output path, input file or model (ProteinGymInputError,
            MutantMismatchError, ModelLoadError...), each naming the input and the fix.
    """
    from ..evaluation.model_loading import load_masked_lm
    from ..evaluation.proteingym import (
        describe_spearman,
        evaluate_proteingym,
        find_assay_files,
        format_results_table,
        load_reference,
    )

    assays, reference = _assays_and_reference(args.assays, args.reference)
    check_at_least(args.batch_size, "--batch-size")
    device = check_device(args.device)
    check_output(args.output, "--output")
    find_assay_files(assays)
    load_reference(reference)
    model, tokenizer = load_masked_lm(args.model, dtype=args.dtype, device=device)
    result = evaluate_proteingym(
        model, tokenizer, assays_dir=assays, reference_csv=reference, output_json=args.output,
        assay_ids=args.assay_ids, batch_size=args.batch_size, device=device, model_name=str(args.model),
        strategy=args.strategy,
    )
    print(format_results_table(result))
    for line in describe_spearman(result):
        print(line)
    if args.output:
        print(f"wrote {args.output}")
    return 0


# ----------------------------------------------------------------------------------------------
# bitesm eval run / watch
# ----------------------------------------------------------------------------------------------
def _add_suite_options(parser: argparse.ArgumentParser) -> None:
    """The options ``bitesm eval run`` and ``bitesm eval watch`` share."""
    # dest "suites": "suite" is the subcommand's name (bitesm eval run), which error messages show
    parser.add_argument("--suite", dest="suites", metavar="SUITES", default="proteingym",
                        help=f"comma-separated suites (available: {', '.join(SUITE_NAMES)}; default proteingym)")
    parser.add_argument("--assays", default=None,
                        help="ProteinGym assays folder (default: the 18 assays in the repository's "
                             "data/proteingym/substitutions)")
    parser.add_argument("--reference", default=None,
                        help="ProteinGym DMS_substitutions.csv (default: <assays>/../reference/DMS_substitutions.csv, "
                             "else the repository's data/proteingym/reference/DMS_substitutions.csv)")
    parser.add_argument("--assay-ids", default=None, help="comma-separated ProteinGym DMS_ids (default: all)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="masked-marginals",
                        help="ProteinGym scoring strategy (default masked-marginals)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default 32)")
    add_device_options(parser)
    parser.add_argument("--cache-dir", default=None,
                        help="result cache folder (default $BITESM_CACHE_DIR or ~/.cache/bitesm/eval)")
    parser.add_argument("--no-cache", action="store_true", help="recompute everything and store nothing")


def add_run_parser(suites: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``run`` to the ``bitesm eval`` subparsers; returns its parser (handler :func:`run_suites`)."""
    parser = suites.add_parser(
        "run", help="evaluate a model on suites (proteingym, contacts, go) with results cached by content: reruns "
                    "are cheap",
        description="Evaluate one model on one or several suites (proteingym, contacts, go) with every result cached "
                    "by content, so a rerun on an unchanged model reads its results back. Writes <suite>.json per "
                    "suite and run.json into the --output folder.")
    required = required_group(parser)
    required.add_argument("--model", required=True, help=MODEL_HELP)
    required.add_argument("--output", required=True, help="folder for <suite>.json and run.json (created)")
    _add_suite_options(parser)
    parser.set_defaults(handler=run_suites)
    return parser


def add_watch_parser(suites: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``watch`` to the ``bitesm eval`` subparsers; returns its parser (handler :func:`run_watch`)."""
    parser = suites.add_parser(
        "watch", help="evaluate every new checkpoint of a bitesm train run as it appears",
        description="Evaluate every checkpoint of a bitesm train run as it appears, with the suites and result cache "
                    "of bitesm eval run, until the final model has been evaluated. Results go to "
                    "RUN_DIR/eval/<checkpoint>/, one line per checkpoint to RUN_DIR/eval/history.jsonl, and the "
                    "summaries to TensorBoard.")
    parser.add_argument("run_dir", help="a bitesm train --output-dir (its checkpoints/ and model/ are evaluated)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between polls (default 60)")
    parser.add_argument("--once", action="store_true", help="evaluate what is there now, then stop")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds (default: never)")
    _add_suite_options(parser)
    parser.set_defaults(handler=run_watch)
    return parser


def _settings_and_cache(args: argparse.Namespace) -> tuple[Any, Any]:
    """The :class:`~bitesm.evaluation.run.EvalSettings` and :class:`~bitesm.evaluation.cache.ResultCache` of the
    options of :func:`_add_suite_options`."""
    from ..evaluation.cache import ResultCache
    from ..evaluation.run import EvalSettings

    settings = EvalSettings(assays=args.assays, reference=args.reference, assay_ids=args.assay_ids,
                            strategy=args.strategy, batch_size=args.batch_size)
    return settings, ResultCache(args.cache_dir, enabled=not args.no_cache)


def _print_summary(name: str, out: dict[str, Any]) -> None:
    """One line per suite of a :func:`~bitesm.evaluation.run.run_evaluation` result (summary metrics, seconds,
    cache hits), and the Spearman lines of ProteinGym."""
    from ..evaluation.proteingym import describe_spearman

    for suite, result in out["results"].items():
        info = out["suites"][suite]
        summary = result.get("summary") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float) and not k.endswith("_se"))
        if suite == "proteingym":
            shown = "ProteinGym summary " + shown if shown else shown
        print(f"{name}: {suite}: {shown or 'done'} ({info['seconds']:.1f} s, {info['cache_hits']} cached, "
              f"{info['cache_misses']} computed)")
        if suite == "proteingym":
            for line in describe_spearman(result):
                print(f"  {line}")


def run_suites(args: argparse.Namespace) -> int:
    """``bitesm eval run``: :func:`bitesm.evaluation.run.run_evaluation` of the model on the suites; prints one
    summary line per suite.

    The suite names, the settings, ``--device`` and the ``--output`` folder are checked before the model is loaded.

    Args:
        args: the parsed options of :func:`add_run_parser`.

    Returns:
        0.

    Raises:
        bitesm.errors.UserInputError: an unknown suite or bad setting (EvalInputError), device, output folder, model
            or input file of a suite, each naming the input and the fix.
    """
    from ..evaluation.run import parse_suites, run_evaluation

    suites = parse_suites(args.suites)
    settings, cache = _settings_and_cache(args)
    device = check_device(args.device)
    check_output(args.output, "--output", folder=True)
    out = run_evaluation(model=args.model, suites=suites, output_dir=args.output, settings=settings, cache=cache,
                         dtype=args.dtype, device=device)
    _print_summary(str(args.model), out)
    print(f"wrote {Path(args.output) / 'run.json'} ({out['seconds'] + out['load_seconds']:.1f} s)")
    return 0


def run_watch(args: argparse.Namespace) -> int:
    """``bitesm eval watch``: :func:`bitesm.evaluation.run.watch` on the training run folder; prints how many
    model folders were evaluated and where the history is.

    Args:
        args: the parsed options of :func:`add_watch_parser`.

    Returns:
        0.

    Raises:
        bitesm.errors.UserInputError: a missing run folder, an unknown suite or bad setting (EvalInputError), a bad
            device, an ``eval/`` folder that cannot be written, or an input error of a suite.
    """
    from ..evaluation.run import parse_suites, watch

    suites = parse_suites(args.suites)
    settings, cache = _settings_and_cache(args)
    device = check_device(args.device)
    run_dir = Path(args.run_dir)
    if run_dir.is_dir():  # a missing run folder is reported by watch itself, naming it
        check_output(str(run_dir / "eval"), None, folder=True)
    written = watch(run_dir=run_dir, suites=suites, settings=settings, cache=cache, dtype=args.dtype, device=device,
                    interval=args.interval, once=args.once, timeout=args.timeout)
    print(f"bitesm eval watch: evaluated {len(written)} model folder(s); history in "
          f"{run_dir / 'eval' / 'history.jsonl'}")
    return 0


# ----------------------------------------------------------------------------------------------
# bitesm eval contacts
# ----------------------------------------------------------------------------------------------
def add_contacts_parser(suites: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``contacts`` to the ``bitesm eval`` subparsers; returns its parser (handler :func:`run_contacts`)."""
    parser = suites.add_parser(
        "contacts", help="unsupervised contact precision (long-range P@L) from attention maps",
        description="Measure unsupervised contact precision (long-range P@L, P@L/2, P@L/5) from a model's attention "
                    "maps, with an L1 logistic regression (Rao et al. 2021) fitted on a few structures and "
                    "evaluated on the others. The model needs global attention and is not trained.")
    required = required_group(parser)
    required.add_argument("--model", required=True,
                          help="checkpoint folder or Hugging Face Hub id of a global-attention masked language "
                               "model (EsmForMaskedLM or a bitesm model)")
    required.add_argument("--output", required=True, help="write the results JSON here")
    parser.add_argument("--structures", nargs="+", default=None,
                        help="PDB/mmCIF files (.pdb, .ent, .cif, .mmcif, .bcif, optionally .gz) or folders of them "
                             "(default: the 12 structures in the repository's data/structures)")
    parser.add_argument("--n-train", type=int, default=CONTACTS_N_TRAIN,
                        help=f"structures the L1 logistic regression is fitted on (default {CONTACTS_N_TRAIN}); "
                             "the others are evaluated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split and the solver (default 0)")
    parser.add_argument("--C", dest="C", type=float, default=CONTACTS_C,
                        help=f"inverse L1 strength of the regression (default {CONTACTS_C})")
    add_device_options(parser, "dtype of the model weights (default float32; attention maps are used in float32)")
    parser.set_defaults(handler=run_contacts)
    return parser


def run_contacts(args: argparse.Namespace) -> int:
    """``bitesm eval contacts``: :func:`bitesm.evaluation.contacts.evaluate_contacts`; writes ``--output`` (JSON)
    and prints :func:`~bitesm.evaluation.contacts.format_table`.

    ``--n-train``, ``--device``, ``--output`` and the structure files are checked before the model is loaded.

    Args:
        args: the parsed options of :func:`add_contacts_parser`.

    Returns:
        0.

    Raises:
        bitesm.errors.UserInputError: a bad option, device or output path; a missing structure (StructureError);
            ContactsInputError (a long model, too few usable structures); ModelLoadError.
    """
    from ..errors import UserInputError
    from ..evaluation.contacts import DEFAULT_STRUCTURES_DIR, evaluate_contacts, format_table
    from ..evaluation.model_loading import load_masked_lm
    from ..evaluation.structures import find_structure_files
    from ..io import atomic_write_json

    structures = args.structures
    if not structures:
        if not DEFAULT_STRUCTURES_DIR.is_dir():
            raise UserInputError("--structures is required (PDB/mmCIF files or folders of them): this installation "
                                 f"has no embedded structures at {DEFAULT_STRUCTURES_DIR}.")
        structures = [DEFAULT_STRUCTURES_DIR]
    check_at_least(args.n_train, "--n-train")
    device = check_device(args.device)
    check_output(args.output, "--output")
    files = find_structure_files(structures)
    model, tokenizer = load_masked_lm(args.model, dtype=args.dtype, device=device)
    result = evaluate_contacts(model, tokenizer, structure_paths=files, n_train=args.n_train, seed=args.seed,
                               C=args.C, model_name=str(args.model))
    atomic_write_json(Path(args.output), result)
    print(format_table(result))
    print(f"wrote {args.output}")
    return 0


# ----------------------------------------------------------------------------------------------
# bitesm eval go
# ----------------------------------------------------------------------------------------------
def add_go_parser(suites: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``go`` to the ``bitesm eval`` subparsers; returns its parser (handler :func:`run_go`)."""
    parser = suites.add_parser(
        "go", help="GO function prediction from embeddings (CAFA-style Fmax by cafaeval, BPO/CCO/MFO)",
        description="Predict Gene Ontology terms (BPO, CCO, MFO) from a model's mean-pooled embeddings with a small "
                    "MLP per ontology, and score them CAFA-style with cafaeval (Fmax, weighted Fmax, S-min) next to "
                    "the frequency baseline. The data default to the CAFA5-style split shipped in the repository's "
                    "data/go folder.")
    required = required_group(parser)
    required.add_argument("--model", required=True, help=MODEL_HELP)
    required.add_argument("--output", required=True,
                          help="folder for go.json, go.md, the CAFA prediction files, ground truth and IA.txt")
    parser.add_argument("--train-fasta", default=None,
                        help="training proteins (FASTA, .gz ok; default: data/go/train_sequences.fasta.gz)")
    parser.add_argument("--train-terms", default=None,
                        help="training annotations, EntryID<TAB>term<TAB>aspect (CAFA5 train_terms.tsv, .gz ok; "
                             "default: data/go/train_terms.tsv.gz)")
    parser.add_argument("--valid-fasta", default=None,
                        help="validation proteins (FASTA; default: data/go/valid_sequences.fasta.gz)")
    parser.add_argument("--valid-terms", default=None,
                        help="validation annotations, as --train-terms (default: data/go/valid_terms.tsv.gz)")
    parser.add_argument("--obo", default=None,
                        help="the GO release of the annotations (.obo or .obo.gz; default: "
                             "data/go/go_2014-01_metastudent.obo.gz)")
    parser.add_argument("--ia", default="compute",
                        help="information accretion for weighted Fmax / S-min: 'compute' (from the training "
                             "annotations; default), 'none', or a term<TAB>IA file (CAFA5 IA.txt)")
    parser.add_argument("--selection", choices=GO_SELECTIONS, default="valid",
                        help="early stopping of the MLP on the validation proteins ('valid', the protocol of Long "
                             "ESM-2; default; slightly optimistic) or on 10%% of the training proteins, leaving the "
                             "validation set unseen until scoring ('train-split')")
    parser.add_argument("--min-count", type=int, default=GO_MIN_COUNT,
                        help=f"MLP output terms: at least this many training proteins (default {GO_MIN_COUNT})")
    parser.add_argument("--seed", type=int, default=0, help="classifier seed (default 0)")
    parser.add_argument("--max-train", type=int, default=None,
                        help="use a seeded random subset of this many training proteins (default: all)")
    parser.add_argument("--max-valid", type=int, default=None,
                        help="use a seeded random subset of this many validation proteins (default: all)")
    add_embedding_options(parser, GO_MAX_TOKENS)
    add_device_options(parser)
    parser.set_defaults(handler=run_go)
    return parser


def run_go(args: argparse.Namespace) -> int:
    """``bitesm eval go``: embed, train, score (:func:`bitesm.evaluation.go_prediction.run_go`); prints the markdown
    table and the protocol line, and writes ``--output``/go.json.

    A GO file option left out is the file of :data:`bitesm.evaluation.go_prediction.DEFAULT_GO_DATA`. Option
    ranges, ``--ia``, every input file, ``--device`` and the ``--output`` folder are checked before the model is
    loaded.

    Args:
        args: the parsed options of :func:`add_go_parser`.

    Returns:
        0.

    Raises:
        bitesm.errors.UserInputError: a bad option or device, an output folder that cannot be written, a missing
            input file (GoFileNotFoundError naming the option), a malformed file (GoFormatError, FastaFormatError,
            InvalidResidueError), ModelLoadError.
    """
    import time

    from ..errors import UserInputError
    from ..evaluation import go_prediction as go
    from ..evaluation.model_loading import load_masked_lm
    from ..io import atomic_write_json

    for option in ("--min-count", "--max-tokens", "--max-train", "--max-valid"):
        check_at_least(getattr(args, option[2:].replace("-", "_")), option)
    ia = None if args.ia in ("none", "None", "") else args.ia
    if ia not in (None, "compute") and not Path(ia).is_file():
        raise UserInputError(f"--ia {ia}: no such file. Fix: 'compute', 'none' or a term<TAB>IA file.")
    files = {}
    for key in GO_FILE_OPTIONS:
        option, given = f"--{key.replace('_', '-')}", getattr(args, key)
        path = Path(given) if given is not None else go.DEFAULT_GO_DATA[key]
        if not path.is_file():
            default = "" if given is not None else f" (the default; pass {option})"
            raise go.GoFileNotFoundError(f"{option} {path}{default}: no such file.")
        files[key] = str(path)
    device = check_device(args.device)
    check_output(args.output, "--output", folder=True)
    options = {**files, "ia": ia, "layer": args.layer, "max_tokens": args.max_tokens, "selection": args.selection,
               "min_count": args.min_count, "seed": args.seed, "max_train": args.max_train,
               "max_valid": args.max_valid}
    t0 = time.perf_counter()
    model, tokenizer = load_masked_lm(args.model, dtype=args.dtype, device=device)
    result = go.run_go(model, tokenizer, options=options, output_dir=args.output, progress=True)
    result["model"] = str(args.model)
    atomic_write_json(Path(args.output) / "go.json", result)
    long_threshold = result.get("protocol", {}).get("long_threshold", 1024)
    print(go.markdown_table(result))
    print(f"protocol: MLP early-stopped on {'the validation set' if args.selection == 'valid' else '10% of train'}; "
          f"{result['n_train']} train / {result['n_valid']} validation proteins "
          f"({result['n_valid_long']} longer than {long_threshold:,} residues); {time.perf_counter() - t0:.0f} s")
    print(f"wrote {Path(args.output) / 'go.json'}")
    return 0


# ----------------------------------------------------------------------------------------------
# bitesm eval compare
# ----------------------------------------------------------------------------------------------
def add_compare_parser(suites: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``compare`` to the ``bitesm eval`` subparsers; returns its parser (handler :func:`run_compare`)."""
    parser = suites.add_parser(
        "compare", help="compare ProteinGym results: markdown table with bootstrap errors and Z-tests, PNG plots",
        description="Compare the ProteinGym results of two or more models on the assays they share: ProteinGym's "
                    "summary of every metric with bootstrap standard errors, and a paired one-sided Z-test of each "
                    "model against the first. Prints a markdown table, and with --output also writes it and two PNG "
                    "plots.")
    parser.add_argument("results", nargs="+", help="two or more proteingym.json files or bitesm eval run folders")
    parser.add_argument("--output", default=None, help="folder for compare.md and the PNG plots (default: none)")
    parser.add_argument("--labels", default=None, help="comma-separated display names, one per result")
    parser.add_argument("--reference", default=None,
                        help="ProteinGym DMS_substitutions.csv (default: the repository's "
                             "data/proteingym/reference/DMS_substitutions.csv)")
    parser.set_defaults(handler=run_compare)
    return parser


def run_compare(args: argparse.Namespace) -> int:
    """``bitesm eval compare``: :func:`bitesm.evaluation.compare.compare` of the results; prints the markdown table
    and, with ``--output``, writes ``compare.md`` and the plots there.

    Args:
        args: the parsed options of :func:`add_compare_parser`.

    Returns:
        0.

    Raises:
        bitesm.errors.UserInputError: an output folder that cannot be written, a result that is not a ProteinGym
            result or shares no assay (CompareInputError), an assay missing from the reference
            (AggregationInputError), a missing reference file.
    """
    from ..evaluation.compare import compare, markdown_table, plot_comparison
    from ..io import atomic_write_text

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    check_output(args.output, "--output", folder=True)
    comparison = compare(paths=args.results, reference_csv=args.reference, labels=labels)
    text = markdown_table(comparison)
    print(text)
    if args.output:
        atomic_write_text(Path(args.output) / "compare.md", text)
        for path in plot_comparison(comparison, args.output):
            print(f"wrote {path}")
    return 0
