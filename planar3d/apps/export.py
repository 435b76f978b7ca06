"""Export a trained model for other engines: ``python -m planar3d.export --model best.keras --format onnx --out DIR``.

The planar res-u-net is written as two networks (:mod:`planar3d.nets.split`): the encoder as a
per-slice 2D network (what the planar mapping makes it) and the decoder as a 3D network of one
window, so that any runtime can encode each chunk of 8 slices once and reuse its features in the
windows that hold it, as planar3d does. Formats (:data:`planar3d.config.EXPORT_FORMATS`):

* ``savedmodel``: two TensorFlow SavedModels, ``encoder/`` and ``decoder/`` (TensorFlow only);
* ``onnx``: ``encoder.onnx`` and ``decoder.onnx``, converted by tf2onnx (opset :data:`ONNX_OPSET`),
  checked with ONNX Runtime (``pip install planar3d[onnx]``);
* ``openvino``: ``encoder.xml/.bin`` and ``decoder.xml/.bin`` (OpenVINO IR, float32 weights),
  converted by OpenVINO's own converter from the TensorFlow graphs (``pip install planar3d[openvino]``).

``--quantize int8`` (ONNX only) quantizes the decoder's convolutions to int8 with ONNX Runtime's
post-training quantization, calibrated on phantom scans (:mod:`planar3d.apps.quantize`), and
checks it to the looser :data:`BOUNDS` of int8.

Beside them ``export.json``: window, stride, size, channels, threshold, preprocessing, the
inputs and outputs, versions, the agreement measured, and where several installed runtimes run
the format, each one's seconds per window on this CPU (what ``predict --runtime auto`` reads). Agreement is part of export: the
exported networks run through the same windows, crop and kept slices as the Keras model in
float32 on a check scan (``--check SCAN``, default the built-in phantom's first scan), and the
export is refused, nothing written, unless the masks agree to :data:`DICE_BOUND` and the lesion
volume to :data:`VOLUME_BOUND`. The folder is written beside ``--out`` and renamed onto it
at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from planar3d import __version__
from planar3d.atomic import check_destinations, replace_folder
from planar3d.apps.quantize import INT8_DECODER, calibration_windows, quantize_decoder
from planar3d.config import EXPORT_FORMATS, EXPORT_QUANTIZATIONS, Config, load_config, make_config
from planar3d.data.preprocess import PREPROCESS_VERSION
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation.lesions import label_lesions
from planar3d.evaluation.metrics import dice
from planar3d.inference.pipeline import load_preprocessed, resampled_spacing
from planar3d.inference.postprocess import binarize
from planar3d.inference.runtimes import (
    EXPORT_FILES,
    FORMAT_RUNTIMES,
    METADATA_NAME,
    SKIP_ORDER,
    installed_runtimes,
    load_runtime,
    missing_extra,
    time_runtimes,
)
from planar3d.io.datasets import find_dataset
from planar3d.io.phantom import ensure_phantom
from planar3d.machine import cpu_identity
from planar3d.nets.load import load_segmentation_model

__all__ = ["BOUNDS", "DICE_BOUND", "ONNX_OPSET", "VOLUME_BOUND", "ExportResult", "agreement", "calibration_scans",
           "check_scan", "export_model", "required_packages"]

#: the masks of the exported networks and of the Keras model must overlap at least this much (float32).
DICE_BOUND = 0.999
#: ... and their lesion volumes differ by at most this fraction of the Keras model's.
VOLUME_BOUND = 0.005
#: export precision -> (Dice bound, lesion-volume bound) of its agreement with the Keras model in
#: float32: float32 exports compute what Keras computes; an INT8 decoder must keep the lesion volume
#: within 1 % (issue 30's bound for any reduced format) and nearly every voxel.
BOUNDS = {"float32": (DICE_BOUND, VOLUME_BOUND), "int8": (0.98, 0.01)}
#: ONNX operator set of the ONNX export (ONNX Runtime >= 1.12, OpenVINO read it).
ONNX_OPSET = 17

#: format -> the optional packages it needs (export and check).
_PACKAGES = {"savedmodel": (), "onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",)}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote: the folder and its ``export.json`` contents."""

    out: Path
    metadata: dict


