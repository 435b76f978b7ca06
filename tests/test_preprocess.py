"""Tests for planar3d.preprocess: orientation from the affine, resampling, scaling, exact inverse."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from planar3d.data.preprocess import SAGITTAL_AXCODES, preprocess, to_native
from planar3d.errors import Planar3DError
from planar3d.io.nifti import load_nifti, save_nifti

SPACING_AFFINE = np.diag([1.2, 1.0, 0.9, 1.0])


def canonical_head(rng: np.random.Generator, shape=(20, 24, 28)) -> tuple[np.ndarray, np.ndarray]:
    """A RAS-stored scan with an asymmetric bright blob, and its lesion mask."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    scan = np.exp(-((grid[0] - 0.3) ** 2 + (grid[1] + 0.2) ** 2 + grid[2] ** 2) * 3) + 0.05 * rng.random(shape)
    mask = ((grid[0] - 0.4) ** 2 + (grid[1] - 0.3) ** 2 + (grid[2] + 0.4) ** 2 < 0.15).astype(np.uint8)
    return scan.astype(np.float32), mask


def restored(data: np.ndarray, affine: np.ndarray, ornt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with permuted/flipped voxel axes (same world geometry)."""
    return apply_orientation(data, ornt), affine @ inv_ornt_aff(ornt, data.shape)


@pytest.mark.parametrize(
    "axcodes", [("R", "A", "S"), ("L", "P", "S"), ("S", "A", "R"), ("A", "I", "L"), ("P", "R", "I")]
)
def test_orientation_does_not_change_the_preprocessed_volume(rng, axcodes):
    scan, mask = canonical_head(rng)
    expected = preprocess(nib.Nifti1Image(scan, SPACING_AFFINE), nib.Nifti1Image(mask, SPACING_AFFINE), size=32)
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(axcodes))
    stored_scan, affine = restored(scan, SPACING_AFFINE, ornt)
    stored_mask, _ = restored(mask, SPACING_AFFINE, ornt)
    assert nib.aff2axcodes(affine) == axcodes
    volume, out_mask, meta = preprocess(nib.Nifti1Image(stored_scan, affine), nib.Nifti1Image(stored_mask, affine), size=32)
    np.testing.assert_array_equal(volume, expected[0])
    np.testing.assert_array_equal(out_mask, expected[1])
    assert meta["native_axcodes"] == list(axcodes)
    assert meta["native_shape"] == list(stored_scan.shape)


def test_axis0_runs_left_to_right_and_rows_top_down(rng):
    scan = np.zeros((16, 16, 16), np.float32)
    scan[12, 8, 8] = 1.0  # right of centre (RAS storage)
    scan[8, 8, 13] = 2.0  # superior of centre
    volume, _, _ = preprocess(nib.Nifti1Image(scan, np.eye(4)), size=16)
    assert SAGITTAL_AXCODES == ("R", "I", "P")
    right = np.unravel_index(np.argmin(np.abs(volume - (2 * 1 / 2 - 1))), volume.shape)
    superior = np.unravel_index(np.argmax(volume), volume.shape)
    assert right == (12, 7, 7)  # axis 0 toward right, rows toward inferior, cols toward posterior
    assert superior == (8, 2, 7)


def test_output_ranges_dtypes_and_meta(rng):
    scan, mask = canonical_head(rng)
    volume, out_mask, meta = preprocess(nib.Nifti1Image(scan * 300, SPACING_AFFINE), nib.Nifti1Image(mask, SPACING_AFFINE), size=32)
    assert volume.shape == out_mask.shape == (32, 32, 32)
    assert volume.dtype == out_mask.dtype == np.float32
    assert volume.min() == -1.0 and volume.max() == 1.0
    assert set(np.unique(out_mask)) == {0.0, 1.0}
    assert json.loads(json.dumps(meta)) == meta
    assert meta["native_spacing"] == pytest.approx([1.2, 1.0, 0.9])
    assert meta["native_lesion_ratio"] == pytest.approx(mask.mean())
    # RAS storage -> (R, I, P): the reoriented axes are native axes 0, 2, 1
    assert meta["reoriented_shape"] == [20, 28, 24]
    assert meta["zoom"] == pytest.approx([32 / 20, 32 / 28, 32 / 24])


def test_robust_scaling_ignores_outliers(rng):
    scan, _ = canonical_head(rng)
    scan[0, 0, 0] = 1000.0
    plain, _, _ = preprocess(nib.Nifti1Image(scan, SPACING_AFFINE), size=32)
    robust, _, meta = preprocess(nib.Nifti1Image(scan, SPACING_AFFINE), size=32, robust=True)
    assert robust.min() == -1.0 and robust.max() == 1.0
    # the outlier squashes the plain range; the robust one keeps the anatomy's contrast
    spread = lambda v: np.subtract(*np.percentile(v, [95, 5]))  # noqa: E731
    assert spread(robust) > 10 * spread(plain)
    assert meta["robust"] is True


@pytest.mark.parametrize("size", [0, 30, -16, 32.0, True])
def test_bad_size(rng, size):
    scan, _ = canonical_head(rng)
    with pytest.raises(Planar3DError, match=rf"size must be a positive multiple of 16\. Received: size={size!r}$"):
        preprocess(nib.Nifti1Image(scan, SPACING_AFFINE), size=size)


def test_to_native_is_the_exact_inverse_of_reorientation(rng):
    """At size == native edge no resampling happens, so the round trip is exact."""
    scan = rng.random((32, 32, 32)).astype(np.float32)
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(("A", "L", "I")))
    stored, affine = restored(scan, SPACING_AFFINE, ornt)
    volume, _, meta = preprocess(nib.Nifti1Image(stored, affine), size=32)
    native = to_native(volume, json.loads(json.dumps(meta)), order=0)
    low, high = stored.min(), stored.max()
    np.testing.assert_allclose(native, (stored - low) / (high - low) * 2 - 1, atol=1e-6)


def test_to_native_shape_and_saved_grid(tmp_path, rng):
    scan, mask = canonical_head(rng, shape=(18, 22, 26))
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(("S", "P", "L")))
    stored, affine = restored(scan, SPACING_AFFINE, ornt)
    reference_img = nib.Nifti1Image(stored, affine)
    reference_img.set_qform(affine, code=1)
    nib.save(reference_img, tmp_path / "scan.nii.gz")
    reference = load_nifti(tmp_path / "scan.nii.gz")
    volume, _, meta = preprocess(reference, size=48)
    native = to_native(volume, meta)
    assert native.shape == stored.shape and native.dtype == np.float32
    saved = nib.load(save_nifti(native, reference, tmp_path / "prob.nii.gz"))
    np.testing.assert_array_equal(saved.affine, reference.affine)
    assert saved.shape == reference.shape
    # order-1 resampling of the rescaled scan lands close to the rescaled original
    rescaled = (stored - stored.min()) / np.ptp(stored) * 2 - 1
    assert np.abs(native - rescaled).mean() < 0.02


def test_mask_round_trip_dice(rng):
    _, mask = canonical_head(rng, shape=(40, 48, 44))
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(("L", "S", "P")))
    stored_mask, affine = restored(mask, SPACING_AFFINE, ornt)
    scan = nib.Nifti1Image(rng.random(stored_mask.shape).astype(np.float32), affine)
    _, small_mask, meta = preprocess(scan, nib.Nifti1Image(stored_mask, affine), size=32)
    back = to_native(small_mask, meta) >= 0.5
    truth = stored_mask > 0
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    assert dice > 0.85


def test_to_native_rejects_wrong_shape_and_order(rng):
    scan, _ = canonical_head(rng)
    volume, _, meta = preprocess(nib.Nifti1Image(scan, SPACING_AFFINE), size=16)
    with pytest.raises(Planar3DError, match=r"volume shape must be \(16, 16, 16\) as in meta\. Received: shape=\(32, 32, 32\)"):
        to_native(np.zeros((32, 32, 32)), meta)
    with pytest.raises(Planar3DError, match=r"order must be an integer in 0\.\.5\. Received: order=7"):
        to_native(volume, meta, order=7)


def test_preprocess_rejects_mismatched_mask_and_2d_scan(rng):
    scan, _ = canonical_head(rng)
    with pytest.raises(Planar3DError, match=r"mask shape must equal the scan shape \(20, 24, 28\)\. Received: shape=\(4, 4, 4\)"):
        preprocess(nib.Nifti1Image(scan, SPACING_AFFINE), nib.Nifti1Image(np.zeros((4, 4, 4)), SPACING_AFFINE), size=16)
    with pytest.raises(Planar3DError, match=r"scan must be 3D\. Received: shape=\(20, 24\)"):
        preprocess(nib.Nifti1Image(scan[..., 0], np.eye(4)), size=16)
