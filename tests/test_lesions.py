"""Tests of planar3d.lesions: connected components and the per-scan lesion report."""

from __future__ import annotations

import numpy as np
import pytest

from planar3d.errors import Planar3DError
from planar3d.evaluation.lesions import (
    as_mask,
    bounding_box,
    label_lesions,
    lesion_summary,
    lesion_table,
    min_lesion_voxels,
    voxel_spacing,
)


def _three_lesions() -> np.ndarray:
    """A 32³ mask with lesions of 1, 8 and 27 voxels (in that C order)."""
    mask = np.zeros((32, 32, 32), dtype=np.uint8)
    mask[2, 2, 2] = 1  # 1 voxel
    mask[10:12, 10:12, 10:12] = 1  # 8 voxels
    mask[20:23, 5:8, 25:28] = 1  # 27 voxels
    return mask


def test_label_lesions_orders_ids_by_decreasing_size():
    labels, n = label_lesions(_three_lesions())
    assert n == 3
    assert labels.dtype == np.int32
    assert labels[21, 6, 26] == 1 and labels[10, 10, 10] == 2 and labels[2, 2, 2] == 3
    assert np.bincount(labels.reshape(-1)).tolist()[1:] == [27, 8, 1]


def test_label_lesions_ties_keep_c_order():
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[1, 1, 1] = mask[5, 5, 5] = True
    labels, n = label_lesions(mask)
    assert n == 2 and labels[1, 1, 1] == 1 and labels[5, 5, 5] == 2


@pytest.mark.parametrize("connectivity, expected", [(6, 3), (18, 2), (26, 1)])
def test_label_lesions_connectivity(connectivity, expected):
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[2, 2, 2] = True
    mask[2, 3, 3] = True  # shares an edge with (2, 2, 2)
    mask[3, 4, 4] = True  # shares a corner with (2, 3, 3)
    assert label_lesions(mask, connectivity)[1] == expected


def test_label_lesions_min_voxels_drops_small_components():
    labels, n = label_lesions(_three_lesions(), min_voxels=8)
    assert n == 2
    assert labels[2, 2, 2] == 0 and labels[10, 10, 10] == 2


def test_label_lesions_empty_mask():
    labels, n = label_lesions(np.zeros((4, 5, 6), dtype=bool))
    assert n == 0 and labels.shape == (4, 5, 6) and not labels.any()


def test_label_lesions_does_not_modify_input():
    mask = _three_lesions()
    before = mask.copy()
    label_lesions(mask, min_voxels=5)
    np.testing.assert_array_equal(mask, before)


def test_label_lesions_rejects_bad_input():
    with pytest.raises(Planar3DError, match=r"connectivity must be 6, 18 or 26. Received: connectivity=8"):
        label_lesions(np.zeros((4, 4, 4)), connectivity=8)
    with pytest.raises(Planar3DError, match=r"min_voxels must be >= 0. Received: min_voxels=-1"):
        label_lesions(np.zeros((4, 4, 4)), min_voxels=-1)
    with pytest.raises(Planar3DError, match=r"mask must be binary .* Received: values starting \[0.0, 0.5\]"):
        label_lesions(np.array([0.0, 0.5]).reshape(1, 1, 2))
    with pytest.raises(Planar3DError, match=r"must be a 3D .* Received: shape=\(4, 4\)"):
        label_lesions(np.zeros((4, 4)))


def test_as_mask_accepts_bool_and_zero_one():
    values = np.array([0, 1, 1, 0], dtype=np.float32).reshape(1, 2, 2)
    np.testing.assert_array_equal(as_mask(values), values.astype(bool))
    assert as_mask(values).dtype == bool


def test_bounding_box():
    assert bounding_box(np.zeros((3, 3, 3), dtype=bool)) is None
    a = np.zeros((10, 10, 10), dtype=bool)
    b = np.zeros((10, 10, 10), dtype=bool)
    a[2, 3, 4] = True
    b[5, 1, 7] = True
    assert bounding_box(a, b) == (slice(2, 6), slice(1, 4), slice(4, 8))


def test_min_lesion_voxels_follows_anima_floor_rule():
    assert min_lesion_voxels(3.0, 1.0) == 4  # 3 voxels dropped, 4 kept
    assert min_lesion_voxels(3.0, 1.5) == 3  # floor(2) = 2 dropped
    assert min_lesion_voxels(3.0, 0.7) == 5  # floor(4.28) = 4 dropped
    assert min_lesion_voxels(0.0, 0.5) == 1
    with pytest.raises(Planar3DError, match=r"Received: min_lesion_mm3=-1"):
        min_lesion_voxels(-1, 1.0)


def test_voxel_spacing_rejects_bad_values():
    np.testing.assert_array_equal(voxel_spacing((1, 2, 3)), [1.0, 2.0, 3.0])
    with pytest.raises(Planar3DError, match=r"three positive voxel sizes in mm. Received: spacing=\(1, 0, 1\)"):
        voxel_spacing((1, 0, 1))
    with pytest.raises(Planar3DError, match=r"Received: spacing=\(1, 1\)"):
        voxel_spacing((1, 1))


