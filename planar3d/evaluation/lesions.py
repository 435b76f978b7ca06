"""Lesions as 3D connected components, and a per-scan lesion report.

A lesion is a connected component of a binary mask, face-connected (6-connectivity) by
default as in the MSSEG-2016 evaluation (Anima ``animaSegPerfAnalyzer``, whose ITK
connected-component filter is not fully connected). Lesion ids run from 1 in order of
decreasing size; 0 is background. :mod:`planar3d.evaluation.metrics` counts lesions with
:func:`label_lesions` too, so the report and the detection scores see the same lesions.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from planar3d.errors import Planar3DError

__all__ = [
    "as_mask",
    "bounding_box",
    "label_lesions",
    "min_lesion_voxels",
    "voxel_spacing",
    "lesion_table",
    "lesion_summary",
]

_CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}


def as_mask(array: Any, name: str = "mask") -> np.ndarray:
    """Check a binary 3D volume and return it as a boolean array (a copy if cast).

    Args:
        array: `(slices, rows, cols)` array of booleans or of the values 0 and 1 (any dtype).
        name: argument name used in error messages.

    Returns:
        `(slices, rows, cols)` bool array.

    Raises:
        Planar3DError: the array is not 3D or holds values other than 0 and 1.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise Planar3DError(f"{name} must be a 3D (slices, rows, cols) volume. Received: shape={array.shape}")
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number)) or np.any((array != 0) & (array != 1)):
        values = np.unique(array)[:5]
        raise Planar3DError(f"{name} must be binary (0/1 or bool). Received: values starting {values.tolist()}")
    return array != 0


