"""Repeating a run over seeds: the ``seed_<s>/`` layout and the statistics over seeds.

``--seeds 0 1 2`` on ``train`` or ``crossval`` runs the same configuration once per seed,
each in ``OUT/seed_<s>/`` (laid out as a single run: ``fold_<k>/`` folders, finished ones
reused, killed ones resumed). A quality figure is then reported as the mean ± sd over seeds
of each seed's figure (the mean over its test scans), never as one run:

- ``results.csv``: one row per seed and test scan (``seed, fold, patient, centre, ...``);
- ``summary.md``: mean ± sd over seeds, per-seed means, per fold and per centre (Table 2
  layout, the paper's figures beside ours);
- ``boxplot_seeds.png``: per-scan values per seed and over all seeds; ``boxplot.png``: per
  centre, all seeds pooled;
- ``report.html``: the summary, the figures, the test scans (sortable) and their overlays on one
  self-contained page (:func:`write_grid_report`; also without seeds).

The standard deviation over seeds is the sample one (``ddof=1``): the seeds are a sample of
the runs a user could make. With one seed it is reported as ``n/a``.

The grid itself: every (seed, fold) run is a :class:`Task`; ``grid.json`` in the run folder
records the configuration, folds and seeds so that :func:`gather` can rebuild the outputs
from whatever runs have finished (``crossval --gather RUN_DIR``), naming the missing and
failed ones and their job logs (``jobs.json``, written by :mod:`planar3d.runs.launch`).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Sequence

from planar3d.atomic import write_rows, write_text_atomic
from planar3d.config import Config
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation.html_report import model_info, write_summary_report
from planar3d.evaluation.reference import paper_table2
from planar3d.evaluation.reports import SUMMARY_KEYS, seeds_summary_markdown
from planar3d.evaluation.reports import crossval_summary_markdown as summary_markdown
from planar3d.runs.seeds import Task, grid_tasks
from planar3d.training.run_folder import read_metrics

__all__ = [
    "GRID_NAME", "JOBS_NAME", "TaskState", "gather", "read_grid", "refuse_other_grid", "read_jobs", "task_states",
    "write_grid", "write_grid_report", "write_seed_outputs"
]


#: the grid's definition (configuration, folds, seeds) in the run folder.
GRID_NAME = "grid.json"


#: the submitted jobs, one entry per submission (see :mod:`planar3d.runs.launch`).
JOBS_NAME = "jobs.json"


@dataclasses.dataclass(frozen=True)
class TaskState:
    """Where a task stands: ``state`` is ``finished``, ``failed``, ``unfinished`` or ``not run``."""

    task: Task
    state: str
    detail: str = ""
    logs: tuple[str, ...] = ()


def write_seed_outputs(rows: Sequence[dict], config: Config, out: str | Path,
                       title: str = "Cross-validation results", status: Sequence[str] = ()) -> None:
    """Write ``results.csv``, ``summary.md`` (``status`` lines appended), ``boxplot_seeds.png``
    and ``boxplot.png`` into ``out``."""
    from planar3d.evaluation.report_figures import plot_metric_boxplots

    out = Path(out)
    write_rows(out / "results.csv", rows)
    summary = seeds_summary_markdown(rows, config, title).rstrip("\n")
    write_text_atomic(out / "summary.md", "\n".join([summary, *status, ""]))
    plot_metric_boxplots(rows, metrics=SUMMARY_KEYS, by="seed", path=out / "boxplot_seeds.png",
                         title=f"planar3d {config.preset}: per-scan test metrics per seed")
    plot_metric_boxplots(rows, metrics=SUMMARY_KEYS, by="centre", path=out / "boxplot.png",
                         title=f"planar3d {config.preset}: per-scan test metrics, all seeds", paper=paper_table2())


def refuse_other_grid(out: str | Path, config: Config, overwrite: bool = False) -> None:
    """Refuse (unless ``overwrite``) a run folder whose ``grid.json`` records another configuration,
    reading only: a refused run leaves the folder as it found it.

    Raises:
        Planar3DError: one line naming the folder and the settings that differ.
    """
    if overwrite or not (Path(out) / GRID_NAME).is_file():
        return
    previous, _ = read_grid(out)
    old, new = previous.training_identity(), config.training_identity()
    if old != new:
        changed = sorted(k for k in new if old.get(k) != new[k])
        raise Planar3DError(f"{out}: run folder from a different config (differs in {changed}); "
                            "choose another --out or pass --overwrite")


def write_grid(out: str | Path, config: Config, folds: Sequence[int], overwrite: bool = False) -> Path:
    """Write ``grid.json`` after :func:`refuse_other_grid`.

    Raises:
        Planar3DError: ``grid.json`` exists with a different training identity.
    """
    refuse_other_grid(out, config, overwrite)
    grid = {"config": config.to_dict(), "folds": [int(f) for f in folds]}
    return write_text_atomic(Path(out) / GRID_NAME, json.dumps(grid, indent=2) + "\n")


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
    """Build ``results.csv``, ``summary.md``, the box plots and ``report.html`` from the finished runs of a grid.

    Args:
        out: a run folder holding ``grid.json`` (written by ``crossval``).

    Returns:
        ``(rows, states)``: the test rows of the finished runs (with ``seed`` when the grid
        has seeds) and every task's :class:`TaskState`.

    Raises:
        InputFileError: no or an unreadable ``grid.json``.
        Planar3DError: no run has finished yet (the message names each run's state).
    """
    from planar3d.evaluation.report_figures import plot_metric_boxplots

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
    write_grid_report(out, rows, states)
    return rows, states


def write_grid_report(out: str | Path, rows: Sequence[dict], states: Sequence[TaskState]) -> Path:
    """``report.html`` beside ``summary.md`` (:func:`planar3d.evaluation.html_report.write_summary_report`):
    the summary, the box plots, every finished run's learning curves, the per-scan test table, the
    QC overlays of the test scans (of the first seed only when there are seeds), the models
    (their training data: a phantom is warned about) and the runs not finished as warnings."""
    out = Path(out)
    finished = [s.task for s in states if s.state == "finished"]
    figures = [(out / name, name) for name in ("boxplot.png", "boxplot_seeds.png") if (out / name).is_file()]
    figures += [(t.fold_dir / "curves.png", f"{t.describe()}: learning curves") for t in finished
                if (t.fold_dir / "curves.png").is_file()]
    first_seed = finished[0].seed if finished else None
    qc = [(picture, f"{t.describe()}: {picture.stem}") for t in finished if t.seed == first_seed
          for picture in sorted((t.fold_dir / "overlays").glob("*.png"))]
    warnings = [f"{s.task.describe()}: {s.state}" + (f" ({s.detail})" if s.detail else "") + " - left out of every figure"
                for s in states if s.state != "finished"]
    model = model_info([t.fold_dir / "best.keras" for t in finished])
    return write_summary_report(out / "report.html", f"planar3d cross-validation: {out.name}",
                                (out / "summary.md").read_text(encoding="utf-8"), rows, figures=figures, qc=qc,
                                warnings=warnings, model=model, rows_title="Test scans",
                                rows_note="results.csv: one row per test scan (and seed).")
