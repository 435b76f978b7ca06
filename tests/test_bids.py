"""BIDS in, BIDS derivatives out: train/crossval from a BIDS root and the BIDS App's two levels.

One tiny BIDS phantom (6 subjects at scale 0.1: the first has two sessions, the second an
``acq-3d_run-1`` FLAIR) and one model trained on it for 1 epoch at size 32 serve every test; a
copy with two runs in a session and two runs of the second subject tests that the App takes
every FLAIR (read back with pybids).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from planar3d.apps import bids
from planar3d.cli import bids as bids_cli
from planar3d.cli import crossval as crossval_cli
from planar3d.cli import train as train_cli
from planar3d.io.bids import find_bids_scans

TRAIN_FLAGS = ["--preset", "demo", "--size", "32", "--epochs", "1", "--batch-size", "2", "--patience", "5",
               "--lr", "1e-3", "--lr-decay", "0"]

pytestmark = pytest.mark.slow


def _rename(path: Path, old: str, new: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), folder / path.name.replace(old, new))


@pytest.fixture(scope="module")
def dataset(home, tmp_path_factory):
    """``(root, first, second)``: the BIDS phantom and its two special subjects' labels."""
    make_phantom = runpy.run_path(str(Path(__file__).resolve().parents[1] / "data_prep" / "make_phantom.py"))
    root = tmp_path_factory.mktemp("bids") / "bids"
    assert make_phantom["main"]([str(root), "--bids", "--n-per-centre", "2", "--scale", "0.1", "--seed", "3"]) == 0
    assert json.loads((root / "sourcedata" / "phantom.json").read_text())["options"]["n_per_centre"] == 2
    records = find_bids_scans(root, masks_from="consensus", require_masks=True, require_centre=True)
    assert [s.centre for s in records] == ["Philips 3T"] * 2 + ["Siemens 1.5T"] * 2 + ["Siemens 3T"] * 2
    first, second = records[0].subject, records[1].subject
    derivatives = root / "derivatives" / "consensus"
    # the first subject: sessions 1 and 2 (the same images: a repeat scan)
    for tree in (root, derivatives):
        anat = tree / f"sub-{first}" / "anat"
        for path in sorted(anat.iterdir()):
            copy = anat / ("copy-" + path.name)
            shutil.copyfile(path, copy)
            _rename(path, f"sub-{first}_", f"sub-{first}_ses-1_", tree / f"sub-{first}" / "ses-1" / "anat")
            _rename(copy, f"copy-sub-{first}_", f"sub-{first}_ses-2_", tree / f"sub-{first}" / "ses-2" / "anat")
        anat.rmdir()
    # the second subject: an acq-/run- FLAIR; its mask names fewer entities and still applies
    anat = root / f"sub-{second}" / "anat"
    for path in sorted(anat.iterdir()):
        path.rename(anat / path.name.replace("_FLAIR", "_acq-3d_run-1_FLAIR"))
    return root, first, second


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    root, _, _ = dataset
    out = tmp_path_factory.mktemp("run")
    code = train_cli.main(["--fold", "0", "--data", str(root), "--masks-from", "consensus", "--out", str(out), *TRAIN_FLAGS])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def derivative(dataset, trained, tmp_path_factory):
    """The participant level run once on the two special subjects, with --probseg.

    After 1 epoch every probability is below 0.001, so a threshold of 1e-4 (about the 99.9th
    percentile) makes lesions for the tables to describe."""
    root, first, second = dataset
    out = tmp_path_factory.mktemp("deriv") / "planar3d"
    argv = [str(root), str(out), "participant", "--model", str(trained / "fold_0" / "best.keras"),
            "--participant-label", first, second, "--probseg", "--threshold", "1e-4"]
    assert bids_cli.main(argv) == 0
    return out, argv


def _copy(tree: Path, tmp_path: Path) -> Path:
    target = tmp_path / tree.name
    shutil.copytree(tree, target)
    return target


