"""Real scans (../shared/realdata, never copied into the repository): the Ljubljana MS and BRATS
readers and their errors, and train / crossval / predict / evaluate on them at tiny size with
the exact geometry of every output.

Data: Lesjak et al., Neuroinformatics 2016 and 2018 (CC BY); BRATS 2013 (Menze et al., IEEE TMI
2015) as shipped with DeepMedic's examples. See ../shared/realdata/README.md.
"""

from __future__ import annotations

import csv
import os
import runpy
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from planar3d.cli import crossval as crossval_cli
from planar3d.cli import evaluate as evaluate_cli
from planar3d.cli import predict as predict_cli
from planar3d.cli import train as train_cli
from planar3d.data.cache import load_cases
from planar3d.errors import InputFileError
from planar3d.io import brats, ljubljana
from planar3d.io.datasets import find_dataset
from planar3d.io.nifti import load_mask, load_scan
from planar3d.nets.load import load_segmentation_model

REALDATA = Path(os.environ.get("PLANAR3D_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
MNI = REALDATA / "ljubljana_ms" / "cross_sectional" / "MNI"
LONGITUDINAL = REALDATA / "ljubljana_ms" / "longitudinal" / "raw"
BRATS = REALDATA / "brats2013_deepmedic"
#: the smallest training that runs end to end on real scans (geometry, not quality)
TINY = ["--preset", "demo", "--size", "32", "--epochs", "1", "--batch-size", "2", "--patience", "1"]


@pytest.fixture(scope="module", autouse=True)
def realdata():
    assert MNI.is_dir() and BRATS.is_dir() and LONGITUDINAL.is_dir(), (
        f"the shared real scans are missing at {REALDATA} (set PLANAR3D_REALDATA to their folder)")


def _link_tree(root: Path, files: dict[str, Path]) -> Path:
    """A folder of symbolic links (relative name -> real file), so no real scan is copied."""
    for name, target in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    return root


# ----------------------------------------------------------------------------- readers

def test_ljubljana_cross_sectional_mni_layout_as_distributed():
    records = find_dataset(MNI, require_masks=True)
    assert [r.patient_id for r in records] == ["patient07", "patient19", "patient26"]
    assert {r.centre for r in records} == {ljubljana.CENTRE}
    assert all(r.flair.name.startswith("FLAIR_") and r.mask.name.startswith("GOLD_STANDARD_") for r in records)
    assert all(r.mask_labels is None for r in records)
    # the set's parent (cross_sectional/) finds the same single variant
    assert find_dataset(MNI.parent, require_masks=True) == records
    # the lesion loads of the README (voxels of the consensus masks)
    loads = [int(np.asarray(load_mask(r.mask, load_scan(r.flair)).dataobj).sum()) for r in records]
    assert loads == [1300, 49769, 8227]


def test_ljubljana_raw_names_with_patient_prefix_and_variant_refusal(tmp_path):
    source = MNI / "patient07"
    flair, gold = sorted(source.glob("FLAIR_*")), sorted(source.glob("GOLD_*"))
    root = _link_tree(tmp_path / "cross_sectional", {
        "raw/patient07/FLAIR.nii.gz": flair[0], "raw/patient07/patient07_consensus_gt.nii.gz": gold[0],
        "raw/patient07/T1W.nii.gz": sorted(source.glob("T1_*"))[0],
    })
    (record,) = find_dataset(root / "raw", require_masks=True)
    assert (record.patient_id, record.flair.name, record.mask.name) == (
        "patient07", "FLAIR.nii.gz", "patient07_consensus_gt.nii.gz")
    _link_tree(root, {"MNI/patient07/" + flair[0].name: flair[0]})
    with pytest.raises(InputFileError, match=r"holds 2 variants of the Ljubljana cross-sectional set \(MNI, raw\); "
                       "point --data at one of them"):
        find_dataset(root)
    with pytest.raises(InputFileError, match="patient07: no consensus mask"):
        find_dataset(root / "MNI", require_masks=True)


def test_ljubljana_longitudinal_visits_share_a_subject_and_have_no_mask():
    records = find_dataset(LONGITUDINAL)
    ids = [r.patient_id for r in records]
    assert ids == ["patient01_study1", "patient01_study2", "patient03_study1", "patient03_study2", "patient04_study1",
                   "patient09_study2", "patient12_study1", "patient12_study2", "patient19_study1", "patient19_study2",
                   "patient20_study2"]
    assert all(r.mask is None and r.subject == r.patient_id.split("_")[0] for r in records)
    with pytest.raises(InputFileError, match="patient01: the longitudinal Ljubljana set has no mask of every lesion"):
        find_dataset(LONGITUDINAL, require_masks=True)
    patient = ljubljana.longitudinal_patient(LONGITUDINAL / "patient04")
    assert sorted(patient.visits) == [1] and sorted(patient.transforms) == [1]  # study2 FLAIR not shipped
    assert patient.change_mask == LONGITUDINAL / "patient04" / "gt.nii.gz"


def test_several_layouts_in_one_folder_are_refused():
    with pytest.raises(InputFileError) as error:
        find_dataset(REALDATA / "ljubljana_ms")
    assert str(error.value) == (
        f"{REALDATA / 'ljubljana_ms'}: holds several dataset layouts (Ljubljana cross-sectional: "
        "cross_sectional/MNI/patient07; Ljubljana longitudinal: longitudinal/raw/patient01); point --data at one of them")


@pytest.mark.parametrize("target, labels", [("auto", (1, 2, 3, 4)), ("whole_tumour", (1, 2, 3, 4)),
                                            ("tumour_core", (1, 3, 4)), ("enhancing_tumour", (4,))])
def test_brats_targets_are_the_label_regions(target, labels):
    records = find_dataset(BRATS, require_masks=True, target=target)
    assert [r.patient_id for r in records] == [f"brats_2013_pat000{i}_1" for i in range(1, 7)]
    assert {r.centre for r in records} == {brats.CENTRE} and {r.mask_labels for r in records} == {labels}
    record = records[0]
    scan = load_scan(record.flair)
    mask = load_mask(record.mask, scan, record.mask_labels)
    label_map = np.asarray(nib.load(record.mask).dataobj)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), np.isin(label_map, labels).astype(np.uint8))
    assert np.asarray(mask.dataobj).sum() > 0 and mask.shape == scan.shape
    np.testing.assert_array_equal(mask.affine, scan.affine)