def required_packages(fmt: str) -> None:
    """Refuse, before any work, a format whose optional packages are not installed.

    Raises:
        Planar3DError: an unknown format, or one line naming the missing package and the extra
            that installs it (``pip install planar3d[onnx]``).
    """
    if fmt not in EXPORT_FORMATS:
        raise Planar3DError(f"format must be one of {list(EXPORT_FORMATS)}. Received: format={fmt!r}")
    for package in _PACKAGES[fmt]:
        try:
            if package == "tf2onnx":
                import tf2onnx  # noqa: F401
            elif package == "onnx":
                import onnx  # noqa: F401
            elif package == "onnxruntime":
                import onnxruntime  # noqa: F401
            elif package == "openvino":
                import openvino  # noqa: F401
        except ImportError:
            raise missing_extra(package, f"--format {fmt}") from None


def _run_config(model_path: Path) -> Config:
    """The run's ``config.json`` beside the model, else the paper's settings."""
    saved = model_path.parent / "config.json"
    return load_config(saved) if saved.is_file() else make_config("paper")


def check_scan(check: str | os.PathLike | None) -> Path:
    """The scan the agreement is measured on: ``check``, or the first scan of the built-in phantom
    (one subject per centre at the default scale, generated under ``PLANAR3D_HOME`` on first use).

    Raises:
        InputFileError: ``check`` does not exist.
    """
    if check is not None:
        path = Path(check)
        if not path.is_file():
            raise InputFileError(path, "check scan not found")
        return path
    return find_dataset(ensure_phantom(n_per_centre=1, seed=0))[0].flair


def calibration_scans(calibrate: Sequence[str | os.PathLike] | None, check: Path) -> list[Path]:
    """The scans an INT8 export is calibrated on: ``calibrate``, or the built-in phantom's scans
    other than the check scan (one per centre at the default scale, less the first). The check scan
    is never among them, so that the agreement is measured on a scan the ranges were not fitted to.

    Raises:
        InputFileError: a calibration scan that does not exist, or the check scan among them.
    """
    if calibrate:
        paths = [Path(scan) for scan in calibrate]
        for path in paths:
            if not path.is_file():
                raise InputFileError(path, "calibration scan not found")
    else:
        paths = [record.flair for record in find_dataset(ensure_phantom(n_per_centre=1, seed=0))]
    paths = [path for path in paths if not (calibrate is None and path == check)]
    for path in paths:
        if path.resolve() == check.resolve():
            raise InputFileError(path, "also the check scan: the agreement must be measured on a scan the int8 "
                                       "ranges were not calibrated on (give another --check)")
    return paths


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- writers
def _write_savedmodel(model: Any, folder: Path) -> dict:
    import tensorflow as tf

    from planar3d.nets.split import Decoder, Encoder

    encoder, decoder = Encoder(model), Decoder(model, portable=False)
    tf.saved_model.save(encoder, str(folder / EXPORT_FILES["savedmodel"][0]), signatures={"serving_default": encoder.encoder})
    tf.saved_model.save(decoder, str(folder / EXPORT_FILES["savedmodel"][1]), signatures={"serving_default": decoder.decoder})
    return {"tensorflow": tf.__version__}


@contextlib.contextmanager
def _tf2onnx_without_graph_copies():
    """tf2onnx copies the whole graph, weights included, before each of its ~36 optimizer passes so
    that a failing pass can be undone (40 s of the decoder's 50 s); ``TF2ONNX_CATCH_ERRORS`` set
    turns that off (a failing pass then fails the export, which is checked anyway)."""
    saved = os.environ.get("TF2ONNX_CATCH_ERRORS")
    os.environ["TF2ONNX_CATCH_ERRORS"] = "FALSE"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TF2ONNX_CATCH_ERRORS", None)
        else:
            os.environ["TF2ONNX_CATCH_ERRORS"] = saved


