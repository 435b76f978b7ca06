"""Several MRI sequences as input channels (``--channels flair t1c``): the flag, the readers'
other scans, the grid check, preprocessing, the cache, the training windows, the first layer's
kernel rule and inference on a stack.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from planar3d.cli.common import parse_channels
from planar3d.config import make_config
from planar3d.data.cache import cache_key, load_cases
from planar3d.data.preprocess import preprocess, preprocess_channels
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io.datasets import read_dataset_table, scan_channels
from planar3d.io.nifti import load_channel, load_scan
from planar3d.io.records import Record


def _scan(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([1.0, 1.2, 0.9, 1.0]) if affine is None else affine), path)
    return path


@pytest.fixture
def patient(tmp_path, rng):
    """A FLAIR, a T1c on its grid, a T2 on another grid and a mask, 20 x 24 x 18 voxels."""
    shape = (20, 24, 18)
    flair = _scan(tmp_path / "flair.nii.gz", rng.random(shape) * 300)
    t1c = _scan(tmp_path / "t1c.nii.gz", rng.random(shape) * 50 - 10)
    t2 = _scan(tmp_path / "t2.nii.gz", rng.random((20, 24, 17)))
    mask = np.zeros(shape, np.uint8)
    mask[8:12, 10:14, 7:10] = 1
    nib.save(nib.Nifti1Image(mask, np.diag([1.0, 1.2, 0.9, 1.0])), tmp_path / "mask.nii.gz")
    return Record("p1", "c1", flair, tmp_path / "mask.nii.gz", channels=(("t1c", t1c), ("t2", t2)))


# ----------------------------------------------------------------------------- the flag

@pytest.mark.parametrize("values, expected", [(["1"], (1, ["flair"])), (["3"], (3, ["flair"])),
                                              (["flair", "T1c"], (2, ["flair", "t1c"]))])
def test_channels_flag_takes_a_count_or_modality_names(values, expected):
    assert parse_channels(values) == expected
    channels, modalities = expected
    assert make_config("demo", channels=channels, modalities=modalities).modalities == modalities


@pytest.mark.parametrize("modalities, channels, message", [
    (["t1c", "flair"], 2, "flair first"),
    (["flair", "flair"], 2, "distinct names"),
    (["flair", "dwi"], 2, "distinct names"),
    (["flair"], 2, "channels must be 1 or 3"),
    (["flair", "t1c"], 3, r"channels must equal the number of modalities \(2: flair t1c\)"),
])
def test_bad_channel_choices_are_refused_in_one_line(modalities, channels, message):
    with pytest.raises(Planar3DError, match=message):
        make_config("demo", channels=channels, modalities=modalities)


# ----------------------------------------------------------------------------- readers and files

def test_a_missing_modality_names_the_flair_and_what_the_patient_has(patient):
    assert patient.scan_files(["flair", "t1c"]) == [patient.flair, dict(patient.channels)["t1c"]]
    with pytest.raises(InputFileError) as caught:
        patient.scan_files(["flair", "pd"])
    assert str(caught.value) == f"{patient.flair}: patient p1 has no pd scan beside this FLAIR (it has: flair t1c t2)"


def test_a_table_gives_other_scans_in_modality_columns(tmp_path, patient):
    table = tmp_path / "data.csv"
    table.write_text(f"subject,centre,flair,mask,t1c\np1,c1,{patient.flair.name},mask.nii.gz,t1c.nii.gz\n")
    (record,) = read_dataset_table(table)
    assert record.channels == (("t1c", tmp_path / "t1c.nii.gz"),)
    table.write_text(f"subject,centre,flair,mask,t1c\np1,c1,{patient.flair.name},mask.nii.gz,nothere.nii.gz\n")
    with pytest.raises(InputFileError, match=r"nothere.nii.gz: file not found \(listed in data.csv line 2, column t1c\)"):
        read_dataset_table(table)


def test_a_scan_off_the_flairs_grid_is_refused_in_one_line(patient):
    flair = load_scan(patient.flair)
    t2 = dict(patient.channels)["t2"]
    with pytest.raises(InputFileError) as caught:
        load_channel(t2, flair, "t2")
    assert str(caught.value) == (f"{t2}: t2 scan is not on the FLAIR's grid: shape (20, 24, 17) differs from (20, 24, 18); "
                                 "resample it onto the FLAIR's grid first")
    moved = _scan(patient.flair.with_name("moved.nii.gz"), flair.get_fdata(), np.diag([1.0, 1.2, 0.95, 1.0]))
    with pytest.raises(InputFileError, match="t1c scan is not on the FLAIR's grid: affine differs .by up to 0.05.; resample"):
        load_channel(moved, flair, "t1c")


def test_other_scans_are_found_beside_a_flair_in_a_known_layout(tmp_path, patient):
    case = tmp_path / "case"  # a BRATS 2017-2021 case folder
    case.mkdir()
    flair, t1c = (case / "c_flair.nii.gz", case / "c_t1ce.nii.gz")
    flair.symlink_to(patient.flair)
    t1c.symlink_to(dict(patient.channels)["t1c"])
    assert scan_channels(flair, ["flair", "t1c"]) == [flair, t1c]
    with pytest.raises(InputFileError, match=r"patient case has no t2 scan beside this FLAIR \(it has: flair t1c\)"):
        scan_channels(flair, ["flair", "t2"])
    lone = tmp_path / "lone" / "scan.nii.gz"
    lone.parent.mkdir()
    lone.symlink_to(patient.flair)
    assert scan_channels(lone, ["flair"]) == [lone]
    with pytest.raises(InputFileError, match="scan.nii.gz: the model stacks flair t1c: planar3d finds the other scans in "
                                             "the FLAIR's patient folder of a known layout"):
        scan_channels(lone, ["flair", "t1c"])


# ----------------------------------------------------------------------------- preprocessing and cache

def test_each_channel_is_preprocessed_exactly_as_a_flair_alone(patient):
    flair, t1c = load_scan(patient.flair), load_scan(dict(patient.channels)["t1c"])
    volume, mask, meta = preprocess_channels(flair, [t1c], None, size=32)
    assert volume.shape == (32, 32, 32, 2) and volume.dtype == np.float32 and mask is None
    np.testing.assert_array_equal(volume[..., 0], preprocess(flair, size=32)[0])
    np.testing.assert_array_equal(volume[..., 1], preprocess(t1c, size=32)[0])
    assert meta["channel_intensity_ranges"][1] == preprocess(t1c, size=32)[2]["intensity_range"]
    alone = preprocess_channels(flair, [], None, size=32)
    np.testing.assert_array_equal(alone[0], preprocess(flair, size=32)[0])
    t2 = load_scan(dict(patient.channels)["t2"])
    with pytest.raises(Planar3DError, match=r"^every scan must lie on the FLAIR's grid: shape \(20, 24, 17\) differs from \(20, 24, 18\)$"):
        preprocess_channels(flair, [t1c, t2], None, size=32)


def test_the_cache_keeps_flair_keys_and_stacks_modalities(tmp_path, patient):
    assert cache_key(patient, 32) == cache_key(patient, 32, modalities=("flair",))
    assert cache_key(patient, 32, modalities=("flair", "t1c")) != cache_key(patient, 32)
    (grey,) = load_cases([patient], size=32, cache_dir=tmp_path / "cache", progress=False)
    (stacked,) = load_cases([patient], size=32, cache_dir=tmp_path / "cache", progress=False, modalities=("flair", "t1c"))
    assert grey.volume.shape == (32, 32, 32) and stacked.volume.shape == (32, 32, 32, 2)
    assert isinstance(stacked.volume, np.memmap) and stacked.mask.shape == (32, 32, 32)
    np.testing.assert_array_equal(stacked.volume[..., 0], grey.volume)
    np.testing.assert_array_equal(stacked.mask, grey.mask)
    assert stacked.meta["modalities"] == {"flair": str(patient.flair), "t1c": str(dict(patient.channels)["t1c"])}
    with pytest.raises(InputFileError, match="t2 scan is not on the FLAIR.s grid: shape"):
        load_cases([patient], size=32, cache_dir=tmp_path / "cache", progress=False, modalities=("flair", "t2"))


# ----------------------------------------------------------------------------- windows, model, inference

def test_training_windows_carry_the_stack_unchanged(rng):
    from planar3d.data.windows import window_dataset

    volume = rng.random((32, 16, 16, 2)).astype(np.float32)
    mask = (rng.random((32, 16, 16)) > 0.9).astype(np.float32)
    batches = list(window_dataset([volume], [mask], size=16, stride=8, batch_size=3, shuffle=False, channels=2))
    windows = np.concatenate([window.numpy() for window, _ in batches])
    np.testing.assert_array_equal(windows, np.stack([volume[s:s + 16] for s in (0, 8, 16)]))
    with pytest.raises(Planar3DError, match=r"each volume must have shape \(slices, rows, cols\), or \(slices, rows, cols, 3\)"):
        window_dataset([volume], [mask], size=16, stride=8, channels=3)


@pytest.fixture(scope="module")
def two_channel_models():
    """The paper's network on 1 and on 2 channels, one random encoder (same seed)."""
    from planar3d.nets.model import build_model

    return [build_model((16, 32, 32, c), encoder_weights=None, seed=3) for c in (1, 2)]