def test_brats_errors_name_the_folder(tmp_path):
    case = BRATS / "brats_2013_pat0001_1"
    no_labels = _link_tree(tmp_path / "a" / "case1", {"Flair_subtrMeanDivStd.nii.gz": case / "Flair_subtrMeanDivStd.nii.gz"})
    with pytest.raises(InputFileError, match=f"^{no_labels}: no BRATS label map"):
        find_dataset(no_labels.parent, require_masks=True)
    assert find_dataset(no_labels.parent)[0].mask is None  # predict needs no labels
    two = _link_tree(tmp_path / "b" / "case1", {"Flair_a.nii.gz": case / "Flair_subtrMeanDivStd.nii.gz",
                                                "flair_b.nii.gz": case / "Flair_subtrMeanDivStd.nii.gz"})
    with pytest.raises(InputFileError, match=r"several BRATS FLAIR files: \['Flair_a.nii.gz', 'flair_b.nii.gz'\]"):
        find_dataset(two.parent)
    with pytest.raises(InputFileError, match="--target tumour_core needs BRATS case folders"):
        find_dataset(MNI, target="tumour_core")
    # a label map that is not whole numbers
    label_map = nib.load(case / "OTMultiClass.nii.gz")
    soft = nib.Nifti1Image(np.asarray(label_map.dataobj, dtype=np.float32) * 0.5, label_map.affine)
    nib.save(soft, tmp_path / "soft.nii.gz")
    with pytest.raises(InputFileError, match="soft.nii.gz: label map holds .* voxels that are not whole numbers"):
        load_mask(tmp_path / "soft.nii.gz", load_scan(case / "Flair_subtrMeanDivStd.nii.gz"), (1, 2, 3, 4))


