"""Tests of planar3d.evaluation.calibration and of ``evaluate --probabilities``.

Each metric is checked against numbers worked out by hand (the arithmetic is in the comments)
and, where one exists, against an independent implementation: scikit-learn's
``calibration_curve``, ``brier_score_loss``, ``roc_auc_score`` and ``auc``, and a brute-force
retention curve that builds every mixed prediction voxel by voxel.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from planar3d.cli.evaluate import main
from planar3d.errors import Planar3DError
from planar3d.evaluation.calibration import (
    CALIBRATION_KEYS, auroc, brier_score, calibration_metrics, expected_calibration_error, lesion_auroc,
    normalised_dice, pool_reliability, predicted_lesion_outcomes, reliability_curve, retention_auc,
    retention_curve, retention_fractions)
from planar3d.evaluation.evaluate import patient_id
from planar3d.evaluation.metrics import dice, lesion_detection
from planar3d.inference.ensemble import entropy

# five voxels used by the hand-worked ECE / Brier examples
P5 = np.array([0.1, 0.3, 0.6, 0.8, 0.9])
Y5 = np.array([0, 1, 1, 1, 0])


def _random_case(seed: int, shape=(10, 12, 9), load=0.05):
    rng = np.random.default_rng(seed)
    reference = rng.random(shape) < load
    probability = np.clip(0.6 * reference + 0.5 * rng.random(shape) - 0.1, 0, 1)
    return reference, probability


# ----------------------------------------------------------------------------- ECE, reliability
def test_ece_by_hand_two_bins():
    # bins (0, 0.5] (with 0) and (0.5, 1]:
    #   bin 0: p 0.1, 0.3 -> mean 0.2; y 0, 1 -> frequency 0.5; gap 0.3; weight 2/5
    #   bin 1: p 0.6, 0.8, 0.9 -> mean 2.3/3; y 1, 1, 0 -> frequency 2/3; gap |2/3 - 2.3/3| = 0.1; weight 3/5
    #   ECE = 0.4 * 0.3 + 0.6 * 0.1 = 0.12 + 0.06 = 0.18
    assert expected_calibration_error(Y5, P5, n_bins=2) == pytest.approx(0.18, abs=1e-12)
    curve = reliability_curve(Y5, P5, n_bins=2)
    np.testing.assert_allclose(curve["edges"], [0, 0.5, 1])
    np.testing.assert_allclose(curve["centres"], [0.25, 0.75])
    np.testing.assert_array_equal(curve["counts"], [2, 3])
    np.testing.assert_allclose(curve["mean_predicted"], [0.2, 2.3 / 3])
    np.testing.assert_allclose(curve["observed_frequency"], [0.5, 2 / 3])


def test_ece_by_hand_ten_bins_and_closed_right_edges():
    # 10 bins: 0.05 -> bin 0, 0.15 -> bin 1, 0.25 -> bin 2, 0.95 -> bin 9, one voxel each:
    #   gaps |0.05 - 0| + |0.15 - 0| + |0.25 - 1| + |0.95 - 1| = 0.05 + 0.15 + 0.75 + 0.05 = 1.0; / 4 voxels = 0.25
    assert expected_calibration_error([0, 0, 1, 1], [0.05, 0.15, 0.25, 0.95]) == pytest.approx(0.25)
    # bins are (lo, hi]: 0.5 falls in the lower of two bins, 0 in the first, 1 in the last
    curve = reliability_curve([1, 0, 1], [0.5, 0.0, 1.0], n_bins=2)
    np.testing.assert_array_equal(curve["counts"], [2, 1])
    np.testing.assert_allclose(curve["mean_predicted"], [0.25, 1.0])  # (0.5 + 0) / 2
    # an empty bin is NaN and left out of the ECE
    curve = reliability_curve([0, 1], [0.05, 0.95], n_bins=10)
    assert np.isnan(curve["mean_predicted"][5]) and curve["counts"].sum() == 2


def test_reliability_bins_match_sklearn_calibration_curve():
    from sklearn.calibration import calibration_curve

    for seed, n_bins in ((0, 10), (1, 7), (2, 15)):
        reference, probability = _random_case(seed)
        probability.reshape(-1)[:20] = np.linspace(0, 1, 20)  # values on the bin edges too
        curve = reliability_curve(reference, probability, n_bins)
        prob_true, prob_pred = calibration_curve(reference.ravel(), probability.ravel(), n_bins=n_bins, strategy="uniform")
        filled = curve["counts"] > 0
        np.testing.assert_allclose(curve["observed_frequency"][filled], prob_true, rtol=1e-12)
        np.testing.assert_allclose(curve["mean_predicted"][filled], prob_pred, rtol=1e-12)


def test_ece_matches_an_explicit_bin_loop():
    """Guo et al.'s Eq. 3 written out with explicit comparisons, one bin at a time."""
    reference, probability = _random_case(3)
    y, p = reference.ravel(), probability.ravel()
    n_bins, total = 12, 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (p > lo) & (p <= hi) | ((p == 0) if b == 0 else False)
        if inside.any():
            total += inside.sum() / p.size * abs(y[inside].mean() - p[inside].mean())
    assert expected_calibration_error(reference, probability, n_bins) == pytest.approx(total, rel=1e-12)


