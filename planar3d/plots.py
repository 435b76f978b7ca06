"""Figures: learning curves, lesion overlays, metric box plots, window layouts.

Every function builds a :class:`matplotlib.figure.Figure` on an Agg canvas (no pyplot,
no global figure registry, no GUI backend, no TensorFlow) and returns it. When ``path``
is given the figure is also written there atomically (temporary file + rename); the
format follows the file suffix (``.png`` for the command-line tools).

Volumes are ``(slices, rows, cols)`` arrays oriented as :mod:`planar3d.preprocess` leaves
them (``SAGITTAL_AXCODES = ("R", "I", "P")``): axis 0 runs left to right (planes normal
to it are sagittal), axis 1 superior to inferior (axial planes), axis 2 anterior to
posterior (coronal planes). Sagittal planes are drawn as stored (superior up, nose left);
axial planes with anterior up and coronal planes with superior up, both with the
patient's left on the image left. Masks are binary: values above 0.5 count as lesion.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy import ndimage

from planar3d.atomic import atomic_path
from planar3d.errors import InputFileError, Planar3DError

__all__ = [
    "PLANE_NAMES",
    "paper_table2",
    "save_figure",
    "plot_learning_curves",
    "plot_overlay",
    "plot_overlay_grid",
    "plot_metric_boxplots",
    "plot_window_layout",
    "plot_preprocessing",
    "plot_blending",
    "plot_bar_chart",
]

#: Name of the plane normal to each volume axis (axes R, I, P after preprocessing).
PLANE_NAMES = ("sagittal", "axial", "coronal")
#: (row axis, column axis) shown for the plane normal to each axis: axis 0 horizontal
#: in axial and coronal planes.
_DISPLAY_AXES = {0: (1, 2), 1: (2, 0), 2: (1, 0)}

_REFERENCE_COLOUR = "#00d000"  # reference only: false negative
_PREDICTION_COLOUR = "#ff2020"  # prediction only: false positive
_OVERLAP_COLOUR = "#ffe000"  # both: true positive
_OVERLAY_ALPHA = 0.55
_DPI = 110


def paper_table2() -> dict[str, dict[str, tuple[float, float]]]:
    """Return the paper's Table 2 as ``{metric: {centre: (mean, std)}}``.

    Centres are ``"01"``, ``"07"``, ``"08"`` and ``"all"`` (overall), metrics ``"dice"``
    and ``"sensitivity"``. A fresh dictionary each call, for ``plot_metric_boxplots(paper=...)``.
    """
    return {
        "dice": {"01": (0.69, 0.11), "07": (0.50, 0.11), "08": (0.64, 0.09), "all": (0.61, 0.05)},
        "sensitivity": {
            "01": (0.61, 0.14), "07": (0.45, 0.13), "08": (0.72, 0.16), "all": (0.60, 0.10),
        },
    }


# ----------------------------------------------------------------------------- saving


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = _DPI) -> Path:
    """Write ``figure`` to ``path`` atomically, replacing an existing file.

    Args:
        figure: the figure to write.
        path: output file; its suffix picks the format (``.png``, ``.pdf``, ``.svg`` ...).
        dpi: resolution for raster formats.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputFileError: the suffix is not a format matplotlib can write.
    """
    path = Path(path)
    image_format = path.suffix.lower().lstrip(".")
    if image_format not in FigureCanvasAgg(figure).get_supported_filetypes():
        raise InputFileError(path, f"unknown image format {path.suffix!r}; use .png")
    with atomic_path(path, overwrite=True) as tmp:
        figure.savefig(tmp, format=image_format, dpi=dpi)
    return path


def _finish(figure: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        save_figure(figure, path)
    return figure


# ----------------------------------------------------------------------------- learning curves


def _read_history_csv(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        raise InputFileError(path, "history CSV not found")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InputFileError(path, "history CSV has no rows")
    history: dict[str, list[float]] = {}
    for column in rows[0]:
        values = []
        for row in rows:
            text = (row.get(column) or "").strip()
            try:
                values.append(float(text) if text else math.nan)
            except ValueError:
                raise InputFileError(
                    path, f"column {column!r} holds a non-number: {text!r}") from None
        history[column] = values
    return history


def _dice_key(history: Mapping[str, Sequence[float]]) -> str | None:
    candidates = [key for key in history if "dice" in key.lower() and not key.startswith("val_")]
    return min(candidates, key=len) if candidates else None


def plot_learning_curves(
    history: Mapping[str, Sequence[float]] | str | os.PathLike,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Plot training and validation loss and Dice against the epoch.

    Args:
        history: a dict of per-epoch lists (``loss``, ``val_loss``, ``dice_coef``,
            ``val_dice_coef``, ...; Keras ``History.history``) or the path of a Keras
            ``CSVLogger`` file with those columns and ``epoch`` (0-based, shown 1-based).
            The Dice column is the shortest key containing ``dice`` without ``val_``.
        path: optional output image.
        title: optional figure title.

    Returns:
        The figure: left panel loss, right panel Dice; the best epoch (minimum
        ``val_loss``) is marked in both.

    Raises:
        InputFileError: the CSV is missing, empty or holds non-numbers.
        Planar3DError: there is no ``loss`` column, or the columns differ in length.
    """
    if isinstance(history, (str, os.PathLike)):
        history = _read_history_csv(Path(history))
    if "loss" not in history:
        raise Planar3DError(f"history has no 'loss' column. Received: {sorted(history)}")
    lengths = {key: len(values) for key, values in history.items()}
    if len(set(lengths.values())) != 1 or lengths["loss"] == 0:
        raise Planar3DError(f"history columns must be non-empty and equally long. Received: {lengths}")
    n_epochs = lengths["loss"]
    if "epoch" in history:
        epochs = np.asarray(history["epoch"], dtype=float) + 1
    else:
        epochs = np.arange(1, n_epochs + 1, dtype=float)

    # best epoch by validation loss
    best_index = None
    if "val_loss" in history:
        val_loss = np.asarray(history["val_loss"], dtype=float)
        if np.isfinite(val_loss).any():
            best_index = int(np.nanargmin(val_loss))

    figure = _new_figure(12, 4.6)
    loss_axes, dice_axes = figure.subplots(1, 2)
    dice_key = _dice_key(history)
    panels = [(loss_axes, "loss", "Loss (lower is better)"),
              (dice_axes, dice_key, "Dice (higher is better)")]
    for axes, key, panel_title in panels:
        axes.set_title(panel_title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if key is None:
            axes.text(0.5, 0.5, "no Dice column in history", ha="center", va="center",
                      transform=axes.transAxes, color="grey")
            continue
        axes.set_ylabel(key)
        marker = "o" if n_epochs <= 30 else None
        axes.plot(epochs, history[key], marker=marker, markersize=3, color="tab:blue",
                  label=f"training ({key})")
        if f"val_{key}" in history:
            axes.plot(epochs, history[f"val_{key}"], marker=marker, markersize=3,
                      color="tab:orange", label=f"validation (val_{key})")
        if best_index is not None:
            best_epoch = epochs[best_index]
            axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                         label=f"best epoch {best_epoch:.0f} (min val_loss)")
            if f"val_{key}" in history:
                axes.plot(best_epoch, history[f"val_{key}"][best_index], marker="*",
                          markersize=12, color="tab:red", linestyle="none")
        axes.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _finish(figure, path)


