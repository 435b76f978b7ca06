"""predict --runtime: an export folder run by TensorFlow, ONNX Runtime or OpenVINO writes what the
.keras model writes through TensorFlow; and every refusal is one line, exit 2, before any work.

The tiny model and its exports are the session's (tests/conftest.py: ``export_model_file``,
``exports``), made once and shared with tests/test_export.py."""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np
import pytest

from planar3d.apps.predict import export_config, inference_config
from planar3d.cli import predict as predict_cli

#: (export format, runtime) pairs predict runs.
RUNS = [("savedmodel", "tensorflow"), ("onnx", "onnxruntime"), ("onnx", "openvino"), ("openvino", "openvino")]


def _outputs(folder):
    """The files predict wrote for ``mask.nii.gz``, and the mask, probabilities and lesion report."""
    names = sorted(p.name for p in folder.iterdir())
    mask = np.asarray(nib.load(folder / "mask.nii.gz").dataobj)
    probabilities = np.asarray(nib.load(folder / "prob.nii.gz").dataobj)
    report = json.loads((folder / "mask_lesions.json").read_text(encoding="utf-8"))
    return names, mask, probabilities, report


def _predict(model, scan, folder, *flags) -> int:
    return predict_cli.main(["--model", str(model), "--input", str(scan), "--output", str(folder / "mask.nii.gz"),
                             "--probabilities", str(folder / "prob.nii.gz"), "--quiet", *flags])


def _clear_threshold(probabilities: np.ndarray) -> tuple[float, float]:
    """A threshold between the 50th and 99th percentiles of the positive probabilities, in the
    middle of the widest gap between two of them, and its distance to the nearest (the margin)."""
    positive = probabilities[probabilities > 0]
    low, high = np.quantile(positive, [0.5, 0.99])
    values = np.unique(positive[(positive >= low) & (positive <= high)]).astype(np.float64)
    widest = int(np.argmax(np.diff(values)))
    return float((values[widest] + values[widest + 1]) / 2), float((values[widest + 1] - values[widest]) / 2)


@pytest.fixture(scope="module")
def tensorflow_outputs(export_model_file, export_scan, tmp_path_factory):
    """What ``predict --runtime tensorflow`` writes with the .keras model (float32), at a threshold
    no native probability is near (``(outputs, flags, margin)``): the session's model puts about half
    the head within 1e-7 of 16/256, where float32 sums in another order could flip a voxel on another
    CPU; at this threshold the masks are equal wherever the probabilities agree within the margin."""
    probe = tmp_path_factory.mktemp("probe")
    assert _predict(export_model_file, export_scan, probe, "--precision", "float32", "--no-qc", "--no-report") == 0
    threshold, margin = _clear_threshold(np.asarray(nib.load(probe / "prob.nii.gz").dataobj))
    assert margin > 2e-7, margin
    flags = ("--threshold", repr(threshold))
    folder = tmp_path_factory.mktemp("tensorflow")
    assert _predict(export_model_file, export_scan, folder, "--precision", "float32", *flags) == 0
    return _outputs(folder), flags, margin


@pytest.mark.parametrize("fmt, runtime", RUNS, ids=[f"{f}-{r}" for f, r in RUNS])
def test_each_runtime_writes_the_tensorflow_mask(fmt, runtime, exports, export_scan, tensorflow_outputs, tmp_path,
                                                 capsys):
    out = exports(fmt).out
    if runtime != "tensorflow":
        pytest.importorskip(runtime)
    (expected_names, expected_mask, expected_probabilities, expected_report), threshold, margin = tensorflow_outputs
    status = _predict(out, export_scan, tmp_path, "--runtime", runtime, *threshold)
    assert status == 0, capsys.readouterr().err
    names, mask, probabilities, report = _outputs(tmp_path)
    assert names == expected_names == ["mask.nii.gz", "mask_lesions.csv", "mask_lesions.json", "mask_qc.png", "prob.nii.gz"]
    assert expected_mask.sum() > 0 and expected_mask.mean() < 0.5
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=0, atol=min(1e-5, margin))
    np.testing.assert_array_equal(mask, expected_mask)
    assert report["n_lesions"] == expected_report["n_lesions"]
    assert report["total_volume_ml"] == pytest.approx(expected_report["total_volume_ml"], rel=1e-12)
    assert [row["voxels"] for row in report["lesions"]] == [row["voxels"] for row in expected_report["lesions"]]


