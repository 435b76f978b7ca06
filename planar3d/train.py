"""Train one cross-validation fold: ``python -m planar3d.train --fold k``.

A fold's folder (``RUN_DIR/fold_k/``) receives ``config.json``, ``versions.json``,
``split.json``, ``log.csv`` (CSVLogger), ``curves.png`` (rewritten every epoch),
``tensorboard/``, ``best.keras`` (best validation loss), then the test scans' masks
(``predictions/<patient>_mask.nii.gz``, native grid and affine), ``overlays/`` and
``metrics.csv``, and finally ``done.json``. ``--seeds 0 1 2`` trains the fold once per
seed in ``RUN_DIR/seed_<s>/fold_k/`` and prints the statistics over seeds. A run killed at any moment resumes from its
last finished epoch (the ``backup/`` folder) and ends as it would have.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.atomic import atomic_path, check_destinations, write_text_atomic
from planar3d.cli import add_config_flags, add_run_flags, config_from_args, make_parser, run_cli
from planar3d.config import Config, load_config
from planar3d.data import CachedCase, centre_split, cv_split, default_cache_dir, load_cases
from planar3d.errors import Planar3DError
from planar3d.io import Record, find_dataset, load_mask, load_scan, save_nifti
from planar3d.runlock import LOCK_NAME, run_lock

__all__ = [
    "build_from_config", "dataset_records", "evaluate_fold", "fold_split", "learning_rate", "main", "make_optimizer",
    "n_split_folds", "read_metrics", "train_fold", "versions", "write_rows",
]

DONE_NAME = "done.json"
#: Two local workers with a TF_CONFIG on loopback ports both stop in their first training step
#: (TF 2.21, Keras 3.x) with "Attempt to convert a value (PerReplica:...) ... to a Tensor".
MULTIWORKER_UNSUPPORTED = (
    "--strategy multiworker: Keras 3's Model.fit does not train under tf.distribute.MultiWorkerMirroredStrategy "
    "(keras-team/keras#20585); use --strategy mirrored (all GPUs of one machine) or crossval --parallel"
)


def source_revision(package: Path | None = None) -> str | None:
    """The git commit planar3d runs from, with ``-dirty`` when tracked files differ from it;
    None unless the package is the ``planar3d/`` folder of a git checkout's root (an installed
    wheel, or a copy inside another repository) or without git. ``package``: the folder to
    ask about (default: this package's)."""
    import subprocess

    package = Path(__file__).resolve().parent if package is None else Path(package).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != package.parent:
            return None
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def versions() -> dict[str, object]:
    """Versions of Python and of every library a result depends on, the git commit of the
    source (:func:`source_revision`), and under ``machine``
    the CPU's instruction sets, thread counts and oneDNN settings
    (:func:`planar3d.machine.numerics_record`): what makes float results differ between
    machines."""
    import keras
    import nibabel
    import scipy
    import tensorflow as tf

    import planar3d
    from planar3d.machine import numerics_record

    return {
        "planar3d": planar3d.__version__, "planar3d_source": source_revision(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "nibabel": nibabel.__version__, "platform": platform.platform(),
        "gpus": str([d.name for d in tf.config.list_physical_devices("GPU")]),
        "machine": numerics_record(),
    }


def dataset_records(config: Config) -> list[Record]:
    """The dataset's records: ``config.data``, or the built-in phantom (made on first use)."""
    if config.data is not None:
        return find_dataset(config.data, require_masks=True, bids=config.bids_options())
    from planar3d.phantom import ensure_phantom

    options = {"seed": config.phantom_seed, "n_per_centre": config.phantom_n_per_centre, "mode": config.phantom_mode}
    if config.phantom_scale is not None:
        options["scale"] = config.phantom_scale
    if config.phantom_lesion_load is not None:
        options["lesion_load"] = config.phantom_lesion_load
    return find_dataset(ensure_phantom(**options), require_masks=True, bids=config.bids_options())


def fold_split(records: Sequence[Record], fold: int, split: str = "patient") -> tuple[list[str], list[str], list[str]]:
    """``(train_ids, val_ids, test_ids)`` of one fold: the paper's split
    (:func:`planar3d.data.cv_split`) or leave-one-centre-out (:func:`planar3d.data.centre_split`,
    centres from the records). Scans of one subject (``Record.subject``, BIDS sessions) share a role."""
    centres = {r.patient_id: r.centre for r in records}
    subjects = {r.patient_id: r.subject or r.patient_id for r in records}
    if split == "centre":
        return centre_split(centres, fold, subjects=subjects)
    return cv_split([r.patient_id for r in records], fold, centres=centres, subjects=subjects)


def n_split_folds(records: Sequence[Record], split: str = "patient") -> int:
    """Number of folds of a split: the smallest centre's size (paper) or the number of centres."""
    from planar3d.data import n_folds

    if split == "centre":
        return len({r.centre for r in records})
    return n_folds([r.patient_id for r in records], centres={r.patient_id: r.centre for r in records},
                   subjects={r.patient_id: r.subject or r.patient_id for r in records})


def build_from_config(config: Config):
    """The uncompiled segmentation model a config describes: the paper's network
    (``backbone="paper"``) or a registry backbone under a U-Net decoder."""
    if config.backbone != "paper":
        from planar3d.nets.heads import build_segmenter

        return build_segmenter(
            config.backbone, input_shape=(config.window, config.size, config.size, config.channels),
            mapping=config.mapping, encoder_weights=config.weights_argument(), freeze_encoder=config.freeze_encoder,
        )
    from planar3d.nets.model import build_model

    return build_model(
        input_shape=(config.window, config.size, config.size, config.channels),
        encoder_weights=config.weights_argument(), freeze_encoder=config.freeze_encoder,
        bottleneck_init=config.bottleneck_init, mapping=config.mapping, seed=config.seed,
    )


def _strategy(name: str):
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


def _compile(model, config: Config, steps_per_epoch: int | None = None) -> None:
    from planar3d.losses import bce_dice_loss, dice_coef

    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=bce_dice_loss, metrics=[dice_coef],
                  jit_compile=False)


def _n_windows(cases: Sequence[CachedCase], config: Config) -> int:
    from planar3d.windows import window_starts

    total = 0
    for case in cases:
        starts = window_starts(case.volume.shape[0], config.window, config.stride)
        if config.empty_window_weight == 0:
            total += sum(bool(np.any(case.mask[s : s + config.window])) for s in starts)
        else:
            total += len(starts)
    return total


def _datasets(train: Sequence[CachedCase], val: Sequence[CachedCase], config: Config, first_epoch: int):
    from planar3d.windows import window_dataset

    common = dict(size=config.window, stride=config.stride, batch_size=config.batch_size,
                  channels=config.channels, empty_window_weight=config.empty_window_weight)
    train_ds = window_dataset([c.volume for c in train], [c.mask for c in train], shuffle=True,
                              seed=config.seed, first_epoch=first_epoch, **common)
    val_ds = window_dataset([c.volume for c in val], [c.mask for c in val], shuffle=False, seed=0, **common)
    if config.empty_window_weight == 0:  # weights are all 1 after dropping: keep (x, y) pairs
        train_ds = train_ds.map(lambda x, y, w: (x, y))
        val_ds = val_ds.map(lambda x, y, w: (x, y))
    steps = math.ceil(_n_windows(train, config) / config.batch_size)
    if steps == 0:
        raise Planar3DError("no training windows: every training window was dropped (empty_window_weight=0)")
    return train_ds, val_ds, steps


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _truncate_log(path: Path, first_epoch: int) -> list[dict]:
    """Keep the log rows of epochs before ``first_epoch`` (a kill may leave one more)."""
    rows = [row for row in _read_log(path) if int(row["epoch"]) < first_epoch]
    if rows:
        write_rows(path, rows)
    else:
        path.unlink(missing_ok=True)
    return rows


def _check_run_dir(fold_dir: Path, config: Config, overwrite: bool, resume: bool | None) -> bool:
    """Check a fold folder (emptied with ``overwrite``); return True when its training is done."""
    saved = fold_dir / "config.json"
    if saved.is_file():
        previous = load_config(saved)
        if overwrite:
            for item in fold_dir.iterdir():  # keep the lock held by this run
                if item.name == LOCK_NAME:
                    continue
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink()
        elif previous.training_identity() != config.training_identity():
            changed = sorted(k for k, v in config.training_identity().items() if previous.training_identity()[k] != v)
            raise Planar3DError(
                f"{fold_dir}: run folder from a different config (differs in {changed}); "
                "choose another --out or pass --overwrite"
            )
        elif (fold_dir / DONE_NAME).is_file():
            return True
        elif resume is False and (fold_dir / "backup").exists():
            raise Planar3DError(f"{fold_dir}: holds an unfinished run; pass --resume or --overwrite")
    return False


def train_fold(
    config: Config,
    fold: int,
    out_dir: str | Path,
    overwrite: bool = False,
    resume: bool | None = None,
    extra_callbacks: Sequence = (),
    verbose: int | str = "auto",
) -> list[dict]:
    """Train fold ``fold`` of the paper's cross-validation and evaluate its test scans.

    Args:
        config: the run's settings.
        fold: 0-based fold index (see :func:`planar3d.data.cv_split`).
        out_dir: the run folder; the fold writes into ``out_dir/fold_<fold>/``.
        overwrite: discard an existing fold folder.
        resume: ``None`` resumes automatically from a backup; ``False`` refuses to.
        extra_callbacks: more Keras callbacks (run before the backup is written).
        verbose: Keras progress display.

    Returns:
        One dict per test scan: fold, patient, centre and the metrics of
        :func:`planar3d.metrics.scan_metrics`.

    Raises:
        Planar3DError: bad data, fold out of range, a run folder from another config, an
            unwritable run folder or cache, a run folder in use by another live run.
    """
    config.validate()
    if config.strategy == "multiworker":  # before any work (see MULTIWORKER_UNSUPPORTED)
        raise Planar3DError(MULTIWORKER_UNSUPPORTED)
    # refuse unwritable destinations before any work; one run per fold folder
    check_destinations(folders=[out_dir, config.cache_dir or default_cache_dir()])
    with run_lock(Path(out_dir) / f"fold_{fold}"):
        return _train_fold(config, fold, out_dir, overwrite, resume, extra_callbacks, verbose)


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


def write_run_record(fold_dir: Path, config: Config, split: dict) -> None:
    """``config.json``, ``versions.json`` and ``split.json`` of a fold, atomically."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(fold_dir / "config.json", config.to_json())
    write_text_atomic(fold_dir / "versions.json", json.dumps(versions(), indent=2) + "\n")
    write_text_atomic(fold_dir / "split.json", json.dumps(split, indent=2) + "\n")


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

    from planar3d.callbacks import AtomicBackupAndRestore, BestModelCheckpoint, LearningCurves, ResumableEarlyStopping

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


def _train_fold(config: Config, fold: int, out_dir: str | Path, overwrite: bool, resume: bool | None,
                extra_callbacks: Sequence, verbose: int | str) -> list[dict]:
    import keras

    records = dataset_records(config)
    train_ids, val_ids, test_ids = fold_split(records, fold, config.split)
    fold_dir = Path(out_dir) / f"fold_{fold}"
    if _check_run_dir(fold_dir, config, overwrite, resume):
        print(f"fold {fold}: already finished in {fold_dir}, reusing its results")
        return read_metrics(fold_dir / "metrics.csv")

    cases = load_cases(records, size=config.size, cache_dir=config.cache_dir or default_cache_dir(),
                       robust=config.robust_normalisation)
    by_id = {case.patient_id: case for case in cases}

    seed_run(config)
    steps_per_epoch = math.ceil(_n_windows([by_id[i] for i in train_ids], config) / config.batch_size)
    with _strategy(config.strategy).scope():
        model = build_from_config(config)
        _compile(model, config, steps_per_epoch)

    # Nothing is written before the data and the weights have loaded.
    write_run_record(fold_dir, config, {"split": config.split, "fold": fold, "train": train_ids,
                                        "validation": val_ids, "test": test_ids})
    tensorboard = keras.callbacks.TensorBoard(str(fold_dir / "tensorboard"), histogram_freq=0, write_graph=False)
    log_path = fit_resumable(
        model, fold_dir, config,
        lambda first_epoch: _datasets([by_id[i] for i in train_ids], [by_id[i] for i in val_ids], config, first_epoch),
        title=f"fold {fold}", first_callbacks=[tensorboard], extra_callbacks=extra_callbacks, verbose=verbose)
    rows = evaluate_fold(fold_dir, [by_id[i] for i in test_ids], config, fold)
    write_text_atomic(fold_dir / DONE_NAME, json.dumps({"fold": fold, "epochs": len(_read_log(log_path))}) + "\n")
    return rows


def read_metrics(path: Path) -> list[dict]:
    """Rows of a fold's ``metrics.csv`` with numbers parsed."""
    rows = []
    for row in _read_log(path):
        rows.append({k: (v if k in ("patient", "centre") else float(v) if k != "fold" else int(v)) for k, v in row.items()})
    return rows


def write_rows(path: Path, rows: Sequence[dict]) -> None:
    """Write dict rows as CSV, atomically."""
    with atomic_path(path, overwrite=True) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def evaluate_fold(fold_dir: Path, cases: Sequence[CachedCase], config: Config, fold: int) -> list[dict]:
    """Segment a fold's test scans with ``best.keras``; write masks, overlays and metrics.csv."""
    import keras

    from planar3d.metrics import scan_metrics
    from planar3d.pipeline import resampled_spacing, segment_volume
    from planar3d.plots import plot_overlay
    from planar3d.windows import binarize

    model = keras.models.load_model(fold_dir / "best.keras", compile=False, safe_mode=True)
    rows = []
    for case in cases:
        scan = load_scan(case.record.flair)
        probabilities, mask, resampled = segment_volume(model, case.volume, case.meta, config)
        save_nifti(mask, scan, fold_dir / "predictions" / f"{case.patient_id}_mask.nii.gz", overwrite=True)
        if config.eval_space == "native":
            reference = np.asarray(load_mask(case.record.mask, scan).dataobj) > 0.5
            metrics = scan_metrics(reference, mask, [float(z) for z in scan.header.get_zooms()[:3]])
        else:
            resampled_mask = binarize(resampled, threshold=config.threshold, rule=config.threshold_rule)
            metrics = scan_metrics(case.mask > 0.5, resampled_mask, resampled_spacing(case.meta))
        plot_overlay(case.volume, prediction=binarize(resampled, threshold=config.threshold, rule=config.threshold_rule),
                     reference=case.mask, path=fold_dir / "overlays" / f"{case.patient_id}.png",
                     title=f"{case.patient_id}: Dice {metrics['dice']:.3f}")
        rows.append({"fold": fold, "patient": case.patient_id, "centre": case.centre, **metrics})
        print(f"fold {fold} test {case.patient_id}: dice {metrics['dice']:.3f} sensitivity {metrics['sensitivity']:.3f}")
    write_rows(fold_dir / "metrics.csv", rows)
    return rows


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Train one fold of the planar 3D res-u-net (Kolarik et al. 2020), of a segmenter with "
                         "another --backbone, or of a whole-volume classifier (--task classification).", "planar3d.train")
    parser.add_argument("--fold", type=int, required=True, help="fold index 0..4 (paper rule, see cv_split)")
    add_run_flags(parser)
    add_config_flags(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    out = Path(args.out or f"runs/{config.preset}")
    if config.task == "classification":
        from planar3d.classify import train_classifier_fold
        from planar3d.grid import seed_config, seed_dir

        for seed in config.seeds or [None]:
            train_classifier_fold(config if seed is None else seed_config(config, seed), args.fold,
                                  out if seed is None else seed_dir(out, seed), overwrite=args.overwrite, resume=args.resume)
        return 0
    if config.seeds is None:
        rows = train_fold(config, args.fold, out, overwrite=args.overwrite, resume=args.resume)
        print(f"fold {args.fold}: mean Dice {np.mean([r['dice'] for r in rows]):.3f} over {len(rows)} test scans; "
              f"outputs in {out / f'fold_{args.fold}'}")
        return 0
    from planar3d.grid import seed_config, seed_dir, seeds_summary_markdown

    rows = []
    for seed in config.seeds:
        seed_rows = train_fold(seed_config(config, seed), args.fold, seed_dir(out, seed),
                               overwrite=args.overwrite, resume=args.resume)
        rows += [{"seed": seed, **row} for row in seed_rows]
    print(seeds_summary_markdown(rows, config, title=f"Fold {args.fold} over seeds"))
    print(f"outputs in {out}/seed_<s>/fold_{args.fold}/ for seeds {config.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