def test_ece_edge_cases():
    reference = np.array([0, 1, 1, 0, 0])
    assert expected_calibration_error(reference, reference.astype(float)) == 0.0  # exact and right
    assert expected_calibration_error(reference, 1.0 - reference) == 1.0  # exact and wrong
    # a constant probability equal to the lesion frequency 2/5: one bin, gap 0
    assert expected_calibration_error(reference, np.full(5, 0.4)) == pytest.approx(0.0, abs=1e-15)
    # constant 0.9 with frequency 0.4: ECE = |0.4 - 0.9| = 0.5
    assert expected_calibration_error(reference, np.full(5, 0.9)) == pytest.approx(0.5)
    with pytest.raises(Planar3DError, match=r"\[0, 1\]"):
        expected_calibration_error(reference, np.full(5, 1.5))
    with pytest.raises(Planar3DError, match="binary"):
        expected_calibration_error(np.full(5, 2), np.full(5, 0.5))
    with pytest.raises(Planar3DError, match="n_bins"):
        expected_calibration_error(reference, np.full(5, 0.5), n_bins=0)


def test_pooled_reliability_is_that_of_all_voxels():
    (a, pa), (b, pb) = _random_case(4), _random_case(5, shape=(6, 5, 4), load=0.3)
    pooled = pool_reliability([reliability_curve(a, pa), reliability_curve(b, pb)])
    together = reliability_curve(np.concatenate([a.ravel(), b.ravel()]), np.concatenate([pa.ravel(), pb.ravel()]))
    for key in ("counts", "mean_predicted", "observed_frequency"):
        np.testing.assert_allclose(pooled[key], together[key], rtol=1e-12)


# ----------------------------------------------------------------------------- Brier
def test_brier_by_hand_and_against_sklearn():
    from sklearn.metrics import brier_score_loss

    # (0.1-0)² + (0.3-1)² + (0.6-1)² + (0.8-1)² + (0.9-0)² = 0.01 + 0.49 + 0.16 + 0.04 + 0.81 = 1.51; / 5 = 0.302
    assert brier_score(Y5, P5) == pytest.approx(0.302)
    reference, probability = _random_case(6)
    assert brier_score(reference, probability) == pytest.approx(brier_score_loss(reference.ravel(), probability.ravel()))
    assert brier_score(Y5, Y5.astype(float)) == 0.0
    # constant p = h = 3/5: 3 (0.4)² + 2 (0.6)² = 0.48 + 0.72 = 1.2; / 5 = 0.24 = h (1 - h)
    assert brier_score(Y5, np.full(5, 0.6)) == pytest.approx(0.24)