def test_lesion_table_rows_volumes_and_centroids():
    affine = np.diag([2.0, 0.5, 1.0, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 7.0]
    table = lesion_table(_three_lesions(), affine)
    assert [row["id"] for row in table] == [1, 2, 3]
    assert [row["voxels"] for row in table] == [27, 8, 1]
    assert [row["volume_mm3"] for row in table] == [27.0, 8.0, 1.0]  # voxel volume 2 * 0.5 * 1
    first = table[0]
    assert (first["centroid_i"], first["centroid_j"], first["centroid_k"]) == (21.0, 6.0, 26.0)
    assert (first["centroid_x_mm"], first["centroid_y_mm"], first["centroid_z_mm"]) == (32.0, 7.0, 33.0)
    assert (table[1]["centroid_i"], table[1]["centroid_j"], table[1]["centroid_k"]) == (10.5, 10.5, 10.5)
    assert all(row["mean_probability"] is None for row in table)

    assert lesion_table(_three_lesions(), affine, labels=label_lesions(_three_lesions())) == table
    with pytest.raises(Planar3DError, match=r"^labels must have the mask's shape \(32, 32, 32\). Received: shape=\(2, 2, 2\)$"):
        lesion_table(_three_lesions(), affine, labels=(np.zeros((2, 2, 2), np.int32), 0))


def test_lesion_table_applies_rotation_of_affine():
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[1, 2, 3] = True
    affine = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    (row,) = lesion_table(mask, affine)
    assert (row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]) == (3.0, 1.0, 2.0)


def test_lesion_table_mean_probability():
    mask = _three_lesions()
    probabilities = np.zeros(mask.shape, dtype=np.float32)
    probabilities[10:12, 10:12, 10:12] = 0.5
    probabilities[10, 10, 10] = 1.0  # mean over 8 voxels: (7 * 0.5 + 1) / 8
    probabilities[2, 2, 2] = 0.25
    table = lesion_table(mask, np.eye(4), probabilities=probabilities)
    assert [row["mean_probability"] for row in table] == [0.0, 0.5625, 0.25]


def test_lesion_table_min_volume_and_summary():
    affine = np.diag([1.0, 1.0, 1.5, 1.0])  # voxel 1.5 mm³: lesions of <= 2 voxels dropped at 3 mm³
    mask = _three_lesions()
    table = lesion_table(mask, affine, min_lesion_mm3=3.0)
    assert [row["voxels"] for row in table] == [27, 8]
    assert lesion_summary(table) == {"n_lesions": 2, "total_volume_ml": 35 * 1.5 / 1000}
    assert lesion_summary(lesion_table(np.zeros((4, 4, 4)), affine)) == {"n_lesions": 0, "total_volume_ml": 0.0}


def test_lesion_table_ids_match_label_map():
    mask = _three_lesions()
    labels, _ = label_lesions(mask, min_voxels=min_lesion_voxels(3.0, 1.0))
    table = lesion_table(mask, np.eye(4), min_lesion_mm3=3.0)
    for row in table:
        assert np.count_nonzero(labels == row["id"]) == row["voxels"]


def test_lesion_table_rejects_bad_input():
    mask = _three_lesions()
    with pytest.raises(Planar3DError, match=r"affine must be a finite 4x4 matrix. Received: shape=\(3, 3\)"):
        lesion_table(mask, np.eye(3))
    with pytest.raises(Planar3DError, match=r"affine must be invertible"):
        lesion_table(mask, np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(Planar3DError, match=r"probabilities must have the mask's shape .* Received: shape=\(2, 2, 2\)"):
        lesion_table(mask, np.eye(4), probabilities=np.zeros((2, 2, 2)))
    probabilities = np.zeros(mask.shape)
    probabilities[2, 2, 2] = np.nan
    with pytest.raises(Planar3DError, match=r"probabilities must be finite inside lesions"):
        lesion_table(mask, np.eye(4), probabilities=probabilities)


def test_lesions_mostly_outside_the_head_mask_are_flagged():
    mask = np.zeros((10, 12, 14), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels, 2 of them in the head: outside
    mask[5:7, 5:9, 5:9] = 1  # 32 voxels, all in the head (id 1, the largest)
    mask[8, 10, 10:14] = 1  # 4 voxels, exactly 2 in the head: in (half counts as in)
    head = np.zeros(mask.shape, bool)
    head[2:, 2:, 2:12] = True
    rows = lesion_table(mask, np.eye(4), head=head)
    assert [(row["id"], row["voxels"], row["outside_head"]) for row in rows] == [(1, 32, False), (2, 8, True), (3, 4, False)]
    assert "outside_head" not in lesion_table(mask, np.eye(4))[0]
    with pytest.raises(Planar3DError, match=r"head must have the mask's shape \(10, 12, 14\). Received: shape=\(10, 12\)"):
        lesion_table(mask, np.eye(4), head=head[..., 0])
