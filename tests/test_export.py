"""planar3d export: the per-slice encoder and the window decoder in each format, run by their runtimes,
equal to the Keras model; the refusal when they disagree; the one-line errors of missing extras."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import skip_without as _skip_without

from planar3d.apps import export as export_app
from planar3d.cli import export as export_cli
from planar3d.config import EXPORT_FORMATS
from planar3d.errors import Planar3DError
from planar3d.inference import runtimes
from planar3d.inference.runtimes import ExportedNetwork, load_runtime


@pytest.fixture(scope="module")
def scan(export_scan):
    """The session's small raw phantom FLAIR (tests/conftest.py)."""
    return export_scan


@pytest.fixture(scope="module")
def model_file(export_model_file):
    """The session's tiny planar res-u-net, threshold at the median probability (tests/conftest.py)."""
    return export_model_file


@pytest.fixture(scope="module")
def keras_model(model_file):
    from planar3d.nets.load import load_segmentation_model

    return load_segmentation_model(model_file)


def _window(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, 16, 32, 32, 1)).astype(np.float32)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
@pytest.mark.slow
def test_export_round_trip_equals_the_keras_model(fmt, exports, keras_model):
    from planar3d.nets.stream import decode, encode

    result = exports(fmt)
    out = result.out
    metadata = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert metadata == result.metadata
    assert (metadata["format"], metadata["window"], metadata["stride"], metadata["size"], metadata["channels"]) == \
        (fmt, 16, 8, 32, 1)
    assert metadata["threshold"] == 0.0625 and metadata["preprocessing"]["robust_normalisation"] is False
    assert all((out / name).exists() for name in metadata["files"].values())
    agreement = metadata["agreement"]
    assert agreement["passed"] and agreement["dice"] >= 0.999 and agreement["volume_difference"] <= 0.005
    assert agreement["volume_ml_keras"] > 0 and agreement["max_probability_difference"] < 1e-5
    assert sorted(p.name for p in out.parent.iterdir()) == [fmt]  # no temporary folder left

    # the two networks, step by step, against the Keras model's own replay
    network = load_runtime(out)
    window = _window()
    skips = encode(keras_model, window)
    exported_skips = network.encode(window[:, :8])  # one chunk of 8 slices
    for name, value in exported_skips.items():
        np.testing.assert_allclose(value, np.asarray(skips[name])[:, : value.shape[1]], rtol=0, atol=1e-5)
    for keep in [(0, 16), (0, 12), (4, 12), (4, 16)]:
        expected = np.asarray(decode(keras_model, skips, keep))
        np.testing.assert_allclose(network.decode(skips, keep), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(network.whole(window), np.asarray(keras_model(window)), rtol=0, atol=1e-5)


def test_onnx_export_runs_in_openvino_too(exports, keras_model):
    _skip_without("openvino")
    out = exports("onnx").out
    window = _window(1)
    expected = np.asarray(keras_model(window))
    np.testing.assert_allclose(load_runtime(out, "openvino").whole(window), expected, rtol=0, atol=1e-5)
    with pytest.raises(Planar3DError, match="runs in onnxruntime or openvino, not tensorflow"):
        load_runtime(out, "tensorflow")


@pytest.mark.slow
def test_an_export_that_disagrees_is_refused_and_nothing_is_written(model_file, scan, tmp_path, monkeypatch, capsys):
    original = ExportedNetwork.decode

    def perturbed(self, skips, keep=None):
        return original(self, skips, keep) * 1.05  # 5 % higher probabilities: the threshold moves through the head

    monkeypatch.setattr(ExportedNetwork, "decode", perturbed)
    out = tmp_path / "export"
    status = export_cli.main(["--model", str(model_file), "--format", "savedmodel", "--out", str(out), "--check", str(scan)])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: the savedmodel export disagrees with the Keras model on ") and "Dice" in err
    assert "nothing written" in err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin


@pytest.mark.parametrize("fmt, package, extra", [("onnx", "onnxruntime", "onnx"), ("onnx", "tf2onnx", "onnx"),
                                                 ("openvino", "openvino", "openvino")])
def test_a_missing_extra_is_one_line_naming_it(fmt, package, extra, model_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # import fails with ImportError
    status = export_cli.main(["--model", str(model_file), "--format", fmt, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert status == 2 and err == (f"error: --format {fmt} needs the Python package {package}, which is not installed: "
                                   f"pip install planar3d[{extra}]\n")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_runtime_is_one_line_naming_its_extra(tmp_path, monkeypatch):
    (tmp_path / "export.json").write_text(json.dumps({"format": "onnx", "window": 16, "stride": 8, "size": 32,
                                                      "channels": 1}), encoding="utf-8")
    for name in ("encoder.onnx", "decoder.onnx"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(Planar3DError, match=r"^--runtime onnxruntime needs the Python package onnxruntime, which is "
                                            r"not installed: pip install planar3d\[onnx\]$"):
        load_runtime(tmp_path)


def test_refusals_before_any_work(model_file, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("worked before refusing")

    monkeypatch.setattr(export_app, "check_scan", no_work)
    existing = tmp_path / "existing"
    existing.mkdir()
    status = export_cli.main(["--model", str(model_file), "--format", "savedmodel", "--out", str(existing)])
    assert status == 2 and capsys.readouterr().err == f"error: {existing}: output exists; pass --overwrite to replace it\n"
    with pytest.raises(SystemExit) as stop:
        export_cli.main(["--model", str(model_file), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


@pytest.mark.slow
def test_another_mapping_is_refused(tmp_path, scan):
    from planar3d.nets.model import build_model

    path = tmp_path / "acs.keras"
    build_model((16, 32, 32, 1), encoder_weights=None, mapping="acs", seed=1).save(path)
    with pytest.raises(Planar3DError, match="export takes the paper's planar res-u-net"):
        export_app.export_model(path, "savedmodel", tmp_path / "out", check=scan)
    assert not (tmp_path / "out").exists()


def test_the_default_check_scan_is_the_phantoms(tmp_path, monkeypatch, scan):
    calls = []
    monkeypatch.setattr(export_app, "ensure_phantom", lambda **options: calls.append(options) or scan.parents[1])
    assert export_app.check_scan(None) == scan and calls == [{"n_per_centre": 1, "seed": 0}]
    with pytest.raises(Planar3DError, match="check scan not found"):
        export_app.check_scan(tmp_path / "missing.nii.gz")


def test_the_runtimes_skip_names_are_the_split_networks():
    from planar3d.nets.split import SKIP_NAMES

    assert runtimes.SKIP_ORDER == SKIP_NAMES


@pytest.mark.slow
def test_an_int8_export_quantizes_the_decoder_alone_and_agrees(exports, export_scan):
    import onnx

    from planar3d.apps.quantize import float_output_nodes

    result, reference = exports("onnx-int8"), exports("onnx")
    metadata, out = result.metadata, result.out
    assert metadata["precision"] == "int8" and reference.metadata["precision"] == "float32"
    assert metadata["files"] == {"encoder": "encoder.onnx", "decoder": "decoder_int8.onnx"}
    assert sorted(p.name for p in out.iterdir()) == ["decoder_int8.onnx", "encoder.onnx", "export.json"]
    agreement = metadata["agreement"]
    assert agreement["precision"] == "int8" and (agreement["dice_bound"], agreement["volume_bound"]) == (0.98, 0.01)
    assert agreement["passed"] and agreement["dice"] >= 0.98 and agreement["volume_difference"] <= 0.01
    assert agreement["max_probability_difference"] > 1e-5  # it is not the float32 network
    calibration = metadata["quantization"]["calibration_scans"]
    assert len(calibration) == 2 and str(export_scan) not in calibration

    # every convolution of the decoder reads int8 weights but the one that feeds the sigmoid
    graph = onnx.load(str(out / "decoder_int8.onnx")).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    convolutions = [node for node in graph.node if node.op_type in ("Conv", "ConvTranspose")]
    float_nodes = set(float_output_nodes(onnx.load(str(out / "decoder_int8.onnx"))))
    assert float_nodes == set(metadata["quantization"]["float32"][1:]) and len(float_nodes) == 2
    assert len(convolutions) == 15
    for node in convolutions:
        quantized = producers.get(node.input[1]) == "DequantizeLinear"
        assert quantized == (node.name not in float_nodes), node.name

    # the encoder is the float32 one, bit for bit
    window = _window(2)
    exact = load_runtime(reference.out).encode(window[:, :8])
    for name, value in load_runtime(out, precision="int8").encode(window[:, :8]).items():
        np.testing.assert_array_equal(value, exact[name])


def _export_refusal(tmp_path, capsys, *flags) -> str:
    out = tmp_path / "export"
    status = export_cli.main(["--out", str(out), *flags])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    return err.strip()


def test_int8_refusals_come_before_any_work(model_file, scan, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(export_app, "load_segmentation_model", no_work)
    model = ["--model", str(model_file), "--check", str(scan)]
    err = _export_refusal(tmp_path, capsys, *model, "--format", "savedmodel", "--quantize", "int8")
    assert err == ("error: --quantize int8 is made for ONNX exports (ONNX Runtime's post-training quantization): "
                   "pass --format onnx. Received: --format savedmodel")
    err = _export_refusal(tmp_path, capsys, *model, "--format", "onnx", "--calibrate", str(scan))
    assert err == "error: --calibrate sets the ranges of --quantize int8; a float32 export has none to set"
    _skip_without("onnx")
    err = _export_refusal(tmp_path, capsys, *model, "--format", "onnx", "--quantize", "int8", "--calibrate", str(scan))
    assert err == (f"error: {scan}: also the check scan: the agreement must be measured on a scan the int8 ranges "
                   "were not calibrated on (give another --check)")
    missing = tmp_path / "nothing.nii.gz"
    err = _export_refusal(tmp_path, capsys, *model, "--format", "onnx", "--quantize", "int8", "--calibrate", str(missing))
    assert err == f"error: {missing}: calibration scan not found"