def test_the_first_kernel_of_two_channels_is_the_rgb_mean_scaled(two_channel_models):
    from planar3d.nets.mapping import channel_kernel, grey_kernel

    grey, stacked = (m.get_layer("block1_conv1").get_weights()[0] for m in two_channel_models)
    assert stacked.shape[-2] == 2
    # both come from one 3-channel kernel K: grey = sum_c K_c, stacked = mean_c K_c * 3/2 per channel
    np.testing.assert_allclose(stacked.sum(axis=-2, keepdims=True), grey, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(channel_kernel(np.repeat(grey / 3, 3, axis=-2), 2),
                                  np.repeat(grey / 3 * 1.5, 2, axis=-2).astype(grey.dtype))
    assert grey_kernel(np.ones((1, 3, 3, 3, 4))).shape == (1, 3, 3, 1, 4)


@pytest.mark.parametrize("crop, precision", [("off", "float32"), ("auto", "float32")])
def test_a_stack_of_copies_predicts_as_the_grey_scan(two_channel_models, rng, crop, precision):
    from planar3d.inference.predict import predict_volume

    grey_model, stacked_model = two_channel_models
    for name in [layer.name for layer in grey_model.layers if layer.get_weights()]:
        if name != "block1_conv1":
            stacked_model.get_layer(name).set_weights(grey_model.get_layer(name).get_weights())
    volume = np.zeros((32, 32, 32), np.float32) - 1
    volume[4:28, 6:26, 5:27] = rng.random((24, 20, 22)) * 2 - 1  # a head for the crop
    grey = predict_volume(grey_model, volume, crop=crop, precision=precision)
    stacked = predict_volume(stacked_model, np.stack([volume, volume], axis=-1), crop=crop, precision=precision)
    np.testing.assert_allclose(stacked, grey, atol=2e-6)
    with pytest.raises(Planar3DError, match=r"volume must have shape \(slices, rows, cols\) or \(slices, rows, cols, 2\)"):
        predict_volume(stacked_model, np.stack([volume] * 3, axis=-1), crop="auto")
