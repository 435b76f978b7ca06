"""Repeating a run over seeds: the ``seed_<s>/`` layout and the statistics over seeds.

``--seeds 0 1 2`` on ``train`` or ``crossval`` runs the same configuration once per seed,
each in ``OUT/seed_<s>/`` (laid out as a single run: ``fold_<k>/`` folders, finished ones
reused, killed ones resumed). A quality figure is then reported as the mean ± sd over seeds
of each seed's figure (the mean over its test scans), never as one run:

- ``results.csv``: one row per seed and test scan (``seed, fold, patient, centre, ...``);
- ``summary.md``: mean ± sd over seeds, per-seed means, per fold and per centre (Table 2
  layout, the paper's figures beside ours);
- ``boxplot_seeds.png``: per-scan values per seed and over all seeds; ``boxplot.png``: per
  centre, all seeds pooled.

The standard deviation over seeds is the sample one (``ddof=1``): the seeds are a sample of
the runs a user could make. With one seed it is reported as ``n/a``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.config import Config
from planar3d.errors import Planar3DError

__all__ = ["SUMMARY_KEYS", "seed_config", "seed_dir", "seed_statistics", "seeds_summary_markdown",
           "write_seed_outputs"]

#: metrics summarised over seeds.
SUMMARY_KEYS = ("dice", "sensitivity")


def seed_dir(out: str | Path, seed: int) -> Path:
    """The run folder of one seed: ``out/seed_<seed>``."""
    return Path(out) / f"seed_{seed}"


def seed_config(config: Config, seed: int) -> Config:
    """The configuration of one seed's run (``seed`` set, ``seeds`` cleared)."""
    return dataclasses.replace(config, seed=seed, seeds=None).validate()


def _mean_sd(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return {"mean": float(values.mean()), "sd": sd, "n": int(values.size),
            "min": float(values.min()), "max": float(values.max())}


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
        return {k: _mean_sd([means[s][k] for s in means]) for k in keys}

    folds = sorted({int(row["fold"]) for row in rows})
    centres = sorted({str(row["centre"]) for row in rows})
    return {
        "seeds": seeds,
        "per_seed": seed_means(rows),
        "over_seeds": over(rows),
        "scans": {k: _mean_sd([float(r[k]) for r in rows]) for k in keys},
        "per_fold": {f: over([r for r in rows if int(r["fold"]) == f]) for f in folds},
        "per_centre": {**{c: over([r for r in rows if str(r["centre"]) == c]) for c in centres},
                       "overall": over(rows)},
    }


def _pm(stats: dict) -> str:
    sd = "n/a" if np.isnan(stats["sd"]) else f"{stats['sd']:.3f}"
    return f"{stats['mean']:.3f} ± {sd} (n={stats['n']})"


def seeds_summary_markdown(rows: Sequence[dict], config: Config, title: str = "Cross-validation results") -> str:
    """``summary.md`` of a run repeated over seeds (see the module docstring)."""
    from planar3d.crossval import PAPER_TABLE2, _split_lines

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
        *_split_lines(rows, config),
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
        paper = ["%.2f ± %.2f" % PAPER_TABLE2[key][g] if g in PAPER_TABLE2[key] else "—" for g in groups]
        lines.append(f"| {key} (paper, MSSEG-2016) | " + " | ".join(paper) + " |")
    lines += ["", "Per-scan values: `results.csv` (one row per seed and test scan); box plots: "
              "`boxplot_seeds.png` (per seed), `boxplot.png` (per centre, all seeds pooled); runs: "
              "`seed_<s>/fold_<k>/`.", ""]
    return "\n".join(lines)


def write_seed_outputs(rows: Sequence[dict], config: Config, out: str | Path,
                       title: str = "Cross-validation results") -> None:
    """Write ``results.csv``, ``summary.md``, ``boxplot_seeds.png`` and ``boxplot.png`` into ``out``."""
    from planar3d.atomic import write_text_atomic
    from planar3d.plots import paper_table2, plot_metric_boxplots
    from planar3d.train import write_rows

    out = Path(out)
    write_rows(out / "results.csv", rows)
    write_text_atomic(out / "summary.md", seeds_summary_markdown(rows, config, title))
    plot_metric_boxplots(rows, metrics=SUMMARY_KEYS, by="seed", path=out / "boxplot_seeds.png",
                         title=f"planar3d {config.preset}: per-scan test metrics per seed")
    plot_metric_boxplots(rows, metrics=SUMMARY_KEYS, by="centre", path=out / "boxplot.png",
                         title=f"planar3d {config.preset}: per-scan test metrics, all seeds", paper=paper_table2())
