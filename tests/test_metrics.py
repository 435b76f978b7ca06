"""Tests of planar3d.metrics on hand-built masks whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planar3d.errors import Planar3DError
from planar3d.evaluation.metrics import (
    SCAN_METRIC_KEYS,
    absolute_volume_difference_ml,
    dice,
    hausdorff_distance,
    hd95,
    lesion_detection,
    lesion_f1,
    mean_surface_distance,
    msseg_metrics,
    npv,
    ppv,
    relative_volume_error,
    scan_metrics,
    sensitivity,
    specificity,
    summarise,
    surface_distances,
)

MSSEG_KEYS = {
    "dice", "sensitivity", "specificity", "ppv", "npv", "relative_volume_error", "hausdorff", "hd95",
    "mean_surface_distance", "lesion_sensitivity", "lesion_ppv", "lesion_f1", "n_reference_lesions",
    "n_predicted_lesions",
}
SHAPE = (32, 32, 32)


def _empty(shape=SHAPE) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def _sphere(shape, spacing, centre_mm, radius_mm) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    squared = sum(((grid[axis] * spacing[axis]) - centre_mm[axis]) ** 2 for axis in range(3))
    return squared <= radius_mm**2


# ----------------------------------------------------------------------------- voxel-wise
def test_voxel_metrics_on_a_known_confusion():
    reference = _empty((4, 4, 4))
    prediction = _empty((4, 4, 4))
    reference[0, 0, :4] = True  # 4 voxels
    prediction[0, 0, 2:4] = True  # 2 true positives
    prediction[1, 1, :2] = True  # 2 false positives; 2 false negatives; 58 true negatives
    assert dice(reference, prediction) == 0.5
    assert sensitivity(reference, prediction) == 0.5
    assert ppv(reference, prediction) == 0.5
    assert specificity(reference, prediction) == 58 / 60
    assert npv(reference, prediction) == 58 / 60
    assert relative_volume_error(reference, prediction) == 0.0
    assert absolute_volume_difference_ml(reference, prediction, (1, 1, 1)) == 0.0


def test_dice_sensitivity_ppv_differ_when_prediction_is_larger():
    reference = _empty((4, 4, 4))
    reference[0, 0, :2] = True
    prediction = _empty((4, 4, 4))
    prediction[0, 0, :] = True  # 2 TP, 2 FP, 0 FN
    assert dice(reference, prediction) == 4 / 6
    assert sensitivity(reference, prediction) == 1.0
    assert ppv(reference, prediction) == 0.5
    assert relative_volume_error(reference, prediction) == 100.0
    assert absolute_volume_difference_ml(reference, prediction, (2.0, 1.0, 0.5)) == 2 * 1.0 / 1000


@pytest.mark.parametrize("reference_empty, prediction_empty", [(True, True), (True, False), (False, True)])
def test_voxel_metrics_empty_cases(reference_empty, prediction_empty):
    lesion = _empty((4, 4, 4))
    lesion[1:3, 1:3, 1:3] = True
    reference = _empty((4, 4, 4)) if reference_empty else lesion
    prediction = _empty((4, 4, 4)) if prediction_empty else lesion
    expected = 1.0 if reference_empty and prediction_empty else 0.0
    assert dice(reference, prediction) == expected
    assert sensitivity(reference, prediction) == (expected if reference_empty else 0.0)
    assert ppv(reference, prediction) == (expected if prediction_empty else 0.0)
    expected_rve = {(True, True): 0.0, (True, False): 100.0, (False, True): -100.0}
    assert relative_volume_error(reference, prediction) == expected_rve[(reference_empty, prediction_empty)]


def test_specificity_and_npv_when_everything_is_lesion():
    full = np.ones((2, 2, 2), dtype=bool)
    partial = full.copy()
    partial[0, 0, 0] = False
    assert specificity(full, full) == 1.0 and npv(full, full) == 1.0
    assert specificity(full, partial) == 0.0  # no true negative possible, masks differ
    assert npv(partial, full) == 0.0


def test_inputs_are_checked():
    with pytest.raises(Planar3DError, match=r"same shape; reference is \(4, 4, 4\). Received: prediction shape=\(4, 4, 5\)"):
        dice(_empty((4, 4, 4)), _empty((4, 4, 5)))
    with pytest.raises(Planar3DError, match=r"prediction must be binary .* Received: values starting \[0.0, 0.7\]"):
        dice(_empty((1, 1, 2)), np.array([0.0, 0.7]).reshape(1, 1, 2))
    with pytest.raises(Planar3DError, match=r"Received: spacing=\(1, 1\)"):
        hd95(_empty(), _empty(), (1, 1))


def test_accepts_zero_one_integers_and_leaves_inputs_alone():
    reference = np.zeros(SHAPE, dtype=np.uint8)
    reference[5:9, 5:9, 5:9] = 1
    prediction = np.roll(reference, 2, axis=0)
    before = (reference.copy(), prediction.copy())
    result = msseg_metrics(reference, prediction, (1, 1, 1))
    assert result["dice"] == 0.5
    np.testing.assert_array_equal(reference, before[0])
    np.testing.assert_array_equal(prediction, before[1])


# ----------------------------------------------------------------------------- distances
def test_distances_between_two_voxels_are_exact_and_spacing_aware():
    reference = _empty()
    prediction = _empty()
    reference[3, 4, 5] = True
    prediction[6, 6, 5] = True  # 3 slices * 1 mm and 2 rows * 2 mm apart: 5 mm
    distances = surface_distances(reference, prediction, (1.0, 2.0, 1.0))
    assert distances == {"hausdorff": 5.0, "hd95": 5.0, "mean_surface_distance": 5.0}


def _brute_force_distances(reference, prediction, spacing) -> dict:
    """The three distances from their definitions, by all-pairs distances (small masks only)."""

    def contour(mask):
        padded = np.pad(mask, 1)
        inner = np.ones_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return mask & ~inner

    def nearest(points, targets):
        points, targets = np.argwhere(points) * spacing, np.argwhere(targets) * spacing
        return np.sqrt(((points[:, None, :] - targets[None, :, :]) ** 2).sum(-1)).min(axis=1)

    spacing = np.asarray(spacing, dtype=float)
    to_prediction, to_reference = nearest(contour(reference), contour(prediction)), nearest(contour(prediction), contour(reference))
    mask_distances = [nearest(reference & ~prediction, prediction) if (reference & ~prediction).any() else [0.0],
                      nearest(prediction & ~reference, reference) if (prediction & ~reference).any() else [0.0]]
    return {
        "hausdorff": max(float(np.max(d)) for d in mask_distances),
        "hd95": float(max(np.percentile(to_prediction, 95), np.percentile(to_reference, 95))),
        "mean_surface_distance": float(np.concatenate([to_prediction, to_reference]).mean()),
    }


@pytest.mark.parametrize("spacing,shape,radii", [
    ((1.0, 1.0, 1.0), (40, 40, 40), (9, 5)),
    ((2.0, 1.0, 0.8), (24, 48, 60), (16, 6)),
], ids=["isotropic", "anisotropic"])
def test_concentric_spheres_match_the_definitions_exactly(spacing, shape, radii):
    centre = (20.0, 20.0, 20.0) if shape == (40, 40, 40) else (24.0, 24.0, 24.0)
    outer = _sphere(shape, spacing, centre, radii[0])
    inner = _sphere(shape, spacing, centre, radii[1])
    for reference, prediction in ((outer, inner), (inner, outer)):
        distances = surface_distances(reference, prediction, spacing)
        expected = _brute_force_distances(reference, prediction, spacing)
        assert distances == pytest.approx(expected, rel=1e-12, abs=0)
    # and, voxelised, they stay within one voxel of the radius difference
    largest_voxel = max(spacing)
    assert abs(surface_distances(outer, inner, spacing)["mean_surface_distance"] - (radii[0] - radii[1])) <= largest_voxel


def test_hd95_exceeds_hausdorff_for_a_nested_prediction_with_a_hole():
    # docs/deviations.md: Hausdorff (Anima) works on the masks, hd95 on the contours. The
    # prediction is the reference cube with a 4^3 cavity: every voxel of the cavity is at most
    # 2 voxels from the prediction (Hausdorff 2), but the cavity's wall (96 of the prediction's
    # 1448 contour voxels, > 5 %) is 5 voxels from the reference's contour (hd95 5).
    reference = np.zeros((24, 24, 24), dtype=bool)
    reference[4:20, 4:20, 4:20] = True
    prediction = reference.copy()
    prediction[10:14, 10:14, 10:14] = False
    distances = surface_distances(reference, prediction, (1.0, 1.0, 1.0))
    assert distances == {"hausdorff": 2.0, "hd95": 5.0, "mean_surface_distance": pytest.approx(96 * 5 / (1352 + 1448), abs=1e-15)}
    assert distances["hd95"] > distances["hausdorff"]
    assert distances == pytest.approx(_brute_force_distances(reference, prediction, (1.0, 1.0, 1.0)), rel=1e-12, abs=0)


def test_shifted_cubes_have_the_shift_as_hausdorff():
    reference = _empty()
    reference[4:12, 4:12, 4:12] = True
    prediction = np.roll(reference, 3, axis=2)
    assert hausdorff_distance(reference, prediction, (1, 1, 0.5)) == 1.5
    assert hd95(reference, prediction, (1, 1, 0.5)) == 1.5


def test_hausdorff_follows_anima_for_a_nested_prediction():
    # Anima's Hausdorff filter works on the masks: the nested prediction adds 0 in its
    # direction; contour distances (hd95, mean) still see its surface 5 voxels inside.
    reference = _empty()
    reference[4:20, 4:20, 4:20] = True
    prediction = _empty()
    prediction[9:15, 9:15, 9:15] = True
    spacing = (1.0, 1.0, 1.0)
    assert hausdorff_distance(reference, prediction, spacing) == math.sqrt(3 * 5**2)  # reference corner
    assert mean_surface_distance(reference, prediction, spacing) > 5.0


def test_contour_on_the_image_border_follows_itk():
    # ITK's BinaryContourImageFilter (Anima) does not treat the outside of the image as
    # background: a corner cube 3x3x3 has 27 - 2**3 = 19 contour voxels (those with a
    # coordinate equal to 2), not all 27; a mask filling the image falls back to its border.
    from planar3d.evaluation.metrics import _contour

    corner = _empty((5, 5, 5))
    corner[:3, :3, :3] = True
    contour = _contour(corner)
    assert contour.sum() == 19 and not contour[:2, :2, :2].any() and contour[2, 0, 0]
    full = np.ones((3, 4, 5), dtype=bool)
    assert _contour(full).sum() == 3 * 4 * 5 - 1 * 2 * 3


def test_surface_distances_of_masks_on_the_image_border():
    # two slabs along the last axis, touching five faces of the image: their ITK contours are
    # the planes z=1 and z=2, one voxel (2 mm) apart everywhere; counting the border as contour
    # (the former behaviour) would pair border voxels at distance 0 and lower the mean
    reference = _empty((4, 4, 6))
    reference[:, :, :2] = True
    prediction = _empty((4, 4, 6))
    prediction[:, :, :3] = True
    distances = surface_distances(reference, prediction, (1.0, 1.0, 2.0))
    assert distances == {"hausdorff": 2.0, "hd95": 2.0, "mean_surface_distance": 2.0}
    # the same masks away from the border: the crop to the masks keeps their true contours
    padded = [np.pad(m, 2) for m in (reference, prediction)]
    assert surface_distances(*padded, (1.0, 1.0, 2.0))["hausdorff"] == 2.0


@pytest.mark.parametrize("which", ["reference", "prediction"])
def test_distances_with_one_empty_mask_are_the_image_diagonal(which):
    lesion = _empty((4, 5, 6))
    lesion[1, 1, 1] = True
    masks = {"reference": lesion, "prediction": _empty((4, 5, 6))}
    if which == "prediction":
        masks = {"reference": _empty((4, 5, 6)), "prediction": lesion}
    expected = math.sqrt((4 * 2.0) ** 2 + 5**2 + 6**2)
    distances = surface_distances(masks["reference"], masks["prediction"], (2.0, 1.0, 1.0))
    assert distances == {"hausdorff": expected, "hd95": expected, "mean_surface_distance": expected}


def test_distances_with_both_masks_empty_are_zero():
    assert surface_distances(_empty(), _empty(), (1, 1, 1)) == {
        "hausdorff": 0.0, "hd95": 0.0, "mean_surface_distance": 0.0,
    }


# ----------------------------------------------------------------------------- lesion F1
def test_lesion_f1_simple_overlap_rule():
    reference = _empty()
    prediction = _empty()
    reference[2:5, 2:5, 2:5] = True  # lesion A, hit by one voxel
    reference[20:23, 20:23, 20:23] = True  # lesion B, missed
    prediction[4, 4, 4] = True
    prediction[10:12, 10:12, 10:12] = True  # false positive
    prediction[25, 25, 25] = True  # false positive
    # lesion sensitivity 1/2, lesion precision 1/3
    assert lesion_f1(reference, prediction) == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3), abs=0)


def test_lesion_f1_connectivity_changes_lesion_count():
    reference = _empty()
    reference[5, 5, 5] = reference[6, 6, 6] = True  # corner neighbours: 2 lesions at 6-, 1 at 26-connectivity
    prediction = _empty()
    prediction[5, 5, 5] = True
    assert lesion_f1(reference, prediction, connectivity=6) == pytest.approx(2 * 0.5 / 1.5, abs=0)
    assert lesion_f1(reference, prediction, connectivity=26) == 1.0


def test_lesion_f1_empty_cases():
    lesion = _empty()
    lesion[3, 3, 3] = True
    assert lesion_f1(_empty(), _empty()) == 1.0
    assert lesion_f1(lesion, _empty()) == 0.0
    assert lesion_f1(_empty(), lesion) == 0.0


# ----------------------------------------------------------------------------- MSSEG detection
def _prefix_block(count: int) -> np.ndarray:
    """A 4 x 5 x 5 block whose first ``count`` voxels in C order are set (one connected piece)."""
    block = np.zeros(100, dtype=bool)
    block[:count] = True
    return block.reshape(4, 5, 5)


def _reference_box() -> np.ndarray:
    """One reference lesion of 4 x 5 x 5 = 100 voxels."""
    reference = _empty()
    reference[4:8, 4:9, 4:9] = True
    return reference


@pytest.mark.parametrize("covered, detected", [(9, 0.0), (11, 1.0)])
def test_alpha_lesion_covered_9_vs_11_percent(covered, detected):
    reference = _reference_box()
    prediction = _empty()
    prediction[4:8, 4:9, 4:9] = _prefix_block(covered)
    result = lesion_detection(reference, prediction, (1, 1, 1))
    assert result["n_reference_lesions"] == 1 and result["n_predicted_lesions"] == 1
    assert result["lesion_sensitivity"] == detected


def test_beta_prediction_leaking_71_vs_69_percent():
    # A 29- (or 31-) voxel reference lesion inside a 100-voxel predicted lesion.
    for inside, expected_sensitivity in ((29, 0.0), (31, 1.0)):
        prediction = _empty()
        prediction[4:8, 4:9, 4:9] = True
        reference = _empty()
        reference[4:8, 4:9, 4:9] = _prefix_block(inside)
        result = lesion_detection(reference, prediction, (1, 1, 1))
        assert result["lesion_sensitivity"] == expected_sensitivity, inside
        # the predicted lesion itself is fully explained by the reference: a true detection
        assert result["lesion_ppv"] == 1.0


def test_two_voxel_speck_below_minimum_volume_is_not_a_lesion():
    reference = _reference_box()
    prediction = reference.copy()
    prediction[20, 20, 20:22] = True  # 2-voxel false-positive speck
    kept = lesion_detection(reference, prediction, (1, 1, 1), min_lesion_mm3=0.0)
    dropped = lesion_detection(reference, prediction, (1, 1, 1))
    assert (kept["n_predicted_lesions"], kept["lesion_ppv"]) == (2, 0.5)
    assert (dropped["n_predicted_lesions"], dropped["lesion_ppv"]) == (1, 1.0)
    assert dropped["lesion_f1"] == 1.0


def test_minimum_volume_uses_floor_of_voxel_count():
    # 1.5 mm³ voxels: floor(3 / 1.5) = 2, so 2 voxels (3 mm³) are dropped and 3 voxels kept
    spacing = (1.0, 1.0, 1.5)
    reference = _empty()
    reference[3, 3, 3:5] = True
    reference[10, 10, 10:13] = True
    result = lesion_detection(reference, reference, spacing)
    assert result["n_reference_lesions"] == 1


def _split_lesion(first_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """One 20 x 5 x 5 reference lesion split by two predicted lesions at a one-slice gap.

    Lesion A covers slices [0, first_slices) inside the lesion; lesion B covers the slices
    after the gap up to 20 and leaks 80 % of its voxels into background.
    """
    reference = _empty()
    reference[4:24, 4:9, 4:9] = True
    prediction = _empty()
    prediction[4:4 + first_slices, 4:9, 4:9] = True
    prediction[5 + first_slices:24, 4:9, 4:29] = True
    return reference, prediction


def test_gamma_two_predicted_lesions_splitting_one_lesion():
    # A covers 12 slices = 300 voxels, B 7 slices = 175 inside: A is 300/475 = 0.63 < 0.65 of
    # the covered part, so the leaking B is checked and the lesion is not detected.
    reference, prediction = _split_lesion(12)
    result = lesion_detection(reference, prediction, (1, 1, 1))
    assert result["n_predicted_lesions"] == 2
    assert result["lesion_sensitivity"] == 0.0
    # A 13 slices: 325/475 = 0.68 >= 0.65, B is never checked.
    reference, prediction = _split_lesion(13)
    assert lesion_detection(reference, prediction, (1, 1, 1))["lesion_sensitivity"] == 1.0


def test_gamma_beta_alpha_are_parameters():
    reference, prediction = _split_lesion(12)
    assert lesion_detection(reference, prediction, (1, 1, 1), gamma=0.60)["lesion_sensitivity"] == 1.0
    assert lesion_detection(reference, prediction, (1, 1, 1), beta=0.85)["lesion_sensitivity"] == 1.0
    reference = _reference_box()
    prediction = _empty()
    prediction[4:8, 4:9, 4:9] = _prefix_block(9)
    assert lesion_detection(reference, prediction, (1, 1, 1), alpha=0.05)["lesion_sensitivity"] == 1.0
    with pytest.raises(Planar3DError, match=r"alpha must be in \(0, 1\]. Received: alpha=0"):
        lesion_detection(reference, prediction, (1, 1, 1), alpha=0)


def test_predicted_lesion_detection_uses_the_swapped_rule():
    # Two reference lesions; the prediction covers both with one bridge-shaped lesion
    # that lies 2/3 outside the reference: each reference lesion is detected, and the
    # predicted lesion is a true detection (each reference lesion lies inside it).
    reference = _empty()
    reference[4:6, 4:9, 4:9] = True  # 50 voxels
    reference[14:16, 4:9, 4:9] = True  # 50 voxels
    prediction = _empty()
    prediction[4:16, 4:9, 4:9] = True  # 300 voxels, 200 outside: 0.667 <= beta
    result = lesion_detection(reference, prediction, (1, 1, 1))
    assert (result["n_reference_lesions"], result["n_predicted_lesions"]) == (2, 1)
    assert result["lesion_sensitivity"] == 1.0 and result["lesion_ppv"] == 1.0


@pytest.mark.parametrize("predicted, expected_ppv", [(20, 0.0), (31, 1.0)])
def test_swapped_beta_small_prediction_inside_a_large_lesion(predicted, expected_ppv):
    # The reference lesion is detected (covered > alpha, the prediction lies inside it), but
    # as seen from the predicted lesion the reference lesion lies 80 % (69 %) outside it.
    reference = _reference_box()
    prediction = _empty()
    prediction[4:8, 4:9, 4:9] = _prefix_block(predicted)
    result = lesion_detection(reference, prediction, (1, 1, 1))
    assert result["lesion_sensitivity"] == 1.0
    assert result["lesion_ppv"] == expected_ppv


@pytest.mark.parametrize("reference_empty, prediction_empty", [(True, True), (True, False), (False, True)])
def test_msseg_metrics_empty_cases_are_finite(reference_empty, prediction_empty):
    lesion = _reference_box()
    reference = _empty() if reference_empty else lesion
    prediction = _empty() if prediction_empty else lesion
    result = msseg_metrics(reference, prediction, (1, 1, 1))
    assert set(result) == MSSEG_KEYS
    assert all(math.isfinite(value) for value in result.values())
    both = reference_empty and prediction_empty
    for key in ("lesion_sensitivity", "lesion_ppv", "lesion_f1", "dice"):
        assert result[key] == (1.0 if both else 0.0), key
    assert result["n_reference_lesions"] == (0 if reference_empty else 1)
    assert result["n_predicted_lesions"] == (0 if prediction_empty else 1)


def test_msseg_metrics_perfect_prediction():
    reference = _reference_box()
    reference[20:24, 20:24, 20:24] = True
    result = msseg_metrics(reference, reference, (1.0, 0.5, 0.5))
    assert set(result) == MSSEG_KEYS
    expected = {key: 1.0 for key in ("dice", "sensitivity", "specificity", "ppv", "npv",
                                     "lesion_sensitivity", "lesion_ppv", "lesion_f1")}
    expected.update(relative_volume_error=0.0, hausdorff=0.0, hd95=0.0, mean_surface_distance=0.0,
                    n_reference_lesions=2, n_predicted_lesions=2)
    assert result == expected
    assert isinstance(result["n_reference_lesions"], int)


# ----------------------------------------------------------------------------- scan / summary
def test_scan_metrics_keys_and_values():
    reference = _reference_box()
    prediction = np.roll(reference, 2, axis=0)
    result = scan_metrics(reference, prediction, (1, 1, 1))
    assert tuple(result) == SCAN_METRIC_KEYS
    assert result["dice"] == 0.5 and result["sensitivity"] == 0.5 and result["ppv"] == 0.5
    assert result["avd_ml"] == 0.0 and result["lesion_f1"] == 1.0
    assert result["hd95"] == 2.0


def test_summarise_per_centre_and_overall():
    rows = [
        {"centre": "01", "dice": 0.5, "sensitivity": 1.0},
        {"centre": "01", "dice": 0.7, "sensitivity": 0.0},
        {"centre": "07", "dice": 0.3, "sensitivity": 0.5},
    ]
    summary = summarise(rows, keys=("dice", "sensitivity"))
    assert list(summary) == ["01", "07", "overall"]
    assert summary["01"]["dice"] == {"mean": pytest.approx(0.6, abs=1e-15), "std": pytest.approx(0.1, abs=1e-15), "n": 2}
    assert summary["07"]["sensitivity"] == {"mean": 0.5, "std": 0.0, "n": 1}
    assert summary["overall"]["sensitivity"]["mean"] == 0.5
    assert summary["overall"]["sensitivity"]["std"] == pytest.approx(np.std([1.0, 0.0, 0.5]), abs=0)
    sample = summarise(rows, keys=("dice",), ddof=1)
    assert sample["01"]["dice"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1), abs=0)
    assert sample["07"]["dice"]["std"] == 0.0


def test_summarise_rejects_bad_rows():
    with pytest.raises(Planar3DError, match=r"at least one row. Received: rows=\[\]"):
        summarise([])
    with pytest.raises(Planar3DError, match=r"row 1 lacks \['dice'\]"):
        summarise([{"centre": 1, "dice": 0.5}, {"centre": 1}], keys=("dice",))
    with pytest.raises(Planar3DError, match=r"may not be named 'overall'"):
        summarise([{"centre": "overall", "dice": 0.5}], keys=("dice",))
    with pytest.raises(Planar3DError, match=r"metric 'dice' must be numeric"):
        summarise([{"centre": 1, "dice": "n/a"}], keys=("dice",))


def _anima_true_positive_lesions(table: np.ndarray, alpha: float, beta: float, gamma: float) -> int:
    """Literal transcription of Anima's getTruePositiveLesions / falsePositiveRatioTester loops."""
    row_sums = table[:, 1:].sum(axis=1)
    column_sums = table.sum(axis=0)
    detected = 0
    for i in range(1, table.shape[0]):
        if row_sums[i] / (row_sums[i] + table[i, 0]) > alpha:
            order = sorted(range(1, table.shape[1]), key=lambda column: -table[i, column])
            share, k, leaked = 0.0, 0, False
            while share < gamma and k < len(order) and not leaked:
                column = order[k]
                leaked = table[0, column] / column_sums[column] > beta
                if not leaked:
                    share += table[i, column] / row_sums[i]
                k += 1
            detected += not leaked
    return detected


