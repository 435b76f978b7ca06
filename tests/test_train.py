"""Training, resuming, cross-validation and prediction on a tiny phantom (size 32)."""

from __future__ import annotations

import csv
import html
import json
import re

import keras
import nibabel as nib
import numpy as np
import pytest

from planar3d.cli import predict as predict_cli
from planar3d.cli import train as train_cli
from planar3d.config import load_config, make_config
from planar3d.data.windows import window_dataset
from planar3d.errors import Planar3DError
from planar3d.evaluation import reports
from planar3d.evaluation.metrics import lesion_detection, sensitivity
from planar3d.io import sources
from planar3d.runs import crossval
from planar3d.training import segment

from conftest import TINY

#: the smallest run found that learns on every seed tried (see test_tiny_training_learns):
#: 4 epochs of 13 steps (5 training scans x 5 windows of 16 slices, stride 4, batch 2)
LEARN = {**TINY, "epochs": 4, "stride": 4}


@pytest.fixture(scope="module")
def trained(home, tmp_path_factory):
    """Fold 2 trained with LEARN and seed 0, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("run")
    config = make_config("demo", seed=0, **LEARN)
    rows = segment.train_fold(config, 2, out, verbose=0)
    return config, out, rows


def test_presets_and_overrides():
    paper = make_config("paper")
    assert (paper.size, paper.window, paper.stride, paper.batch_size, paper.lr, paper.lr_decay, paper.epochs,
            paper.patience, paper.threshold) == (256, 16, 8, 2, 5e-5, 1.99e-7, 100, 40, 0.0625)
    demo = make_config("demo", epochs=1)
    assert demo.size == 64 and demo.epochs == 1 and demo.preset == "demo"
    assert (make_config("demo").epochs, make_config("demo").lr_schedule, make_config("paper").lr_schedule) == (
        4, "cosine", "constant")
    with pytest.raises(Planar3DError, match="Received: preset='fast'"):
        make_config("fast")
    with pytest.raises(Planar3DError, match="Received: blend='max'"):
        make_config("paper", blend="max")
    with pytest.raises(Planar3DError, match="unknown settings"):
        make_config("paper", learning_rate=1)
    with pytest.raises(Planar3DError, match="Received: size=40"):
        make_config("paper", size=40)


def test_config_round_trip(tmp_path):
    config = make_config("demo", seed=3)
    (tmp_path / "config.json").write_text(config.to_json())
    assert load_config(tmp_path / "config.json") == config
    (tmp_path / "bad.json").write_text('{"sise": 3}')
    with pytest.raises(Planar3DError, match=r"bad.json: unknown settings \['sise'\]"):
        load_config(tmp_path / "bad.json")


def test_config_files_read_as_yaml_or_json_with_one_line_errors(tmp_path):
    config = make_config("demo", seed=3)
    (tmp_path / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.to_dict().items()))
    assert load_config(tmp_path / "config.yaml") == config
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "cut.json").write_text('{"seed": ')
    for name, message in (("missing.json", "configuration file not found"),
                          ("list.json", "configuration must be a mapping of names to values"),
                          ("cut.json", "not a readable configuration file (Expecting value")):
        with pytest.raises(Planar3DError) as error:
            load_config(tmp_path / name)
        assert str(error.value).startswith(f"{tmp_path / name}: {message}")


def test_phantom_and_robust_flags_reach_the_config_and_the_data(monkeypatch, tmp_path):
    from planar3d.cli.common import add_config_flags, config_from_args, make_parser

    parser = make_parser("test", "test")
    add_config_flags(parser)
    config = config_from_args(parser.parse_args(
        ["--preset", "demo", "--seed", "3", "--phantom-seed", "7", "--phantom-lesion-load", "0.004", "--robust",
         "--phantom-mode", "realistic"]))
    assert (config.seed, config.phantom_seed, config.phantom_lesion_load, config.robust_normalisation) == (3, 7, 0.004, True)
    default = config_from_args(parser.parse_args(["--preset", "demo", "--seed", "3"]))
    assert (default.phantom_seed, default.phantom_lesion_load, default.robust_normalisation) == (0, None, False)
    assert config_from_args(parser.parse_args(["--no-robust"])).robust_normalisation is False
    # --seed leaves the phantom alone; --phantom-seed and --phantom-lesion-load make it
    asked = []
    monkeypatch.setattr(sources, "ensure_phantom", lambda **options: asked.append(options) or tmp_path)
    monkeypatch.setattr(sources, "find_dataset", lambda root, **options: [root])
    sources.dataset_records(config)
    sources.dataset_records(default)
    assert asked == [{"seed": 7, "n_per_centre": 5, "mode": "realistic", "lesion_load": 0.004},
                     {"seed": 0, "n_per_centre": 5, "mode": "simple"}]


def test_epoch_keyed_order_is_reproducible():
    volumes = [np.arange(48 * 4 * 4, dtype="float32").reshape(48, 4, 4) + 1000 * i for i in range(3)]
    masks = [np.zeros_like(v) for v in volumes]

    def firsts(first_epoch, batches):
        dataset = window_dataset(volumes, masks, 16, 8, batch_size=5, seed=1, first_epoch=first_epoch)
        return [x[:, 0, 0, 0, 0].numpy().tolist() for x, _ in dataset.take(batches)]

    from_zero = firsts(0, 6)  # 15 windows: 3 batches per epoch
    assert firsts(1, 3) == from_zero[3:]
    assert sorted(sum(from_zero[:3], [])) == sorted(sum(from_zero[3:], []))
    assert from_zero[:3] != from_zero[3:]


@pytest.mark.slow
def test_training_writes_every_output(trained):
    config, out, rows = trained
    fold = out / "fold_2"
    for name in ("best.keras", "log.csv", "curves.png", "metrics.csv", "config.json", "versions.json",
                 "split.json", "done.json"):
        assert (fold / name).is_file(), name
    assert not (fold / "backup").exists()
    assert load_config(fold / "config.json") == config
    split = json.loads((fold / "split.json").read_text())
    assert len(split["test"]) == 3 and len(split["validation"]) == 1 and len(split["train"]) == 5
    with (fold / "log.csv").open() as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2, 3]
    assert [r["patient"] for r in rows] == split["test"]
    for row in rows:
        mask_path = fold / "predictions" / f"{row['patient']}_mask.nii.gz"
        mask = nib.load(mask_path)
        records = {r.patient_id: r for r in sources.dataset_records(config)}
        scan = nib.load(records[row["patient"]].flair)
        assert mask.shape == scan.shape
        np.testing.assert_allclose(mask.affine, scan.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}


@pytest.mark.slow
def test_finished_fold_is_reused_and_other_config_refused(trained, capsys):
    config, out, rows = trained
    again = segment.train_fold(config, 2, out, verbose=0)
    assert [r["patient"] for r in again] == [r["patient"] for r in rows]
    assert "already finished" in capsys.readouterr().out
    with pytest.raises(Planar3DError, match=r"run folder from a different config \(differs in \['lr'\]\)"):
        segment.train_fold(make_config("demo", seed=0, **{**LEARN, "lr": 1e-4}), 2, out, verbose=0)


#: Fold 2's mean test Dice (3 test scans, native grid) after a LEARN run, measured on this
#: project's 2-core CPU (TF 2.21) with ``python -m planar3d.train --fold 2 --preset demo --size 32
#: --epochs 4 --stride 4 --batch-size 2 --patience 5 --lr 1e-3 --lr-decay 0 --lr-schedule constant
#: --phantom-n-per-centre 3 --seed S`` (= train_fold with LEARN; it prints the mean Dice):
#:   seeds 0, 1, 2, 3, 4: 0.379, 0.340, 0.231, 0.325, 0.343 -> 0.324 ± 0.056 (mean ± sd, n=5);
#:   encoder kernels zeroed (seed 0): 0.000 (every test scan 0.000);
#:   training labels shuffled across scans (seed 0; each training scan given the next scan's
#:   mask, a one-off script): 0.104, so shuffled labels are not used as a control here (the
#:   decoder learns where lesions tend to be without seeing them).
#: A learning run must beat LEARNS_ABOVE (the mean is 3.1 sd above it, the worst seed 1.45 sd;
#: the epochs before: 2 epochs at stride 8 gave 0.092, 3 at stride 4 gave 0.240), and the
#: zeroed encoder must stay under CONTROL_BELOW (= LEARNS_ABOVE: measured 0.000 on AVX-512 kernels,
#: 0.082 on AVX2 kernels) and under CONTROL_SHARE of the real run of the same seed.
LEARNS_ABOVE = 0.15
CONTROL_BELOW = LEARNS_ABOVE
CONTROL_SHARE = 0.5
#: Lower bounds on what the seed-0 LEARN model finds on fold 2's first test scan (01849PZSQ,
#: 23 lesions), native-grid mask from train_fold. Measured: lesion-wise sensitivity (MSSEG-2016
#: detection rule) and voxel sensitivity 0.348 / 0.686 (seed 0), 0.435 / 0.646 (seed 1),
#: 0.130 / 0.480 (seed 2); an untrained model (2 epochs at stride 8) 0.087 / 0.102. Another CPU
#: (AVX2 vs AVX-512 kernels) is another draw, so a bound must hold for any seed: voxel
#: sensitivity 0.604 ± 0.109 over seeds -> 0.3 (mean - 2.8 sd, three times the untrained
#: model's); the lesion-wise figure spreads from 0.13 to 0.44 and does not separate a trained
#: draw from an untrained one (0.087), so it is only required to find a lesion.
PREDICT_BOUNDS = {"detected_lesions": 1, "sensitivity": 0.3}


def _mean_test_dice(rows) -> float:
    return float(np.mean([row["dice"] for row in rows]))


@pytest.mark.slow
def test_tiny_training_learns(trained):
    """A model that does not learn (or a broken loss, decoder or data path) fails here. One draw
    (seed 0, shared with the other tests): the bound was set from the five seeds above so that it
    holds for any draw, and the zeroed-encoder control below is held against this same run."""
    _, _, rows = trained
    assert _mean_test_dice(rows) > LEARNS_ABOVE, [row["dice"] for row in rows]


@pytest.mark.slow
def test_tiny_training_with_the_encoder_kernels_zeroed_stays_far_below(trained, home, tmp_path, monkeypatch):
    """The same run (seed 0) with every frozen encoder kernel set to 0 (biases kept): the
    decoder sees no image, so what the real run learns comes through the ImageNet encoder. The
    control is held against the real run of the same seed on the same machine: on AVX-512 kernels
    it scored 0.000 (real run 0.379), on AVX2 kernels 0.082 (the decoder learns where lesions tend
    to be), so the bound is relative as well as below LEARNS_ABOVE."""
    from planar3d.nets.model import encoder_layer_names

    build = segment.build_from_config

    def zeroed_encoder(config):
        model = build(config)
        for name in encoder_layer_names():
            layer = model.get_layer(name)
            kernel, *others = layer.get_weights()
            layer.set_weights([np.zeros_like(kernel), *others])
        return model

    monkeypatch.setattr(segment, "build_from_config", zeroed_encoder)
    rows = segment.train_fold(make_config("demo", seed=0, **LEARN), 2, tmp_path, verbose=0)
    real = _mean_test_dice(trained[2])
    assert _mean_test_dice(rows) < min(CONTROL_BELOW, CONTROL_SHARE * real), ([row["dice"] for row in rows], real)


#: Runs ``python -m planar3d.train`` ARGS in a fresh process that SIGKILLs itself at a chosen
#: moment: ``batch E`` after the third batch of epoch E, ``backup E`` half-way through writing the
#: backup of epoch E (the weights file truncated to half, no metadata, nothing renamed yet).
_KILLED_TRAINING = r"""
import os, signal, sys
import keras