# ----------------------------------------------------------------------------- overlays


def _as_volume(array: Any, name: str) -> np.ndarray:
    volume = np.asarray(array)
    if volume.ndim != 3:
        raise Planar3DError(f"{name} must be a 3D (slices, rows, cols) array. Received: shape={volume.shape}")
    return volume


def _as_mask(array: Any, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if array is None:
        return None
    mask = np.asarray(array)
    if mask.shape != shape:
        raise Planar3DError(f"{name} must have the FLAIR shape {shape}. Received: shape={mask.shape}")
    return mask > 0.5


def _as_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(value) for value in spacing)
    if len(values) != 3 or not all(value > 0 and math.isfinite(value) for value in values):
        raise Planar3DError(f"spacing must be three positive numbers. Received: spacing={spacing}")
    return values  # type: ignore[return-value]


def _robust_window(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Grey-level limits from percentiles of the non-background voxels."""
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return 0.0, 1.0
    foreground = finite[finite > finite.min()]
    sample = foreground if foreground.size >= 0.01 * finite.size else finite
    vmin, vmax = np.percentile(sample, [low, high])
    if vmax <= vmin:
        vmax = vmin + 1.0
    return float(vmin), float(vmax)


def _largest_lesion_centre(mask: Any) -> tuple[int, int, int] | None:
    """Centre of the largest connected lesion (26-connectivity) of a 3D mask.

    Args:
        mask: 3D array; values above 0.5 are lesion.

    Returns:
        The voxel of the largest component nearest to its centroid (the rounded
        centroid for a convex lesion), so every plane through it cuts the lesion;
        ``None`` for an empty mask.
    """
    mask = np.asarray(mask) > 0.5
    labels, n_components = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n_components == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    voxels = np.argwhere(labels == largest)
    centroid = voxels.mean(axis=0)
    nearest = voxels[np.argmin(((voxels - centroid) ** 2).sum(axis=1))]
    return tuple(int(index) for index in nearest)  # type: ignore[return-value]


def _display_axes(axis: int, stored: bool = False) -> tuple[int, int]:
    """(row axis, column axis) of the plane normal to ``axis``; ``stored``: volume order."""
    if stored:
        return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]
    return _DISPLAY_AXES[axis]


def _plane(volume: np.ndarray, axis: int, index: int, stored: bool = False) -> np.ndarray:
    """2D plane normal to ``axis`` at ``index``, `(row axis, column axis)` as displayed."""
    plane = np.take(volume, index, axis=axis)
    row_axis, col_axis = _display_axes(axis, stored)
    return plane.T if row_axis > col_axis else plane


def _plane_aspect(spacing: tuple[float, float, float], axis: int, stored: bool = False) -> float:
    """imshow aspect (row height / column width) of a plane normal to ``axis``."""
    row_axis, col_axis = _display_axes(axis, stored)
    return spacing[row_axis] / spacing[col_axis]


def _overlay_rgba(prediction: np.ndarray | None, reference: np.ndarray | None) -> np.ndarray:
    shape = (prediction if prediction is not None else reference).shape
    rgba = np.zeros(shape + (4,), dtype=float)
    pred = prediction if prediction is not None else np.zeros(shape, dtype=bool)
    ref = reference if reference is not None else np.zeros(shape, dtype=bool)
    for region, colour in ((ref & ~pred, _REFERENCE_COLOUR), (pred & ~ref, _PREDICTION_COLOUR),
                           (pred & ref, _OVERLAP_COLOUR)):
        rgba[region] = to_rgba(colour, _OVERLAY_ALPHA)
    return rgba


def _overlay_legend(prediction: np.ndarray | None, reference: np.ndarray | None) -> list[Patch]:
    if prediction is not None and reference is not None:
        entries = [(_OVERLAP_COLOUR, "prediction and reference (TP)"),
                   (_PREDICTION_COLOUR, "prediction only (FP)"),
                   (_REFERENCE_COLOUR, "reference only (FN)")]
    elif prediction is not None:
        entries = [(_PREDICTION_COLOUR, "prediction")]
    else:
        entries = [(_REFERENCE_COLOUR, "reference")]
    return [Patch(facecolor=to_rgba(colour, 0.8), edgecolor=colour, label=label)
            for colour, label in entries]


def _draw_slice(axes, flair_plane, pred_plane, ref_plane, window, aspect) -> None:
    axes.imshow(flair_plane, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
                interpolation="nearest")
    if pred_plane is None and ref_plane is None:
        return
    axes.imshow(_overlay_rgba(pred_plane, ref_plane), aspect=aspect, interpolation="nearest")
    for plane, colour in ((ref_plane, _REFERENCE_COLOUR), (pred_plane, _PREDICTION_COLOUR)):
        if plane is not None and plane.any() and not plane.all():
            axes.contour(plane.astype(float), levels=[0.5], colors=[colour], linewidths=0.7)


def _resolve_planes(planes, shape, prediction, reference) -> tuple[tuple[int, int, int], str]:
    if isinstance(planes, str):
        if planes not in ("largest_lesion", "centre"):
            raise Planar3DError(
                f"planes must be 'largest_lesion', 'centre' or three indices. Received: planes={planes!r}")
        centre = tuple(size // 2 for size in shape)
        if planes == "centre":
            return centre, "volume centre"  # type: ignore[return-value]
        for mask, name in ((prediction, "prediction"), (reference, "reference")):
            if mask is not None:
                found = _largest_lesion_centre(mask)
                if found is not None:
                    return found, f"largest {name} lesion"
        return centre, "volume centre (no lesion)"  # type: ignore[return-value]
    indices = tuple(int(index) for index in planes)
    if len(indices) != 3 or not all(0 <= i < n for i, n in zip(indices, shape)):
        raise Planar3DError(f"planes must be three indices inside shape {shape}. Received: planes={planes}")
    return indices, "given planes"  # type: ignore[return-value]


def plot_overlay(
    flair: Any,
    prediction: Any = None,
    reference: Any = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    planes: str | Sequence[int] = "largest_lesion",
) -> Figure:
    """Show FLAIR with predicted and reference lesions in the three planes.

    Args:
        flair: `(slices, rows, cols)` scan, shown in grey with a percentile window
            (0.5-99.5 % of non-background voxels).
        prediction: optional binary mask of the FLAIR shape, drawn red.
        reference: optional binary mask of the FLAIR shape, drawn green; where both
            masks agree the overlay is yellow.
        path: optional output image.
        title: optional figure title.
        spacing: voxel size along axes 0, 1, 2 (mm), so the planes keep their aspect.
        planes: ``"largest_lesion"`` (default: through the largest connected lesion of
            the prediction, else of the reference, else the centre), ``"centre"``, or
            three indices ``for axes 0, 1, 2 (sagittal, axial, coronal)``.

    Returns:
        The figure: sagittal (axis 0), axial (axis 1) and coronal (axis 2) panels.

    Raises:
        Planar3DError: ``flair`` is not 3D, a mask has another shape, or ``spacing`` /
            ``planes`` are invalid.
    """
    flair = _as_volume(flair, "flair")
    prediction = _as_mask(prediction, "prediction", flair.shape)
    reference = _as_mask(reference, "reference", flair.shape)
    spacing = _as_spacing(spacing)
    centre, reason = _resolve_planes(planes, flair.shape, prediction, reference)
    window = _robust_window(flair)

    widths = [flair.shape[col] * spacing[col] / (flair.shape[row] * spacing[row])
              for row, col in (_display_axes(axis) for axis in range(3))]  # equal heights
    figure = _new_figure(14, 5.4)
    all_axes = figure.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    for axis, axes in enumerate(all_axes):
        index = centre[axis]
        row_axis, col_axis = _display_axes(axis)
        _draw_slice(
            axes,
            _plane(flair, axis, index),
            None if prediction is None else _plane(prediction, axis, index),
            None if reference is None else _plane(reference, axis, index),
            window,
            _plane_aspect(spacing, axis),
        )
        axes.set_title(f"{PLANE_NAMES[axis]}: axis {axis} = {index}")
        axes.set_xlabel(f"axis {col_axis} (voxels)")
        axes.set_ylabel(f"axis {row_axis} (voxels)")
    handles = [] if prediction is None and reference is None else _overlay_legend(prediction, reference)
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9,
                      frameon=False, bbox_to_anchor=(0.5, 0.0))
    counts = []
    for mask, name in ((prediction, "prediction"), (reference, "reference")):
        if mask is not None:
            counts.append(f"{name} {int(mask.sum())} voxels")
    subtitle = f"planes through {reason}" + (f"; {', '.join(counts)}" if counts else "")
    figure.suptitle(f"{title}\n{subtitle}" if title else subtitle)
    figure.tight_layout(rect=(0, 0.1 if handles else 0, 1, 1))
    return _finish(figure, path)


def _grid_slices(lesion: np.ndarray | None, axis: int, depth: int, n_slices: int) -> list[int]:
    if lesion is not None:
        other = tuple(a for a in range(3) if a != axis)
        with_lesion = np.flatnonzero(lesion.any(axis=other))
        if with_lesion.size:
            picks = np.linspace(0, with_lesion.size - 1, min(n_slices, with_lesion.size))
            return sorted({int(with_lesion[int(round(p))]) for p in picks})
    return [int(round(p)) for p in np.linspace(0.2 * (depth - 1), 0.8 * (depth - 1), n_slices)]


def plot_overlay_grid(
    flair: Any,
    prediction: Any = None,
    reference: Any = None,
    n_slices: int = 6,
    axis: int = 0,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Figure:
    """Show several slices of one plane: FLAIR above, FLAIR with lesions below.

    Slices are spread evenly over those holding a lesion (prediction or reference);
    without lesions, evenly over the middle 60 % of the volume. Like the paper's Fig. 1.

    Args:
        flair: `(slices, rows, cols)` scan.
        prediction: optional binary mask (red), FLAIR shape.
        reference: optional binary mask (green), FLAIR shape; overlap is yellow.
        n_slices: number of slices (columns), 1-12.
        axis: plane normal: 0 sagittal, 1 axial, 2 coronal.
        path: optional output image.
        title: optional figure title.
        spacing: voxel size along axes 0, 1, 2.

    Returns:
        The figure, two rows by up to ``n_slices`` columns.

    Raises:
        Planar3DError: bad shapes, ``n_slices`` or ``axis``.
    """
    flair = _as_volume(flair, "flair")
    prediction = _as_mask(prediction, "prediction", flair.shape)
    reference = _as_mask(reference, "reference", flair.shape)
    spacing = _as_spacing(spacing)
    if not 1 <= int(n_slices) <= 12:
        raise Planar3DError(f"n_slices must be between 1 and 12. Received: n_slices={n_slices}")
    if axis not in (0, 1, 2):
        raise Planar3DError(f"axis must be 0, 1 or 2. Received: axis={axis}")
    masks = [mask for mask in (prediction, reference) if mask is not None]
    lesion = np.logical_or.reduce(masks) if masks else None
    indices = _grid_slices(lesion, axis, flair.shape[axis], int(n_slices))
    window = _robust_window(flair)
    aspect = _plane_aspect(spacing, axis)

    figure = _new_figure(2.4 * len(indices) + 0.4, 5.6)
    grid = figure.subplots(2, len(indices), squeeze=False)
    for column, index in enumerate(indices):
        flair_plane = _plane(flair, axis, index)
        _draw_slice(grid[0, column], flair_plane, None, None, window, aspect)
        _draw_slice(
            grid[1, column],
            flair_plane,
            None if prediction is None else _plane(prediction, axis, index),
            None if reference is None else _plane(reference, axis, index),
            window,
            aspect,
        )
        grid[0, column].set_title(f"{PLANE_NAMES[axis]} {index}", fontsize=10)
        for axes in grid[:, column]:
            axes.set_xticks([])
            axes.set_yticks([])
    grid[0, 0].set_ylabel("FLAIR")
    grid[1, 0].set_ylabel("FLAIR + lesions" if masks else "FLAIR")
    handles = _overlay_legend(prediction, reference) if masks else []
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9,
                      frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.1 if handles else 0, 1, 1))
    return _finish(figure, path)


# ----------------------------------------------------------------------------- metrics


def plot_metric_boxplots(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("dice", "sensitivity"),
    by: str = "centre",
    path: str | os.PathLike | None = None,
    title: str | None = None,
    paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> Figure:
    """Box plots of per-scan metrics per group (centre) and over all scans.

    Args:
        rows: one mapping per test scan with the ``by`` key, optionally ``patient``,
            and a number per metric (NaN values are left out).
        metrics: keys of the metrics, one panel each.
        by: key grouping the scans (default ``"centre"``); groups sorted by ``str``.
        path: optional output image.
        title: optional figure title.
        paper: optional ``{metric: {group: (mean, std)}}`` drawn as a mean +- std
            marker beside each box; the group ``"all"`` is the overall value. See
            :func:`paper_table2`.

    Returns:
        The figure; each box also shows the mean (white diamond) and every scan as a
        jittered point.

    Raises:
        Planar3DError: no rows, no metrics, or a row lacks ``by`` or a metric.
    """
    if not rows:
        raise Planar3DError("rows must hold at least one scan. Received: rows=[]")
    if not metrics or isinstance(metrics, str):
        raise Planar3DError(f"metrics must be a non-empty sequence of keys. Received: metrics={metrics!r}")
    for position, row in enumerate(rows):
        for key in (by, *metrics):
            if key not in row:
                scan = row.get("patient", f"row {position}")
                raise Planar3DError(f"{scan} has no {key!r} value. Received keys: {sorted(row)}")
    groups = sorted({str(row[by]) for row in rows}) + ["all"]
    jitter = np.random.default_rng(0)

    figure = _new_figure(max(4.5, 1.1 * len(groups) + 1.5) * len(metrics), 4.8)
    all_axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for axes, metric in zip(all_axes, metrics):
        values = []
        for group in groups:
            chosen = [row for row in rows if group == "all" or str(row[by]) == group]
            group_values = np.asarray([float(row[metric]) for row in chosen], dtype=float)
            values.append(group_values[np.isfinite(group_values)])
        positions = np.arange(1, len(groups) + 1, dtype=float)
        offset = 0.22 if paper and metric in paper else 0.0
        box_positions = positions - offset
        non_empty = [i for i, v in enumerate(values) if v.size]
        if non_empty:
            axes.boxplot([values[i] for i in non_empty], positions=box_positions[non_empty],
                         widths=0.35, showmeans=True, showfliers=False, patch_artist=True,
                         boxprops={"facecolor": "#cfe0f3"},
                         meanprops={"marker": "D", "markerfacecolor": "white",
                                    "markeredgecolor": "black", "markersize": 5},
                         medianprops={"color": "tab:blue"})
        for i in non_empty:
            x = box_positions[i] + jitter.uniform(-0.08, 0.08, values[i].size)
            axes.plot(x, values[i], "o", color="black", alpha=0.6, markersize=3.5)
        if offset:
            for i, group in enumerate(groups):
                if group in paper[metric]:
                    mean, std = paper[metric][group]
                    axes.errorbar(positions[i] + offset, mean, yerr=std, fmt="s",
                                  color="tab:red", capsize=4, markersize=5)
        axes.set_xticks(positions)
        axes.set_xticklabels([f"{group}\n(n={v.size})" for group, v in zip(groups, values)])
        axes.set_xlim(0.4, len(groups) + 0.6)
        axes.set_xlabel(by)
        axes.set_ylabel(metric)
        axes.set_title(metric)
        axes.grid(axis="y", alpha=0.3)
        shown = np.concatenate(values + [np.zeros(0)])
        if shown.size and shown.min() >= 0 and shown.max() <= 1:
            axes.set_ylim(-0.02, 1.02)
    legend = [Patch(facecolor="#cfe0f3", edgecolor="black", label="this run: box, ◇ mean, • scans")]
    if paper:
        legend.append(Patch(facecolor="tab:red", label="paper mean ± std"))
    all_axes[-1].legend(handles=legend, fontsize=8, loc="best")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _finish(figure, path)


# ----------------------------------------------------------------------------- windows


def _window_starts(depth: int, size: int, stride: int) -> list[int]:
    """Window starts as in ``planar3d.windows.window_starts`` (imported there with TensorFlow)."""
    if (depth - size) % stride:
        padded = size + -(-(depth - size) // stride) * stride
        raise Planar3DError(
            f"windows of size={size} every stride={stride} slices cannot end on the last slice: "
            f"depth - size must be a multiple of stride (pad to {padded} slices). Received: depth={depth}")
    return list(range(0, depth - size + 1, stride))


def _kept_ranges(starts: Sequence[int], size: int) -> list[tuple[int, int]]:
    """Eq. 1: the half-open slice range each window contributes to the recomposed volume.

    Consecutive windows hand over in the middle of their overlap, so the first window
    keeps its head, the last its tail and the others their middle.
    """
    if len(starts) == 1:
        return [(starts[0], starts[0] + size)]
    handovers = [(end_of_previous + start) // 2
                 for end_of_previous, start in zip((s + size for s in starts[:-1]), starts[1:])]
    lows = [starts[0]] + handovers
    highs = handovers + [starts[-1] + size]
    return list(zip(lows, highs))


def plot_window_layout(
    depth: int = 256,
    size: int = 16,
    stride: int = 8,
    path: str | os.PathLike | None = None,
    image: Any = None,
    title: str | None = None,
) -> Figure:
    """Draw the sliding windows over the slice axis and the slices Eq. 1 keeps.

    Args:
        depth: number of slices of the volume.
        size: slices per window.
        stride: step between window starts (``size - stride`` slices overlap).
        path: optional output image.
        image: optional 2D `(rows, depth)` picture with the slice axis horizontal, e.g.
            the axial plane ``volume[:, k, :].T``, drawn above the bars with the kept ranges.
        title: optional figure title.

    Returns:
        The figure: one bar per window (pale = whole window, dark = kept slices).

    Raises:
        Planar3DError: sizes not positive, ``stride > size``, ``size > depth``,
            ``depth - size`` not a multiple of ``stride``, or an ``image`` that is not 2D
            with ``depth`` columns.
    """
    for name, value in (("depth", depth), ("size", size), ("stride", stride)):
        if int(value) != value or value < 1:
            raise Planar3DError(f"{name} must be a positive integer. Received: {name}={value}")
    if stride > size:
        raise Planar3DError(
            f"stride must not exceed size {size} (windows would leave gaps). Received: stride={stride}")
    if size > depth:
        raise Planar3DError(f"size must not exceed depth {depth}. Received: size={size}")
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 2 or image.shape[1] != depth:
            raise Planar3DError(
                f"image must be 2D (rows, depth={depth}) with the slice axis horizontal. "
                f"Received: shape={image.shape}")
    starts = _window_starts(depth, size, stride)
    kept = _kept_ranges(starts, size)
    colours = ("tab:blue", "tab:green")
    n_windows = len(starts)

    bar_height = min(0.2, 6.0 / n_windows)
    figure = _new_figure(11, 2.2 + bar_height * n_windows + (3.2 if image is not None else 0))
    if image is not None:
        picture_axes, bar_axes = figure.subplots(
            2, 1, sharex=True, gridspec_kw={"height_ratios": [3.2, 2.2 + bar_height * n_windows]})
        window = _robust_window(image)
        picture_axes.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], aspect="auto",
                            extent=(-0.5, depth - 0.5, image.shape[0] - 0.5, -0.5))
        for k, (low, high) in enumerate(kept):
            picture_axes.axvspan(low - 0.5, high - 0.5, color=colours[k % 2], alpha=0.22,
                                 linewidth=0)
            if k:
                picture_axes.axvline(low - 0.5, color="yellow", linewidth=0.6, alpha=0.8)
        picture_axes.set_ylabel("rows")
        picture_axes.set_title("slices taken from each window (alternating colours)", fontsize=10)
    else:
        bar_axes = figure.subplots(1, 1)

    for k, (start, (low, high)) in enumerate(zip(starts, kept)):
        colour = colours[k % 2]
        y = k + 1
        bar_axes.barh(y, size, left=start - 0.5, height=0.8, color=colour, alpha=0.25)
        bar_axes.barh(y, high - low, left=low - 0.5, height=0.8, color=colour, alpha=0.9)
    bar_axes.set_xlim(-0.5, depth - 0.5)
    bar_axes.set_ylim(n_windows + 0.7, 0.3)
    bar_axes.set_xlabel("slice index (axis 0, sagittal)")
    bar_axes.set_ylabel("window")
    if n_windows <= 16:
        bar_axes.set_yticks(range(1, n_windows + 1))
    else:
        bar_axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))
    bar_axes.grid(axis="x", alpha=0.3)
    legend = [Patch(facecolor="tab:blue", alpha=0.25, label="window extent"),
              Patch(facecolor="tab:blue", alpha=0.9, label="slices kept (Eq. 1)")]
    bar_axes.legend(handles=legend, fontsize=8, loc="upper right")
    first, last = kept[0], kept[-1]
    summary = (f"{n_windows} windows of {size} slices, stride {stride}, depth {depth}: "
               f"window 1 keeps {first[0]}-{first[1] - 1}")
    if n_windows > 2:
        margin = kept[1][0] - starts[1]
        summary += f", middle windows their slices {margin}-{margin + kept[1][1] - kept[1][0] - 1}"
    if n_windows > 1:
        summary += f", window {n_windows} its slices {last[0] - starts[-1]}-{last[1] - starts[-1] - 1}"
    figure.suptitle(f"{title}\n{summary}" if title else summary, fontsize=10)
    figure.tight_layout()
    return _finish(figure, path)


# ----------------------------------------------------------------------------- preprocessing


def plot_preprocessing(
    native: Any,
    preprocessed: Any,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    native_spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preprocessed_spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Figure:
    """Show a scan before and after preprocessing, middle slice of each axis.

    Args:
        native: 3D scan in its stored orientation (axes as stored on disk).
        preprocessed: 3D `(slices, rows, cols)` scan, sagittal first.
        path: optional output image.
        title: optional figure title.
        native_spacing: voxel size of ``native`` along its three axes.
        preprocessed_spacing: voxel size of ``preprocessed``.

    Returns:
        The figure: top row native (axes 0, 1, 2), bottom row preprocessed (sagittal,
        axial, coronal); panel titles give shapes and grey-level ranges.

    Raises:
        Planar3DError: an input is not 3D or a spacing is invalid.
    """
    native = _as_volume(native, "native")
    preprocessed = _as_volume(preprocessed, "preprocessed")
    spacings = (_as_spacing(native_spacing), _as_spacing(preprocessed_spacing))
    figure = _new_figure(13, 8.6)
    grid = figure.subplots(2, 3)
    for row, (volume, spacing, label) in enumerate(
            ((native, spacings[0], "native"), (preprocessed, spacings[1], "preprocessed"))):
        window = _robust_window(volume)
        shape = "x".join(str(n) for n in volume.shape)
        grid[row, 0].set_ylabel(
            f"{label} {shape}\nvalues {float(np.nanmin(volume)):.3g} .. {float(np.nanmax(volume)):.3g}")
        for axis in range(3):
            index = volume.shape[axis] // 2
            stored = row == 0
            grid[row, axis].imshow(_plane(volume, axis, index, stored), cmap="gray",
                                   vmin=window[0], vmax=window[1],
                                   aspect=_plane_aspect(spacing, axis, stored),
                                   interpolation="nearest")
            name = f"axis {axis}" if row == 0 else f"{PLANE_NAMES[axis]} (axis {axis})"
            grid[row, axis].set_title(f"{label}: {name} = {index}", fontsize=10)
            grid[row, axis].tick_params(labelsize=7)
    figure.suptitle(title or "preprocessing: before (stored orientation) / after (sagittal first)")
    figure.tight_layout()
    return _finish(figure, path)


# ----------------------------------------------------------------------------- generic charts


def plot_blending(
    profiles: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    title: str | None = None,
    ylabel: str = "weight",
) -> Figure:
    """Plot per-slice curves (e.g. blending weights of each mode) over the slice axis.

    Args:
        profiles: ``{name: 1D array over slices}``, e.g. ``{"middle": ..., "mean": ...,
            "gaussian": ...}``; each drawn as a step line.
        path: optional output image.
        title: optional figure title.
        ylabel: label of the vertical axis.

    Returns:
        The figure: one panel per profile, shared slice axis.

    Raises:
        Planar3DError: no profiles or a profile that is not a non-empty 1D array.
    """
    if not profiles:
        raise Planar3DError("profiles must hold at least one curve. Received: profiles={}")
    curves = {}
    for name, profile in profiles.items():
        curve = np.asarray(profile, dtype=float)
        if curve.ndim != 1 or curve.size == 0:
            raise Planar3DError(
                f"profile {name!r} must be a non-empty 1D array. Received: shape={curve.shape}")
        curves[name] = curve
    figure = _new_figure(11, 1.2 + 1.9 * len(curves))
    all_axes = figure.subplots(len(curves), 1, sharex=True, squeeze=False)[:, 0]
    for k, (axes, (name, curve)) in enumerate(zip(all_axes, curves.items())):
        axes.step(np.arange(curve.size), curve, where="mid", color=f"C{k}", linewidth=1.2)
        axes.fill_between(np.arange(curve.size), curve, step="mid", color=f"C{k}", alpha=0.2)
        axes.set_ylabel(ylabel)
        axes.set_title(name, fontsize=10, loc="left")
        axes.grid(alpha=0.3)
    all_axes[-1].set_xlabel("slice index")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _finish(figure, path)


def plot_bar_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    log: bool = False,
) -> Figure:
    """Grouped bar chart: one group per label, one bar per series, values printed on top.

    Args:
        labels: group names along the horizontal axis (e.g. mapping variants).
        series: ``{series name: one value per label}``.
        ylabel: label of the vertical axis (with its unit).
        path: optional output image.
        title: optional figure title.
        log: logarithmic vertical axis.

    Returns:
        The figure.

    Raises:
        Planar3DError: no labels or series, or a series whose length differs from
            ``labels``, or non-positive values with ``log=True``.
    """
    labels = [str(label) for label in labels]
    if not labels or not series:
        raise Planar3DError(
            f"labels and series must be non-empty. Received: labels={labels}, series={dict(series)}")
    values = {}
    for name, row in series.items():
        row = np.asarray(row, dtype=float)
        if row.shape != (len(labels),):
            raise Planar3DError(
                f"series {name!r} must have one value per label ({len(labels)}). Received: shape={row.shape}")
        if log and np.any(row[np.isfinite(row)] <= 0):
            raise Planar3DError(f"log=True needs positive values; series {name!r}. Received: {row.tolist()}")
        values[name] = row
    width = 0.8 / len(values)
    figure = _new_figure(max(6.0, 1.2 * len(labels) * max(1, len(values)) ** 0.5 + 2), 4.6)
    axes = figure.subplots(1, 1)
    x = np.arange(len(labels))
    for k, (name, row) in enumerate(values.items()):
        bars = axes.bar(x + (k - (len(values) - 1) / 2) * width, row, width, label=name)
        axes.bar_label(bars, labels=[f"{v:.3g}" if np.isfinite(v) else "" for v in row], fontsize=7)
    axes.set_xticks(x)
    axes.set_xticklabels(labels)
    axes.set_ylabel(ylabel)
    if log:
        axes.set_yscale("log")
    axes.grid(axis="y", alpha=0.3)
    axes.margins(y=0.12)
    if len(values) > 1:
        axes.legend(fontsize=8, loc="best")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return _finish(figure, path)
