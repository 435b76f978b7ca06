"""Temperature scaling (fitted on a fold's validation scans, stored as calibration.json, applied by
predict) and the reduced-precision fall-back rule of ``--precision auto``."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import keras
import nibabel as nib
import numpy as np
import pytest

from planar3d import __version__
from planar3d.apps import predict as predict_app
from planar3d.apps.predict import load_members, member_settings, segment_scan
from planar3d.cli import predict as predict_cli
from planar3d.config import CALIBRATIONS, load_config, make_config
from planar3d.data.cache import CachedCase
from planar3d.data.preprocess import preprocess
from planar3d.errors import Planar3DError
from planar3d.inference.ensemble import ensemble_mean
from planar3d.inference.precision import VOLUME_TOLERANCE, precision_for_model, relative_volume_difference
from planar3d.inference.temperature import apply_temperature, binary_nll, fit_temperature, logits
from planar3d.training.calibrate import (
    CALIBRATION_NAME,
    calibrate_fold,
    calibration_record,
    pooled_ece,
    precision_record,
)

from conftest import toy_sigmoid_model

# ----------------------------------------------------------------------------- the maths


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_fit_recovers_a_known_temperature(rng):
    """Labels drawn from sigmoid(z / 2) while the model says sigmoid(z): the fitted T is 2."""
    z = rng.normal(0, 3, 400_000)
    labels = rng.random(z.size) < _sigmoid(z / 2)
    probabilities = _sigmoid(z).astype(np.float32)
    temperature = fit_temperature(probabilities, labels)
    assert abs(temperature - 2) < 0.05
    assert binary_nll(probabilities, labels, temperature) < binary_nll(probabilities, labels)
    # calibrated already: T = 1; over-softened: T < 1; as several scans or one array alike
    calibrated = rng.random(z.size) < _sigmoid(z)
    assert abs(fit_temperature(probabilities, calibrated) - 1) < 0.03
    soft = _sigmoid(z / 2).astype(np.float32)
    assert abs(fit_temperature(np.split(soft, 4), np.split(calibrated, 4)) - 0.5) < 0.02


def test_nll_by_hand_and_grouping_exact(rng):
    p = np.array([0.8, 0.2, 0.5, 0.8])
    y = np.array([1, 0, 1, 0])
    expected = -(math.log(0.8) + math.log(0.8) + math.log(0.5) + math.log(0.2)) / 4
    assert binary_nll(p, y) == pytest.approx(expected, rel=1e-6)
    # T = 2 by hand: p = 0.8 -> odds 4 -> 2 -> 2/3; 0.2 -> 1/3; 0.5 stays
    assert binary_nll(p, y, 2.0) == pytest.approx(-(2 * math.log(2 / 3) + math.log(0.5) + math.log(1 / 3)) / 4, rel=1e-6)
    # the sum over distinct values is the voxel sum
    values = rng.choice(np.float32([0.0, 0.1, 0.3, 0.9, 1.0]), 1000)
    labels = rng.random(1000) < 0.3
    z = logits(values)
    brute = np.mean(np.where(labels, np.logaddexp(0, -z / 1.7), np.logaddexp(0, z / 1.7)))
    assert binary_nll(values, labels, 1.7) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(Planar3DError, match="one shape"):
        binary_nll(p, y[:3])


def test_apply_temperature_on_hand_computed_values():
    p = np.float32([0.5, 0.8, 0.2, 0.9])
    # odds 1, 4, 1/4, 9: T = 2 takes their square root, T = 0.5 squares them
    np.testing.assert_allclose(apply_temperature(p, 2.0), [0.5, 2 / 3, 1 / 3, 3 / 4], rtol=1e-6)
    np.testing.assert_allclose(apply_temperature(p, 0.5), [0.5, 16 / 17, 1 / 17, 81 / 82], rtol=1e-6)
    assert apply_temperature(p, 2.0).dtype == np.float32
    # the side of 0.5 is kept: the mask at 0.5 does not change
    q = np.linspace(0, 1, 101, dtype=np.float32)
    for t in (0.1, 0.7, 3.0, 15.0):
        np.testing.assert_array_equal(apply_temperature(q, t) > 0.5, q > 0.5)
    with pytest.raises(Planar3DError, match="Received: temperature=0.0"):
        apply_temperature(p, 0)


def test_temperature_one_is_the_identity_exactly(rng):
    p = np.concatenate([rng.random(1000, dtype=np.float32), np.float32([0.0, 1.0, 1e-9, 1 - 1e-8])])
    np.testing.assert_array_equal(apply_temperature(p, 1.0), p)
    np.testing.assert_array_equal(apply_temperature(p.reshape(4, -1), 1), p.reshape(4, -1))


def test_expected_calibration_error_by_hand():
    # bins of width 0.1: [0.05, 0.05] in bin 0 with labels (0, 1): |0.5 - 0.05| * 2/4;
    # [0.95, 1.0] in bin 9 with labels (1, 1): |1 - 0.975| * 2/4; pooled over scans as one
    p = [np.array([0.05, 0.05, 0.95, 1.0])]
    y = [np.array([0, 1, 1, 1])]
    assert pooled_ece(p, y) == pytest.approx(0.45 / 2 + 0.025 / 2)
    assert pooled_ece([p[0][:1], p[0][1:]], [y[0][:1], y[0][1:]]) == pytest.approx(0.45 / 2 + 0.025 / 2)
    assert pooled_ece([np.array([0.0, 1.0])], [np.array([0, 1])]) == 0


# ----------------------------------------------------------------------------- the precision rule

def _record(fmt: str, float32_ml: float, reduced_ml: float) -> dict:
    return {"format": fmt, "volume_ml_float32": float32_ml, "volume_ml_reduced": reduced_ml}


def test_precision_rule_on_hand_made_records():
    within = _record("bfloat16", 10.0, 10.05)  # 0.5 %
    beyond = _record("bfloat16", 10.0, 10.2)  # 2 %
    assert relative_volume_difference(within) == pytest.approx(0.005)
    assert VOLUME_TOLERANCE == 0.01
    assert precision_for_model("auto", "bfloat16", within) == "bfloat16"
    assert precision_for_model("auto", "bfloat16", beyond) == "float32"
    assert precision_for_model("auto", "bfloat16", _record("bfloat16", 10.0, 9.8)) == "float32"  # smaller counts too
    assert precision_for_model("auto", "bfloat16", _record("bfloat16", 10.0, 10.1)) == "bfloat16"  # the bound itself
    assert precision_for_model("auto", "bfloat16", beyond, tolerance=0.05) == "bfloat16"
    # no record, or a record of another format: today's choice
    assert precision_for_model("auto", "bfloat16", None) == "bfloat16"
    assert precision_for_model("auto", "float16", beyond) == "float16"
    assert precision_for_model("auto", "bfloat16", _record("float32", 10.0, 10.0)) == "bfloat16"
    assert precision_for_model("auto", "float32", beyond) == "float32"
    # an explicit format is never overridden
    for explicit in ("float32", "bfloat16", "float16"):
        assert precision_for_model(explicit, "bfloat16", beyond) == explicit
    # empty float32 volume: nothing predicted by either is no difference, something by the reduced one is
    assert precision_for_model("auto", "bfloat16", _record("bfloat16", 0.0, 0.0)) == "bfloat16"
    assert precision_for_model("auto", "bfloat16", _record("bfloat16", 0.0, 0.01)) == "float32"


def test_precision_record_by_hand():
    a = np.zeros((6, 6, 6), bool)
    a[0:2, 0:2, 0:2] = True  # 8 voxels
    a[4, 4, 4] = True  # a second lesion
    b = a.copy()
    b[4, 4, 4] = False
    b[0, 0, 2] = True  # same volume, one lesion, Dice 2 * 8 / 18
    record = precision_record("bfloat16", [a], [b], [0.001], ["p1"])
    assert record["volume_ml_float32"] == pytest.approx(0.009) and record["volume_ml_reduced"] == pytest.approx(0.009)
    assert (record["lesions_float32"], record["lesions_reduced"], record["lesion_count_difference"]) == (2, 1, -1)
    assert record["dice"] == pytest.approx(16 / 18) and record["relative_volume_difference"] == 0
    assert record["within_tolerance"] and record["scans"][0]["patient"] == "p1"
    same = precision_record("float32", [a], [a], [0.001], ["p1"])
    assert same["dice"] == 1 and same["relative_volume_difference"] == 0 and "float32" in same["note"]
    assert precision_record("bfloat16", [a & False], [a], [1.0], ["p1"])["relative_volume_difference"] is None


def test_calibration_is_a_config_choice_outside_the_training_identity(tmp_path):
    assert CALIBRATIONS == ("none", "temperature")
    config = make_config("demo", calibration="temperature")
    (tmp_path / "config.json").write_text(config.to_json())
    assert load_config(tmp_path / "config.json") == config
    assert config.training_identity() == make_config("demo").training_identity()
    assert make_config("paper").calibration == "none"
    with pytest.raises(Planar3DError, match="Received: calibration='platt'"):
        make_config("demo", calibration="platt")


# ----------------------------------------------------------------------------- a fold and predict

def _image(rng, seed_offset: int = 0):
    volume = np.zeros((32, 32, 32), np.float32)
    volume[6:26, 6:26, 6:26] = 100 + 10 * rng.random((20, 20, 20))
    volume[12 + seed_offset:16 + seed_offset, 12:16, 12:16] = 300  # a bright "lesion"
    volume[20:22, 8:10, 20:22] = 300
    mask = np.zeros_like(volume)
    mask[12 + seed_offset:16 + seed_offset, 12:16, 12:16] = 1
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    return nib.Nifti1Image(volume, affine), nib.Nifti1Image(mask, affine)


CONFIG = dict(size=32, window=16, stride=8, crop="off", precision="float32")


@pytest.fixture
def scan(tmp_path, rng):
    image, _ = _image(rng)
    path = tmp_path / "flair.nii.gz"
    nib.save(image, path)
    return path


def test_calibrate_fold_writes_its_record(tmp_path, rng):
    config = make_config("demo", **{**CONFIG, "precision": "auto"})
    fold = tmp_path / "run" / "fold_0"
    toy_sigmoid_model(fold / "best.keras", 6.0, -3.0)
    cases = []
    for k in range(2):
        image, mask = _image(rng, k)
        volume, cube_mask, meta = preprocess(image, mask, size=32)
        cases.append(CachedCase(f"p{k}", "c", volume, cube_mask, meta, None))
    record = calibrate_fold(fold, cases, config)
    assert json.loads((fold / CALIBRATION_NAME).read_text()) == record == calibration_record(fold / "best.keras")
    assert record["validation"] == ["p0", "p1"] and record["voxels"] == 2 * 32**3 and record["ece_bins"] == 10
    assert 0.05 <= record["temperature"] <= 20 and record["nll_after"] <= record["nll_before"]
    assert record["ece_before"] >= 0 and record["ece_after"] >= 0
    precision = record["precision"]
    assert [s["patient"] for s in precision["scans"]] == ["p0", "p1"]
    assert precision["volume_ml_float32"] > 0 and precision["tolerance"] == VOLUME_TOLERANCE
    if precision["format"] == "float32":  # a CPU without bfloat16: both float32, and said so
        assert precision["dice"] == 1 and precision["relative_volume_difference"] == 0 and "note" in precision
    assert calibrate_fold(tmp_path / "empty", [], config) is None and not (tmp_path / "empty").exists()


def _run(tmp_path, members: dict[str, tuple[float, float, float | None]], config):
    """A run folder of toy members ``name: (slope, bias, temperature or None = no calibration.json)``."""
    files = []
    for name, (slope, bias, temperature) in members.items():
        file = tmp_path / "run" / name / "best.keras"
        toy_sigmoid_model(file, slope, bias)
        (file.parent / "config.json").write_text(config.to_json())
        if temperature is not None:
            (file.parent / CALIBRATION_NAME).write_text(json.dumps({"temperature": temperature}))
        files.append(file)
    return files


def test_predict_applies_each_members_stored_temperature(scan, tmp_path):
    config = make_config("demo", **CONFIG)
    files = _run(tmp_path, {"fold_0": (8.0, -4.0, 2.0), "fold_1": (2.0, -1.5, 0.5)}, config)
    models = load_members(files)
    plain = [segment_scan(m, scan, config) for m in models]
    calibrated = replace(config, calibration="temperature")
    assert member_settings(models, calibrated) == [("float32", 2.0), ("float32", 0.5)]
    assert member_settings(models, config) == [("float32", 1.0), ("float32", 1.0)]
    one = segment_scan(models[0], scan, calibrated)
    np.testing.assert_array_equal(one.resampled, apply_temperature(plain[0].resampled, 2.0))
    both = segment_scan(models, scan, calibrated)  # each member its own T, before the averaging
    np.testing.assert_array_equal(both.resampled, ensemble_mean([apply_temperature(plain[0].resampled, 2.0),
                                                                 apply_temperature(plain[1].resampled, 0.5)]))
    # the command line writes what segment_scan computes
    out = tmp_path / "out"
    assert predict_cli.main(["--model", str(files[0]), "--input", str(scan), "--output", str(out / "mask.nii.gz"),
                             "--probabilities", str(out / "prob.nii.gz"), "--calibration", "temperature", "--quiet",
                             "--no-qc"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out / "prob.nii.gz").dataobj), one.probabilities)
    np.testing.assert_array_equal(np.asarray(nib.load(out / "mask.nii.gz").dataobj), one.mask)


def test_predict_refuses_temperature_without_calibration_json(scan, tmp_path, capsys):
    config = make_config("demo", **CONFIG)
    files = _run(tmp_path, {"fold_0": (8.0, -4.0, 2.0), "fold_1": (2.0, -1.5, None)}, config)
    out = tmp_path / "out"
    argv = ["--model", str(tmp_path / "run"), "--input", str(scan), "--output", str(out / "mask.nii.gz"), "--quiet"]
    assert predict_cli.main(argv + ["--calibration", "temperature"]) == 2
    assert capsys.readouterr().err == (f"error: no calibration.json beside {files[1]}; train with planar3d >= "
                                       f"{__version__} or use --calibration none\n")
    assert not out.exists()
    with pytest.raises(Planar3DError, match="models loaded from their run folders"):
        segment_scan(keras.models.load_model(files[0]), scan, replace(config, calibration="temperature"))
    assert predict_cli.main(argv + ["--calibration", "none", "--no-qc"]) == 0  # without temperature: as before


def test_auto_precision_falls_back_to_float32_for_a_model_that_moved(tmp_path, monkeypatch, capsys):
    config = make_config("demo", **{**CONFIG, "precision": "auto"})
    files = _run(tmp_path, {"fold_0": (8.0, -4.0, 1.0), "fold_1": (2.0, -1.5, 1.0), "fold_2": (1.0, 0.0, None)}, config)
    for file, moved in zip(files[:2], (10.5, 10.05)):  # 5 % and 0.5 %
        (file.parent / CALIBRATION_NAME).write_text(json.dumps({"temperature": 1.0,
                                                                "precision": _record("bfloat16", 10.0, moved)}))
    monkeypatch.setattr(predict_app, "resolve_precision", lambda precision="auto": "bfloat16")
    models = load_members(files)
    assert member_settings(models, config, announce=True) == [("float32", 1.0), ("bfloat16", 1.0), ("bfloat16", 1.0)]
    assert capsys.readouterr().out == (f"{files[0]}: float32 instead of bfloat16: bfloat16 moved its validation lesion "
                                       "volume by 5.00 % (bound 1 %)\n")
    assert member_settings(models, replace(config, precision="bfloat16")) == [("bfloat16", 1.0)] * 3
    assert member_settings(models, replace(config, precision="float16")) == [("float16", 1.0)] * 3
