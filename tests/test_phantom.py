"""Tests for planar3d.phantom: the offline MSSEG-like phantom dataset."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from planar3d.data.preprocess import preprocess, to_native
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io import phantom as phantom_module
from planar3d.io.datasets import find_dataset
from planar3d.io.nifti import load_mask, load_scan
from planar3d.io.phantom import CENTRES, DEFAULT_SCALE, ensure_phantom, make_phantom_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom") / "msseg"
    records = make_phantom_dataset(root, n_per_centre=2, seed=5)
    return root, records


@pytest.mark.slow
def test_layout_ids_and_centres(dataset):
    root, records = dataset
    assert find_dataset(root, require_masks=True) == records
    assert [r.centre for r in records] == ["01", "01", "07", "07", "08", "08"]
    assert all(re.fullmatch(r"(01|07|08)\d{3}[A-Z]{4}", r.patient_id) for r in records)
    assert all(r.flair.name == "3DFLAIR.nii.gz" and r.mask.name == "Consensus.nii.gz" for r in records)
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".tmp")]


def test_centres_differ_in_grid_spacing_and_orientation(dataset):
    _, records = dataset
    grids = {}
    for record in records:
        img = nib.load(record.flair)
        expected_shape = tuple(int(round(n * DEFAULT_SCALE)) for n in next(c.shape for c in CENTRES if c.centre == record.centre))
        assert img.shape == expected_shape
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        grids.setdefault(record.centre, set()).add((nib.aff2axcodes(img.affine), tuple(np.round(img.header.get_zooms(), 3))))
    assert all(len(g) == 1 for g in grids.values())  # one acquisition per centre
    orientations = {next(iter(g))[0] for g in grids.values()}
    spacings = {next(iter(g))[1] for g in grids.values()}
    assert len(orientations) == 3 and len(spacings) == 3


def test_lesion_load_and_contrast(dataset):
    root, records = dataset
    info = json.loads((root / "phantom.json").read_text())
    by_centre = {}
    for record, subject in zip(records, info["subjects"]):
        scan = load_scan(record.flair)
        mask = load_mask(record.mask, scan).get_fdata() > 0
        ratio = mask.mean()
        assert subject["patient_id"] == record.patient_id and subject["lesion_ratio"] == pytest.approx(ratio)
        assert 0.0007 <= ratio <= 0.005, record.patient_id
        assert 1 <= subject["n_lesions"] <= 40
        by_centre.setdefault(record.centre, []).append(ratio)
        data = scan.get_fdata()
        head = data > np.percentile(data, 50)
        assert np.median(data[mask]) > np.percentile(data[head], 90)  # lesions are hyperintense
        assert scan.get_data_dtype() == np.int16 and nib.load(record.mask).get_data_dtype() == np.uint8
    means = {centre: np.mean(r) for centre, r in by_centre.items()}
    assert all(0.001 <= m <= 0.0035 for m in means.values()), means
    assert means["01"] > means["07"]  # centre 01 has the heavier lesion load (paper Table 1)


def test_lesions_survive_64_cube_resampling(dataset):
    _, records = dataset
    for record in records:
        scan = load_scan(record.flair)
        native = load_mask(record.mask, scan).get_fdata() > 0
        _, mask, meta = preprocess(scan, load_mask(record.mask, scan), size=64)
        assert mask.sum() > 0
        back = to_native(mask, meta) >= 0.5
        dice = 2 * (back & native).sum() / (back.sum() + native.sum())
        assert dice > 0.6, (record.patient_id, dice)


@pytest.mark.slow
def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    first = make_phantom_dataset(tmp_path / "a", n_per_centre=1, scale=0.1, seed=1)
    second = make_phantom_dataset(tmp_path / "b", n_per_centre=1, scale=0.1, seed=1)
    other = make_phantom_dataset(tmp_path / "c", n_per_centre=1, scale=0.1, seed=2)
    assert [r.patient_id for r in first] == [r.patient_id for r in second]
    assert [r.patient_id for r in first] != [r.patient_id for r in other]
    for a, b in zip(first, second):
        for path_a, path_b in [(a.flair, b.flair), (a.mask, b.mask)]:
            img_a, img_b = nib.load(path_a), nib.load(path_b)
            np.testing.assert_array_equal(np.asanyarray(img_a.dataobj), np.asanyarray(img_b.dataobj))
            np.testing.assert_array_equal(img_a.affine, img_b.affine)
    assert not np.array_equal(nib.load(first[0].flair).get_fdata(), nib.load(other[0].flair).get_fdata())


def test_explicit_lesion_load(tmp_path):
    records = make_phantom_dataset(tmp_path / "x", n_per_centre=1, scale=0.15, seed=0, lesion_load=0.004)
    ratios = [np.asanyarray(nib.load(r.mask).dataobj).mean() for r in records]
    assert all(0.002 <= ratio <= 0.008 for ratio in ratios), ratios


def test_existing_root_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(InputFileError, match=r"x: output exists"):
        make_phantom_dataset(tmp_path / "x", n_per_centre=1, scale=0.1)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"n_per_centre": 0}, r"n_per_centre must be a positive integer\. Received: n_per_centre=0"),
        ({"scale": 2.0}, r"scale must be in \[0\.05, 1\]\. Received: scale=2\.0"),
        ({"seed": -1}, r"seed must be a non-negative integer\. Received: seed=-1"),
        ({"lesion_load": 0.5}, r"lesion_load must be in \(0, 0\.05\] or None\. Received: lesion_load=0\.5"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(Planar3DError, match=message):
        make_phantom_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_ensure_phantom_generates_once_under_planar3d_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANAR3D_HOME", str(tmp_path))
    calls = []
    original = phantom_module.make_phantom_dataset

    def counting(root, **kwargs):
        calls.append(kwargs)
        return original(root, **kwargs)

    monkeypatch.setattr(phantom_module, "make_phantom_dataset", counting)
    root = ensure_phantom(n_per_centre=1, scale=0.1, seed=4)
    assert root == tmp_path / "phantoms" / "msseg-phantom-scale0.1-n1-seed4"
    assert ensure_phantom(n_per_centre=1, scale=0.1, seed=4) == root
    assert len(calls) == 1
    assert len(find_dataset(root)) == 3
    with pytest.raises(Planar3DError, match=r"holds a phantom made with .* choose another root"):
        ensure_phantom(root, n_per_centre=1, scale=0.1, seed=5)


def load_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data_prep" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"data_prep_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_phantom_cli(tmp_path, capsys):
    cli = load_script("make_phantom")
    assert cli.main([str(tmp_path / "out"), "--n-per-centre", "1", "--scale", "0.1", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "centre 01: 1 subjects" in printed and "centre 08: 1 subjects" in printed
    assert len(find_dataset(tmp_path / "out")) == 3
    assert cli.main([str(tmp_path / "out"), "--scale", "0.1"]) == 2
    assert "output exists" in capsys.readouterr().err
