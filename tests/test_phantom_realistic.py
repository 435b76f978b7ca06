"""The ``realistic`` phantom mode: layout, lesion load per centre, bias field, noise, determinism."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from planar3d.errors import Planar3DError
from planar3d.io.datasets import find_dataset
from planar3d.io.phantom import CENTRES, DEFAULT_SCALE, ensure_phantom, make_phantom_dataset
from planar3d.io.phantom_realistic import ACQUISITION, LESION_TYPES, _volume_mm3, acquire

#: paper Table 1, lesion voxel ratio per centre
TABLE1 = {"01": 0.00311, "07": 0.00141, "08": 0.00144}


@pytest.fixture(scope="module")
def realistic(tmp_path_factory):
    root = tmp_path_factory.mktemp("realistic") / "msseg"
    records = make_phantom_dataset(root, n_per_centre=2, seed=3, mode="realistic")
    return root, records, json.loads((root / "phantom.json").read_text())


@pytest.mark.slow
def test_layout_grids_and_orientation_as_the_simple_mode(realistic):
    root, records, info = realistic
    assert find_dataset(root, require_masks=True) == records
    assert info["options"]["mode"] == "realistic"
    assert [r.centre for r in records] == ["01", "01", "07", "07", "08", "08"]
    for record in records:
        spec = next(c for c in CENTRES if c.centre == record.centre)
        scan, mask = nib.load(record.flair), nib.load(record.mask)
        assert scan.shape == tuple(int(round(n * DEFAULT_SCALE)) for n in spec.shape) == mask.shape
        assert nib.aff2axcodes(scan.affine) == nib.aff2axcodes(mask.affine)
        assert scan.get_data_dtype() == np.int16 and mask.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
    assert len({nib.aff2axcodes(nib.load(r.flair).affine) for r in records}) == 3


def test_lesion_load_per_centre_within_10_percent_of_table1(realistic):
    _, records, info = realistic
    by_centre: dict[str, list[float]] = {}
    for record, subject in zip(records, info["subjects"]):
        ratio = float(np.asarray(nib.load(record.mask).dataobj).mean())
        assert subject["lesion_ratio"] == pytest.approx(ratio)
        by_centre.setdefault(record.centre, []).append(ratio)
        assert sum(subject["lesions_per_type"].values()) == subject["n_lesions"]
        assert set(subject["lesions_per_type"]) == set(LESION_TYPES)
    for centre, ratios in by_centre.items():
        assert abs(np.mean(ratios) / TABLE1[centre] - 1) <= 0.10, (centre, ratios)
    assert len({round(r, 5) for ratios in by_centre.values() for r in ratios}) == 6  # subjects vary


def test_background_noise_is_rician_at_the_centres_snr(realistic):
    _, records, info = realistic
    for record, subject in zip(records, info["subjects"]):
        data = np.asarray(nib.load(record.flair).dataobj).astype(float)
        corner = data[:4, :4, :].ravel()  # air: no signal, so magnitude noise is Rayleigh
        sigma = subject["noise_sigma"]
        assert np.mean(corner) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.15), record.patient_id
        assert subject["snr"] == ACQUISITION[record.centre].snr
    snr = {c: a.snr for c, a in ACQUISITION.items()}
    assert snr["07"] < min(snr["01"], snr["08"])  # the 1.5 T-like centre is the noisiest


def test_acquire_applies_a_measurable_bias_and_rician_noise():
    rng = np.random.default_rng(0)
    clean = np.full((24, 24, 24), 1000.0, dtype=np.float32)
    clean[:, :, :4] = 0.0
    bias = np.exp(0.1 * np.linspace(-1, 1, 24))[:, None, None] * np.ones((1, 24, 24))
    image = acquire(clean, bias.astype(np.float32), sigma=20.0, rng=rng)
    signal = image[:, :, 4:]
    profile = signal.mean(axis=(1, 2)) / 1000.0
    np.testing.assert_allclose(profile, bias[:, 0, 0], rtol=0.01)  # the bias field is in the image
    assert profile.max() / profile.min() == pytest.approx(np.exp(0.2), rel=0.01)
    residual = signal - 1000.0 * bias[:, :, 4:]
    assert residual.std() == pytest.approx(20.0, rel=0.05)  # high SNR: Rician ≈ Gaussian
    assert image[:, :, :4].mean() == pytest.approx(20.0 * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh at 0
    assert image.min() >= 0


@pytest.mark.slow
def test_realistic_scans_carry_a_bias_field_of_20_to_60_percent(realistic, tmp_path, monkeypatch):
    """Measured on the images: the ratio of each scan to the same subject made without a bias field (same seed,
    every centre's bias amplitude 0 -- the generator has no switch for it -- so the field is still drawn and every
    other draw, the noise included, is the same), both smoothed over a voxel, in the voxels brighter than 0.35
    times the unbiased scan's 99th percentile. The ratio's range (max / min) is the bias field's as phantom.json
    states it (measured: 0 to 11 % less non-uniformity for phantom seeds 0, 1 and 3, the smoothing and the voxels
    left out shaving the extremes), between 1.1 and 1.7."""
    _, records, info = realistic
    for centre, acquisition in ACQUISITION.items():
        monkeypatch.setitem(ACQUISITION, centre, dataclasses.replace(acquisition, bias_amplitude=0.0))
    flat = make_phantom_dataset(tmp_path / "flat", n_per_centre=2, seed=3, mode="realistic")
    flat_info = json.loads((tmp_path / "flat" / "phantom.json").read_text())
    measured = []
    for record, unbiased, subject, flat_subject in zip(records, flat, info["subjects"], flat_info["subjects"]):
        assert unbiased.patient_id == record.patient_id and flat_subject["bias_range"] == 1.0
        np.testing.assert_array_equal(np.asarray(nib.load(unbiased.mask).dataobj),
                                      np.asarray(nib.load(record.mask).dataobj))  # the same subject
        scan, plain = (np.asarray(nib.load(r.flair).dataobj).astype(float) for r in (record, unbiased))
        inside = plain > 0.35 * np.percentile(plain, 99)
        ratio = ndimage.gaussian_filter(scan, 1.0)[inside] / ndimage.gaussian_filter(plain, 1.0)[inside]
        measured.append(ratio.max() / ratio.min())
        assert measured[-1] - 1 == pytest.approx(subject["bias_range"] - 1, rel=0.2), record.patient_id
    assert all(1.1 <= r <= 1.7 for r in measured), measured


def test_lesion_sizes_span_3_mm3_to_ml_with_a_heavy_tail():
    rng = np.random.default_rng(1)
    volumes = np.array([_volume_mm3(rng) for _ in range(4000)])
    assert volumes.min() == 3.0 and volumes.max() <= 6000.0 and volumes.max() > 1000.0
    assert np.percentile(volumes, 95) / np.median(volumes) > 5


@pytest.mark.slow
def test_deterministic_and_distinct_from_the_simple_mode(tmp_path):
    first = make_phantom_dataset(tmp_path / "first", n_per_centre=1, scale=0.15, seed=3, mode="realistic")
    again = make_phantom_dataset(tmp_path / "again", n_per_centre=1, scale=0.15, seed=3, mode="realistic")
    simple = make_phantom_dataset(tmp_path / "simple", n_per_centre=1, scale=0.15, seed=3)
    assert [r.patient_id for r in again] == [r.patient_id for r in first] == [r.patient_id for r in simple]
    for a, b, c in zip(first, again, simple):
        np.testing.assert_array_equal(np.asarray(nib.load(a.flair).dataobj), np.asarray(nib.load(b.flair).dataobj))
        np.testing.assert_array_equal(np.asarray(nib.load(a.mask).dataobj), np.asarray(nib.load(b.mask).dataobj))
        assert not np.array_equal(np.asarray(nib.load(a.mask).dataobj), np.asarray(nib.load(c.mask).dataobj))


@pytest.mark.slow
def test_ensure_phantom_keeps_modes_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANAR3D_HOME", str(tmp_path))
    root = ensure_phantom(n_per_centre=1, scale=0.1, seed=4, mode="realistic")
    assert root.name == "msseg-phantom-scale0.1-n1-seed4-realistic"
    simple = ensure_phantom(n_per_centre=1, scale=0.1, seed=4)
    assert simple.name == "msseg-phantom-scale0.1-n1-seed4"
    # a phantom written before modes existed has no "mode" in its options: it is a simple one
    info = json.loads((simple / "phantom.json").read_text())
    del info["options"]["mode"]
    (simple / "phantom.json").write_text(json.dumps(info))
    assert ensure_phantom(n_per_centre=1, scale=0.1, seed=4) == simple
    with pytest.raises(Planar3DError, match=r"holds a phantom made with .*'mode': 'simple'.* choose another root"):
        ensure_phantom(simple, n_per_centre=1, scale=0.1, seed=4, mode="realistic")
    with pytest.raises(Planar3DError, match=r"mode must be one of \['simple', 'realistic'\]. Received: mode='real'"):
        ensure_phantom(n_per_centre=1, scale=0.1, seed=4, mode="real")
