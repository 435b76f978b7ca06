"""Figures: learning curves, lesion overlays, metric box plots, reliability diagrams, window layouts.

Every function builds a :class:`matplotlib.figure.Figure` on an Agg canvas (no pyplot,
no global figure registry, no GUI backend, no TensorFlow) and returns it. When ``path``
is given the figure is also written there atomically (temporary file + rename); the
format follows the file suffix (``.png`` for the command-line tools).

Volumes are ``(slices, rows, cols)`` arrays oriented as :mod:`planar3d.data.preprocess` leaves
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
    "PLANE_NAMES", "as_mask", "as_spacing", "as_volume", "draw_slice", "finish", "new_figure", "overlay_legend",
    "plane", "plane_aspect", "plot_learning_curves", "plot_metric_boxplots", "plot_overlay", "plot_reliability_diagram",
    "robust_window", "save_figure"
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


def new_figure(width: float, height: float) -> Figure:
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


def finish(figure: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        save_figure(figure, path)
    return figure


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

    figure = new_figure(12, 4.6)
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
    return finish(figure, path)


def as_volume(array: Any, name: str) -> np.ndarray:
    volume = np.asarray(array)
    if volume.ndim != 3:
        raise Planar3DError(f"{name} must be a 3D (slices, rows, cols) array. Received: shape={volume.shape}")
    return volume


def as_mask(array: Any, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if array is None:
        return None
    mask = np.asarray(array)
    if mask.shape != shape:
        raise Planar3DError(f"{name} must have the FLAIR shape {shape}. Received: shape={mask.shape}")
    return mask > 0.5


def as_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(value) for value in spacing)
    if len(values) != 3 or not all(value > 0 and math.isfinite(value) for value in values):
        raise Planar3DError(f"spacing must be three positive numbers. Received: spacing={spacing}")
    return values  # type: ignore[return-value]


def robust_window(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
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


def plane(volume: np.ndarray, axis: int, index: int, stored: bool = False) -> np.ndarray:
    """2D plane normal to ``axis`` at ``index``, `(row axis, column axis)` as displayed."""
    plane = np.take(volume, index, axis=axis)
    row_axis, col_axis = _display_axes(axis, stored)
    return plane.T if row_axis > col_axis else plane


def plane_aspect(spacing: tuple[float, float, float], axis: int, stored: bool = False) -> float:
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


def overlay_legend(prediction: np.ndarray | None, reference: np.ndarray | None) -> list[Patch]:
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


def draw_slice(axes, flair_plane, pred_plane, ref_plane, window, aspect) -> None:
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
    flair = as_volume(flair, "flair")
    prediction = as_mask(prediction, "prediction", flair.shape)
    reference = as_mask(reference, "reference", flair.shape)
    spacing = as_spacing(spacing)
    centre, reason = _resolve_planes(planes, flair.shape, prediction, reference)
    window = robust_window(flair)

    widths = [flair.shape[col] * spacing[col] / (flair.shape[row] * spacing[row])
              for row, col in (_display_axes(axis) for axis in range(3))]  # equal heights
    figure = new_figure(14, 5.4)
    all_axes = figure.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    for axis, axes in enumerate(all_axes):
        index = centre[axis]
        row_axis, col_axis = _display_axes(axis)
        draw_slice(
            axes,
            plane(flair, axis, index),
            None if prediction is None else plane(prediction, axis, index),
            None if reference is None else plane(reference, axis, index),
            window,
            plane_aspect(spacing, axis),
        )
        axes.set_title(f"{PLANE_NAMES[axis]}: axis {axis} = {index}")
        axes.set_xlabel(f"axis {col_axis} (voxels)")
        axes.set_ylabel(f"axis {row_axis} (voxels)")
    handles = [] if prediction is None and reference is None else overlay_legend(prediction, reference)
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
    return finish(figure, path)


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

    figure = new_figure(max(4.5, 1.1 * len(groups) + 1.5) * len(metrics), 4.8)
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
    return finish(figure, path)


def plot_reliability_diagram(
    curve: Mapping[str, np.ndarray],
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Reliability diagram: observed lesion frequency against mean probability per bin.

    Args:
        curve: a :func:`planar3d.evaluation.calibration.reliability_curve` (or
            ``pool_reliability``) result: ``edges`` `(n_bins + 1,)`, ``mean_predicted``,
            ``observed_frequency`` and ``counts`` `(n_bins,)` (NaN in empty bins).
        path: optional output image.
        title: optional figure title.

    Returns:
        The figure: above, the observed frequency of each non-empty bin as a bar over the bin
        and a point at its mean probability, with the diagonal of perfect calibration; below,
        the voxel count per bin (log scale).

    Raises:
        Planar3DError: a curve without voxels or with arrays of mismatched lengths.
    """
    edges = np.asarray(curve["edges"], dtype=float)
    counts = np.asarray(curve["counts"], dtype=float)
    mean_p = np.asarray(curve["mean_predicted"], dtype=float)
    frequency = np.asarray(curve["observed_frequency"], dtype=float)
    if not (edges.size == counts.size + 1 == mean_p.size + 1 == frequency.size + 1) or counts.sum() <= 0:
        raise Planar3DError(f"a reliability curve needs n_bins + 1 edges, n_bins values and some voxels. "
                            f"Received: {edges.size} edges, {counts.size} counts summing to {counts.sum():g}")
    filled = counts > 0
    widths = np.diff(edges)

    figure = new_figure(5.2, 6.2)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.bar(edges[:-1][filled], frequency[filled], width=widths[filled], align="edge", color="#cfe0f3",
            edgecolor="tab:blue", label="observed lesion frequency")
    top.plot(mean_p[filled], frequency[filled], "o-", color="tab:blue", markersize=4, label="at the bin's mean probability")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("observed lesion frequency")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(edges[:-1][filled], counts[filled], width=widths[filled], align="edge", color="grey")
    bottom.set_yscale("log")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel(f"predicted lesion probability ({counts.size} equal-width bins)")
    bottom.set_ylabel("voxels")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return finish(figure, path)

