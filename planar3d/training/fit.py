"""What every training shares: seeds and determinism, the optimizer and its learning-rate schedule,
the distribution strategy, mixed precision, and the resumable fit (backup, log, early stopping).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from planar3d.atomic import write_rows
from planar3d.config import Config
from planar3d.errors import Planar3DError
from planar3d.training.run_folder import read_log

__all__ = [
    "MULTIWORKER_UNSUPPORTED", "distribution_strategy", "fit_resumable", "learning_rate", "make_optimizer",
    "mixed_precision_policy", "seed_run"
]


#: Two local workers with a TF_CONFIG on loopback ports both stop in their first training step
#: (TF 2.21, Keras 3.x) with "Attempt to convert a value (PerReplica:...) ... to a Tensor".
MULTIWORKER_UNSUPPORTED = (
    "--strategy multiworker: Keras 3's Model.fit does not train under tf.distribute.MultiWorkerMirroredStrategy "
    "(keras-team/keras#20585); use --strategy mirrored (all GPUs of one machine) or crossval --parallel"
)


def distribution_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        raise Planar3DError(MULTIWORKER_UNSUPPORTED)
    return tf.distribute.get_strategy()


def mixed_precision_policy() -> str:
    """``mixed_float16`` on a GPU; ``mixed_bfloat16`` on a CPU (TensorFlow has no float16
    MaxPool3D kernel for the CPU)."""
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def learning_rate(config: Config, steps_per_epoch: int | None = None):
    """The optimizer's learning rate: a float, or a Keras schedule over optimizer steps.

    ``constant`` with ``lr_decay`` 0: ``lr``. ``constant`` with ``lr_decay`` > 0: Keras 2's
    per-step inverse-time decay ``lr / (1 + lr_decay * step)`` (the paper). ``cosine``:
    ``lr * (1 + cos(pi * step / total)) / 2`` with ``total = epochs * steps_per_epoch``,
    from ``lr`` at the first step to 0 after the last.

    Raises:
        Planar3DError: ``cosine`` without ``steps_per_epoch``.
    """
    import keras

    if config.lr_schedule == "cosine":
        if not steps_per_epoch:
            raise Planar3DError("lr_schedule 'cosine' needs the number of steps per epoch")
        return keras.optimizers.schedules.CosineDecay(config.lr, config.epochs * steps_per_epoch, alpha=0.0)
    if config.lr_decay > 0:
        return keras.optimizers.schedules.InverseTimeDecay(config.lr, 1, config.lr_decay)
    return config.lr


def make_optimizer(config: Config, steps_per_epoch: int | None = None):
    """Adam with :func:`learning_rate`, loss-scaled under ``mixed_float16``."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate(config, steps_per_epoch), beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    if config.mixed_precision and mixed_precision_policy() == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def _truncate_log(path: Path, first_epoch: int) -> list[dict]:
    """Keep the log rows of epochs before ``first_epoch`` (a kill may leave one more)."""
    rows = [row for row in read_log(path) if int(row["epoch"]) < first_epoch]
    if rows:
        write_rows(path, rows)
    else:
        path.unlink(missing_ok=True)
    return rows


def seed_run(config: Config) -> None:
    """Seed Python, NumPy and Keras from ``config.seed``; turn on op determinism and the mixed
    precision policy where the config asks. Call before the model is built."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy())


def fit_resumable(model, fold_dir: Path, config: Config, make_datasets, title: str, first_callbacks: Sequence = (),
                  extra_callbacks: Sequence = (), verbose: int | str = "auto") -> Path:
    """Fit ``model`` for ``config.epochs``, resuming from ``fold_dir/backup`` after a kill.

    Writes ``log.csv`` (on resume, rows of epochs the backup does not hold are dropped first),
    ``best.keras`` (best ``val_loss``), ``curves.png`` and the backup; stops early after
    ``config.patience`` epochs without improvement, counted over the whole run.

    Args:
        make_datasets: ``first_epoch -> (train_ds, val_ds, steps_per_epoch)``; the training
            data of a resumed run starts at ``first_epoch``'s shuffle.
        title: the learning curves' title.
        first_callbacks: callbacks run before the logger (e.g. per-epoch seeds).
        extra_callbacks: callbacks run after the others, before the backup is written.

    Returns:
        The path of ``log.csv``.
    """
    import keras

    from planar3d.training.callbacks import (
        AtomicBackupAndRestore,
        BestModelCheckpoint,
        LearningCurves,
        ResumableEarlyStopping,
    )

    backup = AtomicBackupAndRestore(fold_dir / "backup")
    first_epoch = backup.saved_epoch()
    log_path = fold_dir / "log.csv"
    history = _truncate_log(log_path, first_epoch)
    train_ds, val_ds, steps = make_datasets(first_epoch)
    if first_epoch:
        print(f"{fold_dir.name.replace('_', ' ')}: resuming after epoch {first_epoch} from {fold_dir / 'backup'}")
    callbacks = [
        *first_callbacks,
        keras.callbacks.CSVLogger(str(log_path), append=True),
        ResumableEarlyStopping(history, monitor="val_loss", patience=config.patience),
        BestModelCheckpoint(fold_dir / "best.keras", history),
        LearningCurves(log_path, fold_dir / "curves.png", title=title),
        *extra_callbacks,
        backup,  # last: an epoch counts as finished once everything above has run
    ]
    # shuffle=False: the datasets shuffle themselves, per (seed, epoch)
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, steps_per_epoch=steps, shuffle=False,
                  callbacks=callbacks, verbose=verbose)
    except BaseException:
        if verbose and sys.stdout.isatty():  # end Keras' unfinished progress line before the error
            print(file=sys.stdout, flush=True)
        raise
    return log_path
