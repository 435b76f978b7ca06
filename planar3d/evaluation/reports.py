"""The Markdown summaries a run writes: cross-validation (the paper's Table 2 layout), repeats over
seeds (mean ± sd over seeds), classification, and ``evaluate``'s table.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from planar3d.config import Config
from planar3d.errors import Planar3DError
from planar3d.evaluation.metrics import CLASSIFICATION_KEYS, MSSEG_KEYS, prediction_metrics, summarise
from planar3d.evaluation.reference import PAPER_TABLE2, paper_table2_cell
from planar3d.evaluation.stats import describe, format_mean_sd

__all__ = [
    "SUMMARY_KEYS", "UNITS", "classification_summary", "crossval_summary_markdown", "evaluation_summary_markdown",
    "seed_statistics", "seeds_classification_summary", "seeds_summary_markdown", "split_lines"
]

#: units of the metrics reported with a unit.
UNITS = {"relative_volume_error": " (%)", "hausdorff": " (mm)", "hd95": " (mm)", "mean_surface_distance": " (mm)"}


def classification_summary(rows: Sequence[dict], config: Config) -> str:
    """Markdown: the metrics per fold, their mean ± sd over folds, and over all test scans pooled."""
    folds = sorted({row["fold"] for row in rows})
    per_fold = {fold: prediction_metrics([r for r in rows if r["fold"] == fold]) for fold in folds}
    pooled = prediction_metrics(rows)
    data_name = "built-in phantom (NOT MSSEG-2016), target: lesion load above the centre's median" \
        if config.data is None and config.labels is None else f"{config.data or 'built-in phantom'}, labels {config.labels}"
    lines = [
        f"# Classification cross-validation ({config.preset} preset)",
        "",
        f"{_model_line(config)}, {config.size}³ volumes. Data: {data_name}; "
        f"{len(rows)} test scans in {len(folds)} folds. ROC AUC is undefined (—) for a fold whose test scans "
        "hold one class; sd over folds (sample, ddof=1).",
        "",
        *_classification_table("fold", per_fold, "mean ± sd over folds"),
        f"| all test scans pooled | {pooled['n']} | " + " | ".join(_cell(pooled[k]) for k in CLASSIFICATION_KEYS)
        + f" | {pooled['confusion_matrix']} |",
        "", "Per-scan probabilities: `results.csv`.", "",
    ]
    return "\n".join(lines)


def seeds_classification_summary(rows: Sequence[dict], config: Config) -> str:
    """Markdown: each seed's metrics over all its test scans pooled, and their mean ± sd over seeds."""
    seeds = sorted({row["seed"] for row in rows})
    per_seed = {seed: prediction_metrics([r for r in rows if r["seed"] == seed]) for seed in seeds}
    lines = [
        f"# Classification cross-validation over {len(seeds)} seeds ({config.preset} preset)",
        "",
        f"{_model_line(config)}, {config.size}³ volumes, folds {config.folds}. Each seed's "
        "figures pool its test scans over the folds; sd over seeds (sample, ddof=1). Per seed: `seed_<s>/summary.md`.",
        "",
        *_classification_table("seed", per_seed, "mean ± sd over seeds"),
        "", "Per-scan probabilities: `results.csv`.", "",
    ]
    return "\n".join(lines)


def _model_line(config: Config) -> str:
    return (f"Backbone `{config.backbone}`, mapping `{config.mapping}`, encoder weights `{config.encoder_weights}`"
            f"{' (frozen)' if config.freeze_encoder else ''}")


def _classification_table(group: str, metrics_by_group: dict, mean_label: str) -> list[str]:
    """One row per group (fold or seed) of :func:`prediction_metrics`, then their mean ± sd."""
    lines = [f"| {group} | n | accuracy | balanced accuracy | ROC AUC | confusion matrix (rows: true) |",
             "|---|---|---|---|---|---|"]
    for key, metrics in metrics_by_group.items():
        lines.append(f"| {key} | {metrics['n']} | " + " | ".join(_cell(metrics[k]) for k in CLASSIFICATION_KEYS)
                     + f" | {metrics['confusion_matrix']} |")
    lines.append(f"| {mean_label} | | " + " | ".join(format_mean_sd([m[k] for m in metrics_by_group.values()])
                                                    for k in CLASSIFICATION_KEYS) + " | |")
    return lines


