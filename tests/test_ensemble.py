"""Ensembles and uncertainty: exact averaging, hand-computed entropies and mutual information,
member agreement per lesion, and predict with several models."""

from __future__ import annotations

import csv
import math

import keras
import nibabel as nib
import numpy as np
import pytest

from planar3d.apps.predict import member_files, segment_scan
from planar3d.cli import predict as predict_cli
from planar3d.config import make_config
from planar3d.errors import InputFileError, Planar3DError
from planar3d.inference.ensemble import ensemble_mean, entropy, member_agreement, mutual_information

from conftest import toy_sigmoid_model


def test_identical_members_average_to_the_member_exactly(rng):
    member = rng.random((7, 9, 11), dtype=np.float32)
    for n in (2, 3, 5, 7):
        np.testing.assert_array_equal(ensemble_mean([member] * n), member)
    other = rng.random((7, 9, 11), dtype=np.float32)
    np.testing.assert_array_equal(ensemble_mean([member, other]), ((member.astype(np.float64) + other) / 2).astype(np.float32))
    with pytest.raises(Planar3DError, match="one shape"):
        ensemble_mean([member, other[:-1]])


def test_entropy_and_mutual_information_by_hand():
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    values = np.array([0.5, 0.1, 0.9, 0.0, 1.0])
    np.testing.assert_allclose(entropy(values), [math.log(2), h(0.1), h(0.9), 0, 0], atol=2e-6)
    members = [np.array([0.9, 0.2, 0.3]), np.array([0.1, 0.2, 0.7])]
    expected = [math.log(2) - h(0.9), 0.0, h(0.5) - (h(0.3) + h(0.7)) / 2]
    np.testing.assert_allclose(mutual_information(members), expected, atol=1e-6)
    np.testing.assert_array_equal(mutual_information([members[0]] * 3), 0)


def test_member_agreement_counts_the_members_touching_each_lesion():
    lesions = np.array([1, 1, 0, 2, 2, 0, 3])
    masks = [np.array([1, 0, 0, 0, 0, 0, 1]), np.array([0, 1, 0, 1, 0, 0, 0]), np.array([0, 0, 1, 0, 0, 1, 0])]
    np.testing.assert_allclose(member_agreement(lesions, 3, masks), [2 / 3, 1 / 3, 1 / 3])


@pytest.fixture
def scan(tmp_path, rng):
    volume = np.zeros((32, 32, 32), np.float32)
    volume[6:26, 6:26, 6:26] = 100 + 10 * rng.random((20, 20, 20))
    volume[12:16, 12:16, 12:16] = 300  # a bright "lesion"
    volume[20:22, 8:10, 20:22] = 300  # and a small one
    path = tmp_path / "flair.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 1.5, 1.0])), path)
    return path


CONFIG = dict(size=32, window=16, stride=8, crop="off", precision="float32")


def test_segment_scan_averages_its_members(scan, tmp_path):
    config = make_config("demo", **CONFIG)
    sharp, soft = toy_sigmoid_model(tmp_path / "a.keras", 8.0, -4.0), toy_sigmoid_model(tmp_path / "b.keras", 2.0, -1.5)
    one = segment_scan(sharp, scan, config)
    twice = segment_scan([sharp, sharp], scan, config)
    np.testing.assert_array_equal(twice.probabilities, one.probabilities)
    np.testing.assert_array_equal(twice.mask, one.mask)
    np.testing.assert_array_equal(twice.uncertainty()["mutual_information"], 0)
    both = segment_scan([sharp, soft], scan, config)
    alone = segment_scan(soft, scan, config)
    np.testing.assert_array_equal(both.resampled, ensemble_mean([one.resampled, alone.resampled]))
    assert both.uncertainty()["mutual_information"].max() > 0.01
    assert {"member_fraction", "max_probability", "mean_mutual_information"} <= set(both.table[0])
    assert "member_fraction" not in one.table[0]
    with pytest.raises(Planar3DError, match="one window shape"):
        other = keras.Sequential([keras.Input((32, 32, 32, 1)), keras.layers.Conv3D(1, 1, activation="sigmoid")])
        segment_scan([sharp, other], scan, config)


