"""Train one cross-validation fold: ``python -m planar3d.train --fold k``.

A fold's folder (``RUN_DIR/fold_k/``) receives ``config.json``, ``versions.json``,
``split.json``, ``log.csv`` (CSVLogger), ``curves.png`` (rewritten every epoch),
``tensorboard/``, ``best.keras`` (best validation loss), ``calibration.json`` (the temperature
fitted on the validation scans and the reduced-precision volume check, :mod:`planar3d.training.calibrate`),
then the test scans' masks
(``predictions/<patient>_mask.nii.gz``, native grid and affine), ``overlays/`` and
``metrics.csv``, and finally ``done.json``. ``--seeds 0 1 2`` trains the fold once per
seed in ``RUN_DIR/seed_<s>/fold_k/`` and prints the statistics over seeds. A run killed at any moment resumes from its
last finished epoch (the ``backup/`` folder) and ends as it would have.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.atomic import write_rows
from planar3d.config import Config
from planar3d.data.cache import CachedCase
from planar3d.data.geometry import window_starts
from planar3d.errors import Planar3DError
from planar3d.evaluation.metrics import scan_metrics
from planar3d.inference.pipeline import resampled_spacing, segment_volume
from planar3d.inference.postprocess import binarize
from planar3d.inference.precision import fallback_notice, precision_for_model, resolve_precision
from planar3d.io.nifti import load_mask, load_scan, save_nifti
from planar3d.io.sources import dataset_records
from planar3d.training.calibrate import calibrate_fold
from planar3d.training.fit import make_optimizer
from planar3d.training.fold import FoldPlan, FoldTask, Split, run_fold
from planar3d.training.run_folder import read_metrics

__all__ = ["SEGMENTATION", "build_from_config", "evaluate_fold", "train_fold"]


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


def _compile(model, config: Config, steps_per_epoch: int | None = None) -> None:
    from planar3d.nets.losses import bce_dice_loss, dice_coef

    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=bce_dice_loss, metrics=[dice_coef],
                  jit_compile=False)


def _n_windows(cases: Sequence[CachedCase], config: Config) -> int:

    total = 0
    for case in cases:
        starts = window_starts(case.volume.shape[0], config.window, config.stride)
        if config.empty_window_weight == 0:
            total += sum(bool(np.any(case.mask[s : s + config.window])) for s in starts)
        else:
            total += len(starts)
    return total


def _datasets(train: Sequence[CachedCase], val: Sequence[CachedCase], config: Config, first_epoch: int):
    from planar3d.data.windows import window_dataset

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


def _plan(config: Config, records, split: Split, by_id: dict[str, CachedCase]) -> FoldPlan:
    import keras

    train, val = [by_id[i] for i in split.train], [by_id[i] for i in split.validation]
    steps_per_epoch = math.ceil(_n_windows(train, config) / config.batch_size)

    def build():
        model = build_from_config(config)
        _compile(model, config, steps_per_epoch)
        return model

    def tensorboard(fold_dir: Path):
        return [keras.callbacks.TensorBoard(str(fold_dir / "tensorboard"), histogram_freq=0, write_graph=False)]

    return FoldPlan(
        build=build,
        datasets=lambda first_epoch: _datasets(train, val, config, first_epoch),
        evaluate=lambda fold_dir: _evaluate(fold_dir, val, [by_id[i] for i in split.test], config, split.fold),
        title=f"fold {split.fold}",
        first_callbacks=tensorboard,
    )


def _evaluate(fold_dir: Path, validation: Sequence[CachedCase], test: Sequence[CachedCase], config: Config,
              fold: int) -> list[dict]:
    """Measure the model on the validation scans (``calibration.json``, :func:`calibrate_fold`), then
    segment the test scans in the format ``predict --precision auto`` would pick for it."""
    record = calibrate_fold(fold_dir, validation, config)
    if config.precision == "auto" and record:
        auto = resolve_precision("auto")
        chosen = precision_for_model("auto", auto, record["precision"])
        if chosen != auto:
            print(fallback_notice(str(fold_dir / "best.keras"), auto, record["precision"]))
            config = replace(config, precision=chosen)
    return evaluate_fold(fold_dir, test, config, fold)


#: segmentation's part of :func:`planar3d.training.fold.run_fold`.
SEGMENTATION = FoldTask(
    records=lambda config: dataset_records(config),
    finished_rows=lambda fold_dir: read_metrics(fold_dir / "metrics.csv"),
    plan=lambda *args: _plan(*args),
)


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
        fold: 0-based fold index (see :func:`planar3d.data.splits.cv_split`).
        out_dir: the run folder; the fold writes into ``out_dir/fold_<fold>/``.
        overwrite: discard an existing fold folder.
        resume: ``None`` resumes automatically from a backup; ``False`` refuses to.
        extra_callbacks: more Keras callbacks (run before the backup is written).
        verbose: Keras progress display.

    Returns:
        One dict per test scan: fold, patient, centre and the metrics of
        :func:`planar3d.evaluation.metrics.scan_metrics`.

    Raises:
        Planar3DError: bad data, fold out of range, a run folder from another config, an
            unwritable run folder or cache, a run folder in use by another live run.
    """
    return run_fold(SEGMENTATION, config, fold, out_dir, overwrite, resume, extra_callbacks, verbose)


def evaluate_fold(fold_dir: Path, cases: Sequence[CachedCase], config: Config, fold: int) -> list[dict]:
    """Segment a fold's test scans with ``best.keras``; write masks, overlays and metrics.csv."""
    import keras

    from planar3d.evaluation.report_figures import plot_overlay

    model = keras.models.load_model(fold_dir / "best.keras", compile=False, safe_mode=True)
    rows = []
    for case in cases:
        scan = load_scan(case.record.flair)
        probabilities, mask, resampled = segment_volume(model, case.volume, case.meta, config)
        save_nifti(mask, scan, fold_dir / "predictions" / f"{case.patient_id}_mask.nii.gz", overwrite=True)
        if config.eval_space == "native":
            reference = np.asarray(load_mask(case.record.mask, scan, case.record.mask_labels).dataobj) > 0.5
            metrics = scan_metrics(reference, mask, [float(z) for z in scan.header.get_zooms()[:3]])
        else:
            resampled_mask = binarize(resampled, threshold=config.threshold, rule=config.threshold_rule)
            metrics = scan_metrics(case.mask > 0.5, resampled_mask, resampled_spacing(case.meta))
        plot_overlay(case.volume if case.volume.ndim == 3 else case.volume[..., 0], prediction=binarize(resampled, threshold=config.threshold, rule=config.threshold_rule),
                     reference=case.mask, path=fold_dir / "overlays" / f"{case.patient_id}.png",
                     title=f"{case.patient_id}: Dice {metrics['dice']:.3f}")
        rows.append({"fold": fold, "patient": case.patient_id, "centre": case.centre, **metrics})
        print(f"fold {fold} test {case.patient_id}: dice {metrics['dice']:.3f} sensitivity {metrics['sensitivity']:.3f}")
    write_rows(fold_dir / "metrics.csv", rows)
    return rows