def test_lesion_detection_matches_a_literal_transcription_of_anima(rng):
    from scipy import ndimage

    from planar3d.evaluation.lesions import label_lesions

    faces = ndimage.generate_binary_structure(3, 1)
    for _ in range(40):
        reference = ndimage.binary_dilation(rng.random((16, 16, 16)) < 0.01, faces, iterations=int(rng.integers(1, 3)))
        prediction = ndimage.binary_dilation(rng.random((16, 16, 16)) < 0.01, faces, iterations=int(rng.integers(1, 3)))
        prediction |= reference & (rng.random((16, 16, 16)) < 0.5)
        reference_labels, n_reference = label_lesions(reference, min_voxels=4)
        prediction_labels, n_prediction = label_lesions(prediction, min_voxels=4)
        table = np.zeros((n_reference + 1, n_prediction + 1), dtype=np.int64)
        np.add.at(table, (reference_labels.reshape(-1), prediction_labels.reshape(-1)), 1)
        result = lesion_detection(reference, prediction, (1, 1, 1))
        assert (result["n_reference_lesions"], result["n_predicted_lesions"]) == (n_reference, n_prediction)
        if n_reference and n_prediction:
            assert result["lesion_sensitivity"] == _anima_true_positive_lesions(table, 0.1, 0.7, 0.65) / n_reference
            assert result["lesion_ppv"] == _anima_true_positive_lesions(table.T, 0.1, 0.7, 0.65) / n_prediction


def test_alpha_and_beta_are_strict_inequalities():
    reference = _reference_box()
    prediction = _empty()
    prediction[4:8, 4:9, 4:9] = _prefix_block(10)  # exactly 10 % covered: not more than alpha
    assert lesion_detection(reference, prediction, (1, 1, 1))["lesion_sensitivity"] == 0.0
    prediction = _empty()
    prediction[4:8, 4:9, 4:9] = True
    reference = _empty()
    reference[4:8, 4:9, 4:9] = _prefix_block(30)  # prediction exactly 70 % outside: not more than beta
    assert lesion_detection(reference, prediction, (1, 1, 1))["lesion_sensitivity"] == 1.0