from planar3d.cli import train as train_cli
from planar3d.runs import seeds
from planar3d.training import callbacks

where, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if where == "batch":
    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == at and batch == 2:
                die()

    train_fold = seeds.train_fold
    seeds.train_fold = lambda *args, **kwargs: train_fold(*args, **kwargs, extra_callbacks=[KillMidEpoch()])
else:
    save_model, save_weights = callbacks.AtomicBackupAndRestore._save_model, keras.Model.save_weights

    def half_written(model, path, *args, **kwargs):
        save_weights(model, path, *args, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        die()

    def killed_save(self):
        if self._current_epoch == at + 1:
            keras.Model.save_weights = half_written
        save_model(self)

    callbacks.AtomicBackupAndRestore._save_model = killed_save
sys.exit(train_cli.main(argv))
"""


def _killed_training(where: str, at: int, argv: list[str]) -> None:
    import signal
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _KILLED_TRAINING, where, str(at), *argv],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_sigkill_mid_epoch_and_during_the_backup_write_resumes_bit_identically(home, tiny_fold_0, tmp_path):
    """A real training process is SIGKILLed in the middle of epoch 1, restarted, SIGKILLed again
    while it writes the backup of epoch 1, and restarted once more: the log, the test metrics
    and the weights of ``best.keras`` equal an uninterrupted run's exactly (op determinism on)."""
    config = make_config("demo", **TINY)
    straight_fold, straight = tiny_fold_0
    argv = ["--fold", "0", "--preset", "demo", "--size", "32", "--epochs", "2", "--batch-size", "2", "--patience", "5",
            "--lr", "1e-3", "--lr-decay", "0", "--lr-schedule", "constant", "--phantom-n-per-centre", "3",
            "--out", str(tmp_path / "killed")]
    fold = tmp_path / "killed" / "fold_0"

    _killed_training("batch", 1, argv)
    assert [int(r["epoch"]) for r in _rows(fold / "log.csv")] == [0]
    assert json.loads((fold / "backup" / "current" / "training_metadata.json").read_text())["epoch"] == 1
    assert not (fold / "done.json").exists()
    with pytest.raises(Planar3DError, match="holds an unfinished run; pass --resume"):
        segment.train_fold(config, 0, tmp_path / "killed", resume=False, verbose=0)

    _killed_training("backup", 1, argv)  # resumes after epoch 1, dies writing the backup of epoch 2
    assert [int(r["epoch"]) for r in _rows(fold / "log.csv")] == [0, 1]  # logged before the backup
    staging = fold / "backup" / "staging-2"
    assert (staging / "model.weights.h5").is_file() and not (staging / "training_metadata.json").exists()
    assert json.loads((fold / "backup" / "current" / "training_metadata.json").read_text())["epoch"] == 1

    resumed = segment.train_fold(config, 0, tmp_path / "killed", verbose=0)
    assert _rows(fold / "log.csv") == _rows(straight_fold / "log.csv")  # every logged number, as text
    assert resumed == straight
    assert _rows(fold / "metrics.csv") == _rows(straight_fold / "metrics.csv")
    best = keras.models.load_model(fold / "best.keras", compile=False)
    best_straight = keras.models.load_model(straight_fold / "best.keras", compile=False)
    for a, b in zip(best.get_weights(), best_straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (fold / "backup").exists()


def test_fold_out_of_range_is_one_line_error(home, capsys, tmp_path):
    assert train_cli.main(["--fold", "7", "--preset", "demo", "--size", "32", "--phantom-n-per-centre", "3",
                       "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Received: fold=7" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_centre_split_fold_out_of_range_is_one_line_error(home, capsys, tmp_path):
    assert train_cli.main(["--fold", "3", "--split", "centre", "--preset", "demo", "--size", "32",
                       "--phantom-n-per-centre", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: fold must be in 0..2 (one per centre ['01', '07', '08']). Received: fold=3\n"
    assert not any(tmp_path.iterdir())


def test_unknown_flag_value_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:
        train_cli.main(["--fold", "0", "--blend", "max"])
    assert stop.value.code == 2
    assert "invalid choice: 'max'" in capsys.readouterr().err


@pytest.mark.slow
def test_crossval_summary_and_predict_cli(trained, tmp_path, capsys):
    config, out, rows = trained
    crossval.run_crossval(config, out, folds=[2])
    summary = (out / "summary.md").read_text()
    dice = np.array([r["dice"] for r in rows])
    assert "| dice (planar3d) | " in summary and f"{dice.mean():.2f} ± {dice.std():.2f} (n=3) |" in summary
    assert "built-in phantom (NOT MSSEG-2016)" in summary
    assert (out / "boxplot.png").stat().st_size > 0
    page = (out / "report.html").read_text()  # beside summary.md: its tables, the figures, the test scans' overlays
    overlays = len(list((out / "fold_2" / "overlays").glob("*.png")))
    assert overlays and page.count("data:image/png;base64,") == 2 + overlays  # box plot, curves, overlays
    assert "model trained on the phantom only" in page and all(r["patient"] in page for r in rows)
    with (out / "results.csv").open() as handle:
        assert [r["patient"] for r in csv.DictReader(handle)] == [r["patient"] for r in rows]

    # a test scan of the fold (never seen in training), under an oblique affine
    test_id = json.loads((out / "fold_2" / "split.json").read_text())["test"][0]
    record = {r.patient_id: r for r in sources.dataset_records(config)}[test_id]
    scan = nib.load(record.flair)
    oblique = tmp_path / "oblique.nii.gz"
    rotation = np.array([[0.0, -1, 0, 10], [1, 0, 0, -5], [0, 0, 1, 3], [0, 0, 0, 1]]) @ scan.affine
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj), rotation), oblique)
    model = out / "fold_2" / "best.keras"
    output = tmp_path / "out" / "mask.nii.gz"
    assert predict_cli.main(["--model", str(model), "--input", str(oblique), "--output", str(output), "--lesion-map"]) == 0
    mask = nib.load(output)
    assert mask.shape == scan.shape
    np.testing.assert_allclose(mask.affine, rotation, atol=1e-6)
    source = nib.load(oblique).header
    assert mask.header.get_sform(coded=True)[1] == source.get_sform(coded=True)[1]
    assert mask.header.get_qform(coded=True)[1] == source.get_qform(coded=True)[1]
    np.testing.assert_allclose(mask.header.get_qform(), source.get_qform(), atol=1e-5)
    np.testing.assert_array_equal(mask.header.get_zooms(), source.get_zooms())
    table = json.loads((tmp_path / "out" / "mask_lesions.json").read_text())
    labels = np.asarray(nib.load(tmp_path / "out" / "mask_labels.nii.gz").dataobj)
    assert table["n_lesions"] == labels.max() == len(table["lesions"])
    # the mask finds the phantom's lesions (PREDICT_BOUNDS: measured values and margins)
    reference = np.asarray(nib.load(record.mask).dataobj) > 0.5
    predicted = np.asarray(mask.dataobj) > 0.5
    found = lesion_detection(reference, predicted, scan.header.get_zooms()[:3])
    assert found["n_reference_lesions"] == 23
    assert found["lesion_sensitivity"] * 23 >= PREDICT_BOUNDS["detected_lesions"], found
    assert sensitivity(reference, predicted) >= PREDICT_BOUNDS["sensitivity"]
    # determinism: a second prediction is identical voxel for voxel
    second = tmp_path / "out" / "again.nii.gz"
    assert predict_cli.main(["--model", str(model), "--input", str(oblique), "--output", str(second), "--no-qc"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(second).dataobj), np.asarray(mask.dataobj))
    # refusals: existing output, output equal to input, not a model
    capsys.readouterr()
    assert predict_cli.main(["--model", str(model), "--input", str(oblique), "--output", str(output)]) == 2
    assert "output exists; pass --overwrite" in capsys.readouterr().err
    assert predict_cli.main(["--model", str(model), "--input", str(oblique), "--output", str(oblique)]) == 2
    assert "output path equals the input" in capsys.readouterr().err
    assert predict_cli.main(["--model", str(oblique), "--input", str(oblique), "--output", str(tmp_path / "x.nii.gz")]) == 2
    assert "not a loadable planar3d .keras model" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_folder_mode_continues_past_a_bad_file(trained, tmp_path, capsys):
    config, out, _ = trained
    folder = tmp_path / "scans"
    folder.mkdir()
    records = sources.dataset_records(config)[:2]
    for record in records:
        (folder / f"{record.patient_id}.nii.gz").write_bytes(record.flair.read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"not a nifti at all")
    output = tmp_path / "masks"
    code = predict_cli.main(["--model", str(out / "fold_2" / "best.keras"), "--input", str(folder), "--output", str(output), "--no-qc"])
    assert code == 1
    captured = capsys.readouterr()
    assert "broken.nii.gz" in captured.err and "1 of 3 scans failed" in captured.err
    for record in records:
        assert (output / f"{record.patient_id}_mask.nii.gz").is_file()
    with (output / "lesion_summary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    page = (output / "report.html").read_text()  # the failure first, every scan in the table, the phantom model
    assert "broken: segmentation failed" in page and "model trained on the phantom only" in page
    (reason,) = [line[len("error: "):] for line in captured.err.splitlines()
                 if line.startswith("error: ") and "broken.nii.gz" in line and "scans failed" not in line]
    assert html.escape(reason, quote=True) in page  # the reader sees why, not only that it failed
    assert '<table class="sortable" data-rows="3">' in page and all(r.patient_id in page for r in records)
    assert predict_cli.main(["--model", str(out / "fold_2" / "best.keras"), "--input", str(folder), "--output", str(output), "--no-qc"]) == 1
    assert "skip" in capsys.readouterr().out
    assert all(r.patient_id in (output / "report.html").read_text() for r in records)  # skipped scans stay on the page


def test_missing_weights_stop_before_anything_is_written(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLANAR3D_VGG16_WEIGHTS", str(tmp_path / "absent.h5"))
    out = tmp_path / "run"
    assert train_cli.main(["--fold", "0", "--preset", "demo", "--size", "32", "--phantom-n-per-centre", "3",
                       "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "absent.h5: file named by PLANAR3D_VGG16_WEIGHTS does not exist" in err and "Traceback" not in err
    assert not out.exists()


def test_centre_split_summary_names_the_held_out_centre_of_each_fold():
    rows = [{"fold": f, "patient": f"{c}X{i}", "centre": c, "dice": 0.5 + 0.1 * i, "sensitivity": 0.6}
            for f, c in enumerate(("01", "07", "08")) for i in range(2)]
    summary = reports.crossval_summary_markdown(rows, make_config("demo", split="centre"))
    assert ("Split: leave-one-centre-out (fold 0 tests centre 01, fold 1 tests centre 07, fold 2 tests centre 08; "
            "each trains on the other centres") in summary
    assert "| dice (planar3d) | 0.55 ± 0.05 (n=2) | 0.55 ± 0.05 (n=2) | 0.55 ± 0.05 (n=2) | 0.55 ± 0.05 (n=6) |" in summary
    assert "Split: the paper's" in reports.crossval_summary_markdown(rows, make_config("demo"))


def test_centre_split_is_named_in_the_seeds_summary_too():
    from planar3d.evaluation.reports import seeds_summary_markdown

    rows = [{"seed": s, "fold": f, "patient": f"{c}X{i}", "centre": c, "dice": 0.5 + 0.1 * s, "sensitivity": 0.6}
            for s in (0, 1) for f, c in enumerate(("01", "07", "08")) for i in range(2)]
    summary = seeds_summary_markdown(rows, make_config("demo", split="centre"))
    assert "Split: leave-one-centre-out (fold 0 tests centre 01, fold 1 tests centre 07, fold 2 tests centre 08;" in summary


# ----------------------------------------------------------------------------- README promises on predict
def _digest(folder) -> dict[str, str]:
    """Every file below ``folder`` with its SHA-256."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _test_scan(config, out, folder):
    """A copy of fold 2's first test scan in ``folder``."""
    test_id = json.loads((out / "fold_2" / "split.json").read_text())["test"][0]
    record = {r.patient_id: r for r in sources.dataset_records(config)}[test_id]
    folder.mkdir(parents=True, exist_ok=True)
    scan = folder / f"{test_id}.nii.gz"
    scan.write_bytes(record.flair.read_bytes())
    return scan


@pytest.mark.slow
def test_a_successful_predict_leaves_its_inputs_unchanged(trained, tmp_path, capsys):
    """README "Inputs are never modified", for a run that succeeds with every output on: the scan
    (single and folder mode) and the model's folder are the same bytes after."""
    config, out, _ = trained
    inputs = tmp_path / "in"
    scan = _test_scan(config, out, inputs)
    (inputs / "second.nii.gz").write_bytes(scan.read_bytes())
    (inputs / "notes.txt").write_text("not a scan\n")
    model_dir = out / "fold_2"
    before, model_before = _digest(inputs), _digest(model_dir)
    model = str(model_dir / "best.keras")
    assert predict_cli.main(["--model", model, "--input", str(scan), "--output", str(tmp_path / "one" / "mask.nii.gz"),
                             "--probabilities", str(tmp_path / "one" / "prob.nii.gz"), "--lesion-map", "--tta"]) == 0
    assert predict_cli.main(["--model", model, "--input", str(inputs), "--output", str(tmp_path / "many"),
                             "--lesion-map"]) == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "mask.nii.gz", "mask_labels.nii.gz", "mask_lesions.csv", "mask_lesions.json", "mask_qc.png", "prob.nii.gz"]
    assert (tmp_path / "many" / "lesion_summary.csv").is_file()
    lesions = list(csv.DictReader((tmp_path / "one" / "mask_lesions.csv").open()))
    assert lesions and {row["outside_head"] for row in lesions} <= {"True", "False"}  # the reports' warning reads it
    assert _digest(inputs) == before and _digest(model_dir) == model_before
    assert sorted(p.name for p in inputs.iterdir()) == sorted(before)  # nothing added beside the inputs either


@pytest.mark.slow
def test_predict_progress_bar_only_on_a_terminal_and_never_with_quiet(trained, tmp_path, capsys):
    """README: "A single scan shows a progress bar over its windows on a terminal (--quiet hides it)":
    ``python -m planar3d.predict`` with stderr on a pseudo-terminal shows tqdm's ``windows`` bar;
    with ``--quiet`` the terminal gets nothing at all, and in a pipe stderr stays empty."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    import threading
    from pathlib import Path

    config, out, _ = trained
    scan = _test_scan(config, out, tmp_path / "in")
    model = str(out / "fold_2" / "best.keras")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def predict_on_a_terminal(name: str, *flags: str) -> str:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size (tqdm
        received = []                                                            # draws nothing 0 wide)

        def drain():  # a pty's buffer is small: read while predict writes
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the terminal's other end has closed it
                    return
                if not chunk:
                    return
                received.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            process = subprocess.Popen([sys.executable, "-m", "planar3d.predict", "--model", model, "--input", str(scan),
                                        "--output", str(tmp_path / name), "--no-qc", "--device", "cpu", *flags],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env, cwd=root)
        finally:
            os.close(slave)
        try:
            stdout, _ = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
            reader.join(timeout=60)
            os.close(master)
        assert process.returncode == 0 and stdout.endswith(f"-> {tmp_path / name}\n".encode())
        return b"".join(received).decode("utf-8", "replace")

    shown = predict_on_a_terminal("bar.nii.gz")
    bar = re.search(r"windows: +0%\| +\| 0/(\d+) \[", shown)
    assert bar is not None and int(bar.group(1)) > 0, repr(shown)
    assert predict_on_a_terminal("quiet.nii.gz", "--quiet") == ""
    # in a pipe (pytest's capture here): nothing on stderr
    capsys.readouterr()
    assert predict_cli.main(["--model", model, "--input", str(scan), "--output", str(tmp_path / "piped.nii.gz"),
                             "--no-qc", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.endswith(f"-> {tmp_path / 'piped.nii.gz'}\n")


_HELD_WRITE = """
import runpy, signal, sys, time
from planar3d import atomic

# a terminal's Ctrl-C reaches Python as KeyboardInterrupt; a shell without job control starts
# background commands (and so this test's runner) with SIGINT ignored, which children inherit
signal.signal(signal.SIGINT, signal.default_int_handler)

real = atomic._fsync_file


def held(path):
    # the mask's temporary file is written: say so, then wait for Ctrl-C
    print(f"writing {path}", flush=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.01)
    real(path)


atomic._fsync_file = held
sys.argv = ["planar3d.predict", *sys.argv[1:]]
runpy.run_module("planar3d.predict", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_ctrl_c_during_predict_exits_130_and_leaves_nothing(trained, tmp_path):
    """README: Ctrl-C exits with status 130, one line ``interrupted``, and no half-written output.
    ``python -m planar3d.predict`` is held at its first durable write (the mask's ``.tmp-*`` file
    written, not yet renamed) and gets SIGINT once it says so; afterwards the output folder holds
    nothing, neither the mask nor a temporary file."""
    import os
    import queue
    import signal
    import subprocess
    import sys
    import threading
    from pathlib import Path

    config, out, _ = trained
    scan = _test_scan(config, out, tmp_path / "in")
    results = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-c", _HELD_WRITE, "--model", str(out / "fold_2" / "best.keras"), "--input", str(scan),
         "--output", str(results / "mask.nii.gz"), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=600)
        assert line.startswith(f"writing {results}{os.sep}.tmp-mask"), line
        held = Path(line.split(" ", 1)[1].strip())
        assert held.is_file() and held.stat().st_size > 0  # the mask is half-way: written, not yet in place
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert status == 130, stderr
    assert stderr == "interrupted\n"
    assert list(results.rglob("*")) == []
