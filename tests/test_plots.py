"""Tests for planar3d.evaluation.report_figures and notebook_figures: every figure renders a real picture, picks the right slices, checks input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.image import imread

from planar3d.data.geometry import kept_slices, window_starts
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation import notebook_figures, reference, report_figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png_picture(path: Path) -> np.ndarray:
    """The file is a PNG with more than one colour; return its pixels."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10
    assert not list(path.parent.glob(".tmp-*"))
    return pixels


def panel_titles(figure) -> list[str]:
    return [axes.get_title() for axes in figure.axes]


@pytest.fixture
def head(rng) -> np.ndarray:
    """A 24x28x20 'FLAIR': a bright ellipsoid in noise."""
    z, y, x = np.mgrid[:24, :28, :20]
    inside = ((z - 11.5) / 10) ** 2 + ((y - 13.5) / 12) ** 2 + ((x - 9.5) / 8) ** 2 <= 1
    return (inside * 400 + rng.normal(0, 20, inside.shape)).astype(np.float32)


def write_history_csv(path: Path, val_loss: list[float]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "dice_coef", "loss", "lr", "val_dice_coef", "val_loss"])
        for epoch, value in enumerate(val_loss):
            writer.writerow([epoch, 0.1 * epoch, 1.0 - 0.1 * epoch, 5e-5, 0.05 * epoch, value])


# ----------------------------------------------------------------------------- learning curves


def test_learning_curves_from_keras_csv_mark_best_epoch_one_based(tmp_path):
    history = tmp_path / "history.csv"
    write_history_csv(history, [0.9, 0.7, 0.5, 0.6, 0.8])  # minimum at CSV epoch 2
    out = tmp_path / "curves.png"
    figure = report_figures.plot_learning_curves(history, path=out, title="fold 0")
    assert_png_picture(out)
    loss_axes, dice_axes = figure.axes[:2]
    assert loss_axes.get_xlabel() == "epoch"
    assert [tuple(line.get_xdata()) for line in loss_axes.lines[:1]] == [(1.0, 2.0, 3.0, 4.0, 5.0)]
    for axes in (loss_axes, dice_axes):
        labels = [text.get_text() for text in axes.get_legend().get_texts()]
        assert "best epoch 3 (min val_loss)" in labels
    assert dice_axes.get_ylabel() == "dice_coef"


@pytest.mark.slow
def test_learning_curves_from_dict_without_validation(tmp_path):
    out = tmp_path / "curves.png"
    figure = report_figures.plot_learning_curves({"loss": [1.0, 0.8, 0.7]}, path=out)
    assert_png_picture(out)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["training (loss)"]


@pytest.mark.parametrize(
    "history, message",
    [
        ({"dice_coef": [0.1]}, r"no 'loss' column\. Received: \['dice_coef'\]"),
        ({"loss": [1.0, 0.9], "val_loss": [1.0]}, r"equally long\. Received: \{'loss': 2, 'val_loss': 1\}"),
        ({"loss": []}, "non-empty"),
    ],
)
def test_learning_curves_reject_bad_history(history, message):
    with pytest.raises(Planar3DError, match=message):
        report_figures.plot_learning_curves(history)


def test_learning_curves_report_bad_csv_with_its_path(tmp_path):
    missing = tmp_path / "none.csv"
    with pytest.raises(InputFileError, match=r"none\.csv: history CSV not found"):
        report_figures.plot_learning_curves(missing)
    broken = tmp_path / "broken.csv"
    broken.write_text("epoch,loss\n0,abc\n")
    with pytest.raises(InputFileError, match=r"broken\.csv: column 'loss' holds a non-number: 'abc'"):
        report_figures.plot_learning_curves(broken)


# ----------------------------------------------------------------------------- overlays


def test_largest_lesion_centre_is_centroid_of_biggest_component():
    mask = np.zeros((24, 28, 20), dtype=np.uint8)
    mask[10:15, 4:9, 12:17] = 1  # 125 voxels, centroid (12, 6, 14)
    mask[2:4, 20:22, 2:4] = 1  # 8 voxels
    assert report_figures._largest_lesion_centre(mask) == (12, 6, 14)
    assert report_figures._largest_lesion_centre(np.zeros((4, 4, 4))) is None


def test_largest_lesion_centre_lies_inside_a_non_convex_lesion():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[2:18, 2:4, 2:4] = True  # an L: its centroid falls outside the lesion
    mask[2:4, 2:18, 2:4] = True
    centre = report_figures._largest_lesion_centre(mask)
    assert mask[centre]


