"""Figures only the notebooks draw: window layouts, preprocessing, blending weights, slice grids, bar charts.

The report figures (learning curves, QC overlays, box plots) are :mod:`planar3d.evaluation.report_figures`,
whose drawing helpers these reuse.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from planar3d.data.geometry import kept_slices, window_starts
from planar3d.errors import Planar3DError
from planar3d.evaluation.report_figures import (
    PLANE_NAMES,
    as_mask,
    as_spacing,
    as_volume,
    draw_slice,
    finish,
    new_figure,
    overlay_legend,
    plane,
    plane_aspect,
    robust_window,
)

__all__ = ["plot_bar_chart", "plot_blending", "plot_overlay_grid", "plot_preprocessing", "plot_window_layout"]


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
    flair = as_volume(flair, "flair")
    prediction = as_mask(prediction, "prediction", flair.shape)
    reference = as_mask(reference, "reference", flair.shape)
    spacing = as_spacing(spacing)
    if not 1 <= int(n_slices) <= 12:
        raise Planar3DError(f"n_slices must be between 1 and 12. Received: n_slices={n_slices}")
    if axis not in (0, 1, 2):
        raise Planar3DError(f"axis must be 0, 1 or 2. Received: axis={axis}")
    masks = [mask for mask in (prediction, reference) if mask is not None]
    lesion = np.logical_or.reduce(masks) if masks else None
    indices = _grid_slices(lesion, axis, flair.shape[axis], int(n_slices))
    window = robust_window(flair)
    aspect = plane_aspect(spacing, axis)

    figure = new_figure(2.4 * len(indices) + 0.4, 5.6)
    grid = figure.subplots(2, len(indices), squeeze=False)
    for column, index in enumerate(indices):
        flair_plane = plane(flair, axis, index)
        draw_slice(grid[0, column], flair_plane, None, None, window, aspect)
        draw_slice(
            grid[1, column],
            flair_plane,
            None if prediction is None else plane(prediction, axis, index),
            None if reference is None else plane(reference, axis, index),
            window,
            aspect,
        )
        grid[0, column].set_title(f"{PLANE_NAMES[axis]} {index}", fontsize=10)
        for axes in grid[:, column]:
            axes.set_xticks([])
            axes.set_yticks([])
    grid[0, 0].set_ylabel("FLAIR")
    grid[1, 0].set_ylabel("FLAIR + lesions" if masks else "FLAIR")
    handles = overlay_legend(prediction, reference) if masks else []
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9,
                      frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.1 if handles else 0, 1, 1))
    return finish(figure, path)


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
    starts = [int(s) for s in window_starts(depth, size, stride)]
    kept = [(start + lo, start + hi) for start, (lo, hi) in zip(starts, kept_slices(depth, size, stride))]
    colours = ("tab:blue", "tab:green")
    n_windows = len(starts)

    bar_height = min(0.2, 6.0 / n_windows)
    figure = new_figure(11, 2.2 + bar_height * n_windows + (3.2 if image is not None else 0))
    if image is not None:
        picture_axes, bar_axes = figure.subplots(
            2, 1, sharex=True, gridspec_kw={"height_ratios": [3.2, 2.2 + bar_height * n_windows]})
        window = robust_window(image)
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
    return finish(figure, path)


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
    native = as_volume(native, "native")
    preprocessed = as_volume(preprocessed, "preprocessed")
    spacings = (as_spacing(native_spacing), as_spacing(preprocessed_spacing))
    figure = new_figure(13, 8.6)
    grid = figure.subplots(2, 3)
    for row, (volume, spacing, label) in enumerate(
            ((native, spacings[0], "native"), (preprocessed, spacings[1], "preprocessed"))):
        window = robust_window(volume)
        shape = "x".join(str(n) for n in volume.shape)
        grid[row, 0].set_ylabel(
            f"{label} {shape}\nvalues {float(np.nanmin(volume)):.3g} .. {float(np.nanmax(volume)):.3g}")
        for axis in range(3):
            index = volume.shape[axis] // 2
            stored = row == 0
            grid[row, axis].imshow(plane(volume, axis, index, stored), cmap="gray",
                                   vmin=window[0], vmax=window[1],
                                   aspect=plane_aspect(spacing, axis, stored),
                                   interpolation="nearest")
            name = f"axis {axis}" if row == 0 else f"{PLANE_NAMES[axis]} (axis {axis})"
            grid[row, axis].set_title(f"{label}: {name} = {index}", fontsize=10)
            grid[row, axis].tick_params(labelsize=7)
    figure.suptitle(title or "preprocessing: before (stored orientation) / after (sagittal first)")
    figure.tight_layout()
    return finish(figure, path)


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
    figure = new_figure(11, 1.2 + 1.9 * len(curves))
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
    return finish(figure, path)


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
    figure = new_figure(max(6.0, 1.2 * len(labels) * max(1, len(values)) ** 0.5 + 2), 4.6)
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
    return finish(figure, path)