def _cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def crossval_summary_markdown(rows: Sequence[dict], config: Config) -> str:
    """The paper's Table 2 layout: mean ± std of Dice and sensitivity per centre and overall."""

    summary = summarise(rows, by="centre", keys=("dice", "sensitivity"))
    groups = list(summary)
    data_name = "built-in phantom (NOT MSSEG-2016)" if config.data is None else config.data
    lines = [
        f"# Cross-validation results ({config.preset} preset)",
        "",
        f"Data: {data_name}; {len(rows)} test scans; metrics in "
        f"{'native' if config.eval_space == 'native' else 'resampled'} space; threshold "
        f"{config.threshold:g} ({config.threshold_rule}); std over scans (population).",
        "",
        *split_lines(rows, config),
        "| metric | " + " | ".join(f"centre {g}" if g != "overall" else "overall" for g in groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for key in ("dice", "sensitivity"):
        ours = [f"{summary[g][key]['mean']:.2f} ± {summary[g][key]['std']:.2f} (n={summary[g][key]['n']})" for g in groups]
        lines.append(f"| {key} (planar3d) | " + " | ".join(ours) + " |")
        paper = [paper_table2_cell(key, g) for g in groups]
        lines.append(f"| {key} (paper, MSSEG-2016) | " + " | ".join(paper) + " |")
    lines += ["", "Per-scan values: `results.csv`; box plot: `boxplot.png`.", ""]
    return "\n".join(lines)


def split_lines(rows: Sequence[dict], config: Config) -> list[str]:
    if config.split != "centre":
        return ["Split: the paper's (fold k tests the k-th patient of every centre).", ""]
    tested = sorted({(int(row["fold"]), str(row["centre"])) for row in rows})
    folds = ", ".join(f"fold {fold} tests centre {centre}" for fold, centre in tested)
    return [f"Split: leave-one-centre-out ({folds}; each trains on the other centres and validates on the "
            "last patient of each of them), so each centre column is a model that never saw that centre.", ""]


#: metrics summarised over seeds.
SUMMARY_KEYS = ("dice", "sensitivity")


def seed_statistics(rows: Sequence[dict], keys: Sequence[str] = SUMMARY_KEYS) -> dict:
    """Per-seed means and their mean ± sd over seeds, overall, per fold and per centre.

    Args:
        rows: one dict per (seed, test scan) with ``seed``, ``fold``, ``centre`` and ``keys``.
        keys: the metrics.

    Returns:
        ``{"seeds": [...], "per_seed": {seed: {key: mean over its scans}},
        "over_seeds": {key: {"mean", "sd", "n", "min", "max"}} (over the per-seed means),
        "scans": {key: {"mean", "sd", "n", ...}} (all scans of all seeds pooled, sd ddof=1),
        "per_fold": {fold: {key: stats over seeds of the fold's mean}},
        "per_centre": {centre | "overall": {key: stats over seeds of the centre's mean}}}``;
        a sd over one value is NaN.

    Raises:
        Planar3DError: no rows, or a row without ``seed``, ``fold``, ``centre`` or a key.
    """
    if not rows:
        raise Planar3DError("seed_statistics needs at least one row. Received: rows=[]")
    for index, row in enumerate(rows):
        missing = [name for name in ("seed", "fold", "centre", *keys) if name not in row]
        if missing:
            raise Planar3DError(f"row {index} lacks {missing}. Received: keys={sorted(row)}")
    seeds = sorted({int(row["seed"]) for row in rows})

    def seed_means(members: Sequence[dict]) -> dict:
        by_seed: dict[int, list[dict]] = {}
        for row in members:
            by_seed.setdefault(int(row["seed"]), []).append(row)
        return {s: {k: float(np.mean([float(r[k]) for r in by_seed[s]])) for k in keys} for s in sorted(by_seed)}

    def over(members: Sequence[dict]) -> dict:
        means = seed_means(members)
        return {k: describe([means[s][k] for s in means]) for k in keys}

    folds = sorted({int(row["fold"]) for row in rows})
    centres = sorted({str(row["centre"]) for row in rows})
    return {
        "seeds": seeds,
        "per_seed": seed_means(rows),
        "over_seeds": over(rows),
        "scans": {k: describe([float(r[k]) for r in rows]) for k in keys},
        "per_fold": {f: over([r for r in rows if int(r["fold"]) == f]) for f in folds},
        "per_centre": {**{c: over([r for r in rows if str(r["centre"]) == c]) for c in centres},
                       "overall": over(rows)},
    }


def _pm(stats: dict) -> str:
    sd = "n/a" if np.isnan(stats["sd"]) else f"{stats['sd']:.3f}"
    return f"{stats['mean']:.3f} ± {sd} (n={stats['n']})"


def seeds_summary_markdown(rows: Sequence[dict], config: Config, title: str = "Cross-validation results") -> str:
    """``summary.md`` of a run repeated over seeds (see the module docstring)."""

    stats = seed_statistics(rows)
    seeds = stats["seeds"]
    data_name = "built-in phantom (NOT MSSEG-2016)" if config.data is None else config.data
    per_seed_scans = {s: sum(int(r["seed"]) == s for r in rows) for s in seeds}
    lines = [
        f"# {title} ({config.preset} preset, {len(seeds)} seed{'s' * (len(seeds) != 1)})",
        "",
        f"Data: {data_name}; folds {sorted(stats['per_fold'])}; seeds {seeds}; "
        f"{len(rows)} test scans in all; metrics in {'native' if config.eval_space == 'native' else 'resampled'} "
        f"space; threshold {config.threshold:g} ({config.threshold_rule}).",
        "",
        "Each seed's figure is the mean over its test scans; **mean ± sd over seeds** is the mean and "
        "the sample standard deviation (n-1) of those per-seed figures, n = number of seeds.",
        "",
        *split_lines(rows, config),
        "## Over seeds",
        "",
        "| metric | mean ± sd over seeds | range of seed means | all scans × seeds pooled |",
        "|---|---|---|---|",
    ]
    for key in SUMMARY_KEYS:
        over = stats["over_seeds"][key]
        lines.append(f"| {key} | **{_pm(over)}** | {over['min']:.3f} – {over['max']:.3f} | {_pm(stats['scans'][key])} |")
    lines += ["", "## Per seed (mean over the seed's test scans)", "",
              "| seed | test scans | " + " | ".join(SUMMARY_KEYS) + " |", "|---:|---:|" + "---:|" * len(SUMMARY_KEYS)]
    for seed in seeds:
        values = " | ".join(f"{stats['per_seed'][seed][k]:.3f}" for k in SUMMARY_KEYS)
        lines.append(f"| {seed} | {per_seed_scans[seed]} | {values} |")
    lines += ["", "## Per fold (mean ± sd over seeds of the fold's mean)", "",
              "| fold | " + " | ".join(SUMMARY_KEYS) + " |", "|---:|" + "---|" * len(SUMMARY_KEYS)]
    for fold, fold_stats in stats["per_fold"].items():
        lines.append(f"| {fold} | " + " | ".join(_pm(fold_stats[k]) for k in SUMMARY_KEYS) + " |")
    groups = list(stats["per_centre"])
    lines += ["", "## Per centre, Table 2 layout (mean ± sd over seeds of the centre's mean)", "",
              "| metric | " + " | ".join(g if g == "overall" else f"centre {g}" for g in groups) + " |",
              "|---|" + "---|" * len(groups)]
    for key in SUMMARY_KEYS:
        lines.append(f"| {key} (planar3d) | " + " | ".join(_pm(stats["per_centre"][g][key]) for g in groups) + " |")
        paper = [paper_table2_cell(key, g) for g in groups]
        lines.append(f"| {key} (paper, MSSEG-2016) | " + " | ".join(paper) + " |")
    lines += ["", "Per-scan values: `results.csv` (one row per seed and test scan); box plots: "
              "`boxplot_seeds.png` (per seed), `boxplot.png` (per centre, all seeds pooled); runs: "
              "`seed_<s>/fold_<k>/`.", ""]
    return "\n".join(lines)


def evaluation_summary_markdown(rows: Sequence[dict], keys: Sequence[str] = MSSEG_KEYS, title: str = "Evaluation",
                     notes: Sequence[str] = (), paper_rows: bool = True) -> str:
    """Mean ± std of every metric per centre and overall, with the paper's Table 2 rows.

    Args:
        rows: one dict per scan with ``centre`` and every name in ``keys``.
        keys: metrics, one table row each; after ``dice`` and ``sensitivity`` a row with
            the paper's values (:data:`planar3d.evaluation.reference.PAPER_TABLE2`) follows.
        title: the heading.
        notes: lines printed between heading and table.
        paper_rows: False leaves the paper's rows out (references of another task, e.g. tumours).

    Returns:
        Markdown text. Standard deviations are over scans, population (``ddof=0``), as
        :func:`planar3d.evaluation.reports.crossval_summary_markdown`.

    Raises:
        Planar3DError: as :func:`planar3d.evaluation.metrics.summarise`.
    """

    summary = summarise(rows, by="centre", keys=keys)
    groups = list(summary)
    first_key = keys[0]
    headers = [f"centre {g}" if g != "overall" else "overall" for g in groups]
    headers = [f"{h} (n={summary[g][first_key]['n']})" for h, g in zip(headers, groups)]
    lines = [f"# {title}", "", *notes, *([""] if notes else []),
             "| metric | " + " | ".join(headers) + " |", "|---|" + "---|" * len(groups)]
    for key in keys:
        digits = 2 if key in UNITS or key.startswith("n_") else 3
        cells = [f"{summary[g][key]['mean']:.{digits}f} ± {summary[g][key]['std']:.{digits}f}" for g in groups]
        lines.append(f"| {key}{UNITS.get(key, '')} | " + " | ".join(cells) + " |")
        if paper_rows and key in PAPER_TABLE2:
            paper = [paper_table2_cell(key, g) for g in groups]
            lines.append(f"| {key} (paper, MSSEG-2016) | " + " | ".join(paper) + " |")
    lines.append("")
    return "\n".join(lines)
