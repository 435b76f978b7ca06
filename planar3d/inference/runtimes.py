"""An exported planar res-u-net (``planar3d export``) run by another engine, as Forward steps.

An export folder holds the per-slice 2D encoder and the 3D window decoder
(:mod:`planar3d.nets.split`) in one format and ``export.json`` (window, stride, size, channels,
threshold, preprocessing, versions, and the agreement measured at export). :func:`load_runtime`
opens it in a runtime and returns an :class:`ExportedNetwork`: the ``encode`` / ``decode`` /
``whole`` steps of :class:`planar3d.inference.precision.Forward` and the ``input_shape`` of a Keras
model, so that :func:`planar3d.inference.predict.predict_volume` runs it through the same crop,
stream and kept-slice structure as the Keras model.

Runtimes (:data:`planar3d.config.RUNTIMES`) and the formats they run: ``tensorflow`` a SavedModel
export, ``onnxruntime`` an ONNX export, ``openvino`` an OpenVINO IR or an ONNX export. ONNX Runtime
and OpenVINO are optional extras (``pip install planar3d[onnx]`` / ``planar3d[openvino]``); a
missing one is said in one line naming the extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planar3d.config import EXPORT_FORMATS, RUNTIMES
from planar3d.errors import InputFileError, Planar3DError
from planar3d.machine import cpu_identity

__all__ = ["EXPORT_FILES", "FORMAT_RUNTIMES", "METADATA_NAME", "SKIP_ORDER", "ExportedNetwork", "choose_runtime",
           "export_precision", "installed_runtimes", "load_runtime", "missing_extra", "read_metadata", "time_runtimes"]

#: the metadata file of an export folder.
METADATA_NAME = "export.json"
#: export format -> (encoder, decoder) paths inside the folder.
EXPORT_FILES: dict[str, tuple[str, str]] = {
    "savedmodel": ("encoder", "decoder"),
    "onnx": ("encoder.onnx", "decoder.onnx"),
    "openvino": ("encoder.xml", "decoder.xml"),
}
#: export format -> the runtimes that run it, the default first.
FORMAT_RUNTIMES: dict[str, tuple[str, ...]] = {
    "savedmodel": ("tensorflow",),
    "onnx": ("onnxruntime", "openvino"),
    "openvino": ("openvino",),
}
#: the encoder's outputs and the decoder's skip inputs, finest first (:data:`planar3d.nets.split.SKIP_NAMES`).
SKIP_ORDER = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3")
#: optional package -> the extra that installs it.
_EXTRAS = {"onnxruntime": "onnx", "onnx": "onnx", "tf2onnx": "onnx", "openvino": "openvino"}


def missing_extra(package: str, what: str) -> Planar3DError:
    """The one-line error for an optional ``package`` that is not installed."""
    extra = _EXTRAS.get(package, package)
    return Planar3DError(f"{what} needs the Python package {package}, which is not installed: "
                         f"pip install planar3d[{extra}]")


def export_precision(metadata: dict) -> str:
    """The number format an export's files hold: ``"int8"`` for a quantized decoder, else ``"float32"``."""
    return "int8" if metadata.get("precision") == "int8" else "float32"


def read_metadata(folder: str | Path) -> dict:
    """The ``export.json`` of an export folder.

    Raises:
        InputFileError: no export there, or an unreadable one.
    """
    path = Path(folder) / METADATA_NAME
    if not path.is_file():
        raise InputFileError(Path(folder), f"not a planar3d export folder (no {METADATA_NAME}; make one with planar3d export)")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        if metadata.get("format") not in EXPORT_FORMATS:
            raise ValueError(f"unknown format {metadata.get('format')!r}")
        for key in ("window", "stride", "size", "channels"):
            int(metadata[key])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputFileError(path, f"not a readable planar3d export description ({error})") from error
    return metadata


def _onnxruntime_runners(encoder: Path, decoder: Path, precision: str, threads: int | None) -> tuple[Callable, Callable]:
    try:
        import onnxruntime
    except ImportError:
        raise missing_extra("onnxruntime", "--runtime onnxruntime") from None
    if precision not in ("float32", "int8"):
        raise Planar3DError(f"onnxruntime runs this export in float32 only. Received: precision={precision!r}")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    sessions = [onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for path in (encoder, decoder)]
    names = [[output.name for output in session.get_outputs()] for session in sessions]

    def encode(slices):
        return dict(zip(names[0], sessions[0].run(None, {"slices": slices})))

    def decode(feeds):
        return sessions[1].run(None, feeds)[names[1].index("probabilities") if "probabilities" in names[1] else 0]

    return encode, decode