@pytest.mark.slow
def test_overlay_cuts_through_largest_prediction_lesion(tmp_path, head):
    prediction = np.zeros(head.shape, dtype=np.uint8)
    prediction[10:15, 4:9, 12:17] = 1
    reference = np.zeros(head.shape, dtype=np.float32)
    reference[3:6, 20:23, 3:6] = 1
    out = tmp_path / "overlay.png"
    figure = report_figures.plot_overlay(head, prediction, reference, path=out, title="01016SACH",
                                spacing=(1.0, 1.0, 1.5))
    assert_png_picture(out)
    assert panel_titles(figure) == ["sagittal: axis 0 = 12", "axial: axis 1 = 6", "coronal: axis 2 = 14"]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["prediction and reference (TP)", "prediction only (FP)", "reference only (FN)"]


def test_overlay_falls_back_to_reference_then_centre(head):
    reference = np.zeros(head.shape, dtype=bool)
    reference[3:6, 20:23, 3:6] = True
    figure = report_figures.plot_overlay(head, np.zeros(head.shape), reference)
    assert panel_titles(figure) == ["sagittal: axis 0 = 4", "axial: axis 1 = 21", "coronal: axis 2 = 4"]
    figure = report_figures.plot_overlay(head)
    assert panel_titles(figure) == ["sagittal: axis 0 = 12", "axial: axis 1 = 14", "coronal: axis 2 = 10"]
    assert figure.legends == []
    figure = report_figures.plot_overlay(head, reference, planes=(1, 2, 3))
    assert panel_titles(figure) == ["sagittal: axis 0 = 1", "axial: axis 1 = 2", "coronal: axis 2 = 3"]


def test_planes_are_named_and_turned_for_the_preprocessed_orientation():
    from planar3d.data.preprocess import SAGITTAL_AXCODES

    plane_of_axcode = {"R": "sagittal", "L": "sagittal", "S": "axial", "I": "axial",
                       "A": "coronal", "P": "coronal"}
    assert report_figures.PLANE_NAMES == tuple(plane_of_axcode[code] for code in SAGITTAL_AXCODES)
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(report_figures.plane(volume, 0, 1), volume[1])  # superior up, anterior left
    np.testing.assert_array_equal(report_figures.plane(volume, 1, 2), volume[:, 2, :].T)  # anterior up, left left
    np.testing.assert_array_equal(report_figures.plane(volume, 2, 3), volume[:, :, 3].T)  # superior up, left left
    np.testing.assert_array_equal(report_figures.plane(volume, 2, 3, stored=True), volume[:, :, 3])
    assert report_figures.plane_aspect((1.0, 2.0, 4.0), 1) == 4.0
    assert report_figures.plane_aspect((1.0, 2.0, 4.0), 1, stored=True) == 0.25


def test_overlay_colours_true_false_positives_and_negatives():
    prediction = np.array([[True, True, False, False]])
    reference = np.array([[True, False, True, False]])
    rgba = report_figures._overlay_rgba(prediction, reference)
    alpha = report_figures._OVERLAY_ALPHA
    assert tuple(rgba[0, 0]) == to_rgba(report_figures._OVERLAP_COLOUR, alpha)
    assert tuple(rgba[0, 1]) == to_rgba(report_figures._PREDICTION_COLOUR, alpha)
    assert tuple(rgba[0, 2]) == to_rgba(report_figures._REFERENCE_COLOUR, alpha)
    assert tuple(rgba[0, 3]) == (0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prediction": np.zeros((24, 28, 19))},
         r"prediction must have the FLAIR shape \(24, 28, 20\)\. Received: shape=\(24, 28, 19\)"),
        ({"reference": np.zeros((28, 24, 20))},
         r"reference must have the FLAIR shape \(24, 28, 20\)\. Received: shape=\(28, 24, 20\)"),
        ({"spacing": (1.0, 0.0, 1.0)}, r"three positive numbers\. Received: spacing=\(1\.0, 0\.0, 1\.0\)"),
        ({"planes": (0, 28, 0)}, r"three indices inside shape \(24, 28, 20\)\. Received: planes=\(0, 28, 0\)"),
        ({"planes": "middle"}, r"Received: planes='middle'"),
    ],
)
def test_overlay_rejects_bad_input(head, kwargs, message):
    with pytest.raises(Planar3DError, match=message):
        report_figures.plot_overlay(head, **kwargs)


def test_overlay_rejects_non_volume():
    with pytest.raises(Planar3DError, match=r"flair must be a 3D .* Received: shape=\(8, 8\)"):
        report_figures.plot_overlay(np.zeros((8, 8)))


