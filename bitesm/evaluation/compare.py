"""Compare ProteinGym results of several models: ``bitesm eval compare A B ...``.

Reads the ``proteingym.json`` of each model (an ``bitesm eval run`` output folder, a ``bitesm train`` run folder
with ``eval/proteingym.json``, or the JSON file itself), restricts every model to the assays they all have, and
reports, per model:

* ProteinGym's summary of every metric (:func:`bitesm.evaluation.aggregation.aggregate`) with its bootstrap
  standard error (10,000 resamples stratified by selection type, ProteinGym's
  ``compute_bootstrap_standard_error_functional_categories``);
* the paired one-sided Z-test of 2Bits of Protein (Table 3) of each model against the first one
  (:func:`bitesm.evaluation.aggregation.paired_z_test`, H1: the model beats the first);
* the published ESM-2 (8M) and (35M) Spearman's rho over the same assays, when the results carry them.

Output: a markdown table (printed, and written to ``compare.md``) and two PNG plots written with matplotlib:
``spearman_scatter.png`` (per-assay Spearman's rho of each model against the first) and ``spearman_bars.png``
(per-assay bars).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserInputError
from .aggregation import aggregate, bootstrap_standard_error, paired_z_test
from .metrics import METRICS
from .proteingym import DEFAULT_REFERENCE, PUBLISHED_MODELS, load_reference

__all__ = ["DEFAULT_REFERENCE", "CompareInputError", "load_results", "compare", "markdown_table", "plot_comparison"]

_PUBLISHED_LABELS = {key: f"ESM-2 {key.split('_')[1]} (published)" for key in PUBLISHED_MODELS.values()}


class CompareInputError(UserInputError):
    """A ``bitesm eval compare`` input is unusable; the message names the input and the fix."""


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A ProteinGym result dict from a JSON file or a folder holding ``proteingym.json`` / ``eval/proteingym.json``.

    Raises:
        CompareInputError: nothing found, unreadable JSON, or no ``"assays"`` list in it.
    """
    path = Path(path)
    candidates = [path] if path.is_file() else [path / "proteingym.json", path / "eval" / "proteingym.json"]
    for candidate in candidates:
        if candidate.is_file():
            try:
                result = json.loads(candidate.read_text(encoding="utf-8"))
            except ValueError as err:
                raise CompareInputError(f"{candidate} is not valid JSON ({err}). Fix: rerun bitesm eval run.") from err
            if not isinstance(result.get("assays"), list):
                raise CompareInputError(
                    f"{candidate} has no 'assays' list: not a bitesm ProteinGym result. Fix: pass the output of "
                    "bitesm eval run or bitesm eval proteingym --output."
                )
            return result
    raise CompareInputError(
        f"no ProteinGym results at {path} (looked for {', '.join(str(c) for c in candidates)}). Fix: pass a "
        "proteingym.json or a folder written by bitesm eval run."
    )


