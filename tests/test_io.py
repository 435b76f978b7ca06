"""Tests for planar3d.io: validated NIfTI loading, saving on a reference grid, dataset discovery."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from planar3d.errors import InputFileError, Planar3DError
from planar3d.io.datasets import find_dataset, find_msseg2016, read_dataset_table
from planar3d.io.nifti import load_mask, load_nifti, load_scan, save_nifti
from planar3d.io.records import Record

AFFINE = np.array([[-1.0, 0, 0, 10], [0, 1.5, 0, -20], [0, 0, 2.0, 5], [0, 0, 0, 1]])


def write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture
def scan(tmp_path, rng) -> Path:
    return write(tmp_path / "scan.nii.gz", rng.random((6, 7, 8)).astype(np.float32))


@pytest.fixture
def mask_data(rng) -> np.ndarray:
    return (rng.random((6, 7, 8)) > 0.8).astype(np.uint8)


def make_patient(folder: Path, rng: np.random.Generator, with_mask: bool = True) -> None:
    write(folder / "3DFLAIR.nii.gz", rng.random((4, 5, 6)).astype(np.float32))
    if with_mask:
        write(folder / "Consensus.nii.gz", np.zeros((4, 5, 6), np.uint8))


# loading


def test_load_nifti_reads_3d_float32_data(scan):
    img = load_nifti(scan)
    assert img.shape == (6, 7, 8)
    np.testing.assert_array_equal(img.affine, AFFINE)
    assert img.get_fdata(dtype=np.float32).dtype == np.float32


def test_load_nifti_accepts_4d_with_singleton_trailing_axis(tmp_path, rng):
    data = rng.random((4, 5, 6, 1)).astype(np.float32)
    img = load_nifti(write(tmp_path / "a.nii.gz", data))
    assert img.shape == (4, 5, 6)
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), data[..., 0])


def test_missing_file(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(InputFileError, match=r"nope\.nii\.gz: file not found$"):
        load_nifti(path)


def test_not_a_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("hello, not an image")
    with pytest.raises(InputFileError, match=r"notes\.nii\.gz: not a NIfTI image"):
        load_nifti(path)


def test_not_a_nifti_other_extension(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InputFileError, match=r"notes\.txt: not a NIfTI image"):
        load_nifti(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_gz(scan, tmp_path, keep):
    raw = scan.read_bytes()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(InputFileError, match=r"broken\.nii\.gz: truncated or corrupt voxel data \("):
        load_nifti(broken)


def test_truncated_uncompressed(tmp_path, rng):
    path = write(tmp_path / "a.nii", rng.random((6, 7, 8)).astype(np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(InputFileError, match=r"a\.nii: truncated or corrupt voxel data"):
        load_nifti(path)


def test_corrupt_gz_stream(scan, tmp_path):
    raw = bytearray(gzip.decompress(scan.read_bytes()))
    corrupt = bytearray(gzip.compress(bytes(raw)))
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\xff" * 64
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(corrupt))
    with pytest.raises(InputFileError, match=r"corrupt\.nii\.gz: truncated or corrupt voxel data"):
        load_nifti(path)


@pytest.mark.parametrize("shape", [(4, 5, 6, 2), (4, 5)])
def test_wrong_dimensionality(tmp_path, shape):
    path = write(tmp_path / "x.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(InputFileError, match=rf"x\.nii\.gz: expected a 3D image, got {len(shape)}D"):
        load_nifti(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path, rng, bad):
    data = rng.random((4, 5, 6)).astype(np.float32)
    data[1, 2, 3] = bad
    data[0, 0, 0] = bad
    path = write(tmp_path / "x.nii.gz", data)
    with pytest.raises(InputFileError, match=r"x\.nii\.gz: 2 voxels are NaN or Inf"):
        load_nifti(path)


def test_constant_scan(tmp_path):
    path = write(tmp_path / "flat.nii.gz", np.full((4, 5, 6), 7, np.int16))
    with pytest.raises(InputFileError, match=r"flat\.nii\.gz: constant image \(every voxel is 7\.0\)"):
        load_scan(path)


def test_constant_mask_is_fine(scan, tmp_path):
    path = write(tmp_path / "empty.nii.gz", np.zeros((6, 7, 8), np.uint8))
    assert load_mask(path, load_scan(scan)).shape == (6, 7, 8)


def test_mask_shape_mismatch(scan, tmp_path):
    path = write(tmp_path / "m.nii.gz", np.zeros((6, 7, 9), np.uint8))
    with pytest.raises(InputFileError, match=r"m\.nii\.gz: mask is not on the scan's grid: shape \(6, 7, 9\) differs from \(6, 7, 8\)$"):
        load_mask(path, load_scan(scan))


def test_mask_affine_mismatch(scan, tmp_path, mask_data):
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    path = write(tmp_path / "m.nii.gz", mask_data, shifted)
    with pytest.raises(InputFileError, match=r"m\.nii\.gz: mask is not on the scan's grid: affine differs \(by up to 0\.5\)$"):
        load_mask(path, load_scan(scan))


def test_non_binary_mask(scan, tmp_path, mask_data):
    soft = mask_data.astype(np.float32)
    soft[0, 0, 0] = 0.5
    path = write(tmp_path / "m.nii.gz", soft)
    with pytest.raises(InputFileError, match=r"m\.nii\.gz: mask is not binary: 1 voxels .* \(e\.g\. 0\.5\)"):
        load_mask(path, load_scan(scan))


def test_label_mask_255_is_rejected(scan, tmp_path, mask_data):
    path = write(tmp_path / "m.nii.gz", mask_data * 255)
    with pytest.raises(InputFileError, match="mask is not binary"):
        load_mask(path, load_scan(scan))


# saving


def test_save_nifti_keeps_grid_forms_and_dtype(tmp_path, rng):
    data = rng.random((6, 7, 8)).astype(np.float32)
    ref = nib.Nifti1Image(data, AFFINE)
    ref.set_qform(AFFINE, code=1)
    sform = AFFINE.copy()
    sform[:3, 3] += 1.0
    ref.set_sform(sform, code=2)
    ref.header.set_xyzt_units("mm", "sec")
    ref.header.set_dim_info(freq=0, phase=1, slice=2)
    ref_path = tmp_path / "ref.nii.gz"
    nib.save(ref, ref_path)
    reference = load_nifti(ref_path)

    out = save_nifti(data > 0.5, reference, tmp_path / "out.nii.gz")
    saved = nib.load(out)
    assert saved.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), (data > 0.5).astype(np.uint8))
    for name in ("qform_code", "sform_code", "dim_info", "xyzt_units", "pixdim", "quatern_b", "srow_x"):
        np.testing.assert_array_equal(saved.header[name], reference.header[name], err_msg=name)
    np.testing.assert_array_equal(saved.affine, reference.affine)


def test_save_nifti_float_and_code_zero_forms(tmp_path, rng):
    data = rng.random((6, 7, 8)).astype(np.float32)
    ref = nib.Nifti1Image(data, AFFINE)
    ref.set_qform(AFFINE, code=0)
    ref.set_sform(AFFINE, code=1)
    nib.save(ref, tmp_path / "ref.nii.gz")
    reference = load_nifti(tmp_path / "ref.nii.gz")
    saved = nib.load(save_nifti(data.astype(np.float64), reference, tmp_path / "p.nii.gz"))
    assert saved.get_data_dtype() == np.float32
    assert int(saved.header["qform_code"]) == 0 and int(saved.header["sform_code"]) == 1
    np.testing.assert_array_equal(saved.get_fdata(dtype=np.float32), data)


def test_save_nifti_refuses_overwrite_and_wrong_shape(tmp_path, scan):
    reference = load_nifti(scan)
    with pytest.raises(InputFileError, match="output exists"):
        save_nifti(np.zeros((6, 7, 8)), reference, scan)
    save_nifti(np.zeros((6, 7, 8)), reference, scan, overwrite=True)
    assert not load_nifti(scan).get_fdata().any()
    with pytest.raises(Planar3DError, match=r"Received: shape=\(6, 7\)$"):
        save_nifti(np.zeros((6, 7)), reference, tmp_path / "x.nii.gz")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


# discovery


def test_find_msseg2016_from_root_and_parents(tmp_path, rng):
    base = tmp_path / "Unprocessed training dataset" / "TrainingDataset_MSSEG"
    for pid in ("07003SATH", "01016SACH", "08002CHJE"):
        make_patient(base / pid, rng)
    make_patient(base / "07010NABO", rng, with_mask=False)
    for root in (base, base.parent, tmp_path):
        records = find_msseg2016(root)
        assert [r.patient_id for r in records] == ["01016SACH", "07003SATH", "07010NABO", "08002CHJE"]
        assert [r.centre for r in records] == ["01", "07", "07", "08"]
        assert records[0] == Record("01016SACH", "01", base / "01016SACH" / "3DFLAIR.nii.gz",
                                    base / "01016SACH" / "Consensus.nii.gz")
        assert records[2].mask is None
    assert find_dataset(tmp_path) == find_msseg2016(tmp_path)


def test_find_msseg2016_require_masks(tmp_path, rng):
    make_patient(tmp_path / "07010NABO", rng, with_mask=False)
    with pytest.raises(InputFileError, match=r"07010NABO/Consensus\.nii\.gz: file not found"):
        find_dataset(tmp_path, require_masks=True)


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(InputFileError) as error:
        find_dataset(tmp_path)
    assert str(error.value) == (f"{tmp_path}: no patient folders of a known layout (MSSEG-2016, Ljubljana "
                                "cross-sectional, Ljubljana longitudinal, BRATS) found up to 3 levels down")


def test_duplicate_patient_ids(tmp_path, rng):
    make_patient(tmp_path / "a" / "01016SACH", rng)
    make_patient(tmp_path / "b" / "01016SACH", rng)
    with pytest.raises(InputFileError, match=r"b/01016SACH: duplicate patient id '01016SACH' \(also at .*a/01016SACH\)"):
        find_dataset(tmp_path)


def test_missing_dataset(tmp_path):
    with pytest.raises(InputFileError, match=r"nowhere: dataset not found"):
        find_dataset(tmp_path / "nowhere")


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_table_layout_resolves_relative_paths(tmp_path, rng, suffix, sep):
    make_patient(tmp_path / "data" / "s1", rng)
    make_patient(tmp_path / "data" / "s2", rng, with_mask=False)
    absolute = (tmp_path / "data" / "s2" / "3DFLAIR.nii.gz").resolve()
    table = tmp_path / f"list{suffix}"
    table.write_text(
        sep.join(["subject", "centre", "flair", "mask", "age"]) + "\n"
        + sep.join(["s2", "B", str(absolute), "", "40"]) + "\n"
        + sep.join(["s1", "A", "data/s1/3DFLAIR.nii.gz", "data/s1/Consensus.nii.gz", "50"]) + "\n"
    )
    records = find_dataset(table)
    assert records == [
        Record("s1", "A", tmp_path / "data/s1/3DFLAIR.nii.gz", tmp_path / "data/s1/Consensus.nii.gz"),
        Record("s2", "B", absolute, None),
    ]


def test_table_errors(tmp_path, rng):
    make_patient(tmp_path / "s1", rng)
    table = tmp_path / "t.csv"
    table.write_text("subject,flair,mask\ns1,s1/3DFLAIR.nii.gz,\n")
    with pytest.raises(InputFileError, match=r"t\.csv: missing columns \['centre'\]"):
        read_dataset_table(table)
    table.write_text("subject,centre,flair,mask\ns1,A,s1/3DFLAIR.nii.gz,\ns1,A,s1/3DFLAIR.nii.gz,\n")
    with pytest.raises(InputFileError, match=r"t\.csv: line 3: duplicate subject 's1'"):
        read_dataset_table(table)
    table.write_text("subject,centre,flair,mask\ns1,A,s1/missing.nii.gz,\n")
    with pytest.raises(InputFileError, match=r"s1/missing\.nii\.gz: file not found \(listed in t\.csv line 2\)"):
        read_dataset_table(table)
    table.write_text("subject,centre,flair,mask\n")
    with pytest.raises(InputFileError, match=r"t\.csv: table has no rows"):
        read_dataset_table(table)
    table.write_text("subject,centre,flair,mask\ns1,,s1/3DFLAIR.nii.gz,\n")
    with pytest.raises(InputFileError, match=r"t\.csv: line 2: empty 'centre'"):
        read_dataset_table(table)
    table.write_text("subject,centre,flair,mask\ns1,A,s1/3DFLAIR.nii.gz,\n")
    with pytest.raises(InputFileError, match=r"t\.csv: line 2: subject 's1' has no mask"):
        read_dataset_table(table, require_masks=True)
    other = tmp_path / "t.json"
    other.write_text("{}")
    with pytest.raises(InputFileError, match=r"t\.json: dataset table must end in \.csv or \.tsv, got '\.json'"):
        find_dataset(other)