@pytest.mark.slow
def test_train_and_crossval_from_a_bids_root(dataset, trained, capsys):
    root, first, second = dataset
    split = json.loads((trained / "fold_0" / "split.json").read_text())
    # centres from the sidecars' scanners; fold 0 tests the first subject of each: both sessions of `first`
    assert f"sub-{first}_ses-1" in split["test"] and f"sub-{first}_ses-2" in split["test"]
    assert len(split["test"]) == 4 and len(split["train"]) + len(split["validation"]) == 3
    assert f"sub-{second}_acq-3d_run-1" in split["train"] + split["validation"]
    with (trained / "fold_0" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["centre"] for r in rows) == ["Philips 3T", "Philips 3T", "Siemens 1.5T", "Siemens 3T"]
    assert crossval_cli.main(["--data", str(root), "--masks-from", "consensus", "--folds", "0", "--out", str(trained),
                          *TRAIN_FLAGS]) == 0
    assert "fold 0: already finished" in capsys.readouterr().out
    summary = (trained / "summary.md").read_text()
    assert "centre Philips 3T" in summary and f"Data: {root}" in summary
    capsys.readouterr()
    assert train_cli.main(["--fold", "0", "--data", str(root), "--acq", "2d", "--out", str(trained / "x"), *TRAIN_FLAGS]) == 2
    assert f"error: {root}: no FLAIR images found" in capsys.readouterr().err


@pytest.mark.slow
def test_participant_outputs_are_bids_derivatives_on_the_scan_grid(dataset, derivative):
    from bidsschematools import rules, schema

    root, first, second = dataset
    out, argv = derivative
    expected = {
        f"sub-{first}/ses-1/anat/sub-{first}_ses-1_space-orig_label-lesion_mask.nii.gz",
        f"sub-{first}/ses-2/anat/sub-{first}_ses-2_space-orig_label-lesion_probseg.nii.gz",
        f"sub-{second}/anat/sub-{second}_acq-3d_run-1_space-orig_label-lesion_mask.nii.gz",
        f"sub-{second}/anat/sub-{second}_acq-3d_run-1_space-orig_label-lesion_mask.json",
        f"sub-{second}/anat/sub-{second}_acq-3d_run-1_desc-lesions_stats.tsv",
        f"sub-{second}/anat/sub-{second}_acq-3d_run-1_desc-lesions_stats.json",
        f"sub-{first}/figures/sub-{first}_ses-2_desc-qc_FLAIR.png",
        f"sub-{first}_ses-1.html", f"sub-{first}_ses-2.html", f"sub-{second}.html",  # reports, as fMRIPrep names them
        "dataset_description.json", ".bidsignore",
    }
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert expected <= files and len(files) == 2 + 3 * 7 + 3
    # every file is a schema-valid derivative name or listed in .bidsignore
    loaded = schema.load_schema()
    regexes = [r for group in (loaded.rules.files.common, loaded.rules.files.raw)
               for r in rules.regexify_filename_rules(group, loaded, level=2)]
    regexes += rules.regexify_filename_rules(loaded.rules.files.deriv.imaging, loaded, level=1)
    ignored = (out / ".bidsignore").read_text().split()
    for path in sorted(files - {".bidsignore"}):
        valid = any(re.match(r"(?:.*/)?" + r["regex"], path) for r in regexes)
        hidden = any(fnmatch.fnmatch(Path(path).name, p) or path.startswith(p) or f"/{p}" in f"/{path}" for p in ignored)
        assert valid != hidden, path  # valid names are not hidden; the rest is
    # dataset_description.json: derivative, provenance, source
    description = json.loads((out / "dataset_description.json").read_text())
    generated = description["GeneratedBy"][0]
    assert description["DatasetType"] == "derivative" and generated["Name"] == "planar3d"
    assert generated["Version"] == __import__("planar3d").__version__
    assert generated["Description"].endswith("Command: python -m planar3d.bids " + " ".join(argv))
    assert description["SourceDatasets"] == [{"URL": root.resolve().as_uri()}]
    assert set(generated) <= set(loaded.objects.metadata.GeneratedBy["items"]["properties"])
    # the mask lies on the FLAIR's grid; the sidecars and the stats table agree with it
    prefix = out / f"sub-{second}" / "anat" / f"sub-{second}_acq-3d_run-1"
    flair = nib.load(root / f"sub-{second}" / "anat" / f"sub-{second}_acq-3d_run-1_FLAIR.nii.gz")
    mask = nib.load(f"{prefix}_space-orig_label-lesion_mask.nii.gz")
    probseg = nib.load(f"{prefix}_space-orig_label-lesion_probseg.nii.gz")
    assert mask.shape == probseg.shape == flair.shape
    np.testing.assert_allclose(mask.affine, flair.affine, atol=1e-6)
    sidecar = json.loads(Path(f"{prefix}_space-orig_label-lesion_mask.json").read_text())
    assert sidecar["Type"] == "Lesion" and "Lesion" in loaded.objects.metadata.Type["enum"]
    assert sidecar["Sources"] == [f"bids:raw:sub-{second}/anat/sub-{second}_acq-3d_run-1_FLAIR.nii.gz"]
    assert sidecar["SpatialReference"] == sidecar["Sources"][0]  # required with a non-template space entity
    assert description["DatasetLinks"]["raw"] == root.resolve().as_uri()  # resolves the bids:raw: URIs
    with open(f"{prefix}_desc-lesions_stats.tsv", newline="") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    columns = json.loads(Path(f"{prefix}_desc-lesions_stats.json").read_text())
    assert len(table) > 0 and list(columns) == list(table[0]) == list(bids.STATS_COLUMNS)
    assert all("Description" in value for value in columns.values()) and columns["volume_mm3"]["Units"] == "mm^3"
    voxels = np.asarray(mask.dataobj)
    assert set(np.unique(voxels)) <= {0, 1} and sidecar["LesionCount"] == len(table)
    assert int(voxels.sum()) == sum(int(row["voxels"]) for row in table)
    assert [int(row["lesion_id"]) for row in table] == list(range(1, len(table) + 1))
    assert np.all((np.asarray(probseg.dataobj) >= sidecar["Threshold"]) == (voxels == 1))


