"""Only the head: a head mask from the scan itself, and the crop boxes inference runs on.

:func:`head_mask` finds the head in a preprocessed `(slices, rows, cols)` scan: Otsu's
threshold on the intensities (air is a dark, narrow mode after preprocessing; Otsu splits it
from tissue without a tuned constant), the largest 26-connected component (drops noise
specks; components at least 5 % of its size, such as the scalp, stay), and hole filling in
3-D and plane by plane (dark CSF, ventricles and skull inside the head belong to it). A scan without contrast (constant, e.g. all zero) has no
foreground: the mask is empty and a :class:`ForegroundWarning` says so.

:func:`crop_boxes` turns the mask into one rows x cols box per window (``per="window"``) or one
box for the whole scan (``per="scan"``): the mask's bounding box over the window's slices, grown
by ``margin`` voxels, its corners snapped outward to multiples of :data:`CROP_MULTIPLE` (16: the
four 2x2x2 poolings, so the cropped network sees the same pooling grid as the whole one) and its
size rounded up to a multiple of ``bucket`` (few distinct shapes). Windows without head get no
box and are skipped (probability 0). :func:`paste` writes a box's prediction back into the full
grid, zero elsewhere.

Margin (:data:`HEAD_MARGIN` = 16 voxels, in practice 16-31 after snapping). The network's
in-plane receptive field is larger than the field of view (its radius is about 46 voxels at
``block4_conv3``, ~82 at the bottleneck, more after the decoder), so no finite margin makes a
crop exact by construction: what a crop changes is that zero padding starts closer to the head
than the field of view's own border does, replacing air (about -0.85 after preprocessing, not
0). The margin keeps that edge outside the receptive field of the full-resolution path: blocks
1-2 of the encoder (radius 7 voxels) and decoder blocks 8-9 (radius 9 more), which carry the
fine detail of every output voxel, see only air and head; the coarse levels (blocks 3-5, decoder
6-7, 4-16x downsampled) see the crop edge at low resolution. The effect is measured, not
assumed: ``benchmarks/bench_inference.py`` reports the largest probability difference inside
the head and the Dice of the binary masks against whole-volume inference.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from planar3d.data.geometry import window_starts
from planar3d.errors import Planar3DError

__all__ = ["CROP_MULTIPLE", "CROP_MODES", "HEAD_MARGIN", "Box", "ForegroundWarning", "crop_boxes", "head_mask", "paste"]

#: Crop corners are multiples of this (four 2x2x2 poolings): same pooling grid as the whole image.
CROP_MULTIPLE = 16
#: Voxels of air kept around the head (before snapping to :data:`CROP_MULTIPLE`); see the module docstring.
HEAD_MARGIN = 16
#: ``per`` values of :func:`crop_boxes`.
CROP_MODES = ("window", "scan")
_MIN_CONTRAST = 1e-6  # intensity range below which a scan has no foreground
_HISTOGRAM_BINS = 256
#: components kept: at least this fraction of the largest (the scalp is separated from the brain
#: by dark skull and CSF; noise specks are far smaller)
_COMPONENT_FRACTION = 0.05
#: the mask is computed on a grid of about this many voxels per axis (every k-th voxel), then
#: repeated back: 1 s at any size; the boxes are then exact to k voxels, which the margin covers
_MASK_GRID = 64


class ForegroundWarning(UserWarning):
    """A scan in which no head was found: nothing is segmented."""


@dataclass(frozen=True)
class Box:
    """An in-plane crop: rows ``row0:row1``, cols ``col0:col1`` (end exclusive)."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for indexing `(..., rows, cols)` after the leading axes."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    def union(self, other: "Box") -> "Box":
        return Box(min(self.row0, other.row0), max(self.row1, other.row1),
                   min(self.col0, other.col0), max(self.col1, other.col1))

    def contains(self, other: "Box") -> bool:
        return (self.row0 <= other.row0 and other.row1 <= self.row1
                and self.col0 <= other.col0 and other.col1 <= self.col1)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of a 1-D sample (histogram of :data:`_HISTOGRAM_BINS` bins)."""
    counts, edges = np.histogram(values, bins=_HISTOGRAM_BINS)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[1:][int(np.argmax(between))])


def head_mask(volume: Any) -> np.ndarray:
    """Boolean head mask of a preprocessed scan.

    Steps, on every ``k``-th voxel (``k = min(shape) // 64``; 4 at 256³, then each coarse voxel
    is repeated over its ``k``³ block): Otsu threshold ->
    voxels above it -> the largest 26-connected component and those at least 5 % of its size
    (the scalp, cut off from the brain by dark skull) -> hole filling in 3-D, then in every
    plane along each axis.

    Args:
        volume: `(slices, rows, cols)` preprocessed scan (any intensity scale).

    Returns:
        `(slices, rows, cols)` bool array; all False (with a :class:`ForegroundWarning`) for a
        scan whose intensities do not vary.

    Raises:
        Planar3DError: ``volume`` is not 3-D or holds non-finite values.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise Planar3DError(f"volume must have shape (slices, rows, cols). Received: volume.shape={volume.shape}")
    factor = max(1, min(volume.shape) // _MASK_GRID)
    coarse = volume[::factor, ::factor, ::factor].astype(np.float32)
    if not np.isfinite(coarse).all():
        raise Planar3DError("volume holds NaN or infinite values; preprocess the scan first")
    if float(coarse.max() - coarse.min()) < _MIN_CONTRAST:
        warnings.warn(f"no foreground: the scan's intensities do not vary (all {float(coarse.flat[0]):g}); "
                      "nothing is segmented", ForegroundWarning, stacklevel=2)
        return np.zeros(volume.shape, dtype=bool)
    filled = _coarse_mask(coarse)
    if factor > 1:  # back to the full grid: each coarse voxel covers factor**3 voxels
        for axis in range(3):
            filled = np.repeat(filled, factor, axis=axis)
        filled = filled[: volume.shape[0], : volume.shape[1], : volume.shape[2]]
    return filled


def _coarse_mask(volume: np.ndarray) -> np.ndarray:
    """Threshold, components and hole filling of :func:`head_mask` on its (coarse) grid."""
    above = volume > _otsu(volume.ravel())
    labels, count = ndimage.label(above, structure=np.ones((3, 3, 3), dtype=bool))
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        above = (sizes >= _COMPONENT_FRACTION * sizes.max())[labels]
    # fill: in 3-D, then plane by plane along each axis (the head is open at the neck, so the
    # gap between scalp and brain is a hole only in 2-D planes)
    filled = ndimage.binary_fill_holes(above)
    for axis in range(3):
        planes = np.moveaxis(filled, axis, 0)
        for index in range(planes.shape[0]):
            planes[index] = ndimage.binary_fill_holes(planes[index])
    return filled


def _snap(first: int, last: int, margin: int, bucket: int, extent: int) -> tuple[int, int]:
    """``[first, last]`` grown by ``margin``, corners on :data:`CROP_MULTIPLE`, size a multiple of ``bucket``."""
    start = max(0, (first - margin) // CROP_MULTIPLE * CROP_MULTIPLE)
    stop = min(extent, -(-(last + 1 + margin) // CROP_MULTIPLE) * CROP_MULTIPLE)
    length = min(extent, -(-(stop - start) // bucket) * bucket)
    stop = min(extent, start + length)  # grow at the end, then at the start if the end is reached
    start = stop - length
    return start, stop


def crop_boxes(
    mask: Any,
    size: int = 16,
    stride: int = 8,
    per: str = "window",
    margin: int = HEAD_MARGIN,
    bucket: int = CROP_MULTIPLE,
) -> list[Box | None]:
    """One in-plane crop box per window (``None`` where the window holds no head).

    Args:
        mask: `(slices, rows, cols)` head mask (:func:`head_mask`); rows and cols multiples of
            :data:`CROP_MULTIPLE`.
        size: slices per window.
        stride: slices between window starts (see :func:`planar3d.data.geometry.window_starts`).
        per: ``"window"``: the head's box over each window's slices; ``"scan"``: one box over the
            whole scan for every window that holds head.
        margin: voxels added around the head's bounding box before snapping.
        bucket: box sizes are rounded up to a multiple of this (a multiple of 16), capped at
            the field of view; larger buckets mean fewer distinct shapes.

    Returns:
        ``n_windows`` entries, each a :class:`Box` (corners multiples of 16) or ``None``.

    Raises:
        Planar3DError: bad ``per``, ``margin`` or ``bucket``, a mask that is not 3-D, rows or cols
            not multiples of 16, or a depth the windows cannot tile.
    """

    mask = np.asarray(mask, dtype=bool)
    if per not in CROP_MODES:
        raise Planar3DError(f"per must be one of {CROP_MODES}. Received: per={per!r}")
    if mask.ndim != 3 or mask.shape[1] % CROP_MULTIPLE or mask.shape[2] % CROP_MULTIPLE:
        raise Planar3DError(f"mask must be (slices, rows, cols) with rows and cols multiples of {CROP_MULTIPLE}. "
                            f"Received: mask.shape={mask.shape}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise Planar3DError(f"margin must be an integer >= 0. Received: margin={margin!r}")
    if isinstance(bucket, bool) or not isinstance(bucket, (int, np.integer)) or bucket < 1 or bucket % CROP_MULTIPLE:
        raise Planar3DError(f"bucket must be a positive multiple of {CROP_MULTIPLE}. Received: bucket={bucket!r}")
    starts = window_starts(mask.shape[0], size, stride)
    rows_any = mask.any(axis=2)  # (slices, rows)
    cols_any = mask.any(axis=1)  # (slices, cols)
    whole = None
    if per == "scan":
        whole = _box(rows_any.any(axis=0), cols_any.any(axis=0), margin, bucket, mask.shape[1:])
    boxes: list[Box | None] = []
    for start in starts:
        rows, cols = rows_any[start : start + size].any(axis=0), cols_any[start : start + size].any(axis=0)
        if not rows.any():
            boxes.append(None)
        else:
            boxes.append(whole if whole is not None else _box(rows, cols, margin, bucket, mask.shape[1:]))
    return boxes


def _box(rows: np.ndarray, cols: np.ndarray, margin: int, bucket: int, extent: Sequence[int]) -> Box | None:
    if not rows.any():
        return None
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    row0, row1 = _snap(int(r[0]), int(r[-1]), margin, bucket, int(extent[0]))
    col0, col1 = _snap(int(c[0]), int(c[-1]), margin, bucket, int(extent[1]))
    return Box(row0, row1, col0, col1)


def paste(prediction: Any, box: Box, shape: Sequence[int]) -> np.ndarray:
    """A box's prediction in a zero array of the full in-plane grid.

    Args:
        prediction: `(..., box rows, box cols)` array.
        box: where it lies.
        shape: the full `(..., rows, cols)` shape.

    Returns:
        array of ``shape`` and ``prediction``'s dtype, ``prediction`` inside ``box``, 0 elsewhere.

    Raises:
        Planar3DError: the prediction's shape does not match the box or ``shape``.
    """
    prediction = np.asarray(prediction)
    shape = tuple(int(s) for s in shape)
    if prediction.shape[:-2] != shape[:-2] or prediction.shape[-2:] != box.shape or box.row1 > shape[-2] or box.col1 > shape[-1]:
        raise Planar3DError(f"prediction of shape {prediction.shape} does not fit {box} in a grid of shape {shape}")
    full = np.zeros(shape, dtype=prediction.dtype)
    full[(..., *box.slices)] = prediction
    return full
