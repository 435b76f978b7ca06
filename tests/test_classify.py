"""Whole-volume classification and registry backbones through the CLIs, on a tiny phantom (32³)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest

from planar3d.cli import crossval as crossval_cli
from planar3d.cli import predict as predict_cli
from planar3d.cli import train as train_cli
from planar3d.cli.common import add_config_flags, config_from_args, make_parser
from planar3d.config import load_config, make_config
from planar3d.data.labels import lesion_load_labels, read_labels, write_labels
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation import metrics, reports
from planar3d.io import sources
from planar3d.io.records import Record
from planar3d.nets import load
from planar3d.runs import crossval
from planar3d.training import classify, segment
from planar3d.training import fold as fold_steps

TINY = dict(size=32, epochs=2, batch_size=2, patience=5, lr=1e-3, lr_decay=0.0, phantom_n_per_centre=3)
# The models that learn here are VGG16 encoders with their ImageNet weights, frozen: VGG16 has no batch
# normalisation, so after the few steps a test affords the network predicts as it trained. (A MobileNetV2 from
# scratch, momentum 0.999, keeps its initial batch-norm statistics for thousands of steps: it predicted 0.5 for
# every scan.) The classifier's head has dropout.
CLASSIFIER = dict(TINY, epochs=10, patience=10, lr=3e-2, task="classification", backbone="vgg16",
                  encoder_weights="imagenet", freeze_encoder=True)
RECORDS = [Record(pid, pid[:2], Path(f"{pid}.nii.gz")) for pid in ("01A", "01B", "07A", "07B")]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private PLANAR3D_HOME holding a small phantom (generated once per module)."""
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLANAR3D_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def imagenet(home, vgg16_weights_path):
    """``encoder_weights="imagenet"`` finds the VGG16 weights file."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLANAR3D_VGG16_WEIGHTS", str(vgg16_weights_path))
        yield


def _copy_phantom(root: Path, change) -> Path:
    """The tiny phantom written to ``root`` in the MSSEG-2016 layout, ``change(record, scan, mask) -> (scan,
    mask)`` applied to the voxel arrays of every subject."""
    for record in sources.dataset_records(make_config("demo", **TINY)):
        scan, mask = nib.load(record.flair), nib.load(record.mask)
        data, lesions = change(record, np.asarray(scan.dataobj), np.asarray(mask.dataobj))
        (root / record.patient_id).mkdir(parents=True)
        nib.save(nib.Nifti1Image(data.astype(scan.get_data_dtype()), scan.affine, scan.header),
                 root / record.patient_id / "3DFLAIR.nii.gz")
        nib.save(nib.Nifti1Image(lesions.astype(mask.get_data_dtype()), mask.affine, mask.header),
                 root / record.patient_id / "Consensus.nii.gz")
    return root


@pytest.fixture(scope="module")
def inverted(imagenet, tmp_path_factory):
    """``(data folder, labels table, labels)``: the phantom with a target a classifier learns in a few steps.
    The target is the phantom's (lesion load above the centre's median), and the scans of class 1 have their
    contrast inverted (the scan's maximum minus the scan): dark heads in bright air."""
    labels = lesion_load_labels(sources.dataset_records(make_config("demo", **TINY)))
    root = tmp_path_factory.mktemp("inverted")

    def invert(record, scan, mask):
        return (scan.max() - scan if labels[record.patient_id] else scan), mask

    return _copy_phantom(root / "data", invert), write_labels(root / "labels.csv", labels), labels


@pytest.fixture(scope="module")
def classified(inverted, tmp_path_factory):
    """One classification fold of the inverted phantom, shared by the tests that read its outputs."""
    data, table, _ = inverted
    out = tmp_path_factory.mktemp("run")
    config = make_config("demo", **CLASSIFIER, data=str(data), labels=str(table))
    rows = classify.train_classifier_fold(config, 1, out, verbose=0)
    return config, out, rows


def _zeroed_inputs(monkeypatch) -> None:
    """From now on every fold trains and evaluates on scans whose every voxel is 0 (a model that cannot see)."""
    load_cases = fold_steps.load_cases

    def zeroed(*args, **kwargs):
        return [dataclasses.replace(case, volume=np.zeros(case.volume.shape, np.float32))
                for case in load_cases(*args, **kwargs)]

    monkeypatch.setattr(fold_steps, "load_cases", zeroed)


def _table(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- labels table


def test_labels_table_is_read_in_record_order(tmp_path):
    table = _table(tmp_path / "labels.csv", "subject,label,note\n07B,1,x\n01A,0,\n07A,0,\n01B,1,\n")
    assert read_labels(table, RECORDS) == {"01A": 0, "01B": 1, "07A": 0, "07B": 1}
    tsv = _table(tmp_path / "labels.tsv", "subject\tlabel\n01A\t0\n01B\t1\n07A\t2\n07B\t1\n")
    assert list(read_labels(tsv, RECORDS).values()) == [0, 1, 2, 1]


@pytest.mark.parametrize("text, message", [
    ("subject,label\n01A,0\n01B,1\n07A,0\n", "labels.csv: missing subject: no label for 1 scan(s) of the dataset: 07B"),
    ("subject,label\n01A,1\n01B,1\n07A,1\n07B,1\n",
     "labels.csv: one class only: every subject has label 1; a classifier needs two or more"),
    ("subject,label\n01A,0\n01B,yes\n07A,0\n07B,1\n",
     "labels.csv: line 3: unknown label 'yes' for subject 01B (labels are class indices 0, 1, ...)"),
    ("subject,label\n01A,0\n01B,1\n07A,0\n07B,1\n08C,1\n", "labels.csv: line 6: subject 08C has no scan in the dataset"),
    ("subject,label\n01A,0\n01B,2\n07A,0\n07B,2\n", "labels.csv: class indices must be 0..1 without gaps. Received: [0, 2]"),
    ("subject,label\n01A,0\n01A,1\n", "labels.csv: line 3: subject 01A is listed twice"),
    ("subject,class\n01A,0\n", "labels.csv: labels table needs the columns subject,label. Received: ['subject', 'class']"),
])
def test_labels_table_errors(tmp_path, text, message):
    table = _table(tmp_path / "labels.csv", text)
    with pytest.raises(InputFileError) as error:
        read_labels(table, RECORDS)
    assert str(error.value) == f"{tmp_path}/{message}"


def test_write_labels_round_trip_and_refuses_to_overwrite(tmp_path):
    path = write_labels(tmp_path / "l.csv", {"07A": 1, "01A": 0, "01B": 1, "07B": 0})
    assert path.read_text().splitlines() == ["subject,label", "01A,0", "01B,1", "07A,1", "07B,0"]
    assert read_labels(path, RECORDS) == {"01A": 0, "01B": 1, "07A": 1, "07B": 0}
    with pytest.raises(InputFileError, match="output exists"):
        write_labels(path, {"01A": 0})


@pytest.mark.slow
def test_phantom_target_is_lesion_load_above_the_centres_median(home):
    records = sources.dataset_records(make_config("demo", **TINY))
    labels = lesion_load_labels(records)
    info = json.loads((records[0].flair.parents[1] / "phantom.json").read_text())
    ratios = {s["patient_id"]: s["lesion_ratio"] for s in info["subjects"]}
    for centre in ("01", "07", "08"):
        ids = [r.patient_id for r in records if r.centre == centre]
        assert len(ids) == 3
        # three subjects per centre: only the one with the largest load is above the median
        assert [labels[i] for i in ids] == [int(ratios[i] == max(ratios[j] for j in ids)) for i in ids]


# ----------------------------------------------------------------------------- metrics


def test_classification_metrics_match_hand_computed_values():
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
    result = metrics.classification_metrics([0, 0, 1, 1], probabilities)
    # predicted 0, 1, 0, 1; AUC: 3 of the 4 (negative, positive) pairs are ordered right
    assert result == {"n": 4, "accuracy": 0.5, "balanced_accuracy": 0.5, "roc_auc": 0.75,
                       "confusion_matrix": [[1, 1], [1, 1]]}
    imbalanced = metrics.classification_metrics([0, 0, 0, 1], probabilities)
    assert imbalanced["accuracy"] == 0.75 and imbalanced["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    one_class = metrics.classification_metrics([1, 1], probabilities[:2])
    assert math.isnan(one_class["roc_auc"]) and one_class["accuracy"] == 0.5
    three = metrics.classification_metrics([0, 1, 2], np.eye(3))
    assert (three["accuracy"], three["roc_auc"], three["confusion_matrix"]) == (1.0, 1.0, np.eye(3, dtype=int).tolist())


# ----------------------------------------------------------------------------- flags


def _config(argv: list[str]):
    parser = make_parser("test", "test")
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv))


def test_backbone_task_and_labels_flags_reach_the_config():
    default = _config([])
    assert (default.backbone, default.task, default.labels) == ("paper", "segmentation", None)
    config = _config(["--backbone", "resnet50", "--mapping", "soft_acs", "--task", "classification", "--window", "16",
                      "--labels", "labels.csv"])
    assert (config.backbone, config.mapping, config.task, config.labels) == ("resnet50", "soft_acs", "classification",
                                                                           "labels.csv")
    segmenter = _config(["--backbone", "mobilenetv2", "--mapping", "acs", "--window", "32", "--stride", "16"])
    assert segmenter.training_identity()["backbone"] == "mobilenetv2" and segmenter.window == 32


@pytest.mark.parametrize("argv, message", [
    (["--task", "classification"], "task classification needs a registry backbone (e.g. --backbone vgg16)"),
    (["--mapping", "soft_acs"], "mapping soft_acs needs a registry backbone"),
    (["--backbone", "resnet50", "--window", "16"], "a registry backbone's U-Net downsamples slices, rows and cols "
     "32-fold: window and size must be multiples of 32 (e.g. --window 32 --stride 16). Received: window=16, size=256"),
])
def test_bad_backbone_combinations_are_one_line_errors(argv, message, capsys, tmp_path):
    assert train_cli.main(["--fold", "0", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unknown_backbone_is_refused_by_the_parser_and_by_the_config(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        train_cli.main(["--fold", "0", "--out", str(tmp_path / "run"), "--backbone", "alexnet"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("planar3d.train: error: argument --backbone: invalid choice: 'alexnet' (choose from 'paper', ")
    assert not (tmp_path / "run").exists()
    with pytest.raises(Planar3DError, match=r"^backbone must be one of \['paper', 'vgg16', .*\]\. Received: backbone='alexnet'$"):
        make_config("paper", backbone="alexnet")


@pytest.mark.slow
def test_bad_labels_table_stops_the_cli_before_anything_is_written(home, tmp_path, capsys):
    records = sources.dataset_records(make_config("demo", **TINY))
    lines = [f"{r.patient_id},{i % 2}" for i, r in enumerate(records)] + ["09999XXXX,1"]
    table = _table(tmp_path / "labels.csv", "subject,label\n" + "\n".join(lines) + "\n")
    out = tmp_path / "run"
    argv = ["--fold", "0", "--preset", "demo", "--size", "32", "--phantom-n-per-centre", "3", "--task",
            "classification", "--backbone", "vgg16", "--encoder-weights", "none", "--labels", str(table), "--out", str(out)]
    assert train_cli.main(argv) == 2
    assert capsys.readouterr().err == f"error: {table}: line 11: subject 09999XXXX has no scan in the dataset\n"
    assert not out.exists()
    assert crossval_cli.main(argv[2:]) == 2
    assert "09999XXXX has no scan in the dataset" in capsys.readouterr().err


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_classification_fold_writes_every_output(classified, inverted):
    config, out, rows = classified
    fold = out / "fold_1"
    for name in ("best.keras", "log.csv", "curves.png", "config.json", "versions.json", "split.json", "labels.csv",
                 "predictions.csv", "metrics.csv", "done.json"):
        assert (fold / name).is_file(), name
    assert not (fold / "backup").exists()
    assert load_config(fold / "config.json") == config
    split = json.loads((fold / "split.json").read_text())
    assert [r["patient"] for r in rows] == split["test"] and len(split["train"]) == 5
    with (fold / "log.csv").open() as handle:
        log = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in log] == list(range(10)) and {"accuracy", "val_accuracy", "val_loss"} <= set(log[0])
    labels = inverted[2]
    assert read_labels(fold / "labels.csv", sources.classification_records(config)) == labels
    for row in rows:
        assert row["label"] == labels[row["patient"]]
        assert row["prob_0"] + row["prob_1"] == pytest.approx(1.0, abs=1e-6)
        assert row["predicted"] == int(row["prob_1"] > row["prob_0"])
    with (fold / "metrics.csv").open() as handle:
        (written,) = list(csv.DictReader(handle))
    expected = metrics.classification_metrics([r["label"] for r in rows], [[r["prob_0"], r["prob_1"]] for r in rows])
    assert float(written["accuracy"]) == expected["accuracy"]
    assert json.loads(written["confusion_matrix"]) == expected["confusion_matrix"]
    # learned: every class-1 test scan scores above every class-0 one (a constant output scores 0.5)
    assert float(written["roc_auc"]) == expected["roc_auc"] == 1.0
    model = keras.models.load_model(fold / "best.keras", safe_mode=True, compile=False)
    assert model.input_shape == (None, 32, 32, 32, 1) and model.output_shape == (None, 1)


@pytest.mark.slow
def test_classification_crossval_table_and_predict_csv(classified, tmp_path, capsys):
    config, out, rows = classified
    pooled = crossval.run_crossval(config, out, folds=[1])  # the finished fold is reused
    assert [r["patient"] for r in pooled] == [r["patient"] for r in rows]
    summary = (out / "summary.md").read_text()
    assert "| fold | n | accuracy | balanced accuracy | ROC AUC |" in summary and "| all test scans pooled | 3 |" in summary
    result = metrics.classification_metrics([r["label"] for r in rows], [[r["prob_0"], r["prob_1"]] for r in rows])
    assert f"| 1 | 3 | {result['accuracy']:.3f} | {result['balanced_accuracy']:.3f} |" in summary
    page = (out / "report.html").read_text()  # the grid's page: summary, one row per test scan, the model
    assert f"| 1 | 3 | {result['accuracy']:.3f}" not in page and "<table" in page
    assert page.count("<tr") >= len(rows) + 1 and all(r["patient"] in page for r in rows)
    assert str((out / "fold_1" / "best.keras").resolve()) in page

    folder = tmp_path / "scans"
    folder.mkdir()
    records = {r.patient_id: r for r in sources.dataset_records(config)}
    for row in rows:
        (folder / f"{row['patient']}.nii.gz").write_bytes(records[row["patient"]].flair.read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"not a nifti")
    output = tmp_path / "probabilities.csv"
    model = str(out / "fold_1" / "best.keras")
    assert predict_cli.main(["--model", model, "--input", str(folder), "--output", str(output)]) == 1
    assert "broken.nii.gz" in capsys.readouterr().err
    with output.open() as handle:
        written = list(csv.DictReader(handle))
    assert [w["subject"] for w in written] == [r["patient"] for r in rows]
    for line, row in zip(written, rows):  # same preprocessing and model as the fold's test
        assert float(line["prob_1"]) == pytest.approx(row["prob_1"], abs=1e-5)
        assert int(line["predicted"]) == row["predicted"]
    # the probabilities compared are those of a model that tells the scans apart, not one constant
    assert metrics.classification_metrics([r["label"] for r in rows], [[1 - float(w["prob_1"]), float(w["prob_1"])]
                                                                      for w in written])["roc_auc"] == 1.0
    capsys.readouterr()
    assert predict_cli.main(["--model", model, "--input", str(folder), "--output", str(output)]) == 2
    assert f"{output}: output exists; pass --overwrite" in capsys.readouterr().err
    assert predict_cli.main(["--model", model, "--input", str(folder), "--output", str(tmp_path / "m.nii.gz")]) == 2
    assert "a classifier writes a table: give --output a .csv file" in capsys.readouterr().err


class _Crash(keras.callbacks.Callback):
    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.slow
def test_killed_classification_resumes_and_ends_like_an_uninterrupted_run(classified, tmp_path):
    config, out, rows = classified
    with pytest.raises(KeyboardInterrupt):
        classify.train_classifier_fold(config, 1, tmp_path / "killed", extra_callbacks=[_Crash(1)], verbose=0)
    assert (tmp_path / "killed" / "fold_1" / "backup" / "current").is_dir()
    resumed = classify.train_classifier_fold(config, 1, tmp_path / "killed", verbose=0)
    np.testing.assert_allclose([r["prob_1"] for r in resumed], [r["prob_1"] for r in rows], atol=1e-6)
    # runs that learned (equal constants would prove nothing): every class-1 test scan above every class-0 one
    assert metrics.classification_metrics([r["label"] for r in resumed],
                                          [[r["prob_0"], r["prob_1"]] for r in resumed])["roc_auc"] == 1.0
    with pytest.raises(Planar3DError, match=r"differs in \['mapping'\]"):
        classify.train_classifier_fold(dataclasses.replace(config, mapping="acs"), 1, tmp_path / "killed")


def _fold_scores(config, fold_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, logits)``: the classes of the fold's ``part`` scans (``"train"`` or ``"test"``) and the
    logits of class 1 that ``best.keras`` gives them, the scans read as the fold read them."""
    ids = json.loads((fold_dir / "split.json").read_text())[part]
    with (fold_dir / "labels.csv").open() as handle:
        labels = {row["subject"]: int(row["label"]) for row in csv.DictReader(handle)}
    cases = {c.patient_id: c for c in fold_steps.load_cases(sources.classification_records(config), size=config.size,
                                                             progress=False)}
    samples = np.stack([classify.volume_sample(cases[i].volume, config.channels) for i in ids])
    p = np.clip(classify.class_probabilities(load.load_classifier(fold_dir / "best.keras"), samples)[:, 1], 1e-7, 1 - 1e-7)
    return np.array([labels[i] for i in ids], dtype=float), np.log(p) - np.log1p(-p)


def _cross_entropy(labels: np.ndarray, logits: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0, -(2 * labels - 1) * logits)))


def _entropy(labels: np.ndarray) -> float:
    """The cross-entropy of the best constant prediction (the class frequency): no model that ignores the scan
    does better."""
    prior = labels.mean()
    return float(-(prior * np.log(prior) + (1 - prior) * np.log(1 - prior)))


@pytest.mark.slow
def test_classifier_learns_the_target_and_a_blind_one_does_not(classified, tmp_path, monkeypatch):
    """``best.keras`` tells the classes apart: on its training scans its cross-entropy is 0.2 nats below the best
    constant prediction's, and every class-1 test scan scores above every class-0 one. The same training on
    zeroed scans reaches neither. (Ten epochs: the fold keeps the epoch of lowest loss on its one validation
    scan, of class 0, and after fewer that could be an early epoch whose probabilities were all low.)"""

    def learned(config, fold_dir):
        (labels, logits), (test_labels, test_logits) = (_fold_scores(config, fold_dir, part) for part in ("train", "test"))
        gap = test_logits[test_labels == 1].min() - test_logits[test_labels == 0].max()
        return _cross_entropy(labels, logits), _entropy(labels), gap

    config, out, _ = classified
    fit, constant, gap = learned(config, out / "fold_1")
    _zeroed_inputs(monkeypatch)
    classify.train_classifier_fold(config, 1, tmp_path, verbose=0)
    blind_fit, _, blind_gap = learned(config, tmp_path / "fold_1")
    assert fit < constant - 0.2 <= blind_fit, (fit, constant, blind_fit)
    assert gap > 0 >= blind_gap, (gap, blind_gap)


@pytest.fixture(scope="module")
def balls(imagenet, tmp_path_factory):
    """The phantom with a lesion a segmenter finds in a few steps: a ball of the scan's maximum intensity, its
    diameter 30 % of the field of view, anywhere in the field of view (a new place in every scan), added to the
    scan's lesion mask."""
    rng = np.random.default_rng(0)

    def add_ball(record, scan, mask):
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in scan.shape], indexing="ij")  # the field of view: [-1, 1]³
        ball = sum((axis - centre) ** 2 for axis, centre in zip(grid, rng.uniform(-0.6, 0.6, 3))) <= 0.3**2
        return np.where(ball, scan.max(), scan), mask | ball

    return _copy_phantom(tmp_path_factory.mktemp("balls"), add_ball)


def _training_dice(fold_dir: Path) -> float:
    """The Dice coefficient on the training windows in the fold's last epoch (``log.csv``)."""
    with (fold_dir / "log.csv").open() as handle:
        return float(list(csv.DictReader(handle))[-1]["dice_coef"])


@pytest.mark.slow
def test_segmenter_with_a_registry_backbone_learns_through_the_windows(balls, tmp_path, monkeypatch):
    """A registry-backbone segmenter learns the balls from its windows: its training Dice ends at more than three
    times the Dice that the same training on zeroed scans reaches (0.03, that of calling every voxel lesion: the
    balls are anywhere).

    The bound is on the training windows (batch statistics) and not on the test scans: over a test's few steps
    the decoder's batch normalisation keeps its initial moving statistics, so at inference this network calls
    every voxel lesion (measured: test Dice 0.03 for each of its three test scans)."""
    # windows of 32 slices: the backbone downsamples slices 32-fold as it does rows (depth_downsampling)
    config = make_config("demo", **{**TINY, "data": str(balls), "epochs": 3, "batch_size": 1, "lr": 3e-2, "window": 32,
                                    "stride": 16, "backbone": "vgg16", "mapping": "planar",
                                    "encoder_weights": "imagenet", "freeze_encoder": True})
    rows = segment.train_fold(config, 0, tmp_path / "seeing", verbose=0)
    assert len(rows) == 3 and all(0.0 <= r["dice"] <= 1.0 for r in rows)
    model = load.load_segmentation_model(tmp_path / "seeing" / "fold_0" / "best.keras")
    assert model.input_shape == (None, 32, 32, 32, 1) and model.output_shape == (None, 32, 32, 32, 1)
    assert load_config(tmp_path / "seeing" / "fold_0" / "config.json").backbone == "vgg16"
    _zeroed_inputs(monkeypatch)
    segment.train_fold(config, 0, tmp_path / "blind", verbose=0)
    seeing, blind = _training_dice(tmp_path / "seeing" / "fold_0"), _training_dice(tmp_path / "blind" / "fold_0")
    assert seeing > 3 * blind, (seeing, blind)


def _rows(seed: int, fold: int, labels, p1) -> list[dict]:
    return [{"seed": seed, "fold": fold, "patient": f"{fold}{i}", "centre": "01", "label": y, "predicted": int(p > 0.5),
             "prob_0": 1 - p, "prob_1": p} for i, (y, p) in enumerate(zip(labels, p1))]


def test_summaries_over_folds_and_over_seeds():
    config = make_config("demo", **CLASSIFIER)
    rows = _rows(0, 0, [0, 1], [0.2, 0.9]) + _rows(0, 1, [0, 1], [0.7, 0.6])
    summary = reports.classification_summary(rows, config)
    assert "| 0 | 2 | 1.000 | 1.000 | 1.000 | [[1, 0], [0, 1]] |" in summary
    assert "| 1 | 2 | 0.500 | 0.500 | 0.000 | [[0, 1], [0, 1]] |" in summary
    assert "| mean ± sd over folds | | 0.750 ± 0.354 (n=2) | 0.750 ± 0.354 (n=2) | 0.500 ± 0.707 (n=2) | |" in summary
    # pooled: p = 0.2, 0.9, 0.7, 0.6 for labels 0, 1, 0, 1 -> 3 of 4 right, AUC 3/4
    assert "| all test scans pooled | 4 | 0.750 | 0.750 | 0.750 | [[1, 1], [0, 2]] |" in summary
    more = rows + [{**row, "seed": 1, "prob_1": 1 - row["prob_1"], "prob_0": row["prob_1"]} for row in rows]
    over_seeds = reports.seeds_classification_summary(more, config)
    assert "| 0 | 4 | 0.750 | 0.750 | 0.750 |" in over_seeds and "| 1 | 4 | 0.250 | 0.250 | 0.250 |" in over_seeds
    assert "| mean ± sd over seeds | | 0.500 ± 0.354 (n=2) | 0.500 ± 0.354 (n=2) | 0.500 ± 0.354 (n=2) | |" in over_seeds