# ----------------------------------------------------------------------------- nDSC
def test_ndsc_by_hand():
    reference = np.zeros(10, dtype=bool)
    reference[:2] = True  # lesion load h = 2/10
    prediction = np.zeros(10, dtype=bool)
    prediction[[1, 2, 3, 4, 5]] = True  # TP 1, FP 4, FN 1
    # r = 0.5: k = (1-r)/r * h/(1-h) = 1 * 0.2/0.8 = 0.25; nDSC = 2*1 / (2*1 + 0.25*4 + 1) = 2/4 = 0.5
    assert normalised_dice(reference, prediction, r=0.5) == pytest.approx(0.5)
    # r = 0.001: k = 999 * 0.25 = 249.75; nDSC = 2 / (2 + 249.75*4 + 1) = 2 / 1002
    assert normalised_dice(reference, prediction) == pytest.approx(2 / 1002)
    # r = h: k = 1, the plain Dice 2 / (2 + 4 + 1) = 2/7
    assert normalised_dice(reference, prediction, r=0.2) == pytest.approx(2 / 7) == pytest.approx(dice(
        reference.reshape(1, 2, 5), prediction.reshape(1, 2, 5)))


def test_ndsc_edge_cases():
    empty = np.zeros((3, 3, 3), dtype=bool)
    one = empty.copy()
    one[1, 1, 1] = True
    assert normalised_dice(empty, empty) == 1.0  # both empty
    assert normalised_dice(one, one) == 1.0  # perfect
    assert normalised_dice(empty, one) == 0.0  # empty reference: k = 1, 0 / (0 + 1)
    assert normalised_dice(one, empty) == 0.0  # missed lesion
    assert normalised_dice(np.ones(4), np.ones(4)) == 1.0  # all lesion: no FP possible, k = 1
    with pytest.raises(Planar3DError, match="r must be"):
        normalised_dice(one, one, r=0)


def test_ndsc_equals_dice_at_the_scans_own_load():
    reference, probability = _random_case(7)
    prediction = probability > 0.5
    h = reference.mean()
    assert normalised_dice(reference, prediction, r=h) == pytest.approx(dice(reference, prediction), rel=1e-12)


# ----------------------------------------------------------------------------- retention
def test_retention_fraction_grid():
    fractions = retention_fractions()
    assert fractions.shape == (200,) and fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    assert fractions[1] == pytest.approx(math.log(2) / math.log(200))
    assert np.all(np.diff(fractions) > 0)


def test_retention_curve_by_hand():
    reference = np.array([1, 0, 1, 0])
    prediction = np.array([1, 1, 0, 0])
    uncertainty = np.array([0.1, 0.9, 0.8, 0.2])
    # by increasing uncertainty: voxels 0, 3, 2, 1 -> reference [1, 0, 1, 0], prediction [1, 0, 0, 1];
    # r = 0.5 and h = 0.5 give k = 1 (plain Dice).
    #   f = 0:    all replaced by the reference                              -> nDSC 1
    #   f = 0.5:  keep [1, 0], replace by [1, 0] -> [1, 0, 1, 0] = reference -> 1
    #   f = 0.75: keep [1, 0, 0], replace by [0] -> TP 1 FP 0 FN 1          -> 2/3
    #   f = 1:    [1, 0, 0, 1]                   -> TP 1 FP 1 FN 1          -> 2/4
    curve = retention_curve(reference, prediction, uncertainty, fractions=[0, 0.5, 0.75, 1], r=0.5)
    np.testing.assert_allclose(curve["ndsc"], [1, 1, 2 / 3, 0.5])
    np.testing.assert_allclose(curve["error"], [0, 0, 1 / 3, 0.5])
    # R-AUC (trapezoids): 0.5 * (0 + 0)/2 + 0.25 * (0 + 1/3)/2 + 0.25 * (1/3 + 1/2)/2 = 1/24 + 5/48 = 7/48
    assert retention_auc(reference, prediction, uncertainty, fractions=[0, 0.5, 0.75, 1], r=0.5) == pytest.approx(7 / 48)


def _brute_force_retention(reference, prediction, uncertainty, fractions, r):
    """Every mixed prediction built explicitly, nDSC from the paper's formula."""
    order = np.argsort(uncertainty.ravel(), kind="stable")
    y, s = reference.ravel()[order].astype(int), prediction.ravel()[order].astype(int)
    h = y.mean()
    scores = []
    for f in fractions:
        kept = int(len(y) * f)
        mixed = np.concatenate([s[:kept], y[kept:]])
        tp, fp, fn = np.sum(mixed * y), np.sum(mixed * (1 - y)), np.sum((1 - mixed) * y)
        k = (1 - r) / r * h / (1 - h)
        scores.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + k * fp + fn))
    return np.array(scores)


