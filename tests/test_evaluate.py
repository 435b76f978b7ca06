"""Tests of planar3d.evaluate: pairing by patient id, grid checks, outputs, CLI exit codes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from planar3d.cli.evaluate import main
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation.evaluate import MSSEG_KEYS, check_same_grid, evaluate, evaluate_pair, find_volumes, patient_id
from planar3d.evaluation.metrics import msseg_metrics
from planar3d.evaluation.reports import evaluation_summary_markdown as summary_markdown

SHAPE = (12, 16, 14)
AFFINE = np.array([[-1.0, 0, 0, 90.0], [0, 1.2, 0, -126.0], [0, 0, 1.1, -72.0], [0, 0, 0, 1]])
SPACING = tuple(float(np.float32(z)) for z in (1.0, 1.2, 1.1))  # as the NIfTI header stores them


def _mask(boxes) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    for box in boxes:
        mask[box] = 1
    return mask


REFERENCE = _mask([np.s_[2:6, 3:8, 4:9], np.s_[8:11, 10:14, 2:5]])
PREDICTION = _mask([np.s_[3:6, 3:9, 4:9], np.s_[8:10, 1:3, 9:12]])


def _save(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), path)
    return path


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def pair(tmp_path):
    reference = _save(REFERENCE, tmp_path / "ref" / "01016SACH" / "Consensus.nii.gz")
    prediction = _save(PREDICTION, tmp_path / "pred" / "01016SACH_mask.nii.gz")
    return reference, prediction


# ----------------------------------------------------------------------------- ids
@pytest.mark.parametrize("path, role, expected", [
    ("data/01016SACH/Consensus.nii.gz", "mask", "01016SACH"),
    ("data/01016SACH/Masks/Consensus.nii.gz", "mask", "01016SACH"),
    ("data/07040DORE/mask.nii", "mask", "07040DORE"),
    ("run/fold_2/predictions/08002CHJE_mask.nii.gz", "mask", "08002CHJE"),
    ("out/01038PAGU_pred_seg.nii.gz", "mask", "01038PAGU"),
    ("out/01038PAGU_Prediction.nii.gz", "mask", "01038PAGU"),
    ("out/01038PAGU.nii.gz", "mask", "01038PAGU"),
    ("data/01016SACH/3DFLAIR.nii.gz", "scan", "01016SACH"),
    ("data/01016SACH/Preprocessed_Data/FLAIR_preprocessed.nii.gz", "scan", "01016SACH"),
    ("scans/07001MOEL_flair.nii.gz", "scan", "07001MOEL"),
])
def test_patient_id(path, role, expected):
    assert patient_id(path, role) == expected


def test_find_volumes_prefers_masks_in_msseg_layout(tmp_path):
    folder = tmp_path / "ref" / "01016SACH"
    for name in ("Consensus.nii.gz", "3DFLAIR.nii.gz", "ManualSegmentation_1.nii.gz"):
        _save(REFERENCE, folder / name)
    assert find_volumes(tmp_path / "ref") == {"01016SACH": folder / "Consensus.nii.gz"}
    assert find_volumes(tmp_path / "ref", role="scan") == {"01016SACH": folder / "3DFLAIR.nii.gz"}


def test_find_volumes_takes_unmarked_files_when_no_file_is_marked(tmp_path):
    _save(PREDICTION, tmp_path / "p" / "01016SACH.nii.gz")
    _save(PREDICTION, tmp_path / "p" / "sub" / "07040DORE.nii")
    assert find_volumes(tmp_path / "p") == {
        "01016SACH": tmp_path / "p" / "01016SACH.nii.gz", "07040DORE": tmp_path / "p" / "sub" / "07040DORE.nii"}


def test_find_volumes_refuses_duplicate_ids_and_empty_folders(tmp_path):
    _save(PREDICTION, tmp_path / "p" / "fold_0" / "01016SACH_mask.nii.gz")
    _save(PREDICTION, tmp_path / "p" / "fold_1" / "01016SACH_mask.nii.gz")
    with pytest.raises(InputFileError, match=r"fold_1/01016SACH_mask.nii.gz: patient id '01016SACH' is also that of"):
        find_volumes(tmp_path / "p")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=r"empty: no .nii or .nii.gz files in this folder"):
        find_volumes(tmp_path / "empty")
    with pytest.raises(InputFileError, match=r"nowhere: not found"):
        find_volumes(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- grid
@pytest.mark.parametrize("offset, accepted", [(1e-6, True), (1e-3, False)])
def test_affine_tolerance(tmp_path, pair, offset, accepted):
    reference, _ = pair
    for element in ((0, 3), (1, 1)):  # a translation and a voxel size
        affine = AFFINE.copy()
        affine[element] += offset
        prediction = _save(PREDICTION, tmp_path / f"off_{element[0]}_{element[1]}.nii.gz", affine)
        if accepted:
            assert evaluate_pair(reference, prediction)["dice"] == msseg_metrics(REFERENCE, PREDICTION, SPACING)["dice"]
        else:
            with pytest.raises(InputFileError, match="^" + re.escape(f"{prediction}: grid differs from the reference {reference}"
                                                                 ": affine differs (by up to 0.001)") + "$"):
                evaluate_pair(reference, prediction)


def test_shape_mismatch_is_refused(tmp_path, pair):
    reference, _ = pair
    prediction = _save(np.zeros((12, 16, 15), np.uint8), tmp_path / "wide.nii.gz")
    with pytest.raises(InputFileError, match=r"grid differs from the reference .*: shape \(12, 16, 15\) differs from \(12, 16, 14\)$"):
        evaluate_pair(reference, prediction)


def test_check_same_grid_accepts_identical_grids(pair):
    reference, prediction = pair
    check_same_grid(nib.load(reference), nib.load(prediction), prediction, reference)  # no error


# ----------------------------------------------------------------------------- bad input
def test_bad_masks_are_one_line_errors(tmp_path, pair):
    reference, _ = pair
    soft = _save(PREDICTION * 0.5, tmp_path / "soft.nii.gz")
    with pytest.raises(InputFileError, match=r"soft.nii.gz: mask is not binary: .* values other than 0 and 1"):
        evaluate_pair(reference, soft)
    text = tmp_path / "notes.nii.gz"
    text.write_text("hello")
    with pytest.raises(InputFileError, match=r"notes.nii.gz: not a NIfTI image"):
        evaluate_pair(reference, text)
    with pytest.raises(InputFileError, match=r"missing.nii.gz: file not found"):
        evaluate_pair(reference, tmp_path / "missing.nii.gz")


# ----------------------------------------------------------------------------- single pair
def test_single_pair_outputs(tmp_path, pair):
    reference, prediction = pair
    result = evaluate(reference, prediction, out=tmp_path / "ev", qc=True)
    expected = msseg_metrics(REFERENCE, PREDICTION, SPACING)
    rows = _read_csv(tmp_path / "ev" / "metrics.csv")
    assert list(rows[0]) == ["patient", "centre", *MSSEG_KEYS]
    assert set(MSSEG_KEYS) == set(expected)
    assert rows[0]["patient"] == "01016SACH" and rows[0]["centre"] == "01"
    for key in MSSEG_KEYS:
        assert float(rows[0][key]) == expected[key]
    assert result.rows[0]["dice"] == expected["dice"] and result.failures == []
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert f"| dice | {expected['dice']:.3f} ± 0.000 | {expected['dice']:.3f} ± 0.000 |" in summary
    assert "| dice (paper, MSSEG-2016) | 0.69 ± 0.11 | 0.61 ± 0.05 |" in summary
    assert "| sensitivity (paper, MSSEG-2016) | 0.61 ± 0.14 | 0.60 ± 0.10 |" in summary
    for name in ("boxplot.png", "qc/01016SACH.png"):
        assert (tmp_path / "ev" / name).read_bytes()[:4] == b"\x89PNG"
    record = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert record["pairs"] == [{"patient": "01016SACH", "reference": str(reference), "prediction": str(prediction),
                                "flair": None}]
    assert record["alpha"] == 0.10 and record["min_lesion_mm3"] == 3.0


def test_single_pair_ignores_ids_and_default_out_is_beside_prediction(tmp_path, pair):
    reference, _ = pair
    prediction = _save(PREDICTION, tmp_path / "other" / "anything.nii.gz")
    result = evaluate(reference, prediction, qc=False)
    assert result.out == tmp_path / "other" / "evaluation"
    assert [row["patient"] for row in _read_csv(result.out / "metrics.csv")] == ["01016SACH"]


def test_detection_flags_reach_the_metrics(tmp_path, pair):
    reference, prediction = pair
    assert main(["--reference", str(reference), "--prediction", str(prediction), "--out", str(tmp_path / "ev"),
                 "--no-qc", "--min-lesion-mm3", "0", "--alpha", "0.5"]) == 0
    expected = msseg_metrics(REFERENCE, PREDICTION, SPACING, alpha=0.5, min_lesion_mm3=0.0)
    row = _read_csv(tmp_path / "ev" / "metrics.csv")[0]
    assert {key: float(row[key]) for key in MSSEG_KEYS} == expected


# ----------------------------------------------------------------------------- folders
@pytest.mark.slow
def test_folder_matching_with_an_unmatched_file(tmp_path, capsys):
    ids = ("01016SACH", "07040DORE", "08002CHJE")
    for k, key in enumerate(ids):
        _save(np.roll(REFERENCE, k, axis=0), tmp_path / "ref" / key / "Consensus.nii.gz")
        _save(np.roll(REFERENCE, k, axis=0) * 10.0 + 1.0, tmp_path / "ref" / key / "3DFLAIR.nii.gz")
        if key != "08002CHJE":
            _save(np.roll(PREDICTION, k, axis=0), tmp_path / "run" / f"fold_{k}" / "predictions" / f"{key}_mask.nii.gz")
    _save(PREDICTION, tmp_path / "run" / "fold_4" / "predictions" / "01099XXXX_mask.nii.gz")
    result = evaluate(tmp_path / "ref", tmp_path / "run", out=tmp_path / "ev")
    err = capsys.readouterr().err
    assert "unmatched patient ids: reference only ['08002CHJE']; prediction only ['01099XXXX']" in err
    assert err.count("\n") == 1
    rows = _read_csv(tmp_path / "ev" / "metrics.csv")
    assert [(row["patient"], row["centre"]) for row in rows] == [("01016SACH", "01"), ("07040DORE", "07")]
    expected = msseg_metrics(np.roll(REFERENCE, 1, axis=0), np.roll(PREDICTION, 1, axis=0), SPACING)
    assert float(rows[1]["hd95"]) == expected["hd95"]
    assert result.reference_only == ["08002CHJE"] and result.prediction_only == ["01099XXXX"]
    record = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert [pair["flair"] for pair in record["pairs"]] == [
        str(tmp_path / "ref" / key / "3DFLAIR.nii.gz") for key in ids[:2]]
    assert sorted(p.name for p in (tmp_path / "ev" / "qc").iterdir()) == ["01016SACH.png", "07040DORE.png"]
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert "| metric | centre 01 (n=1) | centre 07 (n=1) | overall (n=2) |" in summary
    assert "| dice (paper, MSSEG-2016) | 0.69 ± 0.11 | 0.50 ± 0.11 | 0.61 ± 0.05 |" in summary


def test_folder_mode_skips_a_mismatched_pair_and_exits_1(tmp_path, capsys):
    for key in ("01016SACH", "07040DORE"):
        _save(REFERENCE, tmp_path / "ref" / key / "Consensus.nii.gz")
    _save(PREDICTION, tmp_path / "pred" / "01016SACH_mask.nii.gz")
    shifted = AFFINE.copy()
    shifted[2, 3] += 1e-3
    bad = _save(PREDICTION, tmp_path / "pred" / "07040DORE_mask.nii.gz", shifted)
    code = main(["--reference", str(tmp_path / "ref"), "--prediction", str(tmp_path / "pred"), "--out",
                 str(tmp_path / "ev"), "--no-qc"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"error: {bad}: grid differs from the reference" in captured.err
    assert [row["patient"] for row in _read_csv(tmp_path / "ev" / "metrics.csv")] == ["01016SACH"]
    assert str(tmp_path / "ev" / "metrics.csv") in captured.out


def test_no_matched_pair_is_an_error(tmp_path, capsys):
    _save(REFERENCE, tmp_path / "ref" / "01016SACH" / "Consensus.nii.gz")
    _save(PREDICTION, tmp_path / "pred" / "07040DORE_mask.nii.gz")
    with pytest.raises(Planar3DError, match=r"no patient id is both in"):
        evaluate(tmp_path / "ref", tmp_path / "pred", out=tmp_path / "ev")
    assert main(["--reference", str(tmp_path / "ref"), "--prediction", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "ev")]) == 2
    assert not (tmp_path / "ev").exists()


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_exit_codes_and_existing_outputs(tmp_path, pair, capsys):
    reference, prediction = pair
    argv = ["--reference", str(reference), "--prediction", str(prediction), "--out", str(tmp_path / "ev")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "# Evaluation (MSSEG-2016 metrics)" in out and f"overlays: {tmp_path / 'ev' / 'qc'}" in out
    before = (tmp_path / "ev" / "metrics.csv").read_bytes()

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'ev' / 'metrics.csv'}: output exists; pass --overwrite (overwrite=True) to replace it\n"
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "ev" / "metrics.csv").read_bytes() == before


def test_cli_single_pair_grid_mismatch_exits_2(tmp_path, pair, capsys):
    reference, _ = pair
    shifted = AFFINE.copy()
    shifted[0, 3] += 1e-3
    prediction = _save(PREDICTION, tmp_path / "p" / "01016SACH_mask.nii.gz", shifted)
    assert main(["--reference", str(reference), "--prediction", str(prediction), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {prediction}: grid differs from the reference {reference}"
                   ": affine differs (by up to 0.001)\n")
    assert not (tmp_path / "ev" / "metrics.csv").exists()


def test_cli_missing_input_and_bad_flag(tmp_path, pair, capsys):
    reference, _ = pair
    assert main(["--reference", str(reference), "--prediction", str(tmp_path / "none.nii.gz")]) == 2
    assert f"{tmp_path / 'none.nii.gz'}: not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--reference", str(reference)])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_flair_option_and_a_flair_on_another_grid(tmp_path, pair, capsys):
    reference, prediction = pair
    good = _save(REFERENCE * 100.0 + 5.0, tmp_path / "scans" / "01016SACH_flair.nii.gz")
    result = evaluate(reference, prediction, out=tmp_path / "ev", flair=tmp_path / "scans")
    assert result.failures == []
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["pairs"][0]["flair"] == str(good)
    bad = _save(np.ones((4, 4, 4)), tmp_path / "bad_flair.nii.gz")
    result = evaluate(reference, prediction, out=tmp_path / "ev2", flair=bad)
    assert result.failures == [f"{bad}: grid differs from the reference {reference}: shape (4, 4, 4) differs from (12, 16, 14)"]
    assert (tmp_path / "ev2" / "qc" / "01016SACH.png").is_file()
    assert "overlay drawn without FLAIR" in capsys.readouterr().err


def test_summary_markdown_lists_every_metric():
    rows = [{"patient": f"0{c}X", "centre": f"0{c}", **msseg_metrics(REFERENCE, np.roll(PREDICTION, c, 0), SPACING)}
            for c in (1, 1, 7)]
    text = summary_markdown(rows)
    for key in MSSEG_KEYS:
        assert f"| {key}" in text
    dice = np.array([row["dice"] for row in rows[:2]])
    assert f"| dice | {dice.mean():.3f} ± {dice.std():.3f} |" in text
    assert "| hausdorff (mm) |" in text