def _write_onnx(model: Any, folder: Path) -> dict:
    import onnx
    import tf2onnx

    from planar3d.nets.split import Decoder, Encoder

    encoder, decoder = Encoder(model), Decoder(model, portable=True)
    with _tf2onnx_without_graph_copies():
        for function, name in ((encoder.encoder, EXPORT_FILES["onnx"][0]), (decoder.decoder, EXPORT_FILES["onnx"][1])):
            proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                                     opset=ONNX_OPSET)
            onnx.save(proto, str(folder / name))
    return {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "opset": ONNX_OPSET}


def _write_openvino(model: Any, folder: Path) -> dict:
    import openvino

    from planar3d.nets.split import Decoder, Encoder

    encoder, decoder = Encoder(model), Decoder(model, portable=True)
    for function, name in ((encoder.encoder, EXPORT_FILES["openvino"][0]), (decoder.decoder, EXPORT_FILES["openvino"][1])):
        converted = openvino.convert_model(function.get_concrete_function())
        openvino.save_model(converted, str(folder / name), compress_to_fp16=False)  # float32 weights
    return {"openvino": openvino.__version__}


_WRITERS = {"savedmodel": _write_savedmodel, "onnx": _write_onnx, "openvino": _write_openvino}


# ----------------------------------------------------------------------------- agreement
def agreement(model: Any, network: Any, volume: np.ndarray, config: Config, voxel_ml: float,
              bounds: tuple[float, float] = (DICE_BOUND, VOLUME_BOUND)) -> dict:
    """The Keras model and an exported network on one preprocessed scan, through the same windows.

    Both run :func:`planar3d.inference.predict.predict_volume` with the run's window, stride,
    recomposition and crop, the Keras model in float32; their masks (the run's threshold) are
    compared in the preprocessed cube.

    Returns:
        ``dice``, ``volume_ml_keras``, ``volume_ml_exported``, ``volume_difference`` (relative to
        the Keras volume; 0 when both are 0), ``lesions_keras``, ``lesions_exported``,
        ``max_probability_difference``, the seconds of each, and the ``bounds`` (Dice, volume)
        with ``passed``.
    """
    from planar3d.inference.predict import predict_volume

    options = dict(size=config.window, stride=config.stride, mode=config.blend, crop=config.crop)
    started = time.perf_counter()
    reference = predict_volume(model, volume, precision="float32", **options)
    keras_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exported = predict_volume(network, volume, **options)
    exported_seconds = time.perf_counter() - started
    masks = [binarize(p, threshold=config.threshold, rule=config.threshold_rule) for p in (reference, exported)]
    volumes = [float(m.sum()) * voxel_ml for m in masks]
    if volumes[0] > 0:
        difference = abs(volumes[1] - volumes[0]) / volumes[0]
    else:
        difference = 0.0 if volumes[1] == 0 else float("inf")
    overlap = dice(masks[0], masks[1])
    return {
        "dice": overlap,
        "volume_ml_keras": volumes[0],
        "volume_ml_exported": volumes[1],
        "volume_difference": difference,
        "lesions_keras": int(label_lesions(masks[0])[1]),
        "lesions_exported": int(label_lesions(masks[1])[1]),
        "max_probability_difference": float(np.max(np.abs(exported - reference))) if reference.size else 0.0,
        "seconds_keras": round(keras_seconds, 2),
        "seconds_exported": round(exported_seconds, 2),
        "runtime": network.runtime,
        "precision": network.precision,
        "space": "preprocessed cube",
        "dice_bound": bounds[0],
        "volume_bound": bounds[1],
        "passed": bool(overlap >= bounds[0] and difference <= bounds[1]),
    }