def test_retention_curve_matches_brute_force_and_sklearn_auc():
    from sklearn.metrics import auc

    for seed in (8, 9):
        reference, probability = _random_case(seed, shape=(6, 7, 5), load=0.1)
        prediction = probability > 0.4
        uncertainty = entropy(probability)
        fractions = retention_fractions(50)
        curve = retention_curve(reference, prediction, uncertainty, fractions)
        np.testing.assert_allclose(curve["ndsc"], _brute_force_retention(reference, prediction, uncertainty,
                                                                         fractions, 0.001), rtol=1e-12)
        # Shifts reports 1 - auc(fractions, nDSC) over the grid from 0 to 1
        assert retention_auc(reference, prediction, uncertainty, fractions) == pytest.approx(
            1 - auc(fractions, curve["ndsc"]), rel=1e-12)


def test_retention_order_is_the_stable_argsort_for_float32_maps():
    """float32 maps take a faster sort; it must give the order of np.argsort(kind="stable")."""
    rng = np.random.default_rng(13)
    reference = rng.random((8, 9, 10)) < 0.2
    prediction = rng.random((8, 9, 10)) < 0.2
    values = np.round(rng.normal(size=(8, 9, 10)), 1).astype(np.float32)  # negatives and many ties
    values.reshape(-1)[:40:3] = -0.0
    fractions = np.linspace(0, 1, 37)
    fast = retention_curve(reference, prediction, values, fractions)["ndsc"]
    reference_order = retention_curve(reference, prediction, values.astype(np.float64), fractions)["ndsc"]
    np.testing.assert_array_equal(fast, reference_order)
    np.testing.assert_allclose(fast, _brute_force_retention(reference, prediction, values, fractions, 0.001), rtol=1e-12)


def test_retention_edge_cases():
    reference, probability = _random_case(10)
    prediction = probability > 0.3  # some false positives
    assert retention_auc(reference, reference, np.zeros(reference.shape)) == 0.0  # perfect: every point 1
    # an oracle uncertainty (1 on the wrong voxels, 0 elsewhere) beats a reversed one
    wrong = (reference != prediction).astype(float)
    assert wrong.any()
    assert retention_auc(reference, prediction, wrong) < retention_auc(reference, prediction, 1 - wrong)
    with pytest.raises(Planar3DError, match="fractions"):
        retention_curve(reference, prediction, wrong, fractions=[0.5, 0.2])
    with pytest.raises(Planar3DError, match="finite"):
        retention_curve(reference, prediction, np.full(reference.shape, np.nan))


# ----------------------------------------------------------------------------- lesions
def _lesion_case():
    reference = np.zeros((16, 12, 12), dtype=bool)
    prediction = np.zeros_like(reference)
    reference[2:4, 2:4, 2:4] = reference[8:10, 8:10, 8:10] = True
    prediction[2:4, 2:4, 2:4] = prediction[8:10, 8:10, 8:10] = True  # two true lesions (8 voxels each)
    prediction[12:14, 2:4, 2:4] = True  # one false positive (8 voxels)
    probability = np.zeros(reference.shape)
    probability[2:4, 2:4, 2:4], probability[8:10, 8:10, 8:10], probability[12:14, 2:4, 2:4] = 0.9, 0.6, 0.7
    return reference, prediction, probability