@pytest.mark.slow
def test_rerun_skips_finished_participants_and_redoes_unfinished_ones(dataset, derivative, tmp_path, capsys):
    root, first, second = dataset
    out = _copy(derivative[0], tmp_path)
    argv = [str(root), str(out), "participant", "--model", derivative[1][4], "--participant-label", first, second,
            "--probseg", "--threshold", "1e-4"]
    mask = next((out / f"sub-{first}").rglob("*_mask.nii.gz"))
    before = mask.stat().st_mtime_ns
    stats = next((out / f"sub-{second}").rglob("*_stats.tsv"))
    stats.unlink()  # as a kill between two files would leave it
    (out / f"sub-{first}_ses-2.html").unlink()
    capsys.readouterr()
    assert bids_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"skip sub-{first}: finished" in printed and f"sub-{second}_acq-3d_run-1: " in printed
    assert stats.is_file() and mask.stat().st_mtime_ns == before
    assert (out / f"sub-{first}_ses-2.html").is_file()  # a finished participant's missing page is written again
    assert bids_cli.main(argv + ["--overwrite"]) == 0
    assert "skip sub-" not in capsys.readouterr().out and mask.stat().st_mtime_ns != before


def test_a_failing_participant_is_reported_and_the_others_go_on(dataset, derivative, tmp_path, capsys):
    root, first, second = dataset
    broken = _copy(root, tmp_path)
    flair = broken / f"sub-{second}" / "anat" / f"sub-{second}_acq-3d_run-1_FLAIR.nii.gz"
    flair.write_bytes(flair.read_bytes()[:200])
    out = tmp_path / "out"
    argv = [str(broken), str(out), "participant", "--model", derivative[1][4], "--participant-label", first, second]
    capsys.readouterr()
    assert bids_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: sub-{second}: {flair}: truncated or corrupt voxel data" in err
    assert f"error: 1 participants failed: sub-{second}" in err
    assert len(list((out / f"sub-{first}").rglob("*_mask.nii.gz"))) == 2
    assert not (out / f"sub-{second}").exists()
    assert "truncated or corrupt voxel data" in (out / f"sub-{second}.html").read_text()  # the page warns