def test_mask_on_another_grid_is_one_line(tmp_path):
    ms = find_dataset(MNI)[0]
    table = tmp_path / "mixed.csv"
    table.write_text(f"subject,centre,flair,mask\nmixed,xx,{BRATS / 'brats_2013_pat0001_1' / 'Flair_subtrMeanDivStd.nii.gz'},"
                     f"{ms.mask}\n")
    with pytest.raises(InputFileError) as error:
        load_cases(find_dataset(table, require_masks=True), size=32, cache_dir=tmp_path / "cache", progress=False)
    assert str(error.value) == f"{ms.mask}: mask is not on the scan's grid: shape (182, 218, 182) differs from (240, 240, 155)"


def test_itk_transform_is_read_in_world_coordinates(tmp_path):
    path = LONGITUDINAL / "patient01" / "study1_FLAIR_to_common_space.txt"
    matrix = ljubljana.read_itk_affine(path)
    fields = dict(line.split(":", 1) for line in path.read_text().splitlines() if not line.startswith("#"))
    values = [float(v) for v in fields["Parameters"].split()]
    centre = np.array([float(v) for v in fields["FixedParameters"].split()])
    a, t = np.array(values[:9]).reshape(3, 3), np.array(values[9:])
    point_lps = np.array([12.5, -40.0, 33.0])
    expected_lps = a @ (point_lps - centre) + centre + t
    flip = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(matrix[:3, :3] @ (point_lps * flip) + matrix[:3, 3], expected_lps * flip, atol=1e-9)
    assert abs(np.linalg.det(matrix[:3, :3]) - 1) < 0.05  # a rigid registration between visits
    for name, text, message in (
            ("missing.txt", None, "cannot read the ITK transform"),
            ("bspline.txt", "Transform: BSplineTransform_double_3_3\nParameters: 1 2\n", "not a 3D affine ITK transform"),
            ("short.txt", "Transform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0\nFixedParameters: 0 0 0\n",
             "an affine ITK transform needs 12 parameters and 3 fixed parameters, got 11 and 3"),
            ("words.txt", "Transform: AffineTransform_double_3_3\nParameters: a b\n", "ITK transform parameters are not numbers")):
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(InputFileError, match=f"^{tmp_path / name}: {message}"):
            ljubljana.read_itk_affine(tmp_path / name)


@pytest.mark.slow
def test_visits_meet_on_the_common_grid_through_their_transforms():
    patient = ljubljana.longitudinal_patient(LONGITUDINAL / "patient01")
    common = nib.load(patient.change_mask)

    def on_common(visit, transform):
        image = nib.load(patient.visits[visit])
        return ljubljana.to_common_grid(np.asarray(image.dataobj), image.affine, transform, common.shape, common.affine,
                                        order=1)

    def agreement(transforms):
        first, second = (on_common(visit, transforms[visit]) for visit in (1, 2))
        both = (first > 0) & (second > 0)
        return np.corrcoef(first[both], second[both])[0, 1]

    read = {visit: ljubljana.read_itk_affine(patient.transforms[visit]) for visit in (1, 2)}
    registered = agreement(read)
    assert registered > 0.95  # measured 0.980: the same head, voxel for voxel
    assert agreement({visit: np.linalg.inv(m) for visit, m in read.items()}) < registered - 0.2  # measured 0.601
    assert agreement({visit: np.eye(4) for visit in read}) < registered - 0.1  # measured 0.754


def test_predict_takes_one_flair_per_patient_from_a_data_set_folder(tmp_path):
    from planar3d.apps.predict import input_scans

    assert [(path.name, name) for path, name in input_scans([str(BRATS)])] == [
        ("Flair_subtrMeanDivStd.nii.gz", f"brats_2013_pat000{i}_1") for i in range(1, 7)]  # not T1c, not the labels
    assert [name for _, name in input_scans([str(MNI)])] == ["patient07", "patient19", "patient26"]
    assert [name for _, name in input_scans([str(LONGITUDINAL / "patient01")])] == ["patient01_study1", "patient01_study2"]
    plain = _link_tree(tmp_path / "plain", {"a.nii.gz": BRATS / "brats_2013_pat0001_1" / "T1c_subtrMeanDivStd.nii.gz"})
    assert input_scans([str(plain)]) == [(plain / "a.nii.gz", "a")]
    with pytest.raises(InputFileError, match="holds several dataset layouts"):
        input_scans([str(REALDATA / "ljubljana_ms")])


