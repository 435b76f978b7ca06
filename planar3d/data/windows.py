"""Overlapping slice windows as TensorFlow data: cutting a volume into windows and the ``tf.data``
pipeline that feeds training from cached (memory-mapped) volumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from planar3d.data.geometry import check_window_geometry, window_starts
from planar3d.errors import InputFileError, Planar3DError

__all__ = ["extract_windows", "volume_tensor", "window_dataset"]


def volume_tensor(volume: Any, name: str = "volume") -> tf.Tensor:
    """`(slices, rows, cols)` or `(slices, rows, cols, channels)` -> rank-4 tensor."""
    volume = tf.convert_to_tensor(volume)
    if volume.shape.rank == 3:
        volume = volume[..., tf.newaxis]
    elif volume.shape.rank != 4:
        raise Planar3DError(
            f"{name} must have shape (slices, rows, cols) or (slices, rows, cols, channels). "
            f"Received: {name}.shape={tuple(volume.shape)}"
        )
    return volume


def extract_windows(volume: Any, size: int = 16, stride: int = 8) -> tf.Tensor:
    """Cut a volume into overlapping windows of consecutive slices (axis 0).

    Args:
        volume: `(slices, rows, cols)` or `(slices, rows, cols, channels)` array or tensor.
        size: slices per window (paper: 16).
        stride: slices between window starts (paper: 8).

    Returns:
        `(n, size, rows, cols, channels)` tensor of the volume's dtype, window ``k`` holding
        slices ``k * stride .. k * stride + size - 1``; ``channels`` is 1 for a 3-D input.

    Raises:
        Planar3DError: wrong rank, or a depth the windows cannot tile (see :func:`window_starts`).
    """
    volume = volume_tensor(volume)
    starts = window_starts(int(volume.shape[0]), size, stride)
    index = starts[:, None] + np.arange(size)[None, :]  # (n, size)
    return tf.gather(volume, index)


def _open_array(item: Any, name: str) -> np.ndarray:
    """An array as given, or a ``.npy`` path opened memory-mapped (read lazily)."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise InputFileError(path, f"{name} file not found")
        try:
            return np.load(path, mmap_mode="r")
        except ValueError as error:
            raise InputFileError(path, f"not a readable .npy array ({error})") from error
    if isinstance(item, tf.Tensor):
        return item.numpy()
    return item if isinstance(item, np.ndarray) else np.asarray(item)


