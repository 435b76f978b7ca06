"""Tests for planar3d.data: the preprocessed-volume cache and the paper's CV split."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from planar3d.data import cache as data_module
from planar3d.data.cache import CachedCase, cache_key, load_cases
from planar3d.data.preprocess import to_native
from planar3d.data.splits import centre_split, cv_split, n_folds
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io.records import Record

REAL_IDS = [
    "01016SACH", "01038PAGU", "01039VITE", "01040VANE", "01042GULE",
    "07001MOEL", "07003SATH", "07010NABO", "07040DORE", "07043SEME",
    "08002CHJE", "08027SYBR", "08029IVDI", "08031SEVE", "08037ROGU",
]
AFFINE = np.diag([-1.1, 0.9, 1.0, 1.0])


def make_record(folder: Path, rng: np.random.Generator, patient_id: str = "01001TEST", mask: bool = True) -> Record:
    folder.mkdir(parents=True, exist_ok=True)
    scan = rng.random((12, 20, 18)).astype(np.float32)
    nib.save(nib.Nifti1Image(scan, AFFINE), folder / "3DFLAIR.nii.gz")
    mask_path = None
    if mask:
        mask_path = folder / "Consensus.nii.gz"
        nib.save(nib.Nifti1Image((scan > 0.9).astype(np.uint8), AFFINE), mask_path)
    return Record(patient_id, patient_id[:2], folder / "3DFLAIR.nii.gz", mask_path)


@pytest.fixture
def record(tmp_path, rng) -> Record:
    return make_record(tmp_path / "data" / "01001TEST", rng)


@pytest.fixture
def count_preprocess(monkeypatch):
    calls = []
    original = data_module.preprocess_channels

    def counting(*args, **kwargs):
        calls.append(kwargs.get("size"))
        return original(*args, **kwargs)

    monkeypatch.setattr(data_module, "preprocess_channels", counting)
    return calls


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# cache


def test_miss_then_hit_memory_maps(tmp_path, record, count_preprocess):
    cache = tmp_path / "cache"
    [first] = load_cases([record], size=16, cache_dir=cache, progress=False)
    [second] = load_cases([record], size=16, cache_dir=cache, progress=False)
    assert count_preprocess == [16]  # the second load preprocessed nothing
    assert isinstance(second, CachedCase) and second.record == record
    assert isinstance(second.volume, np.memmap) and isinstance(second.mask, np.memmap)
    assert second.volume.shape == second.mask.shape == (16, 16, 16)
    assert second.volume.dtype == second.mask.dtype == np.float32
    np.testing.assert_array_equal(first.volume, second.volume)
    assert second.meta == first.meta and second.meta["patient_id"] == "01001TEST"
    assert to_native(np.asarray(second.mask), second.meta).shape == (12, 20, 18)
    assert len(entries(cache)) == 1


def test_case_without_mask(tmp_path, rng):
    record = make_record(tmp_path / "07002NOMA", rng, "07002NOMA", mask=False)
    [case] = load_cases([record], size=16, cache_dir=tmp_path / "c", progress=False)
    [again] = load_cases([record], size=16, cache_dir=tmp_path / "c", progress=False)
    assert case.mask is None and again.mask is None and case.centre == "07"


def test_changed_parameter_is_a_miss(tmp_path, record, count_preprocess):
    cache = tmp_path / "cache"
    for size, robust in [(16, False), (32, False), (16, True), (16, False)]:
        load_cases([record], size=size, cache_dir=cache, robust=robust, progress=False)
    assert count_preprocess == [16, 32, 16]
    assert len(entries(cache)) == 3


def test_changed_source_file_is_a_miss(tmp_path, record, rng, count_preprocess):
    cache = tmp_path / "cache"
    [before] = load_cases([record], size=16, cache_dir=cache, progress=False)
    key = cache_key(record, 16)
    nib.save(nib.Nifti1Image(rng.random((12, 20, 18)).astype(np.float32), AFFINE), record.flair)
    assert cache_key(record, 16) != key
    [after] = load_cases([record], size=16, cache_dir=cache, progress=False)
    assert count_preprocess == [16, 16]
    assert not np.array_equal(before.volume, after.volume)


def test_changed_mask_is_a_miss(tmp_path, record):
    key = cache_key(record, 16)
    nib.save(nib.Nifti1Image(np.zeros((12, 20, 18), np.uint8), AFFINE), record.mask)
    assert cache_key(record, 16) != key
    assert cache_key(Record(record.patient_id, record.centre, record.flair, None), 16) != cache_key(record, 16)


def test_killed_write_is_never_read_as_valid(tmp_path, record, monkeypatch, count_preprocess):
    cache = tmp_path / "cache"
    real_save = np.save
    saved = []

    def dying_save(path, array, *args, **kwargs):
        saved.append(Path(path).name)
        if len(saved) == 2:  # volume written, killed while writing the mask
            Path(path).write_bytes(b"\x93NUMPY partial")
            raise KeyboardInterrupt
        real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(data_module.np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        load_cases([record], size=16, cache_dir=cache, progress=False)
    monkeypatch.setattr(data_module.np, "save", real_save)
    assert entries(cache) == []  # no entry under a real name, temporary folder removed
    [case] = load_cases([record], size=16, cache_dir=cache, progress=False)
    assert count_preprocess == [16, 16]
    assert case.mask.shape == (16, 16, 16)


def test_leftover_temporary_folder_and_damaged_entry_are_rebuilt(tmp_path, record, count_preprocess):
    cache = tmp_path / "cache"
    [case] = load_cases([record], size=16, cache_dir=cache, progress=False)
    [entry] = entries(cache)
    (cache / ".tmp-crashed-123").mkdir()  # what a SIGKILL during a write would leave
    volume_file = cache / entry / "volume.npy"
    volume_file.write_bytes(volume_file.read_bytes()[:200])  # damaged after the fact
    del case
    [rebuilt] = load_cases([record], size=16, cache_dir=cache, progress=False)
    assert count_preprocess == [16, 16]
    assert rebuilt.volume.shape == (16, 16, 16)


def test_bad_input_is_reported_with_the_file(tmp_path, rng):
    record = make_record(tmp_path / "01001TEST", rng)
    nib.save(nib.Nifti1Image(np.full((12, 20, 18), 0.5, np.float32), AFFINE), record.mask)
    with pytest.raises(InputFileError, match=r"Consensus\.nii\.gz: mask is not binary"):
        load_cases([record], size=16, cache_dir=tmp_path / "c", progress=False)
    assert entries(tmp_path / "c") == []


def test_duplicate_ids_and_bad_size(tmp_path, record):
    with pytest.raises(Planar3DError, match=r"patient ids must be unique\. Received duplicates: \['01001TEST'\]"):
        load_cases([record, record], size=16, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(Planar3DError, match=r"Received: size=20$"):
        load_cases([record], size=20, cache_dir=tmp_path / "c", progress=False)


def test_default_cache_dir_follows_planar3d_home(tmp_path, record, monkeypatch):
    monkeypatch.setenv("PLANAR3D_HOME", str(tmp_path / "home"))
    load_cases([record], size=16, progress=False)
    assert len(entries(tmp_path / "home" / "cache")) == 1
    meta = json.loads(next((tmp_path / "home" / "cache").glob("*/meta.json")).read_text())
    assert meta["size"] == 16


# cross-validation split


def test_fold4_of_the_real_ids_tests_the_last_of_each_centre():
    train, val, test = cv_split(REAL_IDS, 4)
    assert test == ["01042GULE", "07043SEME", "08037ROGU"]
    assert val == ["08031SEVE"]
    assert len(train) == 11


def test_fold0_of_the_real_ids():
    train, val, test = cv_split(list(reversed(REAL_IDS)), 0)
    assert test == ["01016SACH", "07001MOEL", "08002CHJE"]
    assert val == ["08037ROGU"]
    assert train == sorted(set(REAL_IDS) - set(test) - set(val))


def test_every_patient_tested_once_and_sets_disjoint():
    assert n_folds(REAL_IDS) == 5
    tested = []
    for fold in range(5):
        train, val, test = cv_split(REAL_IDS, fold)
        assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
        assert sorted(train + val + test) == sorted(REAL_IDS)
        assert len(val) == 1 and len(test) == 3
        tested += test
    assert sorted(tested) == sorted(REAL_IDS)


def test_unequal_centres_use_the_smallest():
    ids = ["01A", "01B", "01C", "07A", "07B"]
    assert n_folds(ids) == 2
    assert cv_split(ids, 1) == (["01A", "01C"], ["07A"], ["01B", "07B"])  # 01C is never tested


@pytest.mark.parametrize("fold", [7, -1, 5, 1.0, True])
def test_fold_out_of_range(fold):
    with pytest.raises(Planar3DError, match=rf"^fold must be in 0\.\.4\. Received: fold={fold!r}$"):
        cv_split(REAL_IDS, fold)


def test_too_few_patients_and_bad_ids():
    with pytest.raises(Planar3DError, match=r"too few patients.*Received: 3 patients in 3 centres"):
        cv_split(["01A", "07A", "08A"], 0)
    with pytest.raises(Planar3DError, match=r"patient ids must be unique\. Received duplicates: \['01A'\]"):
        cv_split(["01A", "01A", "01B"], 0)
    with pytest.raises(Planar3DError, match=r"patient_ids must not be empty"):
        cv_split([], 0)


def test_prepare_cli_fills_the_cache_and_summarises(tmp_path, rng, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "data_prep" / "prepare_msseg2016.py"
    spec = importlib.util.spec_from_file_location("prepare_msseg2016", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    for pid in ("01001AAAA", "07001BBBB"):
        make_record(tmp_path / "data" / pid, rng, pid)
    argv = [str(tmp_path / "data"), "--size", "16", "--cache-dir", str(tmp_path / "c"), "--no-progress", "--round-trip"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 scans from" in printed and "centre 07: 1 patients" in printed and "round trip" in printed
    assert len(entries(tmp_path / "c")) == 2
    assert cli.main([str(tmp_path / "nothing"), "--size", "16"]) == 2
    assert "dataset not found" in capsys.readouterr().err


# leave-one-centre-out split


def test_centre_split_tests_each_centre_once_and_keeps_roles_apart():
    centres = {pid: pid[:2] for pid in REAL_IDS}
    tested_centres = []
    for fold in range(3):
        train, val, test = centre_split(centres, fold)
        assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
        assert sorted(train + val + test) == sorted(REAL_IDS)
        held_out = {centres[p] for p in test}
        assert len(held_out) == 1 and len(test) == 5
        assert not held_out & {centres[p] for p in train + val}
        assert sorted(centres[p] for p in val) == sorted({"01", "07", "08"} - held_out)
        assert len(train) == 8
        tested_centres += sorted(held_out)
    assert tested_centres == ["01", "07", "08"]
    train, val, test = centre_split(centres, 0)
    assert val == ["07043SEME", "08037ROGU"] and test[0] == "01016SACH"


def test_centre_split_uses_the_given_centres_and_refuses_bad_folds():
    centres = {"a1": "siteB", "a2": "siteB", "b1": "siteA", "b2": "siteA", "b3": "siteA"}
    assert centre_split(centres, 0) == (["a1"], ["a2"], ["b1", "b2", "b3"])
    assert centre_split(centres, 1) == (["b1", "b2"], ["b3"], ["a1", "a2"])
    with pytest.raises(Planar3DError, match=r"^fold must be in 0\.\.1 \(one per centre \['siteA', 'siteB'\]\)\. Received: fold=2$"):
        centre_split(centres, 2)
    with pytest.raises(Planar3DError, match=r"at least 2 centres. Received: \['x'\]"):
        centre_split({"a": "x", "b": "x"}, 0)
    with pytest.raises(Planar3DError, match=r"each training centre needs at least 2 patients \(one validates\). "
                                            r"Received: centres \['y'\] with 1 patient"):
        centre_split({"a": "x", "b": "x", "c": "y"}, 0)
    assert cv_split(REAL_IDS, 4)[2] == ["01042GULE", "07043SEME", "08037ROGU"]  # the paper's split is unchanged