def _labels(paths: list[str], results: list[dict[str, Any]], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(results):
            raise CompareInputError(f"--labels has {len(labels)} names for {len(results)} results. Fix: one each.")
        return labels
    names = [str(r.get("model") or p) for p, r in zip(paths, results)]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def compare(
    paths: list[str | os.PathLike],
    reference_csv: str | os.PathLike | None = None,
    labels: list[str] | None = None,
    n_bootstrap: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Statistics of several models' ProteinGym results on their common assays (module docstring).

    Args:
        paths: two or more result files or folders (:func:`load_results`); the first is the baseline of the tests.
        reference_csv: ProteinGym ``DMS_substitutions.csv`` (``UniProt_ID``, ``coarse_selection_type``); ``None``:
            :data:`DEFAULT_REFERENCE`.
        labels: display names, one per path (default: each result's ``"model"``, or the paths if those repeat).
        n_bootstrap, seed: bootstrap resamples and seed.

    Returns:
        ``{"labels": [...], "n_assays": int, "assays": [DMS_id, ...], "per_assay": DataFrame (index DMS_id, one
        Spearman column per model and per published model), "rows": [{"model", "n_assays", <metric>,
        f"{metric}_se", "z_test": {"mean_difference", "standard_error", "z", "p_value", "n_assays"} or None}, ...]}``;
        published ESM-2 rows carry only ``spearman``.

    Raises:
        CompareInputError: fewer than 2 paths, no common assays, or an unusable file.
        AggregationInputError: an assay missing from the reference.
        bitesm.evaluation.proteingym.ProteinGymFileNotFoundError: no reference file.
    """
    if len(paths) < 2:
        raise CompareInputError("compare needs at least two results. Fix: bitesm eval compare A B [C ...]")
    results = [load_results(p) for p in paths]
    names = _labels([str(p) for p in paths], results, labels)
    per_model = [{a["DMS_id"]: a for a in r["assays"]} for r in results]
    common = sorted(set.intersection(*(set(m) for m in per_model)))
    if not common:
        raise CompareInputError(f"the results share no assay ({', '.join(names)}). Fix: evaluate the same assays.")
    reference = load_reference(DEFAULT_REFERENCE if reference_csv is None else reference_csv)
    rows: list[dict[str, Any]] = []
    tables = {}
    for metric in METRICS:
        table = pd.DataFrame({"DMS_id": common})
        for name, assays in zip(names, per_model):
            values = [assays[d].get(metric) for d in common]
            table[name] = [math.nan if v is None else float(v) for v in values]
        tables[metric] = table
    spearman = tables["spearman"].copy()
    published = []
    for key, label in _PUBLISHED_LABELS.items():
        values = [per_model[0][d].get(f"published_spearman_{key}") for d in common]
        if all(v is not None for v in values):
            spearman[label] = values
            published.append(label)
    for i, name in enumerate(names):
        row: dict[str, Any] = {"model": name, "n_assays": len(common)}
        for metric, table in tables.items():
            if table[name].isna().all():
                row[metric] = row[f"{metric}_se"] = None
                continue
            row[metric] = aggregate(table, reference, metric, models=[name])[name]["average"]
            row[f"{metric}_se"] = bootstrap_standard_error(
                table, reference, models=[name], n_resamples=n_bootstrap, seed=seed
            )[name]
        row["z_test"] = None if i == 0 else paired_z_test(
            spearman.set_index("DMS_id")[name], spearman.set_index("DMS_id")[names[0]], reference,
            n_resamples=n_bootstrap, seed=seed,
        ).as_dict()
        rows.append(row)
    for label in published:
        row = {"model": label, "n_assays": len(common), "spearman": aggregate(
            spearman, reference, "spearman", models=[label])[label]["average"]}
        row["spearman_se"] = bootstrap_standard_error(
            spearman, reference, models=[label], n_resamples=n_bootstrap, seed=seed)[label]
        row["z_test"] = paired_z_test(
            spearman.set_index("DMS_id")[label], spearman.set_index("DMS_id")[names[0]], reference,
            n_resamples=n_bootstrap, seed=seed,
        ).as_dict()
        rows.append(row)
    return {"labels": names, "n_assays": len(common), "assays": common,
            "per_assay": spearman.set_index("DMS_id"), "rows": rows}


def _fmt(value: Any, se: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f} ± {se:.3f}" if se is not None else f"{value:.3f}"


def markdown_table(comparison: dict[str, Any]) -> str:
    """Markdown of :func:`compare`'s result: the summary table with standard errors and Z-tests, then per assay."""
    first = comparison["rows"][0]["model"]
    lines = [
        f"ProteinGym summary over {comparison['n_assays']} common assays (ProteinGym's aggregation; ± bootstrap "
        f"standard error, 10,000 resamples). Z-test: paired, one-sided, H1 = the row beats `{first}` on Spearman's ρ.",
        "",
        "| model | Spearman's ρ | AUC | MCC | NDCG | top-10% recall | Δρ vs first | z | p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in comparison["rows"]:
        cells = [_fmt(row.get(m), row.get(f"{m}_se")) for m in METRICS]
        test = row.get("z_test")
        if test is None:
            cells += ["–", "–", "–"]
        else:
            cells += [f"{test['mean_difference']:+.3f}", f"{test['z']:.3g}", f"{test['p_value']:.3g}"]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    per_assay = comparison["per_assay"]
    lines += ["", "Spearman's ρ per assay:", "", "| DMS_id | " + " | ".join(per_assay.columns) + " |",
              "|---|" + "---|" * len(per_assay.columns)]
    for dms_id, values in per_assay.iterrows():
        lines.append(f"| {dms_id} | " + " | ".join(_fmt(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: dict[str, Any], output_dir: str | os.PathLike) -> list[Path]:
    """Write ``spearman_scatter.png`` and ``spearman_bars.png`` (matplotlib, Agg backend) to ``output_dir``.

    Returns:
        The two paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    per_assay = comparison["per_assay"]
    first = per_assay.columns[0]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for column in per_assay.columns[1:]:
        ax.scatter(per_assay[first], per_assay[column], label=column, s=22)
    lo = float(min(per_assay.min().min(), 0.0)) - 0.05
    hi = float(max(per_assay.max().max(), 0.0)) + 0.05
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"Spearman's ρ: {first}")
    ax.set_ylabel("Spearman's ρ")
    ax.set_title(f"ProteinGym, {len(per_assay)} assays")
    ax.legend(fontsize=7)
    fig.tight_layout()
    scatter = output_dir / "spearman_scatter.png"
    fig.savefig(scatter, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(per_assay) * len(per_assay.columns) ** 0.5), 4.5))
    width = 0.8 / len(per_assay.columns)
    for k, column in enumerate(per_assay.columns):
        ax.bar([i + k * width for i in range(len(per_assay))], per_assay[column], width=width, label=column)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(per_assay))])
    ax.set_xticklabels(per_assay.index, rotation=75, ha="right", fontsize=6)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("Spearman's ρ")
    ax.legend(fontsize=7)
    fig.tight_layout()
    bars = output_dir / "spearman_bars.png"
    fig.savefig(bars, dpi=120)
    plt.close(fig)
    return [scatter, bars]
