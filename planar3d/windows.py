"""Overlapping slice windows: sampling for training, recomposition for inference.

A preprocessed volume `(slices, rows, cols)` is cut along axis 0 (the sagittal slice
axis) into windows of ``size`` consecutive slices every ``stride`` slices (paper: 16 and
8, so 31 windows for 256 slices, the first starting at slice 0 and the last ending at
slice 255). The network predicts each window; :func:`recompose` stitches the window
predictions back into a volume. Windowing and stitching are TensorFlow ops (they run on
the GPU when there is one); :func:`window_dataset` feeds training through ``tf.data``,
reading cached (memory-mapped) volumes one window at a time.

Depths where ``depth - size`` is not a multiple of ``stride`` are rejected with an error
naming the depth to pad to; no slice is ever silently dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from planar3d.errors import InputFileError, Planar3DError

__all__ = [
    "RECOMPOSE_MODES",
    "BINARIZE_RULES",
    "window_starts",
    "extract_windows",
    "kept_slices",
    "recompose",
    "window_dataset",
    "predict_volume",
    "binarize",
]

RECOMPOSE_MODES = ("middle", "mean", "gaussian")
BINARIZE_RULES = ("fixed", "reference")

# MONAI's default sigma_scale for Gaussian patch blending: sigma = size / 8.
_GAUSSIAN_SIGMA_SCALE = 0.125


# ----------------------------------------------------------------------------- checks


def _check_window_geometry(size: int, stride: int) -> None:
    """Reject a window size or stride that cannot tile a volume."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise Planar3DError(f"size must be a positive integer number of slices. Received: size={size!r}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise Planar3DError(f"stride must be a positive integer number of slices. Received: stride={stride!r}")
    if stride > size:
        raise Planar3DError(
            f"stride must not exceed size={size}: windows would skip slices. Received: stride={stride}"
        )


def _check_mode(mode: str, size: int, stride: int) -> None:
    """Reject an unknown recomposition mode, or "middle" with an odd overlap."""
    if mode not in RECOMPOSE_MODES:
        raise Planar3DError(f"mode must be one of {RECOMPOSE_MODES}. Received: mode={mode!r}")
    if mode == "middle" and (size - stride) % 2:
        raise Planar3DError(
            f"mode='middle' keeps the middle `stride` slices of each window, so the overlap "
            f"size - stride must split evenly into two margins; use an even overlap or "
            f"mode='mean'/'gaussian'. Received: size={size}, stride={stride}"
        )


def _volume_tensor(volume: Any, name: str = "volume") -> tf.Tensor:
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


# ----------------------------------------------------------------------------- geometry


