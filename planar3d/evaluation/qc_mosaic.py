"""QC mosaics: a scan and its lesion outlines on the scan's own grid, in anatomical orientation.

The scan is reoriented for display only, by its affine, to the closest RAS voxel axes
(:func:`nibabel.orientations.io_orientation`; an oblique scan is shown along its nearest
anatomical axes, not resampled). Three rows, one per plane, of ``columns`` slices spread over
the lesion-bearing part of the head (the whole head when there is no lesion):

* axial (anterior up) and coronal (superior up) in **radiological convention** by default,
  the patient's left on the image right, or neurological (left on the left);
* sagittal with the nose to the left and superior up.

Every panel carries its side labels (R/L, A/P, S/I) and the slice's world coordinate in mm;
the first panel of each row a 50 mm scale bar. Voxels are drawn with their true aspect.
Prediction outlines are red, reference outlines green.
"""

from __future__ import annotations

import os
from typing import Any

import nibabel as nib
import numpy as np

from planar3d.evaluation.report_figures import finish, new_figure, robust_window

__all__ = ["PLANES", "display_plane", "plot_qc_mosaic", "side_labels", "to_ras"]


#: rows of the mosaic, top to bottom: plane name -> the RAS axis it is normal to.
PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


_PREDICTION = "#ff2020"


_REFERENCE = "#20e020"


_SCALE_MM = 50.0


def to_ras(image: nib.Nifti1Image, *arrays: Any) -> tuple[np.ndarray, list[np.ndarray | None], np.ndarray, np.ndarray]:
    """The scan's data and ``arrays`` (same grid) on the closest RAS voxel axes.

    Returns:
        ``(volume, arrays, spacing, affine)``: voxel sizes (mm) along the new x, y, z axes
        and the reoriented voxel -> world matrix.
    """
    orientation = nib.orientations.io_orientation(image.affine)
    transform = nib.orientations.ornt_transform(orientation, nib.orientations.axcodes2ornt("RAS"))
    reoriented = image.as_reoriented(transform)
    volume = np.asarray(reoriented.dataobj, dtype=np.float32)
    others = [None if a is None else nib.orientations.apply_orientation(np.asarray(a), transform) for a in arrays]
    spacing = np.sqrt((reoriented.affine[:3, :3] ** 2).sum(axis=0))
    return volume, others, spacing, reoriented.affine


def display_plane(volume: np.ndarray, plane: str, index: int, radiological: bool = True) -> np.ndarray:
    """The 2D image of one slice of a RAS volume as drawn: row 0 at the top, column 0 at the left."""
    axis = PLANES[plane]
    image = np.take(volume, index, axis=axis).T[::-1]  # rows: y (axial) or z (coronal, sagittal), top = A or S
    if plane == "sagittal" or radiological:
        image = image[:, ::-1]  # sagittal: nose left; radiological: the patient's left on the right
    return image


def side_labels(plane: str, radiological: bool = True) -> dict[str, str]:
    """``{"left", "right", "top", "bottom"}`` anatomical labels of a panel's edges."""
    if plane == "sagittal":
        return {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    left, right = ("R", "L") if radiological else ("L", "R")
    top, bottom = ("A", "P") if plane == "axial" else ("S", "I")
    return {"left": left, "right": right, "top": top, "bottom": bottom}


def _slices(extent_mask: np.ndarray, axis: int, count: int) -> list[int]:
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(extent_mask.any(axis=other))
    if present.size == 0:
        present = np.arange(extent_mask.shape[axis])
    low, high = int(present[0]), int(present[-1])
    return sorted({int(round(v)) for v in np.linspace(low, high, count + 2)[1:-1]} or {low})


def plot_qc_mosaic(scan: nib.Nifti1Image, prediction: Any = None, reference: Any = None,
                   path: str | os.PathLike | None = None, title: str = "", radiological: bool = True,
                   columns: int = 9):
    """Draw the QC mosaic of a scan (see the module docstring) and write it to ``path`` if given.

    Args:
        scan: the FLAIR image (any orientation; its affine decides the display).
        prediction, reference: binary masks on the scan's grid (values > 0.5 are lesion), or None.
        path: output file (``.png``); written atomically.
        title: the figure's title.
        radiological: the patient's left on the image right in axial and coronal panels.
        columns: slices per plane.

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    volume, (pred, ref), spacing, affine = to_ras(scan, prediction, reference)
    pred = None if pred is None else pred > 0.5
    ref = None if ref is None else ref > 0.5
    vmin, vmax = robust_window(volume)
    head = volume > vmin + 0.1 * (vmax - vmin)
    lesions = np.zeros(volume.shape, bool)
    for mask in (pred, ref):
        if mask is not None:
            lesions |= mask
    extent = lesions if lesions.any() else head
    figure = new_figure(1.6 * columns, 1.9 * len(PLANES) + 0.5)
    grid = figure.subplots(len(PLANES), columns, squeeze=False)
    centre = (np.asarray(volume.shape) - 1) / 2
    for row, (plane, axis) in enumerate(PLANES.items()):
        indices = _slices(extent, axis, columns)
        shown = [a for a in range(3) if a != axis]  # (horizontal, vertical) RAS axes of this plane
        aspect = float(spacing[shown[1]] / spacing[shown[0]])
        labels = side_labels(plane, radiological)
        for column, axes in enumerate(grid[row]):
            axes.set_axis_off()
            if column >= len(indices):
                continue
            index = indices[column]
            axes.imshow(display_plane(volume, plane, index, radiological), cmap="gray", vmin=vmin, vmax=vmax,
                        aspect=aspect, interpolation="nearest")
            for mask, colour in ((ref, _REFERENCE), (pred, _PREDICTION)):
                if mask is not None:
                    drawn = display_plane(mask.astype(np.float32), plane, index, radiological)
                    if drawn.any():
                        axes.contour(drawn, levels=[0.5], colors=colour, linewidths=0.9, origin="upper")
            point = centre.copy()
            point[axis] = index
            world = float((affine[:3, :3] @ point + affine[:3, 3])[axis])
            axes.set_title(f"{plane} {'xyz'[axis]}={world:+.0f} mm", fontsize=6, pad=2)
            height, width = drawn_shape = display_plane(volume, plane, index, radiological).shape
            style = dict(color="yellow", fontsize=7, fontweight="bold", ha="center", va="center")
            axes.text(0.04, 0.5, labels["left"], transform=axes.transAxes, **style)
            axes.text(0.96, 0.5, labels["right"], transform=axes.transAxes, **style)
            axes.text(0.5, 0.95, labels["top"], transform=axes.transAxes, **style)
            axes.text(0.5, 0.05, labels["bottom"], transform=axes.transAxes, **style)
            if column == 0 and drawn_shape:
                bar = _SCALE_MM / float(spacing[shown[0]])
                axes.plot([0.05 * width, 0.05 * width + bar], [0.9 * height] * 2, color="white", linewidth=1.5)
                axes.text(0.05 * width + bar / 2, 0.86 * height, f"{_SCALE_MM:.0f} mm", color="white", fontsize=5,
                          ha="center", va="bottom")
    convention = "radiological (patient's left on the right)" if radiological else "neurological (left on the left)"
    legend = [name for name, mask in (("red: prediction", pred), ("green: reference", ref)) if mask is not None]
    figure.suptitle(f"{title}\n" + "; ".join([convention, *legend]), fontsize=8)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.03, hspace=0.18)
    return finish(figure, path)