def test_predict_takes_models_and_run_folders_and_writes_uncertainty(scan, tmp_path):
    config = make_config("demo", **CONFIG)
    run = tmp_path / "run"
    for fold, (slope, bias) in enumerate([(8.0, -4.0), (2.0, -1.5)]):
        toy_sigmoid_model(run / f"fold_{fold}" / "best.keras", slope, bias)
        (run / f"fold_{fold}" / "config.json").write_text(config.to_json())
    assert member_files([run]) == [run / "fold_0" / "best.keras", run / "fold_1" / "best.keras"]
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(InputFileError, match="empty_run: no best.keras below this run folder"):
        member_files([scan, tmp_path / "empty_run"])
    out = tmp_path / "out"
    assert predict_cli.main(["--model", str(run), "--input", str(scan), "--output", str(out / "mask.nii.gz"),
                             "--uncertainty", str(out / "entropy.nii.gz"), "--quiet", "--no-qc"]) == 0
    entropy_map = np.asarray(nib.load(out / "entropy.nii.gz").dataobj)
    information = np.asarray(nib.load(out / "entropy_mutual_information.nii.gz").dataobj)
    assert entropy_map.shape == information.shape == (32, 32, 32)
    assert (information <= entropy_map + 1e-6).all() and information.max() > 0
    rows = list(csv.DictReader((out / "mask_lesions.csv").open()))
    assert rows and all(0 < float(r["member_fraction"]) <= 1 for r in rows)
    # one model: the entropy only
    assert predict_cli.main(["--model", str(run / "fold_0" / "best.keras"), "--input", str(scan), "--output",
                             str(out / "one.nii.gz"), "--uncertainty", str(out / "one_entropy.nii.gz"), "--quiet",
                             "--no-qc"]) == 0
    assert (out / "one_entropy.nii.gz").is_file() and not (out / "one_entropy_mutual_information.nii.gz").exists()


def test_uncertainty_takes_one_input(scan, tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (folder / name).write_bytes(scan.read_bytes())
    model = tmp_path / "m.keras"
    toy_sigmoid_model(model, 1.0, 0.0)
    assert predict_cli.main(["--model", str(model), "--input", str(folder), "--output", str(tmp_path / "out"),
                             "--uncertainty", str(tmp_path / "u.nii.gz")]) == 2
    assert capsys.readouterr().err == ("error: --probabilities and --uncertainty take one input; in folder mode these "
                                       "maps are not written\n")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- one encoder for the members

@pytest.fixture(scope="module")
def two_decoders():
    """Two planar res-u-nets (16 x 32 x 32) with one encoder (the first's) and different decoders."""
    from planar3d.nets.model import build_model, encoder_layer_names

    first, second = (build_model((16, 32, 32, 1), encoder_weights=None, seed=seed) for seed in (1, 2))
    for name in encoder_layer_names():
        second.get_layer(name).set_weights(first.get_layer(name).get_weights())
    return first, second


@pytest.fixture(scope="module")
def head_volume():
    volume = np.full((32, 32, 32), -1.0, np.float32)
    volume[3:29, 5:27, 4:28] = np.random.default_rng(3).random((26, 22, 24)) * 2 - 1
    return volume


@pytest.mark.parametrize("crop, tta", [("auto", False), pytest.param("auto", True, marks=pytest.mark.slow), ("off", False)])
def test_members_with_one_encoder_compute_it_once_and_get_their_own_results(two_decoders, head_volume, crop, tta,
                                                                            monkeypatch):
    from planar3d.inference.predict import predict_members, predict_volume, shares_encoder
    from planar3d.nets import stream

    assert shares_encoder(list(two_decoders))
    alone = [predict_volume(model, head_volume, crop=crop, precision="float32", tta=tta, stream=True)
             for model in two_decoders]
    assert not np.array_equal(alone[0], alone[1])  # the decoders differ
    calls = []
    original = stream.encode
    monkeypatch.setattr(stream, "encode", lambda model, inputs: calls.append(model.name) or original(model, inputs))
    predict_volume(two_decoders[0], head_volume, crop=crop, precision="float32", tta=tta, stream=True)
    per_model = len(calls)
    calls.clear()
    together = predict_members(list(two_decoders), head_volume, crop=crop, precision="float32", tta=tta, stream=True)
    for mine, expected in zip(together, alone):
        np.testing.assert_array_equal(mine, expected)
    assert per_model > 0 and len(calls) == per_model  # the encoder ran once for both members


def test_members_with_other_encoders_run_one_after_the_other(two_decoders, head_volume):
    from planar3d.inference.predict import predict_members, predict_volume, shares_encoder
    from planar3d.nets.model import build_model

    first, _ = two_decoders
    other = build_model((16, 32, 32, 1), encoder_weights=None, seed=2)  # its own encoder
    kernel, bias = other.get_layer("block1_conv1").get_weights()
    assert not shares_encoder([first, other])
    acs = build_model((16, 32, 32, 1), encoder_weights=None, seed=1, mapping="acs")
    assert not shares_encoder([first, acs])  # another layer type
    nudged = keras.models.clone_model(first)
    nudged.set_weights(first.get_weights())
    k, b = nudged.get_layer("block3_conv2").get_weights()
    nudged.get_layer("block3_conv2").set_weights([np.nextafter(k, np.inf), b])  # one ulp apart
    assert not shares_encoder([first, nudged])
    results = predict_members([first, other], head_volume, precision="float32")
    for mine, model in zip(results, (first, other)):
        np.testing.assert_array_equal(mine, predict_volume(model, head_volume, precision="float32"))