def _openvino_runners(encoder: Path, decoder: Path, precision: str, threads: int | None) -> tuple[Callable, Callable]:
    try:
        import openvino
    except ImportError:
        raise missing_extra("openvino", "--runtime openvino") from None
    hints = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}  # int8: the quantized nodes run int8 anyway
    if precision not in hints:
        raise Planar3DError(f"openvino runs this export in float32 or bfloat16. Received: precision={precision!r}")
    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": hints[precision]}  # OpenVINO's default is bf16 where the CPU has it
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = [core.compile_model(str(path), "CPU", config) for path in (encoder, decoder)]

    def names(output) -> set:
        return set(output.get_names())

    def encode(slices):
        result = compiled[0]({"slices": slices})
        return {name: np.asarray(result[output]) for output in compiled[0].outputs for name in SKIP_ORDER
                if name in names(output)}

    def decode(feeds):
        result = compiled[1](feeds)
        outputs = [o for o in compiled[1].outputs if "probabilities" in names(o)] or list(compiled[1].outputs)
        return np.asarray(result[outputs[0]])

    return encode, decode


def _tensorflow_runners(encoder: Path, decoder: Path, precision: str, threads: int | None) -> tuple[Callable, Callable]:
    import tensorflow as tf

    if precision != "float32":
        raise Planar3DError(f"the SavedModel export runs in float32 only. Received: precision={precision!r}")
    functions = [tf.saved_model.load(str(path)).signatures["serving_default"] for path in (encoder, decoder)]

    def encode(slices):
        return {name: value.numpy() for name, value in functions[0](slices=tf.constant(slices)).items()}

    def decode(feeds):
        return functions[1](**{name: tf.constant(value) for name, value in feeds.items()})["probabilities"].numpy()

    return encode, decode


_LOADERS = {"onnxruntime": _onnxruntime_runners, "openvino": _openvino_runners, "tensorflow": _tensorflow_runners}


