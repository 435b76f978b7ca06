"""QC mosaics in anatomical orientation: a lesion on the subject's left is drawn on the image's
right in radiological convention (left in neurological), whatever the scan's voxel order."""

from __future__ import annotations

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from planar3d.evaluation.qc_mosaic import PLANES, display_plane, plot_qc_mosaic, side_labels, to_ras


def _rotation_x(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


#: voxel -> world linear parts: LAS (MNI-like FSL), RAS, LPS (DICOM-like), and an oblique LPS tilted 20 degrees
LINEAR = {
    "LAS": np.diag([-3.0, 3.0, 3.0]),
    "RAS": np.diag([3.0, 3.0, 3.0]),
    "LPS": np.diag([-3.0, -3.0, 3.0]),
    "oblique": _rotation_x(20) @ np.diag([-3.0, -3.0, 4.0]),
}
LESION_MM = np.array([-45.0, 10.0, 15.0])  # RAS: x < 0 is the subject's left


def _scan(kind: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    shape = (64, 64, 48)
    affine = np.eye(4)
    affine[:3, :3] = LINEAR[kind]
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    ijk = np.indices(shape).reshape(3, -1)
    world = (affine[:3, :3] @ ijk + affine[:3, 3:4]).T
    head = (((world / np.array([70.0, 85.0, 65.0])) ** 2).sum(1) <= 1).reshape(shape)
    lesion = (np.linalg.norm(world - LESION_MM, axis=1) <= 9).reshape(shape)
    volume = np.where(head, 100.0, 0.0) + np.where(lesion, 80.0, 0.0)
    return nib.Nifti1Image(volume.astype(np.float32), affine), lesion.astype(np.uint8)


def _red_columns(png: np.ndarray, row: int) -> np.ndarray:
    """Horizontal positions (0..1) of the red outline pixels in one third of the picture (a plane's row)."""
    height = png.shape[0]
    band = png[int(0.1 * height) + row * int(0.3 * height): int(0.1 * height) + (row + 1) * int(0.3 * height)]
    red = (band[..., 0] > 0.7) & (band[..., 1] < 0.35) & (band[..., 2] < 0.35)
    return np.flatnonzero(red.any(axis=0)) / png.shape[1]


@pytest.mark.parametrize("kind", list(LINEAR))
def test_a_left_lesion_is_on_the_right_in_radiological_convention(kind, tmp_path):
    scan, lesion = _scan(kind)
    for radiological in (True, False):
        path = tmp_path / f"{kind}_{radiological}.png"
        plot_qc_mosaic(scan, prediction=lesion, path=path, title=kind, radiological=radiological, columns=1)
        png = matplotlib.image.imread(path)
        for row in (0, 1):  # axial, coronal
            columns = _red_columns(png, row)
            assert columns.size, f"{kind}: no lesion outline in row {row}"
            side = columns.mean()
            assert (side > 0.55) if radiological else (side < 0.45), (kind, radiological, row, side)


def test_display_planes_follow_the_conventions():
    scan, lesion = _scan("LPS")
    volume, (mask,), spacing, affine = to_ras(scan, lesion)
    np.testing.assert_allclose(spacing, [3, 3, 3])
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    k = int(np.argwhere(mask).mean(0)[2].round())
    axial = display_plane(mask.astype(float), "axial", k, radiological=True)
    rows, cols = np.nonzero(axial)
    assert cols.mean() > axial.shape[1] / 2  # left lesion on the image right
    assert rows.mean() < axial.shape[0] / 2  # anterior (y = +10 mm) above the middle
    np.testing.assert_array_equal(display_plane(mask, "axial", k, False), axial[:, ::-1])
    i = int(np.argwhere(mask).mean(0)[0].round())
    sagittal = display_plane(mask.astype(float), "sagittal", i)
    rows, cols = np.nonzero(sagittal)
    assert cols.mean() < sagittal.shape[1] / 2 and rows.mean() < sagittal.shape[0] / 2  # anterior left, superior up
    assert side_labels("axial") == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert side_labels("coronal", radiological=False) == {"left": "L", "right": "R", "top": "S", "bottom": "I"}
    assert side_labels("sagittal") == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    assert list(PLANES) == ["axial", "coronal", "sagittal"]