def window_dataset(
    volumes: Sequence[Any],
    masks: Sequence[Any],
    size: int = 16,
    stride: int = 8,
    batch_size: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    channels: int = 1,
    empty_window_weight: float = 1.0,
    drop_remainder: bool = False,
    first_epoch: int | None = None,
) -> tf.data.Dataset:
    """Batched (window, mask window) pairs for training, built per patient.

    Windows never span two patients (the reference appended all scans and let windows run
    across their boundaries). The pipeline holds only a list of (patient, first slice)
    pairs; each window is read when needed from its volume, so memory-mapped volumes
    (``np.load(path, mmap_mode="r")`` or a ``.npy`` path) are never loaded whole.

    Pipeline: (patient, start) pairs -> shuffle (whole list; seeded; a new order every epoch,
    the same sequence of orders for the same seed) -> read the slab -> [weight or drop windows
    without lesion voxels] -> batch -> prefetch (``tf.data.AUTOTUNE``; to ``/GPU:0`` when a GPU
    is present).

    Args:
        volumes: sequence of `(slices, rows, cols)` scans (NumPy arrays, ``np.memmap`` or
            ``.npy`` paths), or `(slices, rows, cols, channels)` stacks of several modalities
            with ``channels`` of them; depths may differ, the in-plane size must not.
        masks: sequence of `(slices, rows, cols)` lesion masks in [0, 1], one per volume.
        size: slices per window (paper: 16).
        stride: slices between window starts (paper: 8).
        batch_size: windows per batch (paper: 2; reference code: 3).
        shuffle: shuffle the windows across patients every epoch; False keeps patient order,
            then slice order.
        seed: seed of the shuffle.
        channels: channels of the window (a grey scan is repeated; the reference used 3; a
            stack must have exactly this many).
        empty_window_weight: weight of windows whose mask has no lesion voxel. 1 (default, the
            paper) trains on all windows equally and yields pairs; any other value adds a
            per-window weight as third element (1 for windows with lesions); 0 also drops
            the empty windows from the stream.
        drop_remainder: drop the last incomplete batch.
        first_epoch: ``None`` (default): a finite dataset, one epoch per iteration,
            reshuffled every iteration. An int ``e``: an endless stream of epochs
            ``e, e+1, ...`` whose orders depend only on ``(seed, epoch)``, batches never
            spanning two epochs; for ``Model.fit(..., steps_per_epoch=...)``, so that a
            training run resumed at epoch ``e`` sees exactly the windows it would have seen.

    Returns:
        ``tf.data.Dataset`` of ``(window, mask)`` or ``(window, mask, weight)``: window
        `(batch, size, rows, cols, channels)` float32, mask `(batch, size, rows, cols, 1)`
        float32, weight `(batch,)` float32.

    Raises:
        Planar3DError: mismatched counts or shapes, wrong ranks, a depth the windows cannot
            tile, or a bad ``batch_size``, ``channels`` or ``empty_window_weight``.
        InputFileError: a path that does not exist or is not a ``.npy`` array.
    """
    check_window_geometry(size, stride)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise Planar3DError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise Planar3DError(f"channels must be a positive integer. Received: channels={channels!r}")
    if not np.isfinite(empty_window_weight) or empty_window_weight < 0:
        raise Planar3DError(
            f"empty_window_weight must be a finite number >= 0. Received: empty_window_weight={empty_window_weight!r}"
        )
    if len(volumes) != len(masks) or not len(volumes):
        raise Planar3DError(
            f"volumes and masks must be non-empty and of equal length. "
            f"Received: len(volumes)={len(volumes)}, len(masks)={len(masks)}"
        )
    volumes = [_open_array(item, "volume") for item in volumes]
    masks = [_open_array(item, "mask") for item in masks]

    # (patient, start) index list
    pairs = []
    for patient, (volume, mask) in enumerate(zip(volumes, masks)):
        if volume.ndim != volumes[0].ndim or volume.ndim not in (3, 4) or (volume.ndim == 4 and volume.shape[-1] != channels):
            raise Planar3DError(
                f"each volume must have shape (slices, rows, cols), or (slices, rows, cols, {channels}) for all of them. "
                f"Received: volumes[{patient}].shape={volume.shape}"
            )
        if mask.shape != volume.shape[:3]:
            raise Planar3DError(
                f"masks[{patient}] must have the shape of volumes[{patient}] {volume.shape[:3]}. "
                f"Received: masks[{patient}].shape={mask.shape}"
            )
        if volume.shape[1:] != volumes[0].shape[1:]:
            raise Planar3DError(
                f"all volumes must share the in-plane size {volumes[0].shape[1:3]}. "
                f"Received: volumes[{patient}].shape={volume.shape}"
            )
        pairs.extend((patient, start) for start in window_starts(volume.shape[0], size, stride))
    pairs = np.asarray(pairs, dtype=np.int64)  # (windows, 2)
    rows, cols = volumes[0].shape[1:3]
    stacked = volumes[0].ndim == 4

    def read(patient: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slab = slice(int(start), int(start) + size)
        return (
            np.asarray(volumes[int(patient)][slab], dtype=np.float32),
            np.asarray(masks[int(patient)][slab], dtype=np.float32),
        )

    def load(pair: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        window, mask = tf.numpy_function(read, [pair[0], pair[1]], [tf.float32, tf.float32], stateful=False)
        if stacked:
            window = tf.ensure_shape(window, (size, rows, cols, channels))
        else:
            window = tf.repeat(tf.ensure_shape(window, (size, rows, cols))[..., tf.newaxis], channels, axis=-1)
        return window, tf.ensure_shape(mask, (size, rows, cols))[..., tf.newaxis]

    def add_weight(window: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        has_lesion = tf.reduce_any(mask > 0)
        return window, mask, tf.where(has_lesion, 1.0, float(empty_window_weight))

    def finish(dataset: tf.data.Dataset) -> tf.data.Dataset:
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
        if empty_window_weight != 1:
            dataset = dataset.map(add_weight)
        if empty_window_weight == 0:
            dataset = dataset.filter(lambda window, mask, weight: weight > 0)
        return dataset.batch(batch_size, drop_remainder=drop_remainder)

    if first_epoch is None:
        dataset = tf.data.Dataset.from_tensor_slices(pairs)
        if shuffle:
            dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
        dataset = finish(dataset)
    else:
        pair_tensor = tf.constant(pairs)

        def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
            order = pair_tensor
            if shuffle:
                order = tf.random.experimental.stateless_shuffle(pair_tensor, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
            return finish(tf.data.Dataset.from_tensor_slices(order))

        dataset = tf.data.Dataset.range(int(first_epoch), 2**62).flat_map(one_epoch)
    if tf.config.list_logical_devices("GPU"):
        return dataset.apply(tf.data.experimental.prefetch_to_device("/GPU:0"))
    return dataset.prefetch(tf.data.AUTOTUNE)
