"""Window geometry, without TensorFlow: where the overlapping slice windows start and what each keeps.

A preprocessed volume `(slices, rows, cols)` is cut along axis 0 (the sagittal slice axis)
into windows of ``size`` consecutive slices every ``stride`` slices (paper: 16 and 8, so 31
windows for 256 slices, the first starting at slice 0 and the last ending at slice 255).
:func:`window_starts` places them, :func:`kept_slices` and :func:`middle_index` say which
slices the paper's Eq. 1 keeps of each, :func:`flip_sets` lists the test-time flips. The
tf.data windows (:mod:`planar3d.data.windows`), the recomposition
(:mod:`planar3d.inference.recompose`), the crop boxes and the notebooks' figures all use these.

Depths where ``depth - size`` is not a multiple of ``stride`` are rejected with an error
naming the depth to pad to; no slice is ever silently dropped.
"""

from __future__ import annotations

import numpy as np

from planar3d.config import BLENDS
from planar3d.errors import Planar3DError

__all__ = [
    "BLENDS", "check_blend", "check_window_geometry", "flip_sets", "kept_slices", "middle_index",
    "window_starts"
]




def check_window_geometry(size: int, stride: int) -> None:
    """Reject a window size or stride that cannot tile a volume."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise Planar3DError(f"size must be a positive integer number of slices. Received: size={size!r}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise Planar3DError(f"stride must be a positive integer number of slices. Received: stride={stride!r}")
    if stride > size:
        raise Planar3DError(
            f"stride must not exceed size={size}: windows would skip slices. Received: stride={stride}"
        )


def check_blend(mode: str, size: int, stride: int) -> None:
    """Reject an unknown recomposition mode, or "middle" with an odd overlap."""
    if mode not in BLENDS:
        raise Planar3DError(f"mode must be one of {BLENDS}. Received: mode={mode!r}")
    if mode == "middle" and (size - stride) % 2:
        raise Planar3DError(
            f"mode='middle' keeps the middle `stride` slices of each window, so the overlap "
            f"size - stride must split evenly into two margins; use an even overlap or "
            f"mode='mean'/'gaussian'. Received: size={size}, stride={stride}"
        )


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
    check_window_geometry(size, stride)
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


def middle_index(depth: int, size: int, stride: int) -> np.ndarray:
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
    index = middle_index(depth, size, stride)
    window, offset = index // size, index % size
    return [(int(offset[window == k].min()), int(offset[window == k].max()) + 1)
            for k in range(len(window_starts(depth, size, stride)))]


def flip_sets(tta: bool) -> list[tuple[int, ...]]:
    """Axes of the `(slices, rows, cols, channels)` volume to flip, one tuple per pass."""
    if not tta:
        return [()]
    return [tuple(axis for axis, bit in zip((0, 1, 2), bits) if bit) for bits in np.ndindex(2, 2, 2)]