def test_lesion_outcomes_and_auroc_by_hand():
    reference, prediction, probability = _lesion_case()
    labels, true = predicted_lesion_outcomes(reference, prediction)
    # equal sizes: labelled in C order of their first voxel -> lesions at rows 2, 8, 12
    np.testing.assert_array_equal(true, [True, True, False])
    assert labels[2, 2, 2] == 1 and labels[8, 8, 8] == 2 and labels[12, 2, 2] == 3
    # true lesions' mean probability 0.9 and 0.6 against the false one's 0.7:
    #   0.9 > 0.7 (1 pair won), 0.6 < 0.7 (lost) -> AUROC 1/2
    assert lesion_auroc(reference, prediction, probability) == pytest.approx(0.5)
    uncertainty = np.zeros(reference.shape)
    uncertainty[2:4, 2:4, 2:4], uncertainty[8:10, 8:10, 8:10], uncertainty[12:14, 2:4, 2:4] = 0.1, 0.2, 0.5
    # lower uncertainty marks the true lesions: 0.1 < 0.5 and 0.2 < 0.5 -> AUROC 1
    assert lesion_auroc(reference, prediction, uncertainty, lower_is_true=True) == 1.0
    # only true lesions: undefined
    assert math.isnan(lesion_auroc(reference, reference, probability))
    # the true-prediction count agrees with lesion_detection's PPV
    detection = lesion_detection(reference, prediction, (1, 1, 1))
    assert true.sum() == round(detection["lesion_ppv"] * detection["n_predicted_lesions"])


def test_lesion_outcomes_agree_with_lesion_detection_on_random_masks():
    rng = np.random.default_rng(11)
    for _ in range(5):
        reference = rng.random((14, 14, 14)) < 0.15
        prediction = rng.random((14, 14, 14)) < 0.15
        _, true = predicted_lesion_outcomes(reference, prediction, (1.0, 1.0, 1.0), 0.1, 0.7, 0.65, 1.0)
        detection = lesion_detection(reference, prediction, (1.0, 1.0, 1.0), 0.1, 0.7, 0.65, 1.0)
        assert len(true) == detection["n_predicted_lesions"] > 0
        assert true.sum() == round(detection["lesion_ppv"] * len(true))


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(12)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60) + 0.3 * labels, 1)  # rounded: many ties
    assert auroc(scores[labels], scores[~labels]) == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    # by hand: positives {3, 1}, negatives {2, 1}: 3>2, 3>1, 1<2, 1=1 (half) -> 2.5 / 4
    assert auroc([3, 1], [2, 1]) == 0.625
    assert math.isnan(auroc([0.5], []))


def test_calibration_metrics_defaults_to_the_entropy():
    reference, prediction, probability = _lesion_case()
    values = calibration_metrics(reference, prediction, probability)
    assert set(values) == {*CALIBRATION_KEYS, "reliability"}
    assert values["r_auc"] == retention_auc(reference, prediction, entropy(probability))
    assert values["lesion_auroc_uncertainty"] == lesion_auroc(reference, prediction, entropy(probability),
                                                              lower_is_true=True)


# ----------------------------------------------------------------------------- evaluate --probabilities
SIZE = 16
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _save(array, path: Path, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine), path)
    return path


def _volumes():
    reference = np.zeros((SIZE,) * 3, dtype=np.uint8)
    prediction = np.zeros_like(reference)
    reference[2:5, 2:5, 2:5] = reference[9:12, 9:12, 9:12] = 1
    prediction[2:5, 2:5, 3:6] = 1  # true lesion, shifted one voxel
    prediction[12:14, 2:4, 2:4] = 1  # false positive
    probability = np.full(reference.shape, 0.02, dtype=np.float32)
    probability[prediction == 1] = 0.8
    probability[12:14, 2:4, 2:4] = 0.55
    probability[(reference == 1) & (prediction == 0)] = 0.35
    return reference, prediction, probability


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_map_ids():
    assert patient_id("maps/01016SACH_prob.nii.gz", "probability") == "01016SACH"
    assert patient_id("maps/01016SACH_mask_prob.nii.gz", "probability") == "01016SACH"
    assert patient_id("maps/01016SACH/probabilities.nii.gz", "probability") == "01016SACH"
    assert patient_id("maps/01016SACH_entropy.nii.gz", "uncertainty") == "01016SACH"