def _fake_export(folder, fmt="onnx", **settings):
    """An export folder's export.json alone (the refusals happen before its networks are opened)."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": fmt, "window": 16, "stride": 8, "size": 32, "channels": 1, "threshold": 0.0625,
                "threshold_rule": "fixed", "blend": "middle", "crop": "auto",
                "preprocessing": {"robust_normalisation": False}, **settings}
    (folder / "export.json").write_text(json.dumps(metadata), encoding="utf-8")
    return folder


def test_the_settings_of_an_export_come_from_its_export_json(tmp_path):
    folder = _fake_export(tmp_path / "export", stride=16, threshold=0.3, threshold_rule="reference", blend="mean",
                          crop="scan", preprocessing={"robust_normalisation": True})
    config = inference_config(folder)
    assert (config.window, config.stride, config.size, config.channels, config.threshold, config.threshold_rule,
            config.blend, config.crop, config.robust_normalisation) == (16, 16, 32, 1, 0.3, "reference", "mean", "scan", True)
    assert inference_config(folder, threshold=0.5, crop=None).threshold == 0.5  # a flag overrides, None keeps
    assert export_config(json.loads((folder / "export.json").read_text())) == config


def _refusal(tmp_path, capsys, model, *flags) -> str:
    out = tmp_path / "out"
    status = predict_cli.main(["--model", *map(str, model), "--input", str(tmp_path / "scan.nii.gz"),
                               "--output", str(out / "mask.nii.gz"), *flags])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # nothing written
    return err.strip()


def test_a_keras_model_with_another_runtime_is_refused(tmp_path, capsys, no_work):
    model = tmp_path / "run" / "best.keras"
    for runtime, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        err = _refusal(tmp_path, capsys, [model], "--runtime", runtime)
        assert err == (f"error: --runtime {runtime} runs an exported model, not {model}: run planar3d export --model "
                       f"{model} --format {fmt} --out DIR first, then predict --model DIR")


@pytest.mark.parametrize("fmt, runtime, expected", [
    ("onnx", "tensorflow", "onnx export, which runs in onnxruntime or openvino, not tensorflow: pass --runtime onnxruntime"),
    ("savedmodel", "onnxruntime", "savedmodel export, which runs in tensorflow, not onnxruntime: pass --runtime tensorflow"),
    ("openvino", "onnxruntime", "openvino export, which runs in openvino, not onnxruntime: pass --runtime openvino"),
])
def test_an_export_in_a_runtime_that_cannot_run_its_format_is_refused(fmt, runtime, expected, tmp_path, capsys, no_work):
    folder = _fake_export(tmp_path / fmt, fmt)
    err = _refusal(tmp_path, capsys, [folder], "--runtime", runtime)
    assert err == f"error: {folder} is a {expected}"


@pytest.mark.parametrize("runtime, extra", [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_a_missing_runtime_package_is_refused_naming_its_extra(runtime, extra, tmp_path, capsys, monkeypatch, no_work):
    monkeypatch.setitem(sys.modules, runtime, None)  # its import fails with ImportError
    folder = _fake_export(tmp_path / "export", "onnx")
    err = _refusal(tmp_path, capsys, [folder], "--runtime", runtime)
    assert err == (f"error: --runtime {runtime} needs the Python package {runtime}, which is not installed: "
                   f"pip install planar3d[{extra}]")


def test_what_an_export_does_not_support_yet_is_refused(tmp_path, capsys, no_work):
    folder = _fake_export(tmp_path / "export", "onnx")
    other = _fake_export(tmp_path / "other", "onnx")
    err = _refusal(tmp_path, capsys, [folder, other], "--runtime", "onnxruntime")
    assert "an ensemble of exported models is not supported yet" in err and "Received: 2 models" in err
    err = _refusal(tmp_path, capsys, [folder, tmp_path / "best.keras"], "--runtime", "onnxruntime")
    assert "an ensemble of exported models is not supported yet" in err
    err = _refusal(tmp_path, capsys, [folder], "--runtime", "onnxruntime", "--calibration", "temperature")
    assert err.startswith("error: --calibration temperature is not supported with an exported model yet")
    err = _refusal(tmp_path, capsys, [folder], "--runtime", "onnxruntime", "--precision", "bfloat16")
    assert err == "error: --runtime onnxruntime runs an export in float32. Received: --precision bfloat16"
    err = _refusal(tmp_path, capsys, [folder], "--runtime", "openvino", "--precision", "float16")
    assert err == "error: --runtime openvino runs an export in float32 or bfloat16. Received: --precision float16"
    err = _refusal(tmp_path, capsys, [folder], "--runtime", "onnxruntime", "--device", "gpu")
    assert err == "error: --runtime onnxruntime runs on the CPU here: --device gpu takes --runtime tensorflow"
    out = tmp_path / "classes.csv"
    status = predict_cli.main(["--model", str(folder), "--input", str(tmp_path / "scan.nii.gz"), "--output", str(out),
                               "--runtime", "onnxruntime"])
    err = capsys.readouterr().err
    assert status == 2 and err == f"error: {folder} is an exported segmentation model: --output takes a mask or a folder\n"
    assert not out.exists()


# ----------------------------------------------------------------------------- --runtime auto
def test_auto_runs_a_keras_model_in_tensorflow(tmp_path):
    from planar3d.apps.predict import resolve_runtime

    assert resolve_runtime([tmp_path / "best.keras"], "auto") == ("tensorflow", "")
    assert resolve_runtime([tmp_path / "a.keras", tmp_path / "b.keras"], "auto") == ("tensorflow", "")
    assert resolve_runtime([tmp_path / "export"], "openvino") == ("openvino", "")  # a named runtime is kept


def test_an_export_records_each_runtimes_time_on_this_cpu(exports):
    from planar3d.inference.runtimes import installed_runtimes
    from planar3d.machine import cpu_identity

    recorded = exports("onnx").metadata.get("runtime_seconds")
    if len(installed_runtimes("onnx")) < 2:
        assert recorded is None  # nothing to choose between
        return
    assert recorded["cpu"] == cpu_identity() and recorded["precision"] == "float32"
    assert sorted(recorded["seconds_per_window"]) == ["onnxruntime", "openvino"]
    assert all(seconds > 0 for seconds in recorded["seconds_per_window"].values())
    assert "runtime_seconds" not in exports("savedmodel").metadata  # one runtime runs it


def test_auto_takes_the_fastest_runtime_timed_on_this_cpu(tmp_path, monkeypatch):
    from planar3d.inference import runtimes
    from planar3d.machine import cpu_identity

    monkeypatch.setattr(runtimes, "installed_runtimes", lambda fmt: ["onnxruntime", "openvino"])
    timed = []

    def time_now(folder, candidates, precision, repeats=2):
        timed.append((candidates, precision))
        return {"onnxruntime": 0.2, "openvino": 0.3}

    monkeypatch.setattr(runtimes, "time_runtimes", time_now)
    here = {"cpu": cpu_identity(), "precision": "float32", "seconds_per_window": {"onnxruntime": 0.5, "openvino": 0.4}}
    folder = _fake_export(tmp_path / "here", runtime_seconds=here)
    assert runtimes.choose_runtime(folder, "float32") == \
        ("openvino", "timed at export on this CPU: onnxruntime 0.5 s, openvino 0.4 s per window")
    assert timed == []
    elsewhere = _fake_export(tmp_path / "elsewhere", runtime_seconds={**here, "cpu": "another CPU"})
    assert runtimes.choose_runtime(elsewhere, "float32") == \
        ("onnxruntime", "timed now on this CPU: onnxruntime 0.2 s, openvino 0.3 s per window")
    assert runtimes.choose_runtime(_fake_export(tmp_path / "unrecorded"), "int8")[0] == "onnxruntime"
    assert timed == [(["onnxruntime", "openvino"], "float32"), (["onnxruntime", "openvino"], "int8")]
    monkeypatch.setattr(runtimes, "installed_runtimes", lambda fmt: ["openvino"])
    assert runtimes.choose_runtime(elsewhere, "float32") == ("openvino", "the only installed runtime of the onnx export")
    assert len(timed) == 2


def test_auto_with_no_runtime_for_the_export_is_refused_naming_the_extra(tmp_path, capsys, monkeypatch, no_work):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "openvino", None)
    folder = _fake_export(tmp_path / "export", "onnx")
    err = _refusal(tmp_path, capsys, [folder])
    assert err == ("error: the onnx export needs the Python package onnxruntime, which is not installed: "
                   "pip install planar3d[onnx]")


@pytest.mark.slow
def test_predict_runs_an_int8_export_by_default_and_refuses_float32(exports, export_model_file, export_scan, tmp_path,
                                                                    capsys):
    """At the paper's threshold, where export measured its agreement (the session's model has half
    the head above it), the int8 export's native mask is the .keras model's within the int8 bounds."""
    from planar3d.evaluation.metrics import dice

    out = exports("onnx-int8").out
    (tmp_path / "int8").mkdir()
    (tmp_path / "keras").mkdir()
    assert _predict(out, export_scan, tmp_path / "int8") == 0
    assert _predict(export_model_file, export_scan, tmp_path / "keras", "--precision", "float32") == 0
    names, mask, _, report = _outputs(tmp_path / "int8")
    _, expected_mask, _, expected_report = _outputs(tmp_path / "keras")
    assert names == ["mask.nii.gz", "mask_lesions.csv", "mask_lesions.json", "mask_qc.png", "prob.nii.gz"]
    assert expected_mask.mean() > 0.05 and dice(mask > 0, expected_mask > 0) >= 0.98
    assert report["total_volume_ml"] == pytest.approx(expected_report["total_volume_ml"], rel=0.01)
    capsys.readouterr()
    err = _refusal(tmp_path, capsys, [out], "--precision", "float32")
    assert err == "error: an int8 export runs in int8 (export again without --quantize for float32). Received: --precision float32"


def test_auto_with_bfloat16_takes_the_runtime_that_offers_it(tmp_path, capsys, monkeypatch, no_work):
    from planar3d.apps import predict as predict_app
    from planar3d.inference import runtimes

    monkeypatch.setattr(predict_app, "installed_runtimes", lambda fmt: ["onnxruntime", "openvino"])
    monkeypatch.setattr(runtimes, "time_runtimes", lambda *args, **kwargs: pytest.fail("nothing to time"))
    folder = _fake_export(tmp_path / "export", "onnx")
    assert predict_app.auto_candidates(folder, "bfloat16") == ["openvino"]
    assert predict_app.auto_candidates(folder, None) == ["onnxruntime", "openvino"]
    assert predict_app.resolve_runtime([folder], "auto", "bfloat16") == \
        ("openvino", "the only installed runtime of the onnx export for bfloat16")
    monkeypatch.setattr(predict_app, "installed_runtimes", lambda fmt: ["onnxruntime"])
    err = _refusal(tmp_path, capsys, [folder], "--precision", "bfloat16")
    assert err == "error: --runtime onnxruntime runs an export in float32. Received: --precision bfloat16"
