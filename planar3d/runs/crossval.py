"""Five-fold cross-validation as in the paper: ``python -m planar3d.crossval``.

Runs the folds of ``--folds`` (default: the preset's) one after another, or one per GPU
with ``--parallel``; finished folds are reused, so an interrupted cross-validation goes
on where it stopped. Writes ``results.csv`` (one row per test scan), ``summary.md`` (the
paper's Table 2 layout with the paper's figures beside ours), ``boxplot.png`` and ``report.html``
(all of it on one self-contained page, :func:`planar3d.runs.grid.write_grid_report`).
A classification grid (``--task classification``) writes ``results.csv``, ``summary.md`` and its
``report.html`` (:func:`write_classification_outputs`). ``--seeds 0 1 2 3 4`` repeats the whole cross-validation per seed in ``seed_<s>/`` folders
and summarises over seeds (:mod:`planar3d.runs.grid`). ``--launcher local|slurm`` sends one job
per (seed, fold) to submitit instead (:mod:`planar3d.runs.launch`); ``--gather RUN_DIR`` builds
the outputs from the runs finished so far.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from planar3d.atomic import check_destinations, write_rows, write_text_atomic
from planar3d.config import Config
from planar3d.data.cache import default_cache_dir
from planar3d.data.splits import n_split_folds
from planar3d.errors import Planar3DError
from planar3d.evaluation.html_report import model_info, write_summary_report
from planar3d.evaluation.reports import classification_summary, seeds_classification_summary
from planar3d.io.sources import dataset_records
from planar3d.runlock import run_lock
from planar3d.runs.grid import gather, refuse_other_grid, write_grid
from planar3d.runs.launch import submit
from planar3d.runs.seeds import grid_tasks, run_tasks, seed_config, seed_dir
from planar3d.training.classify import PREDICTIONS_NAME, read_predictions

__all__ = ["run_crossval", "run_parallel", "write_classification_outputs"]


def write_classification_outputs(out: Path, config: Config, folds: Sequence[int]) -> list[dict]:
    """``results.csv`` (every test scan) and ``summary.md`` of a classification grid from its folds'
    ``predictions.csv``. With ``config.seeds`` each ``seed_<s>/`` gets its own, and ``out``'s give
    each seed's pooled metrics and their mean ± sd over seeds (rows carry ``seed``)."""
    rows = []
    for seed in config.seeds or [None]:
        run_dir = out if seed is None else seed_dir(out, seed)
        seed_rows = [row for fold in folds for row in read_predictions(run_dir / f"fold_{fold}" / PREDICTIONS_NAME)]
        write_rows(run_dir / "results.csv", seed_rows)
        write_text_atomic(run_dir / "summary.md", classification_summary(
            seed_rows, config if seed is None else seed_config(config, seed)))
        rows += [row if seed is None else {"seed": seed, **row} for row in seed_rows]
    if config.seeds is not None:
        write_rows(out / "results.csv", rows)
        write_text_atomic(out / "summary.md", seeds_classification_summary(rows, config))
    fold_dirs = [(run_dir, fold) for seed in config.seeds or [None]
                 for run_dir in [out if seed is None else seed_dir(out, seed)] for fold in folds]
    curves = [(run_dir / f"fold_{fold}" / "curves.png", f"{run_dir.name}/fold_{fold}: learning curves")
              for run_dir, fold in fold_dirs if (run_dir / f"fold_{fold}" / "curves.png").is_file()]
    write_summary_report(out / "report.html", f"planar3d cross-validation (classification): {out.name}",
                         (out / "summary.md").read_text(encoding="utf-8"), rows, figures=curves,
                         model=model_info([run_dir / f"fold_{fold}" / "best.keras" for run_dir, fold in fold_dirs]),
                         rows_title="Test scans", rows_note="results.csv: one row per test scan (and seed).")
    return rows