def test_overlay_grid_spreads_slices_over_lesions(tmp_path, head):
    reference = np.zeros(head.shape, dtype=bool)
    reference[5, 10, 10] = True
    reference[20, 3:5, 3:5] = True
    out = tmp_path / "grid.png"
    figure = notebook_figures.plot_overlay_grid(head, None, reference, n_slices=4, axis=0, path=out)
    assert_png_picture(out)
    assert [t for t in panel_titles(figure) if t] == ["sagittal 5", "sagittal 20"]
    figure = notebook_figures.plot_overlay_grid(head, n_slices=3, axis=2)
    assert [t for t in panel_titles(figure) if t] == ["coronal 4", "coronal 10", "coronal 15"]
    with pytest.raises(Planar3DError, match=r"axis must be 0, 1 or 2\. Received: axis=3"):
        notebook_figures.plot_overlay_grid(head, axis=3)
    with pytest.raises(Planar3DError, match=r"Received: n_slices=0"):
        notebook_figures.plot_overlay_grid(head, n_slices=0)


# ----------------------------------------------------------------------------- metrics


def metric_rows() -> list[dict]:
    rows = []
    for centre, dice in (("01", [0.7, 0.8]), ("07", [0.4, 0.5, float("nan")]), ("08", [0.6])):
        for k, value in enumerate(dice):
            rows.append({"centre": centre, "patient": f"{centre}00{k}X", "dice": value,
                         "sensitivity": value - 0.05})
    return rows


@pytest.mark.slow
def test_metric_boxplots_group_by_centre_and_all_with_paper(tmp_path):
    out = tmp_path / "metrics.png"
    figure = report_figures.plot_metric_boxplots(metric_rows(), path=out, title="CV", paper=reference.paper_table2())
    assert_png_picture(out)
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert ticks == ["01\n(n=2)", "07\n(n=2)", "08\n(n=1)", "all\n(n=5)"]
    assert panel_titles(figure) == ["dice", "sensitivity"]


def test_paper_table2_matches_the_paper():
    table = reference.paper_table2()
    assert table["dice"] == {"01": (0.69, 0.11), "07": (0.50, 0.11), "08": (0.64, 0.09), "all": (0.61, 0.05)}
    assert table["sensitivity"]["all"] == (0.60, 0.10)
    table["dice"]["01"] = (0.0, 0.0)
    assert reference.paper_table2()["dice"]["01"] == (0.69, 0.11)


def test_metric_boxplots_reject_missing_values():
    rows = metric_rows()
    del rows[2]["dice"]
    with pytest.raises(Planar3DError, match=r"07000X has no 'dice' value\. Received keys:"):
        report_figures.plot_metric_boxplots(rows)
    with pytest.raises(Planar3DError, match=r"Received: rows=\[\]"):
        report_figures.plot_metric_boxplots([])
    with pytest.raises(Planar3DError, match=r"Received: metrics='dice'"):
        report_figures.plot_metric_boxplots(metric_rows(), metrics="dice")


# ----------------------------------------------------------------------------- windows


def test_kept_ranges_follow_eq1_and_tile_the_volume():
    starts = [int(s) for s in window_starts(256, 16, 8)]  # what plot_window_layout draws
    kept = [(s + lo, s + hi) for s, (lo, hi) in zip(starts, kept_slices(256, 16, 8))]
    assert len(starts) == 31
    assert kept[0] == (0, 12)  # window 1: slices 0-11
    assert [(low - s, high - s) for s, (low, high) in zip(starts[1:-1], kept[1:-1])] == [(4, 12)] * 29
    assert (kept[-1][0] - starts[-1], kept[-1][1] - starts[-1]) == (4, 16)  # window 31: slices 4-15
    assert [low for low, _ in kept[1:]] == [high for _, high in kept[:-1]]
    assert kept[-1][1] == 256
    assert kept_slices(16, 16, 8) == [(0, 16)]  # one window covers the volume


@pytest.mark.slow
def test_window_layout_draws_bars_and_picture(tmp_path, rng):
    out = tmp_path / "windows.png"
    figure = notebook_figures.plot_window_layout(64, 16, 8, path=out, image=rng.random((20, 64)))
    assert_png_picture(out)
    assert "7 windows of 16 slices, stride 8, depth 64: window 1 keeps 0-11" in figure.texts[0].get_text()
    bars = figure.axes[1].patches
    assert len(bars) == 2 * 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 60}, r"multiple of stride\. Pad the volume to 64 slices .* Received: depth=60"),
        ({"stride": 20}, r"stride must not exceed size 16 .* Received: stride=20"),
        ({"size": 0}, r"size must be a positive integer\. Received: size=0"),
        ({"size": 80}, r"size must not exceed depth 64\. Received: size=80"),
        ({"image": np.zeros((10, 63))}, r"image must be 2D \(rows, depth=64\).* Received: shape=\(10, 63\)"),
    ],
)
def test_window_layout_rejects_bad_geometry(kwargs, message):
    arguments = {"depth": 64, "size": 16, "stride": 8, **kwargs}
    with pytest.raises(Planar3DError, match=message):
        notebook_figures.plot_window_layout(**arguments)