def _refusal(fmt: str, scan: Path, measured: dict) -> str:
    what = fmt if measured["precision"] == "float32" else f"{fmt} {measured['precision']}"
    return (f"the {what} export disagrees with the Keras model on {scan}: Dice {measured['dice']:.4f} (bound >= "
            f"{measured['dice_bound']}), lesion volume {measured['volume_ml_exported']:.3f} vs "
            f"{measured['volume_ml_keras']:.3f} ml ({100 * measured['volume_difference']:.2f} %, bound "
            f"{100 * measured['volume_bound']:g} %); nothing written")


# ----------------------------------------------------------------------------- the export
def _metadata(model: Any, model_path: Path, fmt: str, config: Config, versions: dict, precision: str) -> dict:
    import keras
    import tensorflow as tf

    from planar3d.nets.split import decoder_halo
    from planar3d.nets.stream import ENCODER_CHUNK, SKIP_SCALES

    size, channels = int(model.input_shape[2]), int(model.input_shape[-1])
    encoder_file, decoder_file = EXPORT_FILES[fmt]
    if precision == "int8":
        decoder_file = INT8_DECODER
    skips = {name: f"(slices / {SKIP_SCALES[name]}, rows / {SKIP_SCALES[name]}, cols / {SKIP_SCALES[name]}, "
             f"{int(model.get_layer(name).filters)}) float32" for name in SKIP_ORDER}
    return {
        "format": fmt,
        "precision": precision,
        "files": {"encoder": encoder_file, "decoder": decoder_file},
        "runtimes": list(FORMAT_RUNTIMES[fmt]),
        "planar3d_version": __version__,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, **versions},
        "source_model": str(model_path),
        "source_sha256": _sha256(model_path),
        "window": int(model.input_shape[1]),
        "stride": int(config.stride),
        "size": size,
        "channels": channels,
        "modalities": list(config.modalities),
        "encoder_chunk": ENCODER_CHUNK,
        "decoder_halo": decoder_halo(model),
        "threshold": float(config.threshold),
        "threshold_rule": config.threshold_rule,
        "blend": config.blend,
        "crop": config.crop,
        "preprocessing": {
            "function": "planar3d.data.preprocess.preprocess",
            "version": PREPROCESS_VERSION,
            "size": size,
            "robust_normalisation": bool(config.robust_normalisation),
            "steps": "reorient to R-I-P (sagittal slices on axis 0), resample to size^3 (spline order 2), "
                     "scale to [-1, 1] (min-max, or 0.5-99.5 percentiles then clipped when robust); a grey "
                     "scan repeated to the model's channels",
        },
        "encoder": {
            "inputs": {"slices": f"(slices, rows, cols, {channels}) float32; slices a multiple of {ENCODER_CHUNK} "
                                 "(aligned chunks of a window), rows and cols multiples of 16"},
            "outputs": skips,
            "note": "a per-slice 2D network: slices are the batch; each chunk of 8 slices gives the features it "
                    "has inside any window holding it",
        },
        "decoder": {
            "inputs": {**skips, "keep": "[lo, hi) int32: the window's slices to compute"},
            "outputs": {"probabilities": "(hi - lo, rows, cols, 1) float32 sigmoid probabilities"},
            "note": "one window of `window` slices: its skips are the encoder outputs of its chunks, concatenated "
                    "along the first axis",
        },
    }