def bounding_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true voxel of the given same-shape masks.

    Returns:
        A tuple of slices (one per axis), or None when all masks are empty.
    """
    union = np.logical_or.reduce(masks) if len(masks) > 1 else masks[0]
    box = []
    for axis in range(union.ndim):
        other_axes = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(np.any(union, axis=other_axes))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def voxel_spacing(spacing: Sequence[float], name: str = "spacing") -> np.ndarray:
    """Check a voxel size in mm per axis `(slices, rows, cols)`; return it as 3 floats.

    Raises:
        Planar3DError: not three positive finite numbers.
    """
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise Planar3DError(f"{name} must be three positive voxel sizes in mm. Received: {name}={spacing!r}")
    return values


def min_lesion_voxels(min_lesion_mm3: float, voxel_volume_mm3: float) -> int:
    """Smallest voxel count a lesion keeps under a minimum lesion volume (Anima's rule).

    Components of at most ``floor(min_lesion_mm3 / voxel_volume_mm3)`` voxels are dropped,
    so the smallest kept lesion has one voxel more (``animaSegPerfCAnalyzer::getOverlapTab``).
    With ``min_lesion_mm3=0`` every component is kept.

    Raises:
        Planar3DError: a negative or non-finite minimum volume.
    """
    if not math.isfinite(min_lesion_mm3) or min_lesion_mm3 < 0:
        raise Planar3DError(f"min_lesion_mm3 must be a finite volume >= 0. Received: min_lesion_mm3={min_lesion_mm3}")
    return int(math.floor(min_lesion_mm3 / voxel_volume_mm3)) + 1


def label_lesions(mask: Any, connectivity: int = 6, min_voxels: int = 0) -> tuple[np.ndarray, int]:
    """Label the connected components of a mask, largest first.

    Args:
        mask: `(slices, rows, cols)` binary volume.
        connectivity: 6 (faces, the MSSEG-2016 rule), 18 (faces and edges) or 26 (also corners).
        min_voxels: components with fewer voxels are dropped (set to 0).

    Returns:
        ``(labels, n)``: `(slices, rows, cols)` int32 volume where lesion ``k`` (1..n) is the
        k-th largest component (ties keep the order of first voxel in C order), 0 elsewhere;
        and the number of lesions ``n``.

    Raises:
        Planar3DError: a non-binary or non-3D mask, an unknown connectivity or a negative
            ``min_voxels``.
    """
    mask = as_mask(mask)
    if connectivity not in _CONNECTIVITY_RANK:
        raise Planar3DError(f"connectivity must be 6, 18 or 26. Received: connectivity={connectivity!r}")
    if min_voxels < 0:
        raise Planar3DError(f"min_voxels must be >= 0. Received: min_voxels={min_voxels}")
    labels = np.zeros(mask.shape, dtype=np.int32)
    box = bounding_box(mask)
    if box is None:
        return labels, 0
    structure = ndimage.generate_binary_structure(3, _CONNECTIVITY_RANK[connectivity])
    raw, n_raw = ndimage.label(mask[box], structure=structure)
    sizes = np.bincount(raw.reshape(-1), minlength=n_raw + 1)[1:]
    order = np.argsort(-sizes, kind="stable")  # raw ids (minus 1), largest first
    order = order[sizes[order] >= min_voxels]
    new_ids = np.zeros(n_raw + 1, dtype=np.int32)
    new_ids[order + 1] = np.arange(1, order.size + 1, dtype=np.int32)
    labels[box] = new_ids[raw]
    return labels, int(order.size)


def _check_affine(affine: Any) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise Planar3DError(f"affine must be a finite 4x4 matrix. Received: shape={affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) == 0:
        raise Planar3DError("affine must be invertible (non-zero voxel volume). Received: singular 3x3 part")
    return affine


def lesion_table(
    mask: Any,
    affine: Any,
    probabilities: Any | None = None,
    min_lesion_mm3: float = 0.0,
    connectivity: int = 6,
    head: Any | None = None,
    labels: tuple[np.ndarray, int] | None = None,
) -> list[dict]:
    """One row per lesion of a scan's binary segmentation.

    Lesion ids equal those of ``label_lesions(mask, connectivity,
    min_voxels=min_lesion_voxels(min_lesion_mm3, voxel volume))``, so the rows match the
    labelled lesion map: id 1 is the largest lesion.

    Args:
        mask: `(slices, rows, cols)` binary segmentation.
        affine: 4x4 voxel-to-scanner matrix (as in NIfTI): ``affine @ (i, j, k, 1)`` is the
            position in mm of voxel ``(i, j, k)``. The voxel volume is ``|det(affine[:3, :3])|``.
        probabilities: optional `(slices, rows, cols)` predicted lesion probabilities.
        min_lesion_mm3: lesions of at most ``floor(min_lesion_mm3 / voxel volume)`` voxels are
            left out (0 keeps all; the MSSEG-2016 evaluation uses 3).
        connectivity: 6, 18 or 26 (see :func:`label_lesions`).
        head: optional `(slices, rows, cols)` boolean head mask on the mask's grid; adds
            ``outside_head`` to each row, True when fewer than half of the lesion's voxels are in it
            (a mark in the air around the head, which the HTML reports warn about).
        labels: optional ``(labels, n)`` that :func:`label_lesions` returned for this ``mask``,
            ``connectivity`` and minimum, so a caller that needs the lesion map too labels once.

    Returns:
        A list of dicts ordered by id, with keys ``id`` (int), ``voxels`` (int),
        ``volume_mm3``, ``centroid_i``, ``centroid_j``, ``centroid_k`` (voxel indices along
        slices, rows, cols), ``centroid_x_mm``, ``centroid_y_mm``, ``centroid_z_mm`` (scanner
        coordinates), ``mean_probability`` (None without ``probabilities``) and, with ``head``,
        ``outside_head``.

    Raises:
        Planar3DError: a non-binary mask, a bad affine, a probability volume of another
            shape or with non-finite values, or a negative minimum volume.
    """
    mask = as_mask(mask)
    affine = _check_affine(affine)
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if probabilities.shape != mask.shape:
            raise Planar3DError(
                f"probabilities must have the mask's shape {mask.shape}. Received: shape={probabilities.shape}"
            )
    if labels is None:
        labels, n = label_lesions(mask, connectivity, min_lesion_voxels(min_lesion_mm3, voxel_volume))
    else:
        labels, n = labels
        if labels.shape != mask.shape:
            raise Planar3DError(f"labels must have the mask's shape {mask.shape}. Received: shape={labels.shape}")
    if n == 0:
        return []

    # per-lesion sums over the lesion voxels only, one slice at a time (memory O(slice))
    if head is not None:
        head = np.asarray(head, dtype=bool)
        if head.shape != mask.shape:
            raise Planar3DError(f"head must have the mask's shape {mask.shape}. Received: shape={head.shape}")
        in_head = np.zeros(n + 1)
    counts = np.zeros(n + 1)
    coordinate_sums = np.zeros((n + 1, 3))
    probability_sums = np.zeros(n + 1)
    for i in range(labels.shape[0]):
        rows, cols = np.nonzero(labels[i])
        if rows.size == 0:
            continue
        ids = labels[i, rows, cols]
        in_slice = np.bincount(ids, minlength=n + 1)
        counts += in_slice
        coordinate_sums[:, 0] += in_slice * i
        coordinate_sums[:, 1] += np.bincount(ids, weights=rows, minlength=n + 1)
        coordinate_sums[:, 2] += np.bincount(ids, weights=cols, minlength=n + 1)
        if head is not None:
            in_head += np.bincount(ids, weights=head[i, rows, cols], minlength=n + 1)
        if probabilities is not None:
            values = np.asarray(probabilities[i, rows, cols], dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise Planar3DError("probabilities must be finite inside lesions. Received: NaN or inf values")
            probability_sums += np.bincount(ids, weights=values, minlength=n + 1)
    counts = counts[1:].astype(np.int64)
    centroids = coordinate_sums[1:] / counts[:, None]  # (n, 3) voxel coordinates
    centroids_mm = centroids @ affine[:3, :3].T + affine[:3, 3]
    mean_probability = [None] * n
    if probabilities is not None:
        mean_probability = (probability_sums[1:] / counts).tolist()

    outside = [None] * n if head is None else (in_head[1:] * 2 < counts).tolist()
    rows = [
        {
            "id": lesion + 1,
            "voxels": int(counts[lesion]),
            "volume_mm3": float(counts[lesion] * voxel_volume),
            "centroid_i": float(centroids[lesion, 0]),
            "centroid_j": float(centroids[lesion, 1]),
            "centroid_k": float(centroids[lesion, 2]),
            "centroid_x_mm": float(centroids_mm[lesion, 0]),
            "centroid_y_mm": float(centroids_mm[lesion, 1]),
            "centroid_z_mm": float(centroids_mm[lesion, 2]),
            "mean_probability": mean_probability[lesion],
        }
        for lesion in range(n)
    ]
    if head is not None:
        for row, flag in zip(rows, outside):
            row["outside_head"] = bool(flag)
    return rows


def lesion_summary(table: Sequence[dict]) -> dict:
    """Lesion count and total lesion volume of a :func:`lesion_table`.

    Returns:
        ``{"n_lesions": int, "total_volume_ml": float}`` (1 ml = 1000 mm³).
    """
    return {
        "n_lesions": len(table),
        "total_volume_ml": float(sum(row["volume_mm3"] for row in table)) / 1000.0,
    }