def window_starts(depth: int, size: int = 16, stride: int = 8) -> np.ndarray:
    """First slice of every window covering ``depth`` slices.

    Args:
        depth: number of slices of the volume (axis 0).
        size: slices per window.
        stride: slices between the starts of consecutive windows (``1 <= stride <= size``).

    Returns:
        `(n,)` int64 array ``0, stride, ..., depth - size``; ``n = (depth - size) // stride + 1``
        (31 for 256/16/8).

    Raises:
        Planar3DError: ``size`` or ``stride`` not positive, ``stride > size``, ``depth < size``,
            or ``depth - size`` not a multiple of ``stride`` (pad the volume to the depth
            named in the message).
    """
    _check_window_geometry(size, stride)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)):
        raise Planar3DError(f"depth must be an integer number of slices. Received: depth={depth!r}")
    if depth < size:
        raise Planar3DError(
            f"the volume has fewer slices than one window of size={size}. Received: depth={depth}"
        )
    if (depth - size) % stride:
        padded = size + -(-(depth - size) // stride) * stride
        raise Planar3DError(
            f"windows of size={size} every stride={stride} slices cannot end on the last slice: "
            f"depth - size must be a multiple of stride. Pad the volume to {padded} slices "
            f"(e.g. numpy.pad along axis 0) or choose another stride. Received: depth={depth}"
        )
    return np.arange(0, depth - size + 1, stride, dtype=np.int64)


def _middle_index(depth: int, size: int, stride: int) -> np.ndarray:
    """Index into the flattened `(n * size)` window slices of each output slice (Eq. 1).

    Window k keeps its slices ``margin .. margin + stride - 1`` (``margin = (size - stride)
    / 2``); the first window also keeps its leading margin, the last its trailing one.
    """
    starts = window_starts(depth, size, stride)
    margin = (size - stride) // 2
    slices = np.arange(depth)
    window = np.clip((slices - margin) // stride, 0, len(starts) - 1)
    offset = slices - starts[window]
    return window * size + offset  # (depth,)


def kept_slices(depth: int, size: int = 16, stride: int = 8) -> list[tuple[int, int]]:
    """The slices ``[lo, hi)`` of each window that the ``"middle"`` recomposition keeps.

    For 16/8: ``(0, 12)`` for the first window, ``(4, 12)`` for the others, ``(4, 16)`` for the
    last (``(0, 16)`` when one window covers the volume). A prediction only needs these slices.
    """
    index = _middle_index(depth, size, stride)
    window, offset = index // size, index % size
    return [(int(offset[window == k].min()), int(offset[window == k].max()) + 1)
            for k in range(len(window_starts(depth, size, stride)))]


def _slice_weights(size: int, mode: str) -> np.ndarray:
    """Blending weight of each slice position within a window, `(size,)` float64."""
    if mode == "mean":
        return np.ones(size)
    centre = (size - 1) / 2
    sigma = size * _GAUSSIAN_SIGMA_SCALE
    return np.exp(-((np.arange(size) - centre) ** 2) / (2 * sigma**2))


# ----------------------------------------------------------------------------- windows


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
    volume = _volume_tensor(volume)
    starts = window_starts(int(volume.shape[0]), size, stride)
    index = starts[:, None] + np.arange(size)[None, :]  # (n, size)
    return tf.gather(volume, index)


def recompose(
    windows: Any, depth: int, size: int = 16, stride: int = 8, mode: str = "middle"
) -> tf.Tensor:
    """Stitch overlapping windows back into a volume of ``depth`` slices.

    Modes:
        - ``"middle"`` (default; paper Eq. 1 generalised): each window contributes its middle
          ``stride`` slices, the first window also its leading ``(size - stride) / 2`` slices
          and the last its trailing ones. For 16/8: window 1 -> slices 0-11, windows 2-30 ->
          their slices 4-11, window 31 -> its slices 4-15. A pure gather: no arithmetic.
        - ``"mean"``: every slice is the average of all windows covering it.
        - ``"gaussian"``: weighted average, weights ``exp(-(i - c)^2 / (2 sigma^2))`` over the
          slice position ``i`` in the window, ``c = (size - 1) / 2``, ``sigma = size / 8``
          (MONAI's default), normalised by the summed weights of each slice.

    The blending modes are computed as the middle recomposition plus the weighted mean of each
    window's deviation from it (mathematically the plain weighted mean), so identical windows
    reproduce their slices bit for bit: ``recompose(extract_windows(v), len(v)) == v``
    exactly in every mode.

    Args:
        windows: `(n, size, rows, cols, channels)` array or tensor, ``n`` matching
            :func:`window_starts` for ``depth``.
        depth: slices of the output volume.
        size: slices per window; must equal ``windows.shape[1]``.
        stride: slices between window starts.
        mode: ``"middle"``, ``"mean"`` or ``"gaussian"``.

    Returns:
        `(depth, rows, cols, channels)` tensor; the windows' dtype for ``"middle"``, float
        (float32 for integer input) for the blending modes.

    Raises:
        Planar3DError: unknown mode, odd ``size - stride`` with ``"middle"``, wrong rank, or a
            window count / size that does not match ``depth``, ``size`` and ``stride``.
    """
    _check_window_geometry(size, stride)
    _check_mode(mode, size, stride)
    windows = tf.convert_to_tensor(windows)
    if windows.shape.rank != 5:
        raise Planar3DError(
            f"windows must have shape (n, size, rows, cols, channels). "
            f"Received: windows.shape={tuple(windows.shape)}"
        )
    starts = window_starts(depth, size, stride)
    if tuple(windows.shape[:2]) != (len(starts), size):
        raise Planar3DError(
            f"depth={depth}, size={size}, stride={stride} needs windows of shape "
            f"({len(starts)}, {size}, rows, cols, channels). Received: windows.shape={tuple(windows.shape)}"
        )

    # stitch: Eq. 1 is one gather over the flattened window slices
    flat = tf.reshape(windows, (-1, *windows.shape[2:]))  # (n * size, rows, cols, channels)
    middle = tf.gather(flat, _middle_index(depth, size, stride))  # (depth, rows, cols, channels)
    if mode == "middle":
        return middle

    # blend: middle + sum_k w_k (window_k - middle) / sum_k w_k
    if not flat.dtype.is_floating:
        windows, middle = tf.cast(windows, tf.float32), tf.cast(middle, tf.float32)
    return middle + _blend_correction(windows, middle, starts, size, stride, mode)


def _blend_correction(
    windows: tf.Tensor, middle: tf.Tensor, starts: np.ndarray, size: int, stride: int, mode: str
) -> tf.Tensor:
    """Weighted mean over covering windows of ``window - middle``, `(depth, rows, cols, channels)`.

    Overlap-add in chunks of ``stride`` slices: window slices are padded to ``chunks * stride``
    (zero weight), chunk ``q`` of window ``k`` lands on output chunk ``k + q``; each chunk
    position is one subtraction, product and shifted sum over all windows (no scatter).
    """
    n, depth, inner = len(starts), int(middle.shape[0]), list(middle.shape[1:])
    chunks = -(-size // stride)
    span = chunks * stride
    out_chunks = n + chunks - 1

    # weights of each window slice, normalised so that the windows covering a slice sum to 1
    weights = _slice_weights(size, mode)
    slice_of = starts[:, None] + np.arange(size)[None, :]  # (n, size)
    total = np.bincount(slice_of.ravel(), weights=np.tile(weights, n), minlength=depth)
    normalised = np.pad(weights[None, :] / total[slice_of], ((0, 0), (0, span - size)))
    normalised = normalised.reshape(n, chunks, stride, 1, 1, 1).astype(windows.dtype.as_numpy_dtype)

    no_pad = [[0, 0]] * len(inner)
    windows = tf.pad(windows, [[0, 0], [0, span - size], *no_pad])
    windows = tf.reshape(windows, [n, chunks, stride, *inner])
    middle = tf.pad(middle, [[0, out_chunks * stride - depth], *no_pad])
    middle = tf.reshape(middle, [out_chunks, stride, *inner])
    correction = None
    for q in range(chunks):
        deviation = (windows[:, q] - middle[q : q + n]) * normalised[:, q]  # (n, stride, ...)
        shifted = tf.pad(deviation, [[q, chunks - 1 - q], [0, 0], *no_pad])  # (out_chunks, stride, ...)
        correction = shifted if correction is None else correction + shifted
    return tf.reshape(correction, [out_chunks * stride, *inner])[:depth]


# ----------------------------------------------------------------------------- training data


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
            ``.npy`` paths); depths may differ, the in-plane size must not.
        masks: sequence of `(slices, rows, cols)` lesion masks in [0, 1], one per volume.
        size: slices per window (paper: 16).
        stride: slices between window starts (paper: 8).
        batch_size: windows per batch (paper: 2; reference code: 3).
        shuffle: shuffle the windows across patients every epoch; False keeps patient order,
            then slice order.
        seed: seed of the shuffle.
        channels: channels of the window (the grey scan is repeated; the reference used 3).
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
    _check_window_geometry(size, stride)
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
        if volume.ndim != 3:
            raise Planar3DError(
                f"each volume must have shape (slices, rows, cols). Received: volumes[{patient}].shape={volume.shape}"
            )
        if mask.shape != volume.shape:
            raise Planar3DError(
                f"masks[{patient}] must have the shape of volumes[{patient}] {volume.shape}. "
                f"Received: masks[{patient}].shape={mask.shape}"
            )
        if volume.shape[1:] != volumes[0].shape[1:]:
            raise Planar3DError(
                f"all volumes must share the in-plane size {volumes[0].shape[1:]}. "
                f"Received: volumes[{patient}].shape={volume.shape}"
            )
        pairs.extend((patient, start) for start in window_starts(volume.shape[0], size, stride))
    pairs = np.asarray(pairs, dtype=np.int64)  # (windows, 2)
    rows, cols = volumes[0].shape[1:]

    def read(patient: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slab = slice(int(start), int(start) + size)
        return (
            np.asarray(volumes[int(patient)][slab], dtype=np.float32),
            np.asarray(masks[int(patient)][slab], dtype=np.float32),
        )

    def load(pair: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        window, mask = tf.numpy_function(read, [pair[0], pair[1]], [tf.float32, tf.float32], stateful=False)
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


# ----------------------------------------------------------------------------- inference


def _flip_sets(tta: bool) -> list[tuple[int, ...]]:
    """Axes of the `(slices, rows, cols, channels)` volume to flip, one tuple per pass."""
    if not tta:
        return [()]
    return [tuple(axis for axis, bit in zip((0, 1, 2), bits) if bit) for bits in np.ndindex(2, 2, 2)]


def predict_volume(
    model: Any,
    volume: Any,
    size: int = 16,
    stride: int = 8,
    mode: str = "middle",
    batch_size: int = 2,
    tta: bool = False,
) -> np.ndarray:
    """Probability volume of one preprocessed scan: window, predict in batches, recompose.

    The grey volume is repeated to the model's channel count (``model.input_shape[-1]``).
    Windows are fed as ``model(batch, training=False)``; recomposition runs in TensorFlow.
    With ``tta=True`` the prediction is repeated for all 8 combinations of flipping the
    slice, row and column axes (identity included), each un-flipped, then averaged (8x the
    time).

    Args:
        model: Keras model mapping `(batch, size, rows, cols, channels)` to sigmoid
            probabilities `(batch, size, rows, cols, 1)`.
        volume: `(slices, rows, cols)` or `(slices, rows, cols, channels)` preprocessed scan.
        size: slices per window (paper: 16); must match the model's input if that is fixed.
        stride: slices between window starts (paper: 8).
        mode: recomposition, see :func:`recompose` (paper: ``"middle"``).
        batch_size: windows per forward pass.
        tta: average over flips (test-time augmentation).

    Returns:
        `(slices, rows, cols)` float32 NumPy array of probabilities.

    Raises:
        Planar3DError: bad window geometry or mode, wrong rank, a channel count the model
            does not take, or a window size that differs from the model's.
    """
    _check_window_geometry(size, stride)
    _check_mode(mode, size, stride)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise Planar3DError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    volume = _volume_tensor(volume)
    depth = int(volume.shape[0])
    window_starts(depth, size, stride)
    input_shape = tuple(model.input_shape)
    if input_shape[1] is not None and input_shape[1] != size:
        raise Planar3DError(f"the model takes windows of {input_shape[1]} slices. Received: size={size}")
    model_channels = input_shape[-1]
    if volume.shape[-1] != model_channels:
        if volume.shape[-1] != 1:
            raise Planar3DError(
                f"the model takes {model_channels} channels. Received: volume.shape={tuple(volume.shape)}"
            )
        volume = tf.repeat(volume, model_channels, axis=-1)
    volume = tf.cast(volume, tf.float32)

    total = None
    for axes in _flip_sets(tta):
        flipped = tf.reverse(volume, axes) if axes else volume
        windows = extract_windows(flipped, size, stride)  # (n, size, rows, cols, channels)
        # predict
        outputs = [
            tf.cast(model(windows[first : first + batch_size], training=False), tf.float32)
            for first in range(0, int(windows.shape[0]), batch_size)
        ]
        # stitch
        probability = recompose(tf.concat(outputs, axis=0), depth, size, stride, mode)[..., 0]
        probability = tf.reverse(probability, axes) if axes else probability
        # float64 sum: averaging identical passes returns them bit for bit
        probability = tf.cast(probability, tf.float64)
        total = probability if total is None else total + probability
    return (total / len(_flip_sets(tta))).numpy().astype(np.float32)


def binarize(prob: Any, threshold: float = 16 / 256, rule: str = "fixed") -> np.ndarray:
    """Binary lesion mask from a probability volume.

    Rules:
        - ``"fixed"`` (default, the paper): predictions scaled to [0, 256] thresholded at 16,
          i.e. ``prob >= threshold`` with ``threshold = 16 / 256 = 0.0625``.
        - ``"reference"`` (the published code): ``scaled = uint8(prob * 255)`` (truncated),
          ``t = max(scaled) // 16`` over the whole given array, lesion where ``scaled > t``
          (the code set ``< t`` to 0 and ``> t`` to 255 and left ``== t``, which its
          evaluation read as background). ``threshold`` is ignored. The code computed ``t``
          over all test scans stacked; pass one scan for a per-scan threshold, the stacked
          test set to reproduce the code exactly.

    Args:
        prob: probability array of any shape, values in [0, 1].
        threshold: probability threshold of the ``"fixed"`` rule, in [0, 1].
        rule: ``"fixed"`` or ``"reference"``.

    Returns:
        uint8 array of ``prob``'s shape with values {0, 1}.

    Raises:
        Planar3DError: unknown rule or a threshold outside [0, 1].
    """
    if rule not in BINARIZE_RULES:
        raise Planar3DError(f"rule must be one of {BINARIZE_RULES}. Received: rule={rule!r}")
    if not 0 <= threshold <= 1:
        raise Planar3DError(f"threshold must be within [0, 1]. Received: threshold={threshold!r}")
    prob = np.asarray(prob)
    if rule == "fixed":
        return (prob >= threshold).astype(np.uint8)
    scaled = (prob * 255.0).astype(np.uint8)
    return (scaled > scaled.max() // 16).astype(np.uint8)
