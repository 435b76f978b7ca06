"""From a preprocessed scan to a native-space lesion mask: the inference path shared by
training (test scans of a fold) and :mod:`planar3d.apps.predict`.
"""

from __future__ import annotations

import os

import numpy as np

from planar3d.config import Config
from planar3d.data.preprocess import preprocess_channels, to_native
from planar3d.inference.postprocess import binarize
from planar3d.io.datasets import scan_channels
from planar3d.io.nifti import load_channel, load_scan

__all__ = ["INFERENCE_BATCH_SIZE", "load_preprocessed", "native_mask", "predict_resampled", "predict_resampled_members", "resampled_spacing", "segment_volume"]


#: Windows per forward pass at inference. On a 2-core CPU at 256³, batch 1 was faster than 2
#: (126 s vs 138-266 s for 31 windows) and peaked at 5.3 GB instead of 6.8 GB.
INFERENCE_BATCH_SIZE = 1


def load_preprocessed(flair_path: str | os.PathLike, config: Config, size: int) -> tuple[object, np.ndarray, dict]:
    """``(FLAIR image, preprocessed volume, meta)`` of one scan and, for a model stacking several
    modalities, its other scans as channels (:func:`planar3d.data.preprocess.preprocess_channels`)."""
    flair, *others = scan_channels(flair_path, config.modalities)
    scan = load_scan(flair)
    channels = [load_channel(path, scan, name) for name, path in zip(config.modalities[1:], others)]
    volume, _, meta = preprocess_channels(scan, channels, size=size, robust=config.robust_normalisation)
    return scan, volume, meta


def segment_volume(model, volume: np.ndarray, meta: dict, config: Config, batch_size: int = INFERENCE_BATCH_SIZE,
                   progress: bool = False):
    """Predict one preprocessed scan and map the result back to its native grid.

    Args:
        model: the trained Keras model (sigmoid output).
        volume: `(size, size, size)` preprocessed scan (see :func:`planar3d.data.preprocess.preprocess`).
        meta: its preprocessing record.
        config: window, stride, blend, tta, crop, precision, threshold and threshold_rule are used.
        batch_size: windows per forward pass of the per-window path (the training batch size
            does not matter here).
        progress: a bar over the windows on a terminal.

    Returns:
        ``(probabilities, mask, resampled)``: float32 probabilities and the uint8 binary
        mask (thresholded *in native space*) on the native grid in the scan's stored axis
        order, and the `(size, size, size)` probabilities before resampling.
    """
    resampled = predict_resampled(model, volume, config, batch_size=batch_size, progress=progress)
    probabilities, mask = native_mask(resampled, meta, config)
    return probabilities, mask, resampled


def predict_resampled(model, volume: np.ndarray, config: Config, batch_size: int = INFERENCE_BATCH_SIZE,
                      progress: bool = False) -> np.ndarray:
    """The `(size, size, size)` probabilities of one model on a preprocessed scan (see :func:`segment_volume`)."""
    from planar3d.inference.predict import predict_volume  # TensorFlow: imported only when used

    return predict_volume(
        model, volume, size=config.window, stride=config.stride, mode=config.blend,
        batch_size=batch_size, tta=config.tta, crop=config.crop, precision=config.precision, progress=progress,
    )


def predict_resampled_members(models, volume: np.ndarray, config: Config, batch_size: int = INFERENCE_BATCH_SIZE,
                              progress: bool = False) -> list[np.ndarray]:
    """:func:`predict_resampled` of each member of an ensemble, their shared encoder's features computed
    once (:func:`planar3d.inference.predict.predict_members`)."""
    from planar3d.inference.predict import predict_members

    return predict_members(
        list(models), volume, size=config.window, stride=config.stride, mode=config.blend,
        batch_size=batch_size, tta=config.tta, crop=config.crop, precision=config.precision, progress=progress,
    )


def native_mask(resampled: np.ndarray, meta: dict, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """Resampled-cube probabilities -> native-grid ``(probabilities, mask)``, thresholded in native space."""
    probabilities = np.clip(to_native(resampled, meta, order=1), 0.0, 1.0).astype(np.float32)
    return probabilities, binarize(probabilities, threshold=config.threshold, rule=config.threshold_rule)


def resampled_spacing(meta: dict) -> tuple[float, float, float]:
    """Voxel size (mm) of the preprocessed cube, `(slices, rows, cols)` order."""
    transform = np.asarray(meta["orientation_transform"], dtype=int)
    spacing = np.asarray(meta["native_spacing"], dtype=float)
    reoriented = np.empty(3)
    reoriented[transform[:, 0]] = spacing
    return tuple(float(s) for s in reoriented / np.asarray(meta["zoom"], dtype=float))
