"""Training, resuming, cross-validation and prediction on a tiny phantom (size 32)."""

from __future__ import annotations

import csv
import json

import keras
import nibabel as nib
import numpy as np
import pytest

from planar3d import crossval, predict, train
from planar3d.config import Config, load_config, make_config
from planar3d.errors import Planar3DError
from planar3d.windows import window_dataset

TINY = dict(size=32, epochs=2, batch_size=2, patience=5, lr=1e-3, lr_decay=0.0, phantom_n_per_centre=3)


@pytest.fixture(scope="module")
def home(tmp_path_factory, vgg16_weights_path):
    """A private PLANAR3D_HOME holding a small phantom (generated once per module)."""
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLANAR3D_HOME", str(root))
        patch.setenv("PLANAR3D_VGG16_WEIGHTS", str(vgg16_weights_path))
        yield root


@pytest.fixture(scope="module")
def trained(home, tmp_path_factory):
    """One fold trained for 2 epochs, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("run")
    config = make_config("demo", **TINY)
    rows = train.train_fold(config, 2, out, verbose=0)
    return config, out, rows


def test_presets_and_overrides():
    paper = make_config("paper")
    assert (paper.size, paper.window, paper.stride, paper.batch_size, paper.lr, paper.lr_decay, paper.epochs,
            paper.patience, paper.threshold) == (256, 16, 8, 2, 5e-5, 1.99e-7, 100, 40, 0.0625)
    demo = make_config("demo", epochs=1)
    assert demo.size == 64 and demo.epochs == 1 and demo.preset == "demo"
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


def test_phantom_and_robust_flags_reach_the_config_and_the_data(monkeypatch, tmp_path):
    from planar3d import phantom
    from planar3d.cli import add_config_flags, config_from_args, make_parser

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
    monkeypatch.setattr(phantom, "ensure_phantom", lambda **options: asked.append(options) or tmp_path)
    monkeypatch.setattr(train, "find_dataset", lambda root, **options: [root])
    train.dataset_records(config)
    train.dataset_records(default)
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
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1]
    assert [r["patient"] for r in rows] == split["test"]
    for row in rows:
        mask_path = fold / "predictions" / f"{row['patient']}_mask.nii.gz"
        mask = nib.load(mask_path)
        records = {r.patient_id: r for r in train.dataset_records(config)}
        scan = nib.load(records[row["patient"]].flair)
        assert mask.shape == scan.shape
        np.testing.assert_allclose(mask.affine, scan.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        assert 0.0 <= row["dice"] <= 1.0


@pytest.mark.slow
def test_finished_fold_is_reused_and_other_config_refused(trained, capsys):
    config, out, rows = trained
    again = train.train_fold(config, 2, out, verbose=0)
    assert [r["patient"] for r in again] == [r["patient"] for r in rows]
    assert "already finished" in capsys.readouterr().out
    with pytest.raises(Planar3DError, match=r"run folder from a different config \(differs in \['lr'\]\)"):
        train.train_fold(make_config("demo", **{**TINY, "lr": 1e-4}), 2, out, verbose=0)


class _Crash(keras.callbacks.Callback):
    """Simulates a kill at the start of epoch ``at``, after the previous epoch was backed up."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.slow
def test_resume_after_interruption_ends_like_an_uninterrupted_run(home, tmp_path):
    config = make_config("demo", **TINY)
    with pytest.raises(KeyboardInterrupt):
        train.train_fold(config, 0, tmp_path / "killed", extra_callbacks=[_Crash(1)], verbose=0)
    fold = tmp_path / "killed" / "fold_0"
    assert (fold / "backup" / "current").is_dir() and not (fold / "done.json").exists()
    with pytest.raises(Planar3DError, match="holds an unfinished run; pass --resume"):
        train.train_fold(config, 0, tmp_path / "killed", resume=False, verbose=0)
    resumed = train.train_fold(config, 0, tmp_path / "killed", verbose=0)
    straight = train.train_fold(config, 0, tmp_path / "straight", verbose=0)
    with (fold / "log.csv").open() as handle:
        log = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in log] == [0, 1]
    with (tmp_path / "straight" / "fold_0" / "log.csv").open() as handle:
        straight_log = list(csv.DictReader(handle))
    np.testing.assert_allclose([float(r["val_loss"]) for r in log], [float(r["val_loss"]) for r in straight_log], rtol=1e-5)
    np.testing.assert_allclose([r["dice"] for r in resumed], [r["dice"] for r in straight], atol=1e-6)


