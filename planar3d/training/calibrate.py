"""The end of a segmentation fold: its model measured on the validation scans, ``calibration.json``.

:func:`calibrate_fold` predicts the fold's validation scans with ``best.keras`` (the run's
inference settings, :func:`planar3d.inference.pipeline.predict_resampled`) in float32 and in the
reduced format ``--precision auto`` picks on this machine, and writes ``RUN/fold_k/calibration.json``:

* ``temperature``: the temperature fitted on the float32 probabilities of the resampled cube
  (``size³``, where ``predict --calibration temperature`` applies it) against the cached
  validation masks (:func:`planar3d.inference.temperature.fit_temperature`), with ``voxels``,
  the mean voxel NLL and the expected calibration error (``ece_bins`` equal-width bins,
  :func:`pooled_ece`) before and after;
* ``precision``: the reduced ``format`` against float32 on the native grid (as ``predict``
  writes masks): the validation scans' total lesion volume in each (ml), its relative
  difference, the lesion counts and their difference, the Dice between the two masks, and per
  scan the same. ``predict --precision auto`` runs a model in float32 when the volume moved by
  more than :data:`planar3d.inference.precision.VOLUME_TOLERANCE`
  (:func:`planar3d.inference.precision.precision_for_model`). Where ``auto`` is float32 (a CPU
  without bfloat16) both are float32, and the record says so (``format`` float32, no difference).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d import __version__
from planar3d.atomic import write_text_atomic
from planar3d.config import Config
from planar3d.data.cache import CachedCase
from planar3d.errors import InputFileError
from planar3d.evaluation.calibration import curve_ece, pool_reliability, reliability_curve
from planar3d.evaluation.lesions import label_lesions
from planar3d.evaluation.metrics import dice
from planar3d.inference.pipeline import native_mask, predict_resampled
from planar3d.inference.precision import VOLUME_TOLERANCE, relative_volume_difference, resolve_precision
from planar3d.inference.temperature import apply_temperature, binary_nll, fit_temperature

__all__ = ["CALIBRATION_NAME", "ECE_BINS", "calibrate_fold", "calibration_record", "pooled_ece", "precision_record"]


CALIBRATION_NAME = "calibration.json"
#: equal-width probability bins of the expected calibration error.
ECE_BINS = 10


def pooled_ece(probabilities: Sequence[np.ndarray], masks: Sequence[np.ndarray], bins: int = ECE_BINS) -> float:
    """The expected calibration error of :func:`planar3d.evaluation.calibration.expected_calibration_error`
    (``bins`` equal-width bins, Guo et al. 2017) over the voxels of several scans together."""
    return curve_ece(pool_reliability([reliability_curve(np.asarray(m) > 0.5, p, bins) for p, m in zip(probabilities, masks)]))


def precision_record(reduced: str, float32_masks: Sequence[np.ndarray], reduced_masks: Sequence[np.ndarray],
                     voxel_ml: Sequence[float], names: Sequence[str]) -> dict:
    """The ``precision`` part of ``calibration.json``: masks of the same scans in float32 and in
    ``reduced``, each scan's voxel volume (ml)."""
    scans = []
    for name, a, b, ml in zip(names, float32_masks, reduced_masks, voxel_ml):
        n_a, n_b = label_lesions(a)[1], label_lesions(b)[1]
        scans.append({"patient": name, "volume_ml_float32": float(a.sum() * ml), "volume_ml_reduced": float(b.sum() * ml),
                      "lesions_float32": n_a, "lesions_reduced": n_b, "dice": dice(a, b)})
    overlap = sum(int(np.count_nonzero(a & b)) for a, b in zip(float32_masks, reduced_masks))
    sizes = sum(int(a.sum() + b.sum()) for a, b in zip(float32_masks, reduced_masks))
    record = {
        "format": reduced,
        "volume_ml_float32": sum(s["volume_ml_float32"] for s in scans),
        "volume_ml_reduced": sum(s["volume_ml_reduced"] for s in scans),
        "lesions_float32": sum(s["lesions_float32"] for s in scans),
        "lesions_reduced": sum(s["lesions_reduced"] for s in scans),
        "dice": 2 * overlap / sizes if sizes else 1.0,
    }
    relative = relative_volume_difference(record)
    record.update(relative_volume_difference=relative if np.isfinite(relative) else None,
                  lesion_count_difference=record["lesions_reduced"] - record["lesions_float32"],
                  tolerance=VOLUME_TOLERANCE, within_tolerance=bool(relative <= VOLUME_TOLERANCE), scans=scans)
    if reduced == "float32":
        record["note"] = "precision 'auto' is float32 on this machine: nothing reduced to compare"
    return record


def calibrate_fold(fold_dir: Path, cases: Sequence[CachedCase], config: Config) -> dict | None:
    """Fit the temperature and measure the reduced format on a fold's validation ``cases``;
    write ``fold_dir/calibration.json`` and return its record (None, nothing written, without
    validation scans)."""
    import keras

    if not cases:
        print(f"{fold_dir}: no validation scans, no {CALIBRATION_NAME}")
        return None
    model = keras.models.load_model(fold_dir / "best.keras", compile=False, safe_mode=True)
    reduced = resolve_precision("auto")
    full = [predict_resampled(model, case.volume, replace(config, precision="float32")) for case in cases]
    low = full if reduced == "float32" else [predict_resampled(model, case.volume, replace(config, precision=reduced))
                                             for case in cases]
    masks = [np.asarray(case.mask) > 0.5 for case in cases]
    native_full = [native_mask(p, case.meta, config)[1] > 0 for p, case in zip(full, cases)]
    native_low = native_full if low is full else [native_mask(p, case.meta, config)[1] > 0 for p, case in zip(low, cases)]
    temperature = fit_temperature(full, masks)
    scaled = [apply_temperature(p, temperature) for p in full]
    voxel_ml = [float(np.prod(case.meta["native_spacing"])) / 1000.0 for case in cases]
    record = {
        "planar3d": __version__,
        "validation": [case.patient_id for case in cases],
        "space": f"resampled cube ({config.size}^3), float32 probabilities",
        "temperature": temperature,
        "voxels": int(sum(m.size for m in masks)),
        "nll_before": binary_nll(full, masks),
        "nll_after": binary_nll(full, masks, temperature),
        "ece_bins": ECE_BINS,
        "ece_before": pooled_ece(full, masks),
        "ece_after": pooled_ece(scaled, masks),
        "precision": precision_record(reduced, native_full, native_low, voxel_ml, [case.patient_id for case in cases]),
    }
    write_text_atomic(fold_dir / CALIBRATION_NAME, json.dumps(record, indent=2) + "\n")
    moved = record["precision"]
    print(f"{fold_dir.name} validation: temperature {temperature:.3f} (NLL {record['nll_before']:.4f} -> "
          f"{record['nll_after']:.4f}, ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f}); {reduced} vs "
          f"float32 lesion volume {moved['volume_ml_reduced']:.3f} vs {moved['volume_ml_float32']:.3f} ml")
    return record


def calibration_record(model_file: str | Path) -> dict | None:
    """The ``calibration.json`` beside a model file, or None when there is none.

    Raises:
        InputFileError: a ``calibration.json`` that is not a JSON mapping.
    """
    path = Path(model_file).parent / CALIBRATION_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputFileError(path, f"not a readable calibration file ({error})") from error
    if not isinstance(record, dict):
        raise InputFileError(path, "a calibration file must be a JSON mapping")
    return record