def _visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def run_parallel(folds: Sequence[int], out: Path, argv: Sequence[str], poll_seconds: float = 1.0) -> None:
    """One training subprocess per GPU (``CUDA_VISIBLE_DEVICES``), folds queued over them.

    The parent sleeps ``poll_seconds`` between checks of its children (no busy loop).
    """
    gpus = _visible_gpus()
    if gpus < 2:
        raise Planar3DError(f"--parallel needs several GPUs. Received: {gpus} visible")
    pending = list(folds)
    running: dict[int, tuple[int, subprocess.Popen]] = {}
    failed = []
    while pending or running:
        # start a fold on every idle GPU
        for gpu in range(gpus):
            if gpu not in running and pending:
                fold = pending.pop(0)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
                command = [sys.executable, "-m", "planar3d.train", "--fold", str(fold), "--out", str(out), *argv]
                running[gpu] = (fold, subprocess.Popen(command, env=env))
        # wait, then collect the finished ones
        time.sleep(poll_seconds)
        for gpu, (fold, process) in list(running.items()):
            if process.poll() is not None:
                if process.returncode:
                    failed.append(fold)
                del running[gpu]
    if failed:
        raise Planar3DError(f"training failed for folds {sorted(failed)}; see their output above")


def run_crossval(config: Config, out: str | Path, folds: Sequence[int] | None = None, overwrite: bool = False,
                 resume: bool | None = None, parallel_argv: Sequence[str] | None = None, launcher: str = "none",
                 launch_options=None) -> list[dict]:
    """Train and evaluate every fold (of every seed), then write results.csv, summary.md, box plots.

    Args:
        config: the run's settings; with ``config.seeds`` every seed's cross-validation runs in
            ``out/seed_<s>/`` and the outputs summarise over seeds (see :mod:`planar3d.runs.grid`).
        out: the run folder.
        folds: the folds (default ``config.folds``; with ``config.split == "centre"`` one fold
            per centre of the data, the preset's folds being the paper's patient folds).
        overwrite, resume: as :func:`planar3d.training.segment.train_fold`.
        parallel_argv: with ``launcher="none"``, train one fold per GPU in subprocesses given
            these command-line arguments.
        launcher: ``"none"`` (here), ``"local"`` or ``"slurm"`` (:mod:`planar3d.runs.launch`).
        launch_options: a :class:`planar3d.runs.launch.LaunchOptions`.

    Returns:
        The test rows of the finished runs (``[]`` after a SLURM submission: gather later).

    The run folder and the cache are checked before any work, and the run folder is locked
    for the duration (the folds lock their own folders, so ``--parallel``'s fold processes
    and the launcher's jobs do not collide with it).

    Raises:
        Planar3DError: bad input, a run folder from another configuration or in use, a failed fold.
    """

    out = Path(out)
    if config.task != "classification":
        refuse_other_grid(out, config, overwrite)  # before anything is touched
    check_destinations(folders=[out, config.cache_dir or default_cache_dir()])
    with run_lock(out):
        return _run_grid(config, out, folds, overwrite, resume, parallel_argv, launcher, launch_options)


def _run_grid(config: Config, out: Path, folds: Sequence[int] | None, overwrite: bool, resume: bool | None,
              parallel_argv: Sequence[str] | None, launcher: str, launch_options) -> list[dict]:
    """:func:`run_crossval` inside the run folder's lock."""

    if folds is None and config.split == "centre":  # one fold per centre

        folds = list(range(n_split_folds(dataset_records(config), "centre")))
        config = dataclasses.replace(config, folds=folds)
    folds = list(config.folds if folds is None else folds)
    classification = config.task == "classification"
    if classification and launcher != "none":
        raise Planar3DError(f"--launcher {launcher} runs segmentation grids; --task classification runs here only")
    if not classification:
        refuse_other_grid(out, config, overwrite)  # again inside the lock, where it cannot change
    tasks = grid_tasks(config, folds, out)
    if launcher == "none":
        if parallel_argv is None:
            run_tasks(tasks, overwrite=overwrite, resume=resume)
        else:
            for seed in config.seeds or [None]:
                if seed is None:
                    run_parallel(folds, out, parallel_argv)
                else:
                    run_parallel(folds, seed_dir(out, seed), [*parallel_argv, "--seed", str(seed)])
        if classification:
            return write_classification_outputs(out, config, folds)
        write_grid(out, config, folds, overwrite)
        rows, _ = gather(out)
        return rows
    write_grid(out, config, folds, overwrite)
    submit(tasks, out, launcher, launch_options, overwrite=overwrite)
    if launcher == "slurm":
        return []
    rows, _ = gather(out)
    return rows