def export_model(model_path: str | os.PathLike, fmt: str, out: str | os.PathLike, check: str | os.PathLike | None = None,
                 overwrite: bool = False, quantize: str = "none",
                 calibrate: Sequence[str | os.PathLike] | None = None) -> ExportResult:
    """Export a trained planar res-u-net, check it against the Keras model, publish the folder.

    Args:
        model_path: a segmentation ``.keras`` file (its run's ``config.json`` beside it gives
            stride, threshold, recomposition, crop and preprocessing; else the paper's).
        fmt: one of :data:`planar3d.config.EXPORT_FORMATS`.
        out: the output folder (must not exist unless ``overwrite``).
        check: the raw scan the agreement is measured on (default: the phantom's, :func:`check_scan`).
        overwrite: replace an existing ``out``.
        quantize: ``"none"`` (float32), or ``"int8"`` (``onnx`` only): the decoder quantized by
            :func:`planar3d.apps.quantize.quantize_decoder`, checked against :data:`BOUNDS`.
        calibrate: raw scans the INT8 ranges are calibrated on (default: :func:`calibration_scans`).

    Returns:
        The folder and its metadata (``agreement`` included).

    Raises:
        InputFileError: ``out`` exists (without ``overwrite``) or cannot be written, a bad model,
            check or calibration scan.
        Planar3DError: an unknown format, a missing optional package (naming its extra), a model
            that is not the planar res-u-net, INT8 asked of another format than ONNX, or an export
            that disagrees with the Keras model beyond :data:`BOUNDS` (then nothing is written).
    """
    model_path, out = Path(model_path), Path(out)
    if quantize not in EXPORT_QUANTIZATIONS:
        raise Planar3DError(f"quantize must be one of {list(EXPORT_QUANTIZATIONS)}. Received: quantize={quantize!r}")
    precision = "int8" if quantize == "int8" else "float32"
    if precision == "int8" and fmt != "onnx":
        raise Planar3DError(f"--quantize int8 is made for ONNX exports (ONNX Runtime's post-training quantization): "
                            f"pass --format onnx. Received: --format {fmt}")
    if calibrate and precision != "int8":
        raise Planar3DError("--calibrate sets the ranges of --quantize int8; a float32 export has none to set")
    required_packages(fmt)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    if out.exists() and not overwrite:
        raise InputFileError(out, "output exists; pass --overwrite to replace it")
    check_destinations(folders=[out.parent], overwrite=overwrite)
    scan_path = check_scan(check)
    calibration = calibration_scans(calibrate, scan_path) if precision == "int8" else []
    config = _run_config(model_path)

    from planar3d.nets.split import check_exportable

    model = load_segmentation_model(model_path)
    check_exportable(model)
    config = replace(config, window=int(model.input_shape[1]), size=int(model.input_shape[2])).validate()
    _, volume, meta = load_preprocessed(scan_path, config, size=config.size)
    voxel_ml = float(np.prod(resampled_spacing(meta))) / 1000.0

    with replace_folder(out) as tmp:  # removed on any error: nothing is published
        versions = _WRITERS[fmt](model, tmp)
        if precision == "int8":
            volumes = [load_preprocessed(path, config, size=config.size)[1] for path in calibration]
            quantization = quantize_decoder(tmp, calibration_windows(volumes, config.window))
            (tmp / EXPORT_FILES[fmt][1]).unlink()
            quantization["calibration_scans"] = [str(path) for path in calibration]
        metadata = _metadata(model, model_path, fmt, config, versions, precision)
        if precision == "int8":
            metadata["quantization"] = quantization
        (tmp / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        network = load_runtime(tmp, precision=precision)
        measured = agreement(model, network, volume, config, voxel_ml, BOUNDS[precision])
        del network  # release the runtime's handles on the files before the rename
        metadata["agreement"] = {"scan": str(scan_path), **measured}
        if not measured["passed"]:
            raise Planar3DError(_refusal(fmt, scan_path, measured))
        runtimes = installed_runtimes(fmt)
        if len(runtimes) > 1:  # what predict --runtime auto chooses from on a CPU like this one
            metadata["runtime_seconds"] = {"cpu": cpu_identity(), "precision": precision,
                                           "seconds_per_window": time_runtimes(tmp, runtimes, precision)}
        (tmp / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return ExportResult(out, metadata)
