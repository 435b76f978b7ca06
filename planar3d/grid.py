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

The grid itself: every (seed, fold) run is a :class:`Task`; ``grid.json`` in the run folder
records the configuration, folds and seeds so that :func:`gather` can rebuild the outputs
from whatever runs have finished (``crossval --gather RUN_DIR``), naming the missing and
failed ones and their job logs (``jobs.json``, written by :mod:`planar3d.launch`).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.config import Config
from planar3d.errors import InputFileError, Planar3DError

__all__ = ["GRID_NAME", "JOBS_NAME", "SUMMARY_KEYS", "Task", "TaskState", "gather", "grid_tasks", "read_grid",
           "read_jobs", "seed_config", "seed_dir", "seed_statistics", "seeds_summary_markdown", "task_states",
           "write_grid", "write_seed_outputs"]

#: metrics summarised over seeds.
SUMMARY_KEYS = ("dice", "sensitivity")
#: the grid's definition (configuration, folds, seeds) in the run folder.
GRID_NAME = "grid.json"
#: the submitted jobs, one entry per submission (see :mod:`planar3d.launch`).
JOBS_NAME = "jobs.json"


@dataclasses.dataclass(frozen=True)
class Task:
    """One training of the grid: ``config`` (its seed set) on ``fold`` in ``run_dir/fold_<fold>/``.

    Attributes:
        seed: the seed (``None`` in the one-run layout, where ``config.seed`` applies).
        fold: the fold index.
        config: the run's configuration (``seeds`` cleared).
        run_dir: the folder holding ``fold_<fold>/``.
        variant: a name for benchmark grids over configurations (``None`` for crossval).
    """

    seed: int | None
    fold: int
    config: Config
    run_dir: Path
    variant: str | None = None

    @property
    def fold_dir(self) -> Path:
        return self.run_dir / f"fold_{self.fold}"

    @property
    def finished(self) -> bool:
        from planar3d.train import DONE_NAME

        return (self.fold_dir / DONE_NAME).is_file()

    @property
    def key(self) -> dict:
        """``{"seed", "fold", "variant"}``: how ``jobs.json`` names the task."""
        return {"seed": self.seed, "fold": self.fold, "variant": self.variant}

    def describe(self) -> str:
        words = ([] if self.seed is None else [f"seed {self.seed}"]) + [f"fold {self.fold}"]
        return " ".join(words + ([] if self.variant is None else [self.variant]))


@dataclasses.dataclass(frozen=True)
class TaskState:
    """Where a task stands: ``state`` is ``finished``, ``failed``, ``unfinished`` or ``not run``."""

    task: Task
    state: str
    detail: str = ""
    logs: tuple[str, ...] = ()


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
                       title: str = "Cross-validation results", status: Sequence[str] = ()) -> None:
    """Write ``results.csv``, ``summary.md`` (``status`` lines appended), ``boxplot_seeds.png``
    and ``boxplot.png`` into ``out``."""
    from planar3d.atomic import write_text_atomic
    from planar3d.plots import paper_table2, plot_metric_boxplots
    from planar3d.train import write_rows

    out = Path(out)
    write_rows(out / "results.csv", rows)
    summary = seeds_summary_markdown(rows, config, title).rstrip("\n")
    write_text_atomic(out / "summary.md", "\n".join([summary, *status, ""]))
    plot_metric_boxplots(rows, metrics=SUMMARY_KEYS, by="seed", path=out / "boxplot_seeds.png",
                         title=f"planar3d {config.preset}: per-scan test metrics per seed")
    plot_metric_boxplots(rows, metrics=SUMMARY_KEYS, by="centre", path=out / "boxplot.png",
                         title=f"planar3d {config.preset}: per-scan test metrics, all seeds", paper=paper_table2())


# ----------------------------------------------------------------------------- the grid


def grid_tasks(config: Config, folds: Sequence[int], out: str | Path) -> list[Task]:
    """The (seed, fold) tasks of a cross-validation, seeds outermost (one-run layout without seeds)."""
    out = Path(out)
    if config.seeds is None:
        return [Task(None, int(fold), config, out) for fold in folds]
    return [Task(seed, int(fold), seed_config(config, seed), seed_dir(out, seed))
            for seed in config.seeds for fold in folds]


def write_grid(out: str | Path, config: Config, folds: Sequence[int], overwrite: bool = False) -> Path:
    """Write ``grid.json``; refuse (unless ``overwrite``) a run folder whose grid was trained
    with another configuration.

    Raises:
        Planar3DError: ``grid.json`` exists with a different training identity.
    """
    from planar3d.atomic import write_text_atomic

    path = Path(out) / GRID_NAME
    if path.is_file() and not overwrite:
        previous, _ = read_grid(out)
        old, new = previous.training_identity(), config.training_identity()
        if old != new:
            changed = sorted(k for k in new if old.get(k) != new[k])
            raise Planar3DError(f"{out}: run folder from a different config (differs in {changed}); "
                                "choose another --out or pass --overwrite")
    grid = {"config": config.to_dict(), "folds": [int(f) for f in folds]}
    return write_text_atomic(path, json.dumps(grid, indent=2) + "\n")


