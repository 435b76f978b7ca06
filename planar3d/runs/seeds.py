"""Repeating a run over seeds and folds: the ``seed_<s>/`` folders, the (seed, fold) tasks, and the
one loop that trains them here, for segmentation and classification alike.

``--seeds 0 1 2`` on ``train`` or ``crossval`` runs the same configuration once per seed, each
in ``OUT/seed_<s>/`` laid out as a single run (``fold_<k>/`` folders, finished ones reused,
killed ones resumed); without ``--seeds`` the folds sit in ``OUT`` itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from planar3d.config import Config
from planar3d.training.classify import train_classifier_fold
from planar3d.training.run_folder import DONE_NAME
from planar3d.training.segment import train_fold

__all__ = ["Task", "fold_runner", "grid_tasks", "run_tasks", "seed_config", "seed_dir"]


def seed_dir(out: str | Path, seed: int) -> Path:
    """The run folder of one seed: ``out/seed_<seed>``."""
    return Path(out) / f"seed_{seed}"


def seed_config(config: Config, seed: int) -> Config:
    """The configuration of one seed's run (``seed`` set, ``seeds`` cleared)."""
    return dataclasses.replace(config, seed=seed, seeds=None).validate()


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
        return (self.fold_dir / DONE_NAME).is_file()

    @property
    def key(self) -> dict:
        """``{"seed", "fold", "variant"}``: how ``jobs.json`` names the task."""
        return {"seed": self.seed, "fold": self.fold, "variant": self.variant}

    def describe(self) -> str:
        words = ([] if self.seed is None else [f"seed {self.seed}"]) + [f"fold {self.fold}"]
        return " ".join(words + ([] if self.variant is None else [self.variant]))


def grid_tasks(config: Config, folds: Sequence[int], out: str | Path) -> list[Task]:
    """The (seed, fold) tasks of a cross-validation, seeds outermost (one-run layout without seeds)."""
    out = Path(out)
    if config.seeds is None:
        return [Task(None, int(fold), config, out) for fold in folds]
    return [Task(seed, int(fold), seed_config(config, seed), seed_dir(out, seed))
            for seed in config.seeds for fold in folds]


def fold_runner(config: Config) -> Callable[..., list[dict]]:
    """The function that trains one fold of ``config.task``: :func:`planar3d.training.segment.train_fold`
    or :func:`planar3d.training.classify.train_classifier_fold` (same arguments, rows per test scan)."""
    return train_classifier_fold if config.task == "classification" else train_fold


def run_tasks(tasks: Sequence[Task], overwrite: bool = False, resume: bool | None = None) -> list[dict]:
    """Train every task here, one after another; the test rows of all, with ``seed`` first where
    the grid has seeds."""
    rows = []
    for task in tasks:
        task_rows = fold_runner(task.config)(task.config, task.fold, task.run_dir, overwrite=overwrite, resume=resume)
        rows += [row if task.seed is None else {"seed": task.seed, **row} for row in task_rows]
    return rows
