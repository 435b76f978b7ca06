"""BIDS discovery: names, sessions, ambiguity, masks, sidecars, centres, and the CV split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from planar3d.data.splits import centre_split, cv_split, n_folds
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io.bids import bids_records, find_bids_scans, format_name, parse_name, write_bids_dataset
from planar3d.io.datasets import find_dataset
from planar3d.io.records import Record


def _image(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((4, 4, 4), dtype=np.float32)
    data[1, 1, 1] = value
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.fixture
def dataset(tmp_path) -> Path:
    """sub-01: sessions a and b; sub-02: no session; masks in derivatives/manual."""
    root = tmp_path / "bids"
    _json(root / "dataset_description.json", {"Name": "t", "BIDSVersion": "1.10.0"})
    (root / "participants.tsv").write_text("participant_id\tsite\tage\nsub-01\tA\t30\nsub-02\tB\tn/a\n")
    _json(root / "FLAIR.json", {"Manufacturer": "Siemens", "MagneticFieldStrength": 3})
    for prefix, folder in (("sub-01_ses-a", "sub-01/ses-a"), ("sub-01_ses-b", "sub-01/ses-b"), ("sub-02", "sub-02")):
        _image(root / folder / "anat" / f"{prefix}_FLAIR.nii.gz")
        _image(root / folder / "anat" / f"{prefix}_T1w.nii.gz")
        _image(root / "derivatives" / "manual" / folder / "anat" / f"{prefix}_space-orig_label-lesion_mask.nii.gz")
    _json(root / "sub-02" / "anat" / "sub-02_FLAIR.json", {"Manufacturer": "GE", "MagneticFieldStrength": 1.5})
    return root


def test_names_parse_and_format_in_canonical_order():
    name = parse_name("sub-01_ses-a_acq-3d_run-02_FLAIR.nii.gz")
    assert (name.entities, name.suffix, name.extension) == ({"sub": "01", "ses": "a", "acq": "3d", "run": "02"}, "FLAIR", ".nii.gz")
    roi = parse_name("sub-01_FLAIR_label-lesion_roi.nii.gz")
    assert (roi.source_suffix, roi.suffix, roi.source_entities()) == ("FLAIR", "roi", {"sub": "01"})
    assert parse_name("3DFLAIR.nii.gz") is None and parse_name("sub-0_1_FLAIR.nii.gz") is None
    assert parse_name("sub-01_acq-a_acq-b_FLAIR.nii") is None  # repeated entity
    assert format_name({"desc": "lesions", "label": "lesion", "run": "1", "space": "orig", "acq": "x", "ses": "a", "sub": "01"},
                       "mask", ".nii.gz") == "sub-01_ses-a_acq-x_run-1_space-orig_label-lesion_desc-lesions_mask.nii.gz"
    with pytest.raises(Planar3DError, match=r"unknown BIDS entities \['foo'\]"):
        format_name({"sub": "01", "foo": "x"})
    with pytest.raises(Planar3DError, match="alphanumeric labels. Received: {'sub': 'a_b'}"):
        format_name({"sub": "a_b"})


def test_sessions_masks_sidecar_inheritance_and_centres(dataset):
    scans = find_bids_scans(dataset, masks_from="manual")
    assert [s.prefix for s in scans] == ["sub-01_ses-a", "sub-01_ses-b", "sub-02"]
    assert [s.session for s in scans] == ["a", "b", None]
    assert [s.folder for s in scans] == [Path("sub-01/ses-a/anat"), Path("sub-01/ses-b/anat"), Path("sub-02/anat")]
    assert scans[0].mask == dataset / "derivatives/manual/sub-01/ses-a/anat/sub-01_ses-a_space-orig_label-lesion_mask.nii.gz"
    # root-level FLAIR.json is inherited; sub-02's own sidecar overrides it
    assert [s.centre for s in scans] == ["Siemens 3T", "Siemens 3T", "GE 1.5T"]
    assert [s.centre for s in find_bids_scans(dataset, centre_column="site")] == ["A", "A", "B"]
    assert [s.prefix for s in find_bids_scans(dataset, session_label=["ses-b"])] == ["sub-01_ses-b"]
    assert [s.prefix for s in find_bids_scans(dataset, participant_label=["02"])] == ["sub-02"]
    # without --masks-from only masks beside the raw scans count
    assert [s.mask for s in find_bids_scans(dataset)] == [None, None, None]


def test_records_keep_sessions_of_a_subject_in_one_fold(dataset):
    records = find_dataset(dataset, require_masks=True, bids={"masks_from": "manual", "centre_column": "site"})
    assert [(r.patient_id, r.subject, r.centre) for r in records] == [
        ("sub-01_ses-a", "sub-01", "A"), ("sub-01_ses-b", "sub-01", "A"), ("sub-02", "sub-02", "B")]
    ids = ["a1", "a2", "b1", "c1", "c2", "d1", "e1"]
    centres = {"a1": "X", "a2": "X", "b1": "X", "c1": "X", "c2": "X", "d1": "Y", "e1": "Y"}
    subjects = {"a1": "a", "a2": "a", "b1": "b", "c1": "c", "c2": "c", "d1": "d", "e1": "e"}
    assert n_folds(ids, centres, subjects) == 2
    # fold 0 tests subjects a and d; of b, c, e the last validates
    assert cv_split(ids, 0, centres, subjects) == (["b1", "c1", "c2"], ["e1"], ["a1", "a2", "d1"])
    assert cv_split(ids, 1, centres, subjects) == (["a1", "a2", "c1", "c2"], ["d1"], ["b1", "e1"])
    with pytest.raises(Planar3DError, match=r"one centre. Received: a in 'X' and 'Y'"):
        cv_split(ids, 0, {**centres, "a2": "Y"}, subjects)
    with pytest.raises(Planar3DError, match=r"centres must name every patient id. Received: no entry for \['a1'\]"):
        cv_split(ids, 0, {k: v for k, v in centres.items() if k != "a1"}, subjects)
    # leave-one-centre-out: the last subject of each training centre validates, both of its scans
    assert centre_split(centres, 1, subjects) == (["a1", "a2", "b1"], ["c1", "c2"], ["d1", "e1"])
    # a table's centre column is honoured (ids need no centre prefix then)
    assert cv_split(["p", "q", "r", "s"], 0, {"p": "1", "q": "1", "r": "2", "s": "2"}) == (["q"], ["s"], ["p", "r"])


def test_ambiguous_flair_is_refused_with_the_flag_that_picks_one(dataset, capsys):
    anat = dataset / "sub-02" / "anat"
    (anat / "sub-02_FLAIR.nii.gz").rename(anat / "sub-02_acq-2d_FLAIR.nii.gz")
    _image(anat / "sub-02_acq-3d_FLAIR.nii.gz")
    with pytest.raises(InputFileError) as error:
        find_bids_scans(dataset)
    assert str(error.value) == (f"{anat}: sub-02: 2 FLAIR images match: sub-02_acq-2d_FLAIR.nii.gz, "
                                "sub-02_acq-3d_FLAIR.nii.gz; pick one with --acq 2d|3d")
    picked = find_bids_scans(dataset, acq="3d", masks_from="manual")
    assert [s.flair.name for s in picked] == ["sub-02_acq-3d_FLAIR.nii.gz"]
    # a mask naming fewer entities serves the acq variant
    assert picked[0].mask.name == "sub-02_space-orig_label-lesion_mask.nii.gz"
    assert "notice: sub-01: no FLAIR image matching --acq 3d; skipped" in capsys.readouterr().err
    _image(anat / "sub-02_acq-3d_run-2_FLAIR.nii.gz")
    (anat / "sub-02_acq-3d_FLAIR.nii.gz").rename(anat / "sub-02_acq-3d_run-1_FLAIR.nii.gz")
    with pytest.raises(InputFileError, match=re.escape("2 FLAIR images match: sub-02_acq-3d_run-1_FLAIR.nii.gz, "
                                                       "sub-02_acq-3d_run-2_FLAIR.nii.gz; pick one with --run 1|2")):
        find_bids_scans(dataset, acq="3d")
    assert find_bids_scans(dataset, acq="3d", run=2)[0].flair.name == "sub-02_acq-3d_run-2_FLAIR.nii.gz"
    _image(anat / "sub-02_acq-2d_rec-x_FLAIR.nii.gz")
    with pytest.raises(InputFileError, match="they differ in rec-, which no flag selects"):
        find_bids_scans(dataset, acq="2d")


def test_mask_variants_precedence_and_missing_masks(dataset):
    derived = dataset / "derivatives" / "manual" / "sub-02" / "anat"
    raw = dataset / "sub-02" / "anat"
    (derived / "sub-02_space-orig_label-lesion_mask.nii.gz").unlink()
    with pytest.raises(InputFileError) as error:
        find_bids_scans(dataset, masks_from="manual", require_masks=True)
    assert str(error.value) == (f"{raw / 'sub-02_FLAIR.nii.gz'}: no lesion mask (looked in {derived} and {raw} for "
                                "*_label-lesion_mask, *_desc-lesion_dseg, *_label-lesion_roi)")
    # fMRIPrep's convention beside the raw scan
    roi = _image(raw / "sub-02_FLAIR_label-lesion_roi.nii.gz")
    assert find_bids_scans(dataset, masks_from="manual")[2].mask == roi
    assert find_bids_scans(dataset)[2].mask == roi
    # a derivative dseg wins over the raw roi; a template-space mask is ignored
    _image(derived / "sub-02_space-MNI152NLin2009cAsym_label-lesion_mask.nii.gz")
    dseg = _image(derived / "sub-02_desc-lesion_dseg.nii.gz")
    assert find_bids_scans(dataset, masks_from="manual")[2].mask == dseg
    mask = _image(derived / "sub-02_label-lesion_mask.nii.gz")
    assert find_bids_scans(dataset, masks_from="manual")[2].mask == mask  # _mask before _dseg
    _image(derived / "sub-02_label-lesion_desc-manual_mask.nii.gz")
    with pytest.raises(InputFileError, match=r"2 lesion masks match sub-02: sub-02_label-lesion_desc-manual_mask.nii.gz, "
                                             r"sub-02_label-lesion_mask.nii.gz; keep one"):
        find_bids_scans(dataset, masks_from="manual")


def test_bad_bids_input_is_one_clear_error(dataset, tmp_path):
    with pytest.raises(InputFileError, match=r"derivatives/other: masks folder not found \(--masks-from\); derivatives/ holds \['manual'\]"):
        find_bids_scans(dataset, masks_from="other")
    with pytest.raises(InputFileError, match=r"no subject sub-07 \(found sub-01, sub-02\)"):
        find_bids_scans(dataset, participant_label=["07"])
    with pytest.raises(InputFileError, match=r"no column 'scanner' \(--centre-column\); columns: \['participant_id', 'site', 'age'\]"):
        find_bids_scans(dataset, centre_column="scanner")
    with pytest.raises(InputFileError, match=r"sub-02 has no 'age' value \(--centre-column\)"):
        find_bids_scans(dataset, centre_column="age")
    (dataset / "FLAIR.json").unlink()
    with pytest.raises(InputFileError, match="sub-01_ses-a_FLAIR.nii.gz: no Manufacturer and MagneticFieldStrength"):
        bids_records(dataset, masks_from="manual")
    with pytest.raises(InputFileError, match=r"--acq, --masks-from need a BIDS dataset"):
        find_dataset(tmp_path, bids={"masks_from": "manual", "acq": "x", "run": None})
    (dataset / "sub-02" / "anat" / "sub-02_FLAIR.json").write_text("{bad")
    with pytest.raises(InputFileError, match="sub-02_FLAIR.json: not readable JSON"):
        find_bids_scans(dataset)
    _json(dataset / "dataset_description.json", {"Name": "d", "BIDSVersion": "1.10.0", "DatasetType": "derivative"})
    with pytest.raises(InputFileError, match="is a derivative dataset; pass the raw BIDS dataset's root"):
        find_bids_scans(dataset)


def test_written_dataset_is_valid_bids_and_reads_back(tmp_path):
    """write_bids_dataset's files all match the BIDS schema's file rules (bidsschematools)."""
    from bidsschematools import rules, schema

    records = []
    for pid, centre in (("01001AB", "01"), ("07002CD", "07"), ("08003EF", "08")):
        flair = _image(tmp_path / "msseg" / pid / "3DFLAIR.nii.gz", 5.0)
        records.append(Record(pid, centre, flair, _image(tmp_path / "msseg" / pid / "Consensus.nii.gz")))
    root = write_bids_dataset(records, tmp_path / "bids")
    loaded = schema.load_schema()
    regexes = [r for group in (loaded.rules.files.common, loaded.rules.files.raw)
               for r in rules.regexify_filename_rules(group, loaded, level=2)]
    derivative = rules.regexify_filename_rules(loaded.rules.files.deriv.imaging, loaded, level=1)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for path in files:
        allowed = regexes + (derivative if path.startswith("derivatives/consensus/sub-") else [])
        relative = path.split("derivatives/consensus/", 1)[-1]
        assert any(re.match(r"(?:.*/)?" + r["regex"], relative) for r in allowed), path
    assert len(files) == 5 + 3 * 3
    scans = find_bids_scans(root, masks_from="consensus", require_masks=True)
    assert [(s.subject, s.centre, s.flair.read_bytes() == r.flair.read_bytes()) for s, r in zip(scans, records)] == [
        ("01001AB", "Philips 3T", True), ("07002CD", "Siemens 1.5T", True), ("08003EF", "Siemens 3T", True)]
    with pytest.raises(InputFileError, match="output exists"):
        write_bids_dataset(records, root)
    with pytest.raises(Planar3DError, match=r"alphanumeric to become BIDS labels. Received: \['0_1'\]"):
        write_bids_dataset([Record("0_1", "01", records[0].flair)], tmp_path / "other")
