"""One cross-validation fold, whatever the task: the steps every training shares, in order.

:func:`run_fold` checks the destinations, locks ``RUN_DIR/fold_k/``, splits the records, reuses
a finished fold, loads the cached volumes, seeds, builds and compiles the model under the
distribution strategy, writes the run record, fits (resuming from a backup after a kill),
evaluates the test scans and writes ``done.json``. What differs between segmentation
(:mod:`planar3d.training.segment`) and classification (:mod:`planar3d.training.classify`) is a
:class:`FoldPlan`: the model, the data, the test-scan evaluation and the files of the task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from planar3d.atomic import check_destinations, write_text_atomic
from planar3d.config import Config
from planar3d.data.cache import CachedCase, default_cache_dir, load_cases
from planar3d.data.splits import fold_split
from planar3d.errors import Planar3DError
from planar3d.io.records import Record
from planar3d.runlock import run_lock
from planar3d.training.fit import MULTIWORKER_UNSUPPORTED, distribution_strategy, fit_resumable, seed_run
from planar3d.training.run_folder import DONE_NAME, check_run_dir, read_log, refuse_reuse, write_run_record

__all__ = ["FoldPlan", "FoldTask", "Split", "run_fold"]


@dataclass(frozen=True)
class Split:
    """The patient ids of one fold: training, validation and test."""

    fold: int
    train: list[str]
    validation: list[str]
    test: list[str]


@dataclass
class FoldPlan:
    """A task's part of one fold, given its split and cached cases (``{patient_id: CachedCase}``).

    Attributes:
        build: the compiled model (called inside the strategy's scope, after seeding).
        datasets: ``first_epoch -> (train_ds, val_ds, steps_per_epoch)`` (see
            :func:`planar3d.training.fit.fit_resumable`).
        evaluate: ``(fold_dir) -> rows``: segment or classify the test scans with ``best.keras``,
            write the task's result files, return one dict per test scan.
        title: the learning curves' title.
        first_callbacks: ``(fold_dir) -> callbacks`` run before the logger.
        record_files: ``(fold_dir) -> None``: task files written beside the run record.
    """

    build: Callable[[], Any]
    datasets: Callable[[int], tuple]
    evaluate: Callable[[Path], list[dict]]
    title: str
    first_callbacks: Callable[[Path], Sequence] = field(default=lambda fold_dir: ())
    record_files: Callable[[Path], None] = field(default=lambda fold_dir: None)


@dataclass(frozen=True)
class FoldTask:
    """What makes a task's fold: its records, its finished results, its plan.

    Attributes:
        records: ``config -> records`` of the data set.
        finished_rows: ``fold_dir -> rows`` of a finished fold (reused, not retrained).
        check: ``(config, records, split) -> None``: refusals that need the split, before any
            write (e.g. a training set of one class).
        plan: ``(config, records, split, cases) -> FoldPlan``.
    """

    records: Callable[[Config], list[Record]]
    finished_rows: Callable[[Path], list[dict]]
    plan: Callable[[Config, Sequence[Record], Split, dict[str, CachedCase]], FoldPlan]
    check: Callable[[Config, Sequence[Record], Split], None] = field(default=lambda config, records, split: None)


def run_fold(task: FoldTask, config: Config, fold: int, out_dir: str | Path, overwrite: bool = False,
             resume: bool | None = None, extra_callbacks: Sequence = (), verbose: int | str = "auto") -> list[dict]:
    """Train fold ``fold`` of ``task`` into ``out_dir/fold_<fold>/`` and evaluate its test scans.

    Args:
        task: segmentation's or classification's :class:`FoldTask`.
        config: the run's settings.
        fold: 0-based fold index (:func:`planar3d.data.splits.fold_split`).
        out_dir: the run folder.
        overwrite: discard an existing fold folder.
        resume: ``None`` resumes automatically from a backup; ``False`` refuses to.
        extra_callbacks: more Keras callbacks (run before the backup is written).
        verbose: Keras progress display.

    Returns:
        The task's rows, one per test scan (those of the finished fold when it is reused).

    Raises:
        Planar3DError: bad data, fold out of range, a run folder from another config, an
            unwritable run folder or cache, a run folder in use by another live run.
    """
    config.validate()
    if config.strategy == "multiworker":  # before any work (see MULTIWORKER_UNSUPPORTED)
        raise Planar3DError(MULTIWORKER_UNSUPPORTED)
    cache_dir = config.cache_dir or default_cache_dir()
    fold_dir = Path(out_dir) / f"fold_{fold}"
    # refuse before anything is touched: a folder of another run, unwritable destinations;
    # then one run per fold folder (checked again inside the lock, where it cannot change)
    refuse_reuse(fold_dir, config, overwrite, resume)
    check_destinations(folders=[out_dir, cache_dir])
    with run_lock(fold_dir):
        records = task.records(config)
        split = Split(fold, *fold_split(records, fold, config.split))
        if check_run_dir(fold_dir, config, overwrite, resume):
            print(f"fold {fold}: already finished in {fold_dir}, reusing its results")
            return task.finished_rows(fold_dir)
        task.check(config, records, split)

        cases = load_cases(records, size=config.size, cache_dir=cache_dir, robust=config.robust_normalisation,
                           modalities=config.modalities)
        by_id = {case.patient_id: case for case in cases}
        plan = task.plan(config, records, split, by_id)
        seed_run(config)
        with distribution_strategy(config.strategy).scope():
            model = plan.build()

        # Nothing is written before the data and the weights have loaded.
        write_run_record(fold_dir, config, {"split": config.split, "fold": fold, "train": split.train,
                                            "validation": split.validation, "test": split.test})
        plan.record_files(fold_dir)
        log_path = fit_resumable(model, fold_dir, config, plan.datasets, title=plan.title,
                                 first_callbacks=plan.first_callbacks(fold_dir), extra_callbacks=extra_callbacks,
                                 verbose=verbose)
        rows = plan.evaluate(fold_dir)
        write_text_atomic(fold_dir / DONE_NAME, json.dumps({"fold": fold, "epochs": len(read_log(log_path))}) + "\n")
    return rows
