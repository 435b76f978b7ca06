"""Keras callbacks that make a training run survive SIGKILL at any moment.

After a restart the run continues from its last finished epoch and ends with the result
an uninterrupted run would have had: the backup is swapped in by a directory rename (never
half-written), the best-model checkpoint is written atomically, and early stopping and
the checkpoint recover their state (best validation loss, epochs without improvement)
from the CSV log of the finished epochs.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import keras

from planar3d.atomic import atomic_path, publish_folder

__all__ = ["AtomicBackupAndRestore", "BestModelCheckpoint", "LearningCurves", "ResumableEarlyStopping"]

_METADATA = "training_metadata.json"
_WEIGHTS = "model.weights.h5"


def _best_of(history: Sequence[dict], monitor: str) -> tuple[float | None, int]:
    """(best value, its row index) of ``monitor`` in the log rows, or (None, -1)."""
    values = [float(row[monitor]) for row in history if row.get(monitor) not in (None, "")]
    if not values:
        return None, -1
    index = min(range(len(values)), key=values.__getitem__)
    return values[index], index


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup is never half-written.

    Each epoch's weights (optimizer state included) and metadata go to a new folder that
    replaces ``current/`` by rename once synced to disk; ``previous/`` is kept until the swap
    is complete, so a kill (or a power cut) between the renames still leaves a whole backup.
    """

    def __init__(self, backup_dir: str | Path):
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=False, delete_checkpoint=True)
        self._root = Path(backup_dir)

    def _complete_folder(self) -> Path | None:
        for name in ("current", "previous"):
            folder = self._root / name
            if (folder / _METADATA).is_file() and (folder / _WEIGHTS).is_file():
                return folder
        return None

    def saved_epoch(self) -> int:
        """Number of finished epochs in the backup (0 without one)."""
        folder = self._complete_folder()
        if folder is None:
            return 0
        return int(json.loads((folder / _METADATA).read_text())["epoch"])

    def _save_model(self):
        self._root.mkdir(parents=True, exist_ok=True)
        staging = self._root / f"staging-{self._current_epoch}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self.model.save_weights(str(staging / _WEIGHTS))
        (staging / _METADATA).write_text(json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))
        current, previous = self._root / "current", self._root / "previous"
        if current.exists():
            shutil.rmtree(previous, ignore_errors=True)
            current.rename(previous)
        publish_folder(staging, current)  # synced to disk before the rename
        shutil.rmtree(previous, ignore_errors=True)

    def _load_model(self):
        folder = self._complete_folder()
        if folder is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(folder / _WEIGHTS))
        self.model._initial_epoch = int(json.loads((folder / _METADATA).read_text())["epoch"])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` (restoring the best weights) that continues from the logged epochs."""

    def __init__(self, history: Sequence[dict], monitor: str = "val_loss", patience: int = 40):
        super().__init__(monitor=monitor, patience=patience, restore_best_weights=True, mode="min")
        self._history = list(history)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best, index = _best_of(self._history, self.monitor)
        if best is not None:
            self.best = best
            self.best_epoch = index
            self.wait = len(self._history) - 1 - index


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the whole model as ``.keras`` whenever the monitored value improves, atomically."""

    def __init__(self, path: str | Path, history: Sequence[dict] = (), monitor: str = "val_loss"):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best, _ = _best_of(history, monitor)

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            return
        if self.best is None or float(current) < self.best:
            self.best = float(current)
            with atomic_path(self.path, overwrite=True) as tmp:
                self.model.save(tmp)


class LearningCurves(keras.callbacks.Callback):
    """Redraw the learning-curve PNG from the CSV log: after an epoch when ``min_interval`` seconds
    have passed since the last drawing (every epoch of the paper's minutes-long epochs; not the
    second-long epochs of a tiny run, where drawing cost more than the epoch), and at the end."""

    def __init__(self, log_path: str | Path, png_path: str | Path, title: str | None = None,
                 min_interval: float = 60.0):
        super().__init__()
        self.log_path, self.png_path, self.title = Path(log_path), Path(png_path), title
        self.min_interval = float(min_interval)
        self._drawn_at: float | None = None
        self._pending = False

    def _draw(self) -> None:
        from planar3d.evaluation.report_figures import plot_learning_curves

        if self.log_path.is_file():
            plot_learning_curves(self.log_path, path=self.png_path, title=self.title)
        self._drawn_at, self._pending = time.monotonic(), False

    def on_epoch_end(self, epoch, logs=None):
        self._pending = True
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.min_interval:
            self._draw()

    def on_train_end(self, logs=None):
        if self._pending:
            self._draw()