def test_fold_out_of_range_is_one_line_error(home, capsys, tmp_path):
    assert train.main(["--fold", "7", "--preset", "demo", "--size", "32", "--phantom-n-per-centre", "3",
                       "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Received: fold=7" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_centre_split_fold_out_of_range_is_one_line_error(home, capsys, tmp_path):
    assert train.main(["--fold", "3", "--split", "centre", "--preset", "demo", "--size", "32",
                       "--phantom-n-per-centre", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: fold must be in 0..2 (one per centre ['01', '07', '08']). Received: fold=3\n"
    assert not any(tmp_path.iterdir())


def test_unknown_flag_value_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["--fold", "0", "--blend", "max"])
    assert stop.value.code == 2
    assert "invalid choice: 'max'" in capsys.readouterr().err


@pytest.mark.slow
def test_crossval_summary_and_predict_cli(trained, tmp_path, capsys):
    config, out, rows = trained
    crossval.run_crossval(config, out, folds=[2])
    summary = (out / "summary.md").read_text()
    assert "0.69 ± 0.11" in summary and "built-in phantom (NOT MSSEG-2016)" in summary
    assert (out / "boxplot.png").stat().st_size > 0
    with (out / "results.csv").open() as handle:
        assert [r["patient"] for r in csv.DictReader(handle)] == [r["patient"] for r in rows]

    record = train.dataset_records(config)[0]
    scan = nib.load(record.flair)
    oblique = tmp_path / "oblique.nii.gz"
    rotation = np.array([[0.0, -1, 0, 10], [1, 0, 0, -5], [0, 0, 1, 3], [0, 0, 0, 1]]) @ scan.affine
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj), rotation), oblique)
    model = out / "fold_2" / "best.keras"
    output = tmp_path / "out" / "mask.nii.gz"
    assert predict.main(["--model", str(model), "--input", str(oblique), "--output", str(output), "--lesion-map"]) == 0
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
    # determinism: a second prediction is identical voxel for voxel
    second = tmp_path / "out" / "again.nii.gz"
    assert predict.main(["--model", str(model), "--input", str(oblique), "--output", str(second), "--no-qc"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(second).dataobj), np.asarray(mask.dataobj))
    # refusals: existing output, output equal to input, not a model
    capsys.readouterr()
    assert predict.main(["--model", str(model), "--input", str(oblique), "--output", str(output)]) == 2
    assert "output exists; pass --overwrite" in capsys.readouterr().err
    assert predict.main(["--model", str(model), "--input", str(oblique), "--output", str(oblique)]) == 2
    assert "output path equals the input" in capsys.readouterr().err
    assert predict.main(["--model", str(oblique), "--input", str(oblique), "--output", str(tmp_path / "x.nii.gz")]) == 2
    assert "not a loadable planar3d .keras model" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_folder_mode_continues_past_a_bad_file(trained, tmp_path, capsys):
    config, out, _ = trained
    folder = tmp_path / "scans"
    folder.mkdir()
    records = train.dataset_records(config)[:2]
    for record in records:
        (folder / f"{record.patient_id}.nii.gz").write_bytes(record.flair.read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"not a nifti at all")
    output = tmp_path / "masks"
    code = predict.main(["--model", str(out / "fold_2" / "best.keras"), "--input", str(folder), "--output", str(output), "--no-qc"])
    assert code == 1
    captured = capsys.readouterr()
    assert "broken.nii.gz" in captured.err and "1 of 3 scans failed" in captured.err
    for record in records:
        assert (output / f"{record.patient_id}_mask.nii.gz").is_file()
    with (output / "lesion_summary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert predict.main(["--model", str(out / "fold_2" / "best.keras"), "--input", str(folder), "--output", str(output), "--no-qc"]) == 1
    assert "skip" in capsys.readouterr().out


_DISTRIBUTED_SCRIPT = r"""
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from planar3d.config import make_config
from planar3d.train import _compile, _strategy, build_from_config, mixed_precision_policy
from planar3d.windows import window_dataset
keras.mixed_precision.set_global_policy(mixed_precision_policy())
config = make_config("demo", size=32, encoder_weights="none", mixed_precision=True, strategy="mirrored")
strategy = _strategy(config.strategy)
with strategy.scope():
    model = build_from_config(config)
    _compile(model, config)
rng = np.random.default_rng(0)
volumes = [rng.uniform(-1, 1, (32, 32, 32)).astype("float32") for _ in range(2)]
masks = [(rng.uniform(size=(32, 32, 32)) > 0.99).astype("float32") for _ in range(2)]
history = model.fit(window_dataset(volumes, masks, 16, 8, batch_size=2), epochs=1, verbose=0)
print("replicas", strategy.num_replicas_in_sync, "output", model.output.dtype,
      "compute", model.get_layer("block9_conv2").compute_dtype, "loss", np.isfinite(history.history["loss"][0]))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_devices_with_mixed_precision():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _DISTRIBUTED_SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas 2 output float32 compute bfloat16 loss True" in result.stdout


def test_missing_weights_stop_before_anything_is_written(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLANAR3D_VGG16_WEIGHTS", str(tmp_path / "absent.h5"))
    out = tmp_path / "run"
    assert train.main(["--fold", "0", "--preset", "demo", "--size", "32", "--phantom-n-per-centre", "3",
                       "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "absent.h5: file named by PLANAR3D_VGG16_WEIGHTS does not exist" in err and "Traceback" not in err
    assert not out.exists()


def test_centre_split_summary_names_the_held_out_centre_of_each_fold():
    rows = [{"fold": f, "patient": f"{c}X{i}", "centre": c, "dice": 0.5 + 0.1 * i, "sensitivity": 0.6}
            for f, c in enumerate(("01", "07", "08")) for i in range(2)]
    summary = crossval.summary_markdown(rows, make_config("demo", split="centre"))
    assert ("Split: leave-one-centre-out (fold 0 tests centre 01, fold 1 tests centre 07, fold 2 tests centre 08; "
            "each trains on the other centres") in summary
    assert "| dice (planar3d) | 0.55 ± 0.05 (n=2) | 0.55 ± 0.05 (n=2) | 0.55 ± 0.05 (n=2) | 0.55 ± 0.05 (n=6) |" in summary
    assert "Split: the paper's" in crossval.summary_markdown(rows, make_config("demo"))