def read_grid(out: str | Path) -> tuple[Config, list[int]]:
    """The configuration and folds recorded in ``out/grid.json``.

    Raises:
        InputFileError: no ``grid.json`` (not a grid run folder) or an unreadable one.
    """
    path = Path(out) / GRID_NAME
    if not path.is_file():
        raise InputFileError(path, "not found: not a run folder written by crossval (nothing to gather)")
    try:
        grid = json.loads(path.read_text(encoding="utf-8"))
        return Config(**grid["config"]).validate(), [int(f) for f in grid["folds"]]
    except (ValueError, KeyError, TypeError) as error:
        raise InputFileError(path, f"not a readable grid ({error})") from error


def read_jobs(out: str | Path) -> list[dict]:
    """The submissions recorded in ``out/jobs.json`` (oldest first); ``[]`` without one."""
    path = Path(out) / JOBS_NAME
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["submissions"])
    except (ValueError, KeyError, TypeError) as error:
        raise InputFileError(path, f"not a readable job list ({error})") from error


def _job_result(job: dict) -> tuple[str, str] | None:
    """``("error", traceback)`` or ``("success", ...)`` from submitit's result pickle, or None."""
    path = Path(job.get("result", ""))
    if not job.get("result") or not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            outcome, value = pickle.load(handle)
    except Exception:  # a half-written or foreign pickle says nothing about the job
        return None
    return str(outcome), value if isinstance(value, str) else ""


def task_states(tasks: Sequence[Task], out: str | Path) -> list[TaskState]:
    """Each task's state from its fold folder and the latest job that ran it."""
    latest: dict[tuple, dict] = {}
    for submission in read_jobs(out):
        for job in submission.get("jobs", []):
            latest[(job.get("seed"), job.get("fold"), job.get("variant"))] = job
    states = []
    for task in tasks:
        job = latest.get((task.seed, task.fold, task.variant))
        logs = () if job is None else tuple(str(job[k]) for k in ("stdout", "stderr") if job.get(k))
        if task.finished:
            states.append(TaskState(task, "finished", logs=logs))
        elif job is None:
            states.append(TaskState(task, "not run", "no job submitted"))
        else:
            result = _job_result(job)
            if result is not None and result[0] == "error":
                last = [line for line in result[1].strip().splitlines() if line.strip()]
                states.append(TaskState(task, "failed", f"job {job['job_id']}: {last[-1] if last else 'error'}", logs))
            else:
                states.append(TaskState(task, "unfinished", f"job {job['job_id']} queued, running or stopped "
                                        "(a time limit?); submit again to resume it", logs))
    return states


def _status_markdown(states: Sequence[TaskState]) -> list[str]:
    """The "not finished" section: one row per missing or failed run, with its logs."""
    missing = [s for s in states if s.state != "finished"]
    if not missing:
        return []
    lines = ["", f"## Not finished: {len(missing)} of {len(states)} runs (left out of every figure above)", "",
             "| run | state | detail | logs |", "|---|---|---|---|"]
    for state in missing:
        logs = "<br>".join(f"`{log}`" for log in state.logs) or "—"
        lines.append(f"| {state.task.describe()} | {state.state} | {state.detail.replace('|', '/')} | {logs} |")
    return lines


def gather(out: str | Path) -> tuple[list[dict], list[TaskState]]:
    """Build ``results.csv``, ``summary.md`` and the box plots from the finished runs of a grid.

    Args:
        out: a run folder holding ``grid.json`` (written by ``crossval``).

    Returns:
        ``(rows, states)``: the test rows of the finished runs (with ``seed`` when the grid
        has seeds) and every task's :class:`TaskState`.

    Raises:
        InputFileError: no or an unreadable ``grid.json``.
        Planar3DError: no run has finished yet (the message names each run's state).
    """
    from planar3d.atomic import write_text_atomic
    from planar3d.crossval import summary_markdown
    from planar3d.plots import paper_table2, plot_metric_boxplots
    from planar3d.train import read_metrics, write_rows

    out = Path(out)
    config, folds = read_grid(out)
    states = task_states(grid_tasks(config, folds, out), out)
    rows = []
    for state in states:
        if state.state == "finished":
            task_rows = read_metrics(state.task.fold_dir / "metrics.csv")
            rows += task_rows if state.task.seed is None else [{"seed": state.task.seed, **r} for r in task_rows]
    if not rows:
        raise Planar3DError(f"{out}: no run has finished yet: " + "; ".join(
            f"{s.task.describe()} {s.state}" + (f" ({s.detail})" if s.detail else "") for s in states))
    status = _status_markdown(states)
    if config.seeds is None:
        write_rows(out / "results.csv", rows)
        write_text_atomic(out / "summary.md", "\n".join([summary_markdown(rows, config).rstrip("\n"), *status, ""]))
        plot_metric_boxplots(rows, metrics=SUMMARY_KEYS, by="centre", path=out / "boxplot.png",
                             title=f"planar3d {config.preset}: per-scan test metrics", paper=paper_table2())
    else:
        write_seed_outputs(rows, config, out, status=status)
    return rows, states
