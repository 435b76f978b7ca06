"""Stitching window predictions back into a volume: the paper's Eq. 1 (``middle``) and blending.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from planar3d.data.geometry import check_blend, check_window_geometry, middle_index, window_starts
from planar3d.errors import Planar3DError

__all__ = ["recompose"]


# MONAI's default sigma_scale for Gaussian patch blending: sigma = size / 8.
_GAUSSIAN_SIGMA_SCALE = 0.125


def _slice_weights(size: int, mode: str) -> np.ndarray:
    """Blending weight of each slice position within a window, `(size,)` float64."""
    if mode == "mean":
        return np.ones(size)
    centre = (size - 1) / 2
    sigma = size * _GAUSSIAN_SIGMA_SCALE
    return np.exp(-((np.arange(size) - centre) ** 2) / (2 * sigma**2))


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
    check_window_geometry(size, stride)
    check_blend(mode, size, stride)
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
    middle = tf.gather(flat, middle_index(depth, size, stride))  # (depth, rows, cols, channels)
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