def test_group_level_tables_and_metrics(dataset, derivative, tmp_path, capsys):
    from planar3d.evaluation.evaluate import evaluate_pair

    root, first, second = dataset
    out = _copy(derivative[0], tmp_path)
    capsys.readouterr()
    assert bids_cli.main([str(root), str(out), "group", "--masks-from", "consensus"]) == 0
    assert "warning: no participant outputs for" in capsys.readouterr().err  # the 4 other subjects
    with (out / "group_lesions.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [(r["participant_id"], r["session_id"]) for r in rows] == [
        (f"sub-{first}", "ses-1"), (f"sub-{first}", "ses-2"), (f"sub-{second}", "n/a")]
    for row in rows:
        stats = next(out.rglob(f"{row['scan']}_desc-lesions_stats.tsv"))
        with stats.open(newline="") as handle:
            lesions = list(csv.DictReader(handle, delimiter="\t"))
        assert int(row["n_lesions"]) == len(lesions)
        assert float(row["lesion_volume_ml"]) == pytest.approx(sum(float(r["volume_mm3"]) for r in lesions) / 1000)
    assert list(json.loads((out / "group_lesions.json").read_text())) == list(rows[0])
    with (out / "group_metrics.tsv").open(newline="") as handle:
        metrics = list(csv.DictReader(handle, delimiter="\t"))
    reference = root / "derivatives" / "consensus" / f"sub-{second}" / "anat" / f"sub-{second}_space-orig_label-lesion_mask.nii.gz"
    prediction = out / f"sub-{second}" / "anat" / f"sub-{second}_acq-3d_run-1_space-orig_label-lesion_mask.nii.gz"
    assert float(metrics[2]["dice"]) == pytest.approx(evaluate_pair(reference, prediction)["dice"])
    assert (out / "group_metrics_boxplot.png").stat().st_size > 0
    assert "centre Philips 3T" in (out / "group_metrics.md").read_text()
    page = (out / "group_report.html").read_text()
    assert page.count('<table class="sortable" data-rows="3">') == 2  # the lesion table and the per-scan metrics
    assert all(row["scan"] in page for row in rows) and "data:image/png;base64," in page
    assert bids_cli.main([str(root), str(out), "group"]) == 2
    assert "group_lesions.tsv: output exists; pass --overwrite" in capsys.readouterr().err
    (out / "group_lesions.tsv").unlink()
    (out / "group_lesions.json").unlink()
    assert bids_cli.main([str(root), str(out), "group"]) == 2  # the page alone refuses too
    assert "group_report.html: output exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_writes_nothing(dataset, derivative, tmp_path):
    root, first, _ = dataset
    model = derivative[1][4]
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset_description.json").write_text(json.dumps({"Name": "x", "DatasetType": "derivative",
                                                                "GeneratedBy": [{"Name": "fmriprep"}]}))
    cases = [
        ([str(tmp_path / "nope"), str(tmp_path / "o1"), "participant", "--model", model], "nope: not a folder"),
        ([str(root), str(root), "participant", "--model", model], "OUTPUT_DIR must not be the BIDS dataset"),
        ([str(root), str(root / "sub-x"), "participant", "--model", model], "below its derivatives/ folder"),
        ([str(root), str(tmp_path / "o2"), "participant"], "the participant level needs --model"),
        ([str(root), str(tmp_path / "o3"), "participant", "--model", str(tmp_path / "m.keras")], "model file not found"),
        ([str(root), str(tmp_path / "o4"), "participant", "--model", model, "--participant-label", "zz"], "no subject sub-zz"),
        ([str(root), str(other), "participant", "--model", model], "generated by ['fmriprep']"),
        ([str(root), str(tmp_path / "o5"), "group"], "holds no planar3d participant outputs"),
    ]
    for argv, message in cases:
        result = subprocess.run([sys.executable, "-m", "planar3d.bids", *argv], capture_output=True, text=True)
        assert result.returncode == 2, (argv, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
    assert sorted(p.name for p in other.iterdir()) == ["dataset_description.json"]


@pytest.mark.slow
def test_participant_level_with_an_ensemble_of_identical_members(dataset, trained, derivative, tmp_path):
    """Two copies of the model are an ensemble whose masks are the model's exactly; the
    description names both members and their combined hash."""
    root, first, _ = dataset
    out, _ = derivative
    model = trained / "fold_0" / "best.keras"
    copy = tmp_path / "copy" / "best.keras"
    copy.parent.mkdir()
    shutil.copyfile(model, copy)
    shutil.copyfile(model.parent / "config.json", copy.parent / "config.json")
    ensemble = tmp_path / "ensemble"
    assert bids_cli.main([str(root), str(ensemble), "participant", "--model", str(model), str(copy),
                          "--participant_label", first, "--threshold", "1e-4"]) == 0
    masks = sorted(ensemble.rglob("*_mask.nii.gz"))
    assert masks
    for mask in masks:
        single = out / mask.relative_to(ensemble)
        np.testing.assert_array_equal(np.asarray(nib.load(mask).dataobj), np.asarray(nib.load(single).dataobj))
    description = json.loads((ensemble / "dataset_description.json").read_text())
    shas = [hashlib.sha256(path.read_bytes()).hexdigest() for path in (model, copy)]
    generated = description["GeneratedBy"][0]
    assert hashlib.sha256("\n".join(shas).encode()).hexdigest() in generated["Description"]
    assert str(copy.resolve()) in generated["Description"]


@pytest.fixture(scope="module")
def runs_dataset(dataset, tmp_path_factory):
    """``(root, first, second)``: the BIDS phantom with two sessions and two runs: ``first``'s ses-2
    holds run-1 and run-2, ``second`` acq-3d_run-1 and acq-3d_run-2 (copies: repeat scans)."""
    source, first, second = dataset
    root = tmp_path_factory.mktemp("runs") / "bids"
    shutil.copytree(source, root)
    anat = root / f"sub-{first}" / "ses-2" / "anat"
    for path in sorted(anat.glob("*_FLAIR.*")):
        for run in (1, 2):
            shutil.copyfile(path, anat / path.name.replace("_FLAIR", f"_run-{run}_FLAIR"))
        path.unlink()
    anat = root / f"sub-{second}" / "anat"
    for path in sorted(anat.glob("*_run-1_FLAIR.*")):
        shutil.copyfile(path, anat / path.name.replace("_run-1_", "_run-2_"))
    return root, first, second


def test_every_run_is_segmented_and_named_by_its_entities(runs_dataset, derivative, tmp_path, capsys):
    """Two sessions and two runs: participant and group take every FLAIR (no --run needed), the
    outputs carry each FLAIR's entities (read back with pybids), --run narrows the choice, and
    training still refuses the ambiguity, naming the flag."""
    import bids as pybids

    root, first, second = runs_dataset
    model = derivative[1][4]
    out = tmp_path / "deriv"
    assert bids_cli.main([str(root), str(out), "participant", "--model", model, "--participant_label", first, second,
                          "--threshold", "1e-4"]) == 0
    scans = {f"sub-{first}_ses-1", f"sub-{first}_ses-2_run-1", f"sub-{first}_ses-2_run-2",
             f"sub-{second}_acq-3d_run-1", f"sub-{second}_acq-3d_run-2"}
    printed = capsys.readouterr().out
    assert all(f"{scan}: " in printed for scan in scans)
    layout = pybids.BIDSLayout(out, validate=False, is_derivative=True)
    masks = layout.get(suffix="mask", extension=".nii.gz")
    assert len(masks) == 5 and {f.filename.split("_space-")[0] for f in masks} == scans
    assert {(f.entities["subject"], f.entities.get("session"), f.entities.get("acquisition"), f.entities.get("run"))
            for f in masks} == {(first, "1", None, None), (first, "2", None, 1), (first, "2", None, 2),
                                (second, None, "3d", 1), (second, None, "3d", 2)}
    assert all(f.entities["space"] == "orig" and f.entities["label"] == "lesion" for f in masks)
    assert len(layout.get(suffix="mask", extension=".json")) == 5
    assert len(layout.get(run=2, suffix="mask", extension=".nii.gz")) == 2
    assert len(list(out.rglob("*_desc-lesions_stats.tsv"))) == len(list(out.rglob("*_desc-qc_FLAIR.png"))) == 5
    # one page per participant and session; both runs on the session's page
    assert sorted(p.name for p in out.glob("*.html")) == sorted([f"sub-{first}_ses-1.html", f"sub-{first}_ses-2.html",
                                                                  f"sub-{second}.html"])
    page = (out / f"sub-{first}_ses-2.html").read_text()
    assert f"sub-{first}_ses-2_run-1" in page and f"sub-{first}_ses-2_run-2" in page and f"sub-{first}_ses-1" not in page
    assert page.count("data:image/png;base64,") == 2 and "model trained on the phantom only" in page
    # the group level: one row per FLAIR
    assert bids_cli.main([str(root), str(out), "group", "--masks-from", "consensus"]) == 0
    with (out / "group_lesions.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert sorted(row["scan"] for row in rows) == sorted(scans)
    with (out / "group_metrics.tsv").open(newline="") as handle:
        assert sorted(row["patient"] for row in csv.DictReader(handle, delimiter="\t")) == sorted(scans)
    # --run narrows the choice: run 2 only (first's ses-1, without runs, has none)
    narrowed = tmp_path / "run2"
    capsys.readouterr()
    assert bids_cli.main([str(root), str(narrowed), "participant", "--model", model, "--participant-label", first,
                          second, "--run", "2", "--threshold", "1e-4"]) == 0
    assert sorted(p.name.split("_space-")[0] for p in narrowed.rglob("*_mask.nii.gz")) == [
        f"sub-{first}_ses-2_run-2", f"sub-{second}_acq-3d_run-2"]
    assert bids_cli.main([str(root), str(tmp_path / "acq"), "participant", "--model", model, "--participant-label",
                          second, "--acq", "3d", "--threshold", "1e-4"]) == 0
    assert len(list((tmp_path / "acq").rglob("*_mask.nii.gz"))) == 2
    # training needs one scan per subject and session: the ambiguity is refused, naming the flag
    capsys.readouterr()
    assert train_cli.main(["--fold", "0", "--data", str(root), "--masks-from", "consensus", "--out", str(tmp_path / "t"),
                           *TRAIN_FLAGS]) == 2
    assert "2 FLAIR images match" in capsys.readouterr().err and not (tmp_path / "t").exists()


@pytest.mark.slow
def test_participant_level_runs_an_export_in_another_runtime(dataset, trained, derivative, tmp_path):
    """An export folder as --model with --runtime: the masks of the .keras model (the export's own
    check allows Dice 0.999), its export.json's hash as the model's, and the phantom warning kept."""
    from planar3d.apps.export import export_model

    root, first, _ = dataset
    out, _ = derivative
    export = tmp_path / "export"
    export_model(trained / "fold_0" / "best.keras", "savedmodel", export)
    deriv = tmp_path / "exported"
    assert bids_cli.main([str(root), str(deriv), "participant", "--model", str(export), "--runtime", "tensorflow",
                          "--participant_label", first, "--threshold", "1e-4", "--probseg"]) == 0
    masks = sorted(deriv.rglob("*_mask.nii.gz"))
    assert len(masks) == 2  # two sessions
    for mask in masks:
        single = out / mask.relative_to(deriv)
        np.testing.assert_allclose(np.asarray(nib.load(str(mask).replace("_mask", "_probseg")).dataobj),
                                   np.asarray(nib.load(str(single).replace("_mask", "_probseg")).dataobj), atol=1e-6)
    description = json.loads((deriv / "dataset_description.json").read_text())
    assert hashlib.sha256((export / "export.json").read_bytes()).hexdigest() in description["GeneratedBy"][0]["Description"]
    from planar3d.evaluation.html_report import PHANTOM_WARNING

    assert PHANTOM_WARNING in (deriv / f"sub-{first}_ses-1.html").read_text()  # found through the export's source
    assert bids_cli.main([str(root), str(tmp_path / "refused"), "participant", "--model", str(export), "--runtime",
                          "openvino", "--participant_label", first]) == 2
    assert not (tmp_path / "refused").exists()