# ----------------------------------------------------------------------------- other figures


@pytest.mark.slow
def test_preprocessing_titles_give_shapes(tmp_path, head):
    out = tmp_path / "prep.png"
    native = np.transpose(head, (2, 1, 0))[:, ::2]
    figure = notebook_figures.plot_preprocessing(native, head, path=out)
    assert_png_picture(out)
    assert figure.axes[0].get_ylabel().startswith("native 20x14x24")
    assert figure.axes[3].get_ylabel().startswith("preprocessed 24x28x20")
    assert figure.axes[3].get_title() == "preprocessed: sagittal (axis 0) = 12"


@pytest.mark.slow
def test_blending_profiles(tmp_path):
    out = tmp_path / "blend.png"
    profiles = {"middle": np.r_[np.zeros(4), np.ones(8), np.zeros(4)], "mean": np.ones(16)}
    figure = notebook_figures.plot_blending(profiles, path=out)
    assert_png_picture(out)
    assert [axes.get_title(loc="left") for axes in figure.axes] == ["middle", "mean"]
    with pytest.raises(Planar3DError, match=r"profile 'mean' must be a non-empty 1D array\. Received: shape=\(2, 8\)"):
        notebook_figures.plot_blending({"mean": np.ones((2, 8))})


def test_bar_chart(tmp_path):
    out = tmp_path / "bars.png"
    series = {"parameters (M)": [22.9, 23.1], "time (s)": [1.5, 4.0]}
    figure = notebook_figures.plot_bar_chart(["planar", "acs"], series, "value", path=out, log=True)
    assert_png_picture(out)
    assert figure.axes[0].get_yscale() == "log"
    assert len(figure.axes[0].patches) == 4
    with pytest.raises(Planar3DError, match=r"series 'time' must have one value per label \(2\)\. Received: shape=\(3,\)"):
        notebook_figures.plot_bar_chart(["planar", "acs"], {"time": [1, 2, 3]}, "s")
    with pytest.raises(Planar3DError, match=r"log=True needs positive values"):
        notebook_figures.plot_bar_chart(["planar"], {"time": [0.0]}, "s", log=True)


@pytest.mark.slow
def test_save_replaces_existing_file_and_rejects_unknown_format(tmp_path):
    out = tmp_path / "sub" / "curves.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    figure = report_figures.plot_learning_curves({"loss": [1.0, 0.5]}, path=out)
    assert_png_picture(out)
    with pytest.raises(InputFileError, match=r"curves\.xyz: unknown image format '\.xyz'"):
        report_figures.save_figure(figure, tmp_path / "curves.xyz")
    assert not (tmp_path / "curves.xyz").exists()


def test_importing_plots_does_not_import_tensorflow():
    code = ("import sys, planar3d.evaluation.report_figures, planar3d.evaluation.notebook_figures; "
            "print('tensorflow' in sys.modules, 'matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.split() == ["False", "False"]


def test_learning_curves_are_redrawn_at_most_once_a_minute_and_at_the_end(tmp_path, monkeypatch):
    from planar3d.training import callbacks

    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,val_loss\n0,1.0,1.1\n", encoding="utf-8")
    drawn, clock = [], [0.0]
    monkeypatch.setattr(report_figures, "plot_learning_curves", lambda *args, **kwargs: drawn.append(clock[0]))
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    curves = callbacks.LearningCurves(log, tmp_path / "curves.png", min_interval=60)
    for clock[0] in (0.0, 10.0, 59.0, 60.0, 61.0, 130.0):
        curves.on_epoch_end(0)
    assert drawn == [0.0, 60.0, 130.0]  # the first epoch, then once 60 s have passed
    curves.on_train_end()
    assert drawn == [0.0, 60.0, 130.0]  # the last epoch is drawn already
    clock[0] = 140.0
    curves.on_epoch_end(0)
    curves.on_train_end()
    assert drawn == [0.0, 60.0, 130.0, 140.0]  # the end draws the epoch the interval skipped
