"""Checks a training run makes before it computes anything (``bitesm train``, ``bitesm lora``).

A mistake in a config should stop a run in its first second, not after hours of training: :func:`check_run`
verifies that every input path exists (``data.train_fasta``, the ``head`` files, the ProteinGym assays folder,
reference file and assay ids, local model folders), that the output folder can be written, and that
``data.max_length`` fits the model's positions. Each failure raises :class:`~bitesm.training.config.ConfigError`
naming the key or path and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..models.checkpoint_checks import looks_local
from .config import Config, ConfigError, resolve_path

__all__ = ["check_inputs", "check_max_length", "check_output_dir", "check_run", "max_length_limit"]


def check_run(config: Config, output_dir: str | os.PathLike) -> None:
    """All the checks of this module: :func:`check_inputs`, :func:`check_max_length`, then :func:`check_output_dir`
    (which creates nothing).

    Args:
        config: the run's validated config.
        output_dir: the run folder.

    Raises:
        ConfigError: the first failed check, naming the key or path and the fix.
    """
    check_inputs(config)
    check_max_length(config)
    check_output_dir(output_dir)


def _require_path(key: str, value: str | None, kind: str, fix: str) -> None:
    if value is None:
        return
    path = Path(resolve_path(value))
    ok = path.is_dir() if kind == "folder" else path.is_file()
    if ok:
        return
    what = "no such " + kind if not path.exists() else f"not a {kind}"
    raise ConfigError(f"{key}={value!r}: {what} ({path.resolve()}); {fix} (relative paths are read from the "
                      "working directory, then from the repository root)")


def check_inputs(config: Config) -> None:
    """Check that every file and folder the run will read exists.

    Checked: ``data.train_fasta`` (a file; with a ``head`` section the ``head.train_file``, ``labels_file`` and
    ``validation_file`` instead), ``evaluation.proteingym.assays`` (a folder holding every ``assay_ids`` entry as
    ``<id>.csv`` or ``.csv.gz``) and ``.reference`` (a file), and ``model.config``, ``model.from_pretrained`` and
    ``model.tokenizer`` when they can only be local paths (absolute, ``./``, ``~``, or two or more ``/``; a Hub id
    ``org/name`` is left to the loader).

    Raises:
        ConfigError: naming the key, the path and the fix.
    """
    if config.head is None:
        _require_path("data.train_fasta", config.data.train_fasta, "file",
                      "give the FASTA (.fasta or .fasta.gz) to train on")
    else:
        h = config.head
        for key in ("train_file", "labels_file", "validation_file"):
            _require_path(f"head.{key}", getattr(h, key), "file", "give an existing CSV / TSV or FASTA file")
    m = config.model
    for key in ("config", "from_pretrained", "tokenizer"):
        value = getattr(m, key)
        if value is not None and looks_local(value):
            _require_path(f"model.{key}", value, "folder",
                          "give a model folder with a config.json, or a HuggingFace Hub id ORG/NAME")
    pg = config.evaluation.proteingym
    if pg is not None:
        _require_path("evaluation.proteingym.assays", pg.assays, "folder",
                      "give the folder of <DMS_id>.csv assay files (data/proteingym/substitutions), or set "
                      "evaluation.proteingym to null")
        _require_path("evaluation.proteingym.reference", pg.reference, "file",
                      "give ProteinGym's DMS_substitutions.csv (data/proteingym/reference/DMS_substitutions.csv)")
        if pg.assay_ids:
            from ..evaluation.proteingym import find_assay_files

            try:
                found = find_assay_files(resolve_path(pg.assays))
            except FileNotFoundError as err:
                raise ConfigError(f"evaluation.proteingym.assays={pg.assays!r}: {err}") from err
            unknown = [a for a in pg.assay_ids if a not in found]
            if unknown:
                raise ConfigError(
                    f"evaluation.proteingym.assay_ids: {unknown} have no <id>.csv or .csv.gz in {pg.assays}; use ids "
                    f"of that folder (e.g. {list(found)[:3]}) or null for all"
                )


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Check that ``output_dir`` can be created and written (:func:`bitesm.io.check_writable`) before training
    starts; nothing is created.

    Raises:
        ConfigError: a file in the way, or the nearest existing folder cannot be written (read-only file system, no
            permission), naming the folder, the reason and the fix.
    """
    from ..errors import UserInputError
    from ..io import check_writable

    try:
        check_writable(output_dir, folder=True, option="--output-dir")
    except UserInputError as err:
        raise ConfigError(str(err)) from err


def max_length_limit(config: Config) -> tuple[int | None, str]:
    """The longest ``data.max_length`` (tokens, <cls> and <eos> included) the configured model takes.

    Read from the model's ``config.json`` (plus ``model.overrides``), without building the model:
    ``max_position_embeddings - pad_token_id - 1`` tokens (1,024 for ESM-2's 1,026 positions, rotary or learned).
    With ``model.attention_window`` set (Long ESM-2) the model is grown to ``data.max_length`` (the position table
    extended, :mod:`bitesm.models.long`), so there is no limit.

    Returns:
        ``(limit, why)``: the limit in tokens, or ``None`` when the model grows to fit; ``why`` names where it comes
        from (``max_position_embeddings`` of which config).
    """
    from ..models import bitesm_config_from_esm, load_esm_config
    from ..models.long import SPECIAL_TOKENS, max_residues

    m = config.model
    if m.attention_window is not None:
        return None, "model.attention_window grows the model to data.max_length"
    if m.from_pretrained is not None:
        source = resolve_path(m.from_pretrained)
        model_config = load_esm_config(source)
    else:
        source = resolve_path(m.config)
        model_config = bitesm_config_from_esm(
            load_esm_config(source), quantization=m.quantization, activation_bits=m.activation_bits, **m.overrides
        )
    try:
        limit = max_residues(model_config) + SPECIAL_TOKENS
    except ValueError:  # no pad token: positions cannot be counted
        return None, "the model config has no pad_token_id"
    return limit, f"max_position_embeddings={model_config.max_position_embeddings} of {source}"


def check_max_length(config: Config) -> None:
    """Refuse a ``data.max_length`` longer than the model's positions (:func:`max_length_limit`).

    Raises:
        ConfigError: naming ``data.max_length``, the limit, where it comes from, and the fix.
    """
    limit, why = max_length_limit(config)
    max_length = config.data.max_length
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"data.max_length={max_length} tokens is longer than the model takes: {why} allows {limit} tokens "
            f"(<cls>, {limit - 2} residues, <eos>); lower data.max_length to at most {limit}, or set "
            "model.attention_window (Long ESM-2: the model is grown to data.max_length)"
        )