def test_evaluate_cli_with_probabilities(tmp_path, capsys):
    reference, prediction, probability = _volumes()
    ref = _save(reference, tmp_path / "ref" / "01016SACH_mask.nii.gz")
    pred = _save(prediction, tmp_path / "pred" / "01016SACH_mask.nii.gz")
    prob = _save(probability, tmp_path / "pred" / "01016SACH_prob.nii.gz")
    out = tmp_path / "ev"
    argv = ["--reference", str(ref.parent), "--prediction", str(pred.parent), "--probabilities", str(prob.parent),
            "--out", str(out), "--no-qc", "--calibration-bins", "5"]
    assert main(argv) == 0
    (row,) = _read_csv(out / "metrics.csv")
    expected = calibration_metrics(reference, prediction, probability, n_bins=5)
    for key in CALIBRATION_KEYS:
        assert float(row[key]) == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    # one true lesion (mean probability 0.8) and one false (0.55): AUROC 1
    assert float(row["lesion_auroc"]) == 1.0
    assert (out / "reliability.png").stat().st_size > 1000
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "5 equal-width bins" in summary and "| ece |" in summary and "Malinin" in summary
    record = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert record["calibration_bins"] == 5 and record["pairs"][0]["probability"] == str(prob)
    assert len(record["reliability"]["counts"]) == 5
    capsys.readouterr()
    # the new output is refused without --overwrite, like the others
    assert main(argv) == 2
    assert "output exists" in capsys.readouterr().err


def test_evaluate_cli_refuses_a_probability_map_on_another_grid(tmp_path, capsys):
    reference, prediction, probability = _volumes()
    ref = _save(reference, tmp_path / "ref.nii.gz")
    pred = _save(prediction, tmp_path / "pred_mask.nii.gz")
    prob = _save(probability[:, :, :-1], tmp_path / "pred_prob.nii.gz")
    out = tmp_path / "ev"
    assert main(["--reference", str(ref), "--prediction", str(pred), "--probabilities", str(prob),
                 "--out", str(out), "--no-qc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {prob}: grid differs from the reference")
    assert not (out / "metrics.csv").exists()
    # and the uncertainty map needs the probabilities
    assert main(["--reference", str(ref), "--prediction", str(pred), "--uncertainty", str(prob), "--out", str(out)]) == 2
    assert "--uncertainty needs --probabilities" in capsys.readouterr().err


def test_evaluate_with_an_uncertainty_map_and_a_bad_probability_map(tmp_path, capsys):
    reference, prediction, probability = _volumes()
    ref = _save(reference, tmp_path / "ref.nii.gz")
    pred = _save(prediction, tmp_path / "pred_mask.nii.gz")
    prob = _save(probability, tmp_path / "pred_prob.nii.gz")
    uncertainty = np.where(prediction == 1, 0.1, 0.0)
    uncertainty[12:14, 2:4, 2:4] = 0.9
    unc = _save(uncertainty, tmp_path / "pred_entropy.nii.gz")
    assert main(["--reference", str(ref), "--prediction", str(pred), "--probabilities", str(prob),
                 "--uncertainty", str(unc), "--out", str(tmp_path / "ev"), "--no-qc"]) == 0
    (row,) = _read_csv(tmp_path / "ev" / "metrics.csv")
    assert float(row["lesion_auroc_uncertainty"]) == 1.0  # true lesion 0.1 < false lesion 0.9
    assert float(row["r_auc"]) == pytest.approx(retention_auc(reference, prediction, uncertainty))
    bad = _save(probability * 3, tmp_path / "bad_prob.nii.gz")
    capsys.readouterr()
    assert main(["--reference", str(ref), "--prediction", str(pred), "--probabilities", str(bad),
                 "--out", str(tmp_path / "ev2"), "--no-qc"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: not a probability map")


def test_evaluate_folder_mode_skips_a_pair_without_its_probability_map(tmp_path, capsys):
    reference, prediction, probability = _volumes()
    for key in ("01A", "07B"):
        _save(reference, tmp_path / "ref" / f"{key}_mask.nii.gz")
        _save(prediction, tmp_path / "pred" / f"{key}_mask.nii.gz")
    _save(probability, tmp_path / "maps" / "01A_mask_prob.nii.gz")
    out = tmp_path / "ev"
    assert main(["--reference", str(tmp_path / "ref"), "--prediction", str(tmp_path / "pred"), "--probabilities",
                 str(tmp_path / "maps"), "--out", str(out), "--no-qc"]) == 1
    assert [row["patient"] for row in _read_csv(out / "metrics.csv")] == ["01A"]
    assert f"{tmp_path / 'maps'}: no probability map for patient '07B'" in capsys.readouterr().err
