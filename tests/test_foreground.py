"""Tests for planar3d.foreground: head mask, crop boxes, paste back."""

from __future__ import annotations

import numpy as np
import pytest

from planar3d.data.foreground import CROP_MULTIPLE, Box, ForegroundWarning, crop_boxes, head_mask, paste
from planar3d.data.preprocess import preprocess
from planar3d.errors import Planar3DError
from planar3d.io.phantom import make_phantom_dataset


def ball_volume(shape=(32, 48, 48), centre=(16, 24, 24), radius=10.0, rng=None) -> np.ndarray:
    """A bright noisy ball (the 'head') in dark noisy air, in [-1, 1] as after preprocessing."""
    rng = rng or np.random.default_rng(0)
    grid = np.indices(shape).astype(np.float32)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    volume = np.where(distance <= radius, 0.2, -0.85) + rng.normal(0, 0.03, shape)
    return np.clip(volume, -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def phantom_scans(tmp_path_factory):
    records = make_phantom_dataset(tmp_path_factory.mktemp("phantom") / "msseg", n_per_centre=1, scale=0.15, seed=3)
    import nibabel as nib

    return [preprocess(nib.load(r.flair), nib.load(r.mask), size=64)[:2] for r in records]


def test_head_mask_on_phantom_covers_every_lesion_and_excludes_the_corners(phantom_scans):
    for volume, lesions in phantom_scans:
        mask = head_mask(volume)
        assert mask.shape == volume.shape and mask.dtype == bool
        assert lesions.sum() > 0 and mask[lesions > 0].all()
        for corner in np.ndindex(2, 2, 2):
            index = tuple(slice(0, 4) if c == 0 else slice(-4, None) for c in corner)
            assert not mask[index].any(), corner
        assert 0.1 < mask.mean() < 0.9


def test_head_mask_fills_a_dark_cavity():
    volume = ball_volume()
    volume[14:18, 22:26, 22:26] = -0.85  # dark "ventricle" inside the head
    mask = head_mask(volume)
    assert mask[14:18, 22:26, 22:26].all()
    assert mask[16, 24, 14] and not mask[16, 24, 13]  # the ball's edge: radius 10 around col 24


def test_no_foreground_gives_an_empty_mask_and_a_warning():
    with pytest.warns(ForegroundWarning, match=r"^no foreground: the scan's intensities do not vary \(all -1\); nothing is segmented$"):
        mask = head_mask(np.full((32, 32, 32), -1.0, dtype=np.float32))
    assert mask.shape == (32, 32, 32) and not mask.any()
    assert crop_boxes(mask) == [None, None, None]


def test_head_touching_the_border_of_the_field_of_view():
    volume = ball_volume(centre=(16, 2, 24))  # the ball is cut by the top rows
    mask = head_mask(volume)
    assert mask[:, 0].any()
    boxes = crop_boxes(mask, per="window")
    for box in boxes:
        assert box is not None and box.row0 == 0
        assert box.row1 <= 48 and box.col1 <= 48
        assert all(s % CROP_MULTIPLE == 0 for s in (box.row0, box.row1, box.col0, box.col1))


def test_crop_boxes_window_scan_and_skipped_windows():
    mask = np.zeros((40, 64, 64), dtype=bool)
    mask[2:10, 20:30, 33:40] = True  # head in windows 0 (slices 0-15) and 1 (8-23) only
    mask[12, 40, 50] = True  # in windows 0 and 1
    boxes = crop_boxes(mask, size=16, stride=8, per="window", margin=0)
    assert boxes == [Box(16, 48, 32, 64), Box(16, 48, 32, 64), None, None]
    boxes = crop_boxes(mask, size=16, stride=8, per="window", margin=4)
    assert boxes[0] == Box(16, 48, 16, 64)
    boxes = crop_boxes(mask[:, :, :48], size=16, stride=8, per="window", margin=4, bucket=48)
    assert boxes[0] == Box(16, 64, 0, 48)  # sizes rounded up to 48, kept inside the field of view
    mask[30, 5, 5] = True
    per_window = crop_boxes(mask, size=16, stride=8, per="window", margin=0)
    scan = crop_boxes(mask, size=16, stride=8, per="scan", margin=0)
    assert per_window[3] == Box(0, 16, 0, 16) and per_window[2] == Box(0, 16, 0, 16)
    assert scan == [Box(0, 48, 0, 64)] * 4


def test_crop_boxes_errors():
    mask = np.zeros((32, 32, 32), dtype=bool)
    with pytest.raises(Planar3DError, match=r"Received: per='slice'$"):
        crop_boxes(mask, per="slice")
    with pytest.raises(Planar3DError, match=r"Received: mask.shape=\(32, 30, 32\)$"):
        crop_boxes(mask[:, :30])
    with pytest.raises(Planar3DError, match=r"Received: bucket=24$"):
        crop_boxes(mask, bucket=24)
    with pytest.raises(Planar3DError, match=r"Received: margin=-1$"):
        crop_boxes(mask, margin=-1)


def test_paste_puts_the_box_back_and_zeros_elsewhere(rng):
    box = Box(16, 48, 0, 32)
    inner = rng.random((3, 32, 32), dtype=np.float32)
    full = paste(inner, box, (3, 64, 48))
    np.testing.assert_array_equal(full[:, 16:48, 0:32], inner)
    assert full.sum() == pytest.approx(inner.sum()) and full[:, :16].max() == 0 and full[:, :, 32:].max() == 0
    with pytest.raises(Planar3DError, match=r"does not fit"):
        paste(inner[:, :16], box, (3, 64, 48))