class ExportedNetwork:
    """An export folder opened in one runtime: the Forward steps and the model facts inference reads.

    Attributes:
        folder: the export folder.
        metadata: its ``export.json``.
        runtime: the engine running it.
        precision: the number format it computes in.
        input_shape: `(None, window, size, size, channels)`, as a Keras model's.
        graph: False (no TensorFlow graphs are traced; :class:`Forward` compatibility).

    The steps take and return what :class:`planar3d.inference.precision.Forward`'s do (arrays or
    tensors with a batch axis of 1): ``encode(chunk)`` with ``chunk`` `(1, slices, rows, cols,
    channels)`, slices a multiple of 8 -> the four skips `(1, slices / s, rows / s, cols / s, C)`;
    ``decode(skips, keep)`` -> `(1, hi - lo, rows, cols, 1)` probabilities (all slices when ``keep``
    is None); ``whole(window)`` = ``decode(encode(window))``.
    """

    exported = True

    def __init__(self, folder: Path, metadata: dict, runtime: str, precision: str, encode: Callable, decode: Callable):
        self.folder, self.metadata, self.runtime, self.precision = folder, metadata, runtime, precision
        self.window, self.stride = int(metadata["window"]), int(metadata["stride"])
        size = int(metadata["size"])
        self.input_shape = (None, self.window, size, size, int(metadata["channels"]))
        self.graph = False
        self._encode, self._decode = encode, decode

    def encode(self, inputs: Any) -> dict[str, np.ndarray]:
        slices = np.ascontiguousarray(np.asarray(inputs, dtype=np.float32)[0])
        return {name: np.asarray(value)[None] for name, value in self._encode(slices).items()}

    def decode(self, skips: dict[str, Any], keep: tuple[int, int] | None = None) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(np.asarray(skips[name], dtype=np.float32)[0]) for name in SKIP_ORDER}
        slices = feeds[SKIP_ORDER[0]].shape[0]
        lo, hi = (0, slices) if keep is None else (int(keep[0]), int(keep[1]))
        feeds["keep"] = np.array([lo, hi], dtype=np.int32)
        return np.asarray(self._decode(feeds))[None]

    def whole(self, inputs: Any) -> np.ndarray:
        return self.decode(self.encode(inputs))

    @property
    def n_graphs(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"ExportedNetwork({str(self.folder)!r}, format={self.metadata['format']!r}, runtime={self.runtime!r})"


def load_runtime(folder: str | Path, runtime: str | None = None, precision: str = "float32",
                 threads: int | None = None) -> ExportedNetwork:
    """Open an export folder in ``runtime`` (default: the format's own, :data:`FORMAT_RUNTIMES`).

    Args:
        folder: a ``planar3d export`` output folder.
        runtime: one of :data:`planar3d.config.RUNTIMES` that runs the folder's format.
        precision: ``"float32"``; ``"bfloat16"`` with OpenVINO (its CPU plugin's bf16 inference);
            ``"int8"`` for an export made with ``--quantize int8`` (and only for one).
        threads: threads of the engine (default: its own choice, the physical cores).

    Raises:
        InputFileError: not an export folder, or a file of it missing.
        Planar3DError: a runtime that does not run this format, an optional package not installed
            (naming its extra), or a precision the runtime does not offer.
    """
    folder = Path(folder)
    metadata = read_metadata(folder)
    fmt = metadata["format"]
    if export_precision(metadata) == "int8" and precision != "int8":
        raise Planar3DError(f"{folder} is an int8 export, which runs in int8 only (export again without --quantize for "
                            f"float32). Received: precision={precision!r}")
    if export_precision(metadata) != "int8" and precision == "int8":
        raise Planar3DError(f"{folder} is a float32 export: int8 needs an export made with --quantize int8. "
                            f"Received: precision={precision!r}")
    runtime = FORMAT_RUNTIMES[fmt][0] if runtime is None else runtime
    if runtime not in RUNTIMES:
        raise Planar3DError(f"runtime must be one of {list(RUNTIMES)}. Received: runtime={runtime!r}")
    if runtime not in FORMAT_RUNTIMES[fmt]:
        raise Planar3DError(f"{folder} is a {fmt} export, which runs in {' or '.join(FORMAT_RUNTIMES[fmt])}, "
                            f"not {runtime}; export it with --format for {runtime}")
    files = metadata.get("files") or dict(zip(("encoder", "decoder"), EXPORT_FILES[fmt]))
    paths = [folder / files["encoder"], folder / files["decoder"]]
    for path in paths:
        if not path.exists():
            raise InputFileError(path, "missing from the export folder")
    encode, decode = _LOADERS[runtime](*paths, precision, threads)
    return ExportedNetwork(folder, metadata, runtime, precision, encode, decode)


# ----------------------------------------------------------------------------- --runtime auto
def installed_runtimes(fmt: str) -> list[str]:
    """The runtimes of :data:`FORMAT_RUNTIMES` ``[fmt]`` whose Python package imports here."""
    import importlib.util

    packages = {"tensorflow": "tensorflow", "onnxruntime": "onnxruntime", "openvino": "openvino"}
    return [runtime for runtime in FORMAT_RUNTIMES[fmt] if importlib.util.find_spec(packages[runtime]) is not None]


def time_runtimes(folder: str | Path, runtimes: list[str], precision: str, repeats: int = 2) -> dict[str, float]:
    """Seconds per window of each runtime on this CPU: one window of the export's shape (uniform
    noise in [-1, 1], seeded) through the encoder and the decoder (all slices kept), after one
    untimed run; the fastest of ``repeats`` runs. The networks are dense convolutions, so the
    time does not depend on what the window holds."""
    import time

    timings = {}
    for runtime in runtimes:
        network = load_runtime(folder, runtime, precision)
        window = np.random.default_rng(0).uniform(-1, 1, (1, *network.input_shape[1:])).astype(np.float32)
        network.whole(window)
        runs = []
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            network.whole(window)
            runs.append(time.perf_counter() - started)
        timings[runtime] = round(min(runs), 4)
        del network
    return timings


def choose_runtime(folder: str | Path, precision: str, runtimes: list[str] | None = None) -> tuple[str, str]:
    """The runtime ``--runtime auto`` runs an export folder in, and why, in a few words.

    Among ``runtimes`` (default: the installed runtimes that run the folder's format,
    :func:`installed_runtimes`): the only one; else the fastest recorded in ``export.json`` (``runtime_seconds``, timed at export) when
    it was timed on a CPU of this identity (:func:`planar3d.machine.cpu_identity`); else the
    fastest of :func:`time_runtimes` run now (a few seconds).

    Raises:
        Planar3DError: no runtime for the format is installed (naming the extra).
        InputFileError: not an export folder.
    """
    metadata = read_metadata(folder)
    fmt = metadata["format"]
    candidates = installed_runtimes(fmt) if runtimes is None else list(runtimes)
    if not candidates:
        raise missing_extra(FORMAT_RUNTIMES[fmt][0], f"the {fmt} export")
    if len(candidates) == 1:
        return candidates[0], f"the only installed runtime of the {fmt} export" + ("" if runtimes is None else f" for {precision}")
    recorded = metadata.get("runtime_seconds") or {}
    timings = {runtime: recorded.get("seconds_per_window", {}).get(runtime) for runtime in candidates}
    if recorded.get("cpu") == cpu_identity() and recorded.get("precision", precision) == precision and all(timings.values()):
        source = "timed at export on this CPU"
    else:
        timings, source = time_runtimes(folder, candidates, precision), "timed now on this CPU"
    fastest = min(candidates, key=lambda runtime: timings[runtime])
    return fastest, f"{source}: " + ", ".join(f"{runtime} {timings[runtime]:.3g} s" for runtime in candidates) + \
        " per window"