# ----------------------------------------------------------------------------- the pipeline on real scans

def _same_geometry(output: Path, source: Path) -> None:
    out, src = nib.load(output), nib.load(source)
    assert out.shape == src.shape
    np.testing.assert_array_equal(out.affine, src.affine)
    np.testing.assert_array_equal(out.header.get_qform(), src.header.get_qform())
    np.testing.assert_array_equal(out.header.get_sform(), src.header.get_sform())
    assert int(out.header["qform_code"]) == int(src.header["qform_code"])
    assert int(out.header["sform_code"]) == int(src.header["sform_code"])


@pytest.fixture(scope="module")
def brats_run(home, tmp_path_factory):
    """Fold 0 of BRATS whole tumour (FLAIR), trained at 32^3 for one epoch."""
    out = tmp_path_factory.mktemp("brats_run")
    assert train_cli.main(["--fold", "0", "--data", str(BRATS), "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_train_on_brats_writes_native_masks_and_scores_the_target(brats_run):
    fold = brats_run / "fold_0"
    rows = list(csv.DictReader((fold / "metrics.csv").open()))
    tested = [row["patient"] for row in rows]
    assert tested == ["brats_2013_pat0001_1"]  # one case per fold: leave-one-out over one centre
    _same_geometry(fold / "predictions" / "brats_2013_pat0001_1_mask.nii.gz",
                   BRATS / "brats_2013_pat0001_1" / "Flair_subtrMeanDivStd.nii.gz")
    assert (fold / "overlays" / "brats_2013_pat0001_1.png").is_file()
    # the score is against the whole tumour (labels 1-4), in the scan's own grid
    predicted = np.asarray(nib.load(fold / "predictions" / "brats_2013_pat0001_1_mask.nii.gz").dataobj) > 0
    tumour = np.asarray(nib.load(BRATS / "brats_2013_pat0001_1" / "OTMultiClass.nii.gz").dataobj) > 0
    dice = 2 * (predicted & tumour).sum() / (predicted.sum() + tumour.sum())
    assert float(rows[0]["dice"]) == pytest.approx(dice, abs=1e-9)


@pytest.mark.slow
def test_predict_and_evaluate_keep_each_real_scans_geometry(brats_run, tmp_path):
    model = brats_run / "fold_0" / "best.keras"
    inputs = {
        "mni": next((MNI / "patient19").glob("FLAIR_*")),  # float32, LAS, skull-stripped
        "oblique": LONGITUDINAL / "patient01" / "study1_FLAIR.nii.gz",  # raw uint16 2D FLAIR, oblique, 3-4 mm slices
        "brats": BRATS / "brats_2013_pat0002_1" / "Flair_subtrMeanDivStd.nii.gz",  # z-scored, negative values
    }
    before = {name: path.read_bytes() for name, path in inputs.items()}
    for name, source in inputs.items():
        output = tmp_path / f"{name}.nii.gz"
        qc = [] if name == "oblique" else ["--no-qc"]
        assert predict_cli.main(["--model", str(model), "--input", str(source), "--output", str(output), "--quiet",
                                 *qc]) == 0
        _same_geometry(output, source)
        assert set(np.unique(np.asarray(nib.load(output).dataobj))) <= {0, 1}
    assert {name: path.read_bytes() for name, path in inputs.items()} == before
    picture = matplotlib.image.imread(tmp_path / "oblique_qc.png")  # the mosaic of the raw scan's own grid
    assert picture.shape[0] > 500 and picture.shape[1] > 1000 and picture[..., :3].std() > 0.1
    reference = next((MNI / "patient19").glob("GOLD_*"))
    report = tmp_path / "evaluation"
    assert evaluate_cli.main(["--reference", str(reference), "--prediction", str(tmp_path / "mni.nii.gz"),
                              "--out", str(report), "--no-qc"]) == 0
    (row,) = csv.DictReader((report / "metrics.csv").open())
    predicted = np.asarray(nib.load(tmp_path / "mni.nii.gz").dataobj) > 0
    lesions = np.asarray(nib.load(reference).dataobj) > 0
    assert float(row["dice"]) == pytest.approx(2 * (predicted & lesions).sum() / (predicted.sum() + lesions.sum()), abs=1e-9)
    assert "| dice (paper, MSSEG-2016) |" in (report / "summary.md").read_text(encoding="utf-8")  # MS lesions


@pytest.mark.slow
def test_crossval_leaves_one_ljubljana_patient_out_on_three_sequences(home, tmp_path, capsys):
    out = tmp_path / "lj"
    assert crossval_cli.main(["--data", str(MNI), "--out", str(out), "--folds", "1", "--channels", "flair", "t1", "t2",
                              *TINY]) == 0
    rows = list(csv.DictReader((out / "fold_1" / "metrics.csv").open()))
    assert [row["patient"] for row in rows] == ["patient19"]  # 3 patients, 1 centre: fold k tests the k-th
    flair = next((MNI / "patient19").glob("FLAIR_*"))
    _same_geometry(out / "fold_1" / "predictions" / "patient19_mask.nii.gz", flair)
    assert (out / "summary.md").is_file()
    model = out / "fold_1" / "best.keras"
    assert load_segmentation_model(model).input_shape[-1] == 3
    # predict finds the T1 and T2 beside the FLAIR; a lone FLAIR is refused before anything is written
    assert predict_cli.main(["--model", str(model), "--input", str(flair), "--output", str(tmp_path / "p19.nii.gz"),
                             "--quiet", "--no-qc"]) == 0
    _same_geometry(tmp_path / "p19.nii.gz", flair)
    lone = _link_tree(tmp_path / "lone", {"scan.nii.gz": flair}) / "scan.nii.gz"
    capsys.readouterr()
    assert predict_cli.main(["--model", str(model), "--input", str(lone), "--output", str(tmp_path / "x" / "s.nii.gz"),
                             "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {lone}: the model stacks flair t1 t2: planar3d finds the other scans in the FLAIR's patient folder of "
        "a known layout (MSSEG-2016, Ljubljana cross-sectional, Ljubljana longitudinal, BRATS), and this FLAIR is not in one")
    assert not (tmp_path / "x").exists()


def test_real_readers_name_each_patients_other_scans():
    (case, *_) = find_dataset(BRATS)
    assert [(name, path.name) for name, path in case.channels] == [("t1c", "T1c_subtrMeanDivStd.nii.gz")]
    (patient, *_) = find_dataset(MNI)
    assert [(name, path.name.split("_")[0]) for name, path in patient.channels] == [("t1", "T1"), ("t1c", "T1POST"),
                                                                                    ("t2", "T2")]
    with pytest.raises(InputFileError, match="patient brats_2013_pat0001_1 has no t2 scan beside this FLAIR"):
        case.scan_files(["flair", "t2"])


# ----------------------------------------------------------------------------- data_prep/get_open_ms_data.py

GETTER = Path(__file__).resolve().parents[1] / "data_prep" / "get_open_ms_data.py"


def test_get_open_ms_data_copies_checks_and_reads_a_local_source(tmp_path, capsys):
    getter = runpy.run_path(str(GETTER))
    source = tmp_path / "open_ms_data"
    for number in (7, 19):  # the repository's layout, linked from the shared subset
        for path in (MNI / f"patient{number:02d}").iterdir():
            _link_tree(source, {f"cross_sectional/MNI/patient{number:02d}/{path.name}": path})
    out = tmp_path / "out"
    argv = [str(out), "--sets", "cross_sectional/MNI", "--patients", "7", "19", "--source", str(source)]
    assert getter["main"](argv) == 0
    for number in (7, 19):
        for path in (MNI / f"patient{number:02d}").iterdir():
            copy = out / "cross_sectional" / "MNI" / f"patient{number:02d}" / path.name
            assert copy.read_bytes() == path.read_bytes() and not copy.is_symlink()
    assert [r.patient_id for r in find_dataset(out / "cross_sectional" / "MNI", require_masks=True)] == [
        "patient07", "patient19"]
    assert f"{out / 'cross_sectional/MNI'}: 2 scans read" in capsys.readouterr().out
    # a damaged file at the source: one line naming it, exit 2, nothing half-written, valid files kept
    flair = next((out / "cross_sectional" / "MNI" / "patient19").glob("FLAIR_*"))
    flair.unlink()
    damaged = source / "cross_sectional" / "MNI" / "patient19" / flair.name
    damaged.unlink()
    damaged.write_bytes(b"\x1f\x8b not really gzip")
    assert getter["main"](argv) == 2
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and message[0].startswith(f"get_open_ms_data: {damaged}: ")
    assert not flair.exists() and not list(flair.parent.glob(".tmp-*"))
    assert sorted(p.name for p in flair.parent.iterdir()) == sorted(p.name for p in (MNI / "patient19").iterdir()
                                                                     if not p.name.startswith("FLAIR_"))
    # a patient the source does not have
    assert getter["main"]([str(out), "--sets", "cross_sectional/MNI", "--patients", "3", "--source", str(source)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"get_open_ms_data: {source}/cross_sectional/MNI/patient03: no FLAIR at the source")
    assert not (out / "cross_sectional" / "MNI" / "patient03").exists()


@pytest.mark.slow
def test_evaluate_reads_a_brats_folder_with_its_target(tmp_path, capsys):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for case in ("brats_2013_pat0001_1", "brats_2013_pat0003_1"):  # "predictions": the whole tumour itself
        labels = nib.load(BRATS / case / "OTMultiClass.nii.gz")
        tumour = (np.asarray(labels.dataobj) > 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(tumour, labels.affine), predictions / f"{case}_mask.nii.gz")
    assert evaluate_cli.main(["--reference", str(BRATS), "--prediction", str(predictions), "--out",
                              str(tmp_path / "whole"), "--no-qc"]) == 0
    rows = list(csv.DictReader((tmp_path / "whole" / "metrics.csv").open()))
    assert [(r["patient"], r["centre"], float(r["dice"])) for r in rows] == [
        ("brats_2013_pat0001_1", "brats", 1.0), ("brats_2013_pat0003_1", "brats", 1.0)]
    summary = (tmp_path / "whole" / "summary.md").read_text(encoding="utf-8")  # tumours: no MS paper rows
    assert "(paper, MSSEG-2016)" not in summary and "these references are tumour labels, not MS lesions" in summary
    assert evaluate_cli.main(["--reference", str(BRATS), "--prediction", str(predictions), "--out",
                              str(tmp_path / "core"), "--no-qc", "--target", "tumour_core"]) == 0
    for row in csv.DictReader((tmp_path / "core" / "metrics.csv").open()):
        labels = np.asarray(nib.load(BRATS / row["patient"] / "OTMultiClass.nii.gz").dataobj)
        core, whole = np.isin(labels, (1, 3, 4)), labels > 0
        assert float(row["dice"]) == pytest.approx(2 * core.sum() / (core.sum() + whole.sum()), abs=1e-9)
        assert float(row["sensitivity"]) == pytest.approx(1.0)
    capsys.readouterr()
    assert evaluate_cli.main(["--reference", str(MNI), "--prediction", str(predictions), "--out",
                              str(tmp_path / "x"), "--target", "tumour_core"]) == 2
    assert capsys.readouterr().err == (f"error: {MNI}: --target tumour_core needs BRATS case folders (label maps); "
                                       "the Ljubljana cross-sectional layout has binary masks\n")
    assert not (tmp_path / "x").exists()
