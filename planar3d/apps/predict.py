"""Segment new scans: ``python -m planar3d.predict --model best.keras --input FLAIR.nii.gz --output mask.nii.gz``.

With a classifier model (``--task classification``) it writes class probabilities instead:
``--input scans/ --output probabilities.csv`` (:func:`planar3d.apps.predict.predict_classes`).

Raw FLAIR in, binary lesion mask out on the input's native grid, with its affine, qform
and sform. Also: ``--probabilities``, a per-scan lesion report (CSV and JSON), a labelled
lesion map, a QC overlay PNG, and a folder mode (``--input DIR --output DIR``) that loads the
model once, continues past bad files and writes one group table.
"""

from __future__ import annotations

import json
import sys
import warnings
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d import __version__
from planar3d.atomic import check_destinations, check_writable, write_rows, write_text_atomic
from planar3d.config import RUNTIME_CHOICES, Config, load_config, make_config
from planar3d.data.foreground import ForegroundWarning, head_mask
from planar3d.data.preprocess import to_native
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation.lesions import label_lesions, lesion_summary, lesion_table
from planar3d.inference.pipeline import (  # no TensorFlow: windows is imported when used
    INFERENCE_BATCH_SIZE,
    load_preprocessed,
    native_mask,
    predict_resampled,
    predict_resampled_members,
)
from planar3d.inference.ensemble import ensemble_mean, entropy, member_agreement, mutual_information
from planar3d.inference.precision import fallback_notice, precision_for_model, resolve_precision
from planar3d.inference.runtimes import (
    FORMAT_RUNTIMES,
    METADATA_NAME,
    choose_runtime,
    export_precision,
    installed_runtimes,
    load_runtime,
    missing_extra,
    read_metadata,
)
from planar3d.inference.temperature import apply_temperature
from planar3d.io.datasets import find_dataset, known_dataset
from planar3d.io.nifti import save_nifti
from planar3d.nets.load import load_classifier, load_segmentation_model
from planar3d.training.calibrate import CALIBRATION_NAME, calibration_record
from planar3d.training.classify import class_probabilities, volume_sample

__all__ = [
    "SUFFIXES", "Segmentation", "auto_candidates", "check_calibration", "check_not_input", "check_runtime", "export_config",
    "inference_config", "resolve_runtime",
    "input_scans", "is_export", "load_members", "member_files", "member_settings", "model_source", "predict_classes",
    "runtime_precision",
    "predict_scan", "scan_name", "scan_outputs", "scan_outputs_pairs", "segment_scan", "segment_scans", "select_device",
    "stem", "uncertainty_paths", "write_table",
]


def predict_classes(model_path: str | Path, inputs: Sequence[str], output: str | Path, config: Config,
                    overwrite: bool = False) -> tuple[list[dict], list[str]]:
    """Classify scans with a trained classifier and write one CSV row per scan.

    Args:
        model_path: a classifier ``best.keras``.
        inputs: FLAIR files, folders of them, or CSV/TSV dataset tables (as ``planar3d.apps.predict``).
        output: the ``.csv`` to write: ``scan``, ``subject``, ``predicted``, ``prob_<k>``.
        config: ``robust_normalisation`` is used (the run's config).
        overwrite: replace an existing ``output``.

    Returns:
        ``(rows, failures)``: the rows written and the scans that could not be read (skipped).

    Raises:
        InputFileError: ``output`` exists without ``overwrite`` or is not a ``.csv``; a bad
            model; no scans.
    """

    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise InputFileError(output, "a classifier writes a table: give --output a .csv file")
    check_writable(output, overwrite)  # refuse before computing anything
    scans = input_scans(inputs)
    model = load_classifier(model_path)
    size, channels = int(model.input_shape[1]), int(model.input_shape[-1])
    rows, failures = [], []
    for path, name in scans:
        try:
            _, volume, _ = load_preprocessed(path, config, size=size)
        except Planar3DError as error:
            print(f"error: {error}", file=sys.stderr)
            failures.append(str(path))
            continue
        probabilities = class_probabilities(model, volume_sample(volume, channels)[None])[0]
        rows.append({"scan": str(path), "subject": name, "predicted": int(np.argmax(probabilities)),
                     **{f"prob_{k}": float(p) for k, p in enumerate(probabilities)}})
        print(f"{path}: class {rows[-1]['predicted']} (p = {probabilities.max():.3f})")
    if rows:
        write_rows(output, rows, overwrite=overwrite)
    return rows, failures


SUFFIXES = (".nii.gz", ".nii")


def inference_config(model: str | Path, **overrides) -> Config:
    """The run's ``config.json`` beside the model (else the paper's), or an export folder's
    settings (:func:`export_config`), with overrides (None = keep).

    Raises:
        InputFileError: a bad ``config.json`` or ``export.json``.
        Planar3DError: an invalid override.
    """
    saved = Path(model).parent / "config.json"
    if is_export(model):
        base = export_config(read_metadata(model))
    else:
        base = load_config(saved) if saved.is_file() else make_config("paper")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None}).validate()


def is_export(path: str | Path) -> bool:
    """True for a ``planar3d export`` folder (an ``export.json`` in it)."""
    return (Path(path) / METADATA_NAME).is_file()


def export_config(metadata: dict) -> Config:
    """The inference settings an export's ``export.json`` records (window, stride, size, channels,
    modalities, threshold and its rule, recomposition, crop, intensity scaling), the paper's for the rest."""
    preprocessing = metadata.get("preprocessing") or {}
    return make_config("paper", **{key: metadata.get(key) for key in ("window", "stride", "size", "channels", "modalities",
                                                                       "threshold", "threshold_rule", "blend", "crop")},
                       robust_normalisation=preprocessing.get("robust_normalisation"))


#: runtime -> the optional package it needs (TensorFlow is the core install).
_RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def runtime_precision(runtime: str, precision: str | None, exported: str = "float32") -> str:
    """The number format an export runs in: an int8 export (``planar3d export --quantize int8``)
    in int8; a float32 export in float32 (also for ``auto``: no reduced format of an export is
    chosen for the user), or in bfloat16 asked explicitly of OpenVINO (its CPU plugin's hint).

    Args:
        runtime: the runtime (not ``auto``).
        precision: ``--precision`` (None: auto).
        exported: what the export's files hold (:func:`planar3d.inference.runtimes.export_precision`).

    Raises:
        Planar3DError: a format the runtime or the export does not offer.
    """
    if exported == "int8":
        if precision in (None, "auto"):
            return "int8"
        raise Planar3DError(f"an int8 export runs in int8 (export again without --quantize for {precision}). "
                            f"Received: --precision {precision}")
    if precision in (None, "auto", "float32"):
        return "float32"
    if precision == "bfloat16" and runtime == "openvino":
        return "bfloat16"
    offered = "float32 or bfloat16" if runtime == "openvino" else "float32"
    raise Planar3DError(f"--runtime {runtime} runs an export in {offered}. Received: --precision {precision}")


def auto_candidates(folder: Path, precision: str | None) -> list[str]:
    """The runtimes ``--runtime auto`` may run an export folder in: installed, of its format, and
    offering ``precision`` (``--precision bfloat16`` leaves OpenVINO alone).

    Raises:
        Planar3DError: none is installed (naming the extra of the format's first runtime), or none
            installed offers ``precision`` (the first one's refusal).
    """
    metadata = read_metadata(folder)
    fmt = metadata["format"]
    installed = installed_runtimes(fmt)
    if not installed:
        raise missing_extra(_RUNTIME_PACKAGES[FORMAT_RUNTIMES[fmt][0]], f"the {fmt} export")
    exported = export_precision(metadata)
    offering = []
    for runtime in installed:
        try:
            runtime_precision(runtime, precision, exported)
            offering.append(runtime)
        except Planar3DError:
            pass
    if not offering:
        runtime_precision(installed[0], precision, exported)  # raises its one-line refusal
    return offering


def resolve_runtime(files: Sequence[Path], runtime: str, precision: str | None = None) -> tuple[str, str]:
    """What ``--runtime`` names, with ``auto`` made concrete: ``tensorflow`` for ``.keras`` models
    and run folders; for one export folder, :func:`planar3d.inference.runtimes.choose_runtime`.

    Returns:
        ``(runtime, why)``; ``why`` is empty unless ``auto`` chose (:func:`choose_runtime`'s reason).
    """
    if runtime != "auto":
        return runtime, ""
    exports = [file for file in files if is_export(file)]
    if len(exports) != 1 or len(files) != 1:
        return "tensorflow", ""  # .keras models (an ensemble of exports is refused by check_runtime)
    candidates = auto_candidates(files[0], precision)
    exported = export_precision(read_metadata(files[0]))
    return choose_runtime(files[0], runtime_precision(candidates[0], precision, exported), candidates)


def check_runtime(files: Sequence[Path], runtime: str, config: Config, device: str = "auto") -> bool:
    """Refuse, before loading anything, a ``--runtime`` that cannot run ``--model``.

    An export folder (``planar3d export --out``) runs in a runtime of its format
    (:data:`planar3d.inference.runtimes.FORMAT_RUNTIMES`: a SavedModel in ``tensorflow``, ONNX in
    ``onnxruntime`` or ``openvino``, OpenVINO IR in ``openvino``); a ``.keras`` model or a run folder
    only in ``tensorflow``. ``auto`` is checked as the runtime it may become (an installed one of the
    export's format; :func:`resolve_runtime` picks it after the destinations are checked).

    Returns:
        True when ``files`` is one export folder (load it with :func:`load_members` and ``runtime``).

    Raises:
        Planar3DError: one line: a ``.keras`` model with another runtime (export it first), an
            export whose format the runtime does not run, the runtime's optional package missing
            (naming its extra), an ensemble or ``--calibration temperature`` with an export (not
            supported yet), ``--device gpu`` with a CPU runtime, or a precision it does not offer.
        InputFileError: an unreadable ``export.json``.
    """
    if runtime not in RUNTIME_CHOICES:
        raise Planar3DError(f"runtime must be one of {list(RUNTIME_CHOICES)}. Received: runtime={runtime!r}")
    exports = [file for file in files if is_export(file)]
    if not exports:
        if runtime not in ("auto", "tensorflow"):
            fmt = next(f for f, runtimes in FORMAT_RUNTIMES.items() if runtimes[0] == runtime)
            raise Planar3DError(f"--runtime {runtime} runs an exported model, not {files[0]}: run planar3d export "
                                f"--model {files[0]} --format {fmt} --out DIR first, then predict --model DIR")
        return False
    if len(files) > 1:
        raise Planar3DError(f"an ensemble of exported models is not supported yet: give one --model (an export folder "
                            f"with --runtime, or .keras models with --runtime tensorflow). Received: {len(files)} models")
    if config.calibration == "temperature":
        raise Planar3DError("--calibration temperature is not supported with an exported model yet: use the .keras "
                            "model with --runtime tensorflow, or --calibration none")
    fmt = read_metadata(files[0])["format"]
    if runtime == "auto":
        candidates = auto_candidates(files[0], config.precision)
        runtime = "tensorflow" if device == "gpu" and "tensorflow" in candidates else candidates[0]
    if runtime not in FORMAT_RUNTIMES[fmt]:
        raise Planar3DError(f"{files[0]} is a {fmt} export, which runs in {' or '.join(FORMAT_RUNTIMES[fmt])}, not "
                            f"{runtime}: pass --runtime {FORMAT_RUNTIMES[fmt][0]}")
    if runtime != "tensorflow" and device == "gpu":
        raise Planar3DError(f"--runtime {runtime} runs on the CPU here: --device gpu takes --runtime tensorflow")
    if runtime in _RUNTIME_PACKAGES:
        import importlib

        try:
            importlib.import_module(_RUNTIME_PACKAGES[runtime])
        except ImportError:
            raise missing_extra(_RUNTIME_PACKAGES[runtime], f"--runtime {runtime}") from None
    runtime_precision(runtime, config.precision, export_precision(read_metadata(files[0])))
    return True


def stem(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass(frozen=True)
class Segmentation:
    """One segmented scan (see :func:`segment_scan`).

    Attributes:
        scan: the input image (``nibabel``), whose grid the outputs are on.
        volume: `(size, size, size)` preprocessed scan.
        probabilities: float32 lesion probabilities on the native grid.
        mask: uint8 binary mask on the native grid.
        resampled: `(size, size, size)` probabilities before resampling.
        table: :func:`planar3d.evaluation.lesions.lesion_table` rows (id 1 = largest lesion);
            with several members also ``max_probability``, ``member_fraction`` (members whose
            own mask touches the lesion) and ``mean_mutual_information`` (nats).
        config: the settings used (window and size from the model).
        members: the members' native probabilities (an ensemble), else empty.
        labels: int32 lesion map on the native grid (:func:`planar3d.evaluation.lesions.label_lesions`
            of ``mask``: lesion ``k`` is the table's row ``id == k``).
    """

    scan: object
    volume: np.ndarray
    probabilities: np.ndarray
    mask: np.ndarray
    resampled: np.ndarray
    table: list
    config: Config
    members: tuple = ()
    labels: np.ndarray | None = None

    def uncertainty(self) -> dict[str, np.ndarray]:
        """Native voxel maps (:mod:`planar3d.inference.ensemble`): ``entropy`` of the (ensemble)
        probability, and ``mutual_information`` between members when there are several."""
        maps = {"entropy": entropy(self.probabilities)}
        if len(self.members) > 1:
            maps["mutual_information"] = mutual_information(self.members)
        return maps

    def summary(self) -> dict:
        """``{"n_lesions", "total_volume_ml"}`` of :func:`planar3d.evaluation.lesions.lesion_summary`."""

        return lesion_summary(self.table)

    def qc_picture(self, path: str | Path, title: str, overwrite: bool = False, radiological: bool = True) -> None:
        """The FLAIR with the predicted lesions' outlines, on the scan's own grid in anatomical
        orientation (:func:`planar3d.evaluation.qc_mosaic.plot_qc_mosaic`), as a PNG."""
        from planar3d.evaluation.qc_mosaic import plot_qc_mosaic

        check_writable(path, overwrite)
        plot_qc_mosaic(self.scan, prediction=self.mask, path=Path(path), title=title, radiological=radiological)


def segment_scan(model, flair_path: str | Path, config: Config, batch_size: int = INFERENCE_BATCH_SIZE,
                 progress: bool = False) -> Segmentation:
    """Load, preprocess and segment one raw FLAIR scan with a model or an ensemble; write nothing.

    ``model`` is one Keras model or a list of them (members with one input shape): their
    resampled probabilities are averaged (:func:`planar3d.inference.ensemble.ensemble_mean`)
    before the mapping to the native grid, so an ensemble of identical members gives the
    member's outputs exactly. ``config.crop`` and ``config.precision`` choose the inference
    path (per member, :func:`member_settings`: ``precision="auto"`` runs a member in float32
    where its fold found the reduced format moving the lesion volume); ``progress`` shows a bar
    over the windows. With ``config.calibration == "temperature"`` each member's probabilities
    are rescaled by its own temperature before the averaging (the mask at 0.5 stays; at another
    threshold it can change, see :mod:`planar3d.inference.temperature`). A model that stacks
    several modalities (``config.modalities``) takes the FLAIR's other scans from its patient
    folder (:func:`planar3d.io.datasets.scan_channels`).

    Raises:
        InputFileError: a bad input file (see :func:`planar3d.io.nifti.load_scan`), a missing
            modality, or another scan off the FLAIR's grid.
        Planar3DError: members with different input shapes.
    """

    models = list(model) if isinstance(model, (list, tuple)) else [model]
    settings = member_settings(models, config)
    shapes = {tuple(m.input_shape[1:4]) for m in models}
    if len(shapes) != 1:
        raise Planar3DError(f"ensemble members must take one window shape. Received: {sorted(shapes)}")
    size = int(models[0].input_shape[2])
    scan, volume, meta = load_preprocessed(flair_path, config, size=size)
    config = replace(config, window=int(models[0].input_shape[1]), size=size)
    precisions = {precision for precision, _ in settings}
    if len(models) > 1 and len(precisions) == 1:  # one pass: members with one encoder share its features
        raw = predict_resampled_members(models, volume, replace(config, precision=precisions.pop()),
                                        batch_size=batch_size, progress=progress)
    else:
        raw = [predict_resampled(m, volume, replace(config, precision=precision), batch_size=batch_size,
                                 progress=progress) for m, (precision, _) in zip(models, settings)]
    resampled_members = [apply_temperature(member, temperature) for member, (_, temperature) in zip(raw, settings)]
    resampled = resampled_members[0] if len(models) == 1 else ensemble_mean(resampled_members)
    prob, mask = native_mask(resampled, meta, config)
    lesions, n_lesions = label_lesions(mask)
    table = lesion_table(mask, scan.affine, probabilities=prob, head=native_head(volume, meta),
                         labels=(lesions, n_lesions))
    members: tuple = ()
    if len(models) > 1:
        natives = [native_mask(member, meta, config) for member in resampled_members]
        members = tuple(probabilities for probabilities, _ in natives)
        information = mutual_information(members)
        agreement = member_agreement(lesions, n_lesions, [member_mask for _, member_mask in natives])
        for row in table:
            inside = lesions == row["id"]
            row.update(max_probability=float(prob[inside].max()), member_fraction=float(agreement[row["id"] - 1]),
                       mean_mutual_information=float(information[inside].mean()))
    return Segmentation(scan, volume, prob, mask, resampled, table, config, members, lesions)


def member_files(paths: Sequence[str | Path]) -> list[Path]:
    """The model files named by ``--model``: ``.keras`` files, export folders (:func:`is_export`), and
    run folders (every ``best.keras`` below, as ``train``/``crossval`` leave them, sorted).

    Raises:
        InputFileError: a folder without ``best.keras``.
    """
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir() and not is_export(path):
            found = sorted(path.rglob("best.keras"))
            if not found:
                raise InputFileError(path, "no best.keras below this run folder")
            files += found
        else:
            files.append(path)
    return files


#: the file each model of :func:`load_members` came from (its ``calibration.json`` is beside it).
_SOURCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def load_members(files: Sequence[Path], runtime: str = "tensorflow", precision: str | None = None) -> list:
    """One model per :func:`member_files` file, or the model itself for one file (not an ensemble).
    Each model's file is remembered (:func:`model_source`), so that :func:`segment_scan` finds its
    ``calibration.json``. One export folder is opened in ``runtime``
    (:func:`planar3d.inference.runtimes.load_runtime`, in :func:`runtime_precision` of ``precision``;
    check it first with :func:`check_runtime`).

    Raises:
        InputFileError: a model that does not load or does not segment.
    """
    if len(files) == 1 and is_export(files[0]):
        return load_runtime(files[0], runtime, runtime_precision(runtime, precision, export_precision(read_metadata(files[0]))))
    models = [load_segmentation_model(file) for file in files]
    for model, file in zip(models, files):
        _SOURCES[model] = Path(file)
    return models[0] if len(models) == 1 else models


def model_source(model) -> Path | None:
    """The file :func:`load_members` loaded ``model`` from, or None (a model built or loaded otherwise)."""
    return _SOURCES.get(model)


def _missing_calibration(file: Path | None) -> Planar3DError:
    if file is None:
        return Planar3DError("--calibration temperature needs models loaded from their run folders (load_members); "
                             "this one has no calibration.json: use --calibration none")
    return Planar3DError(f"no {CALIBRATION_NAME} beside {file}; train with planar3d >= {__version__} or use "
                         "--calibration none")


def check_calibration(files: Sequence[Path], config: Config) -> None:
    """Refuse ``--calibration temperature`` before loading anything when a model file has no
    ``calibration.json`` with a temperature beside it.

    Raises:
        Planar3DError: one line naming the first model without one.
    """
    if config.calibration != "temperature":
        return
    for file in files:
        record = calibration_record(file)
        if not record or "temperature" not in record:
            raise _missing_calibration(Path(file))


def member_settings(models, config: Config, announce: bool = False) -> list[tuple[str, float]]:
    """Each model's (one model, or a list: an ensemble) ``(precision, temperature)``: ``config.precision`` under the fall-back rule of
    :func:`planar3d.inference.precision.precision_for_model` (the precision record in the
    ``calibration.json`` beside the model), and with ``config.calibration == "temperature"`` the
    temperature stored there, else 1 (the probabilities unchanged). ``announce`` prints one line
    for each model run in float32 by the rule.

    Raises:
        Planar3DError: ``--calibration temperature`` and a model without ``calibration.json``.
    """
    auto = resolve_precision("auto") if config.precision == "auto" else config.precision
    settings = []
    for model in models if isinstance(models, (list, tuple)) else [models]:
        file = model_source(model)
        record = calibration_record(file) if file is not None else None
        if config.calibration == "temperature" and (not record or "temperature" not in record):
            raise _missing_calibration(file)
        temperature = float(record["temperature"]) if config.calibration == "temperature" else 1.0
        precision_record = (record or {}).get("precision")
        precision = precision_for_model(config.precision, auto, precision_record)
        if announce and precision != auto:
            print(fallback_notice(str(file), auto, precision_record))
        settings.append((precision, temperature))
    return settings


def native_head(volume: np.ndarray, meta: dict) -> np.ndarray:
    """The head mask (:func:`planar3d.data.foreground.head_mask`, on the FLAIR channel) of a preprocessed
    scan, on the scan's native grid; all False for a scan without contrast (said once by the inference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForegroundWarning)
        head = head_mask(volume if volume.ndim == 3 else volume[..., 0])
    return to_native(head.astype(np.float32), meta, order=0) > 0.5


def predict_scan(model, flair_path: str | Path, output: str | Path, config: Config, probabilities: str | Path | None = None,
                 lesion_map: str | Path | None = None, report: bool = True, overlay: bool = True, radiological: bool = True,
                 overwrite: bool = False, batch_size: int = INFERENCE_BATCH_SIZE, progress: bool = False,
                 uncertainty: str | Path | None = None) -> dict:
    """Segment one scan and write its outputs; return its summary row.

    ``config.crop`` and ``config.precision`` choose the inference path (see
    :func:`planar3d.inference.predict.predict_volume`); ``progress`` shows a bar over the windows on a
    terminal.

    Outputs beside ``output`` (``<name>.nii.gz``): ``<name>_lesions.csv`` / ``.json`` (one
    row per lesion: id, voxels, volume in mm³, centroid in voxels and in scanner mm, mean
    probability) and ``<name>_qc.png`` (FLAIR with the lesions in three planes).

    Raises:
        InputFileError: a bad input, the output equals the input, or an output exists
            without ``overwrite``.
    """

    flair_path, output = Path(flair_path), Path(output)
    check_not_input(flair_path, output, probabilities)
    base = output.parent / stem(output)
    # refuse existing or unwritable outputs before computing anything
    members = len(model) if isinstance(model, (list, tuple)) else 1
    check_destinations(scan_outputs(output, probabilities, lesion_map, report, overlay, uncertainty, members),
                       overwrite=overwrite)

    result = segment_scan(model, flair_path, config, batch_size=batch_size, progress=progress)
    scan, mask, table = result.scan, result.mask, result.table
    summary = {"scan": str(flair_path), "mask": str(output), **result.summary()}

    save_nifti(mask, scan, output, overwrite=overwrite)
    if probabilities:
        save_nifti(result.probabilities, scan, probabilities, overwrite=overwrite)
    if uncertainty:
        maps = result.uncertainty()
        for name, path in uncertainty_paths(uncertainty, members).items():
            save_nifti(maps[name], scan, path, overwrite=overwrite)
    if lesion_map:
        save_nifti(result.labels.astype(np.int16), scan, lesion_map, overwrite=overwrite)
    if report:
        write_table(base.with_name(base.name + "_lesions.csv"), table, overwrite)
        write_text_atomic(base.with_name(base.name + "_lesions.json"),
                          json.dumps({**summary, "lesions": table}, indent=2) + "\n", overwrite=overwrite)
    if overlay:
        result.qc_picture(base.with_name(base.name + "_qc.png"), overwrite=overwrite,
                          title=f"{flair_path.name}: {summary['n_lesions']} lesions, {summary['total_volume_ml']:.2f} ml",
                          radiological=radiological)
    return summary


def check_not_input(flair_path: Path, output: Path, probabilities: str | Path | None) -> None:
    if output.resolve() == flair_path.resolve() or (probabilities and Path(probabilities).resolve() == flair_path.resolve()):
        raise InputFileError(output, "output path equals the input; choose another --output")


def scan_outputs(output: str | Path, probabilities: str | Path | None = None, lesion_map: str | Path | None = None,
                 report: bool = True, overlay: bool = True, uncertainty: str | Path | None = None,
                 members: int = 1) -> list[Path]:
    """Every file :func:`predict_scan` writes for one scan, the mask first."""
    output = Path(output)
    base = output.parent / stem(output)
    paths = [output, *(Path(p) for p in (probabilities, lesion_map) if p)]
    if uncertainty:
        paths += uncertainty_paths(uncertainty, members).values()
    if report:
        paths += [base.with_name(base.name + "_lesions.csv"), base.with_name(base.name + "_lesions.json")]
    if overlay:
        paths.append(base.with_name(base.name + "_qc.png"))
    return paths


def uncertainty_paths(uncertainty: str | Path, members: int) -> dict[str, Path]:
    """``--uncertainty PATH``: the entropy at PATH and, for an ensemble, the mutual information
    beside it (``<PATH stem>_mutual_information.nii.gz``)."""
    path = Path(uncertainty)
    paths = {"entropy": path}
    if members > 1:
        paths["mutual_information"] = path.with_name(stem(path) + "_mutual_information.nii.gz")
    return paths


def write_table(path: Path, rows: Sequence[dict], overwrite: bool) -> None:
    """A lesion table (an empty one keeps its header)."""
    write_rows(path, rows, overwrite=overwrite, columns=None if rows else ["id", "voxels", "volume_mm3"])


def input_scans(inputs: Sequence[str]) -> list[tuple[Path, str]]:
    """The scans named by ``--input`` and their names: files, folders and CSV/TSV dataset tables.

    A folder of a known data set layout (MSSEG-2016, Ljubljana, BRATS:
    :func:`planar3d.io.datasets.find_patient_folders`) gives each patient's FLAIR, named by
    patient id, and none of its other sequences or masks; any other folder gives every
    ``.nii``/``.nii.gz`` below it, masks and probability maps excluded, named by
    :func:`scan_name`.

    Raises:
        InputFileError: a folder without scans, a folder of several layouts, a bad table.
    """

    scans: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            records = known_dataset(path)
            if records is not None:
                scans += [(record.flair, record.patient_id) for record in records]
                continue
            found = sorted(p for p in path.rglob("*") if p.name.endswith(SUFFIXES) and p.is_file())
            found = [p for p in found if not any(k in p.name.lower() for k in ("mask", "consensus", "_prob"))]
            if not found:
                raise InputFileError(path, "no .nii or .nii.gz scans in this folder")
            scans += [(p, scan_name(p)) for p in found]
        elif path.suffix.lower() in (".csv", ".tsv"):
            scans += [(record.flair, record.patient_id) for record in find_dataset(path)]
        else:
            scans.append((path, scan_name(path)))
    return scans


def scan_name(path: Path) -> str:
    """A scan's name: its file stem, or its folder's name for MSSEG's ``3DFLAIR.nii.gz``."""
    return stem(path) if path.name not in ("3DFLAIR.nii.gz", "FLAIR.nii.gz") else path.parent.name


def scan_outputs_pairs(inputs: Sequence[str], output: str) -> list[tuple[Path, Path]]:
    """Pair every ``--input`` scan (:func:`input_scans`) with its output mask path: ``output`` itself
    for one scan file and a ``.nii[.gz]`` output, else ``output/<name>_mask.nii.gz`` (folder mode;
    names made unique with the parent folder's name when two scans share one).

    Raises:
        InputFileError: several inputs and an output that is an existing file.
    """
    scans = input_scans(inputs)
    paths = [path for path, _ in scans]
    folder_mode = len(paths) > 1 or Path(inputs[0]).is_dir() or Path(output).is_dir() or not output.endswith(SUFFIXES)
    if not folder_mode:
        return [(paths[0], Path(output))]
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(out_dir, "several inputs need an output folder, not a file")
    names = [name for _, name in scans]
    if len(set(names)) != len(names):
        names = [f"{p.parent.name}_{stem(p)}" for p in paths]
    return [(p, out_dir / f"{name}_mask.nii.gz") for p, name in zip(paths, names)]


def segment_scans(model, pairs: Sequence[tuple[Path, Path]], config: Config, lesion_map: bool = False,
                  report: bool = True, overlay: bool = True, radiological: bool = True,
                  probabilities: str | Path | None = None, uncertainty: str | Path | None = None,
                  overwrite: bool = False, batch_size: int = INFERENCE_BATCH_SIZE,
                  progress: bool = True) -> tuple[list[dict], list[str]]:
    """:func:`predict_scan` for every ``(flair, output)`` pair, printing one line per scan.

    In folder mode (several pairs) an existing output is skipped unless ``overwrite`` and a
    scan that fails is reported and skipped; one pair raises its error.

    Returns:
        ``(rows, failures)``: the rows of the scans segmented; ``{FLAIR path: error line}`` of those
        that failed.
    """
    from tqdm.auto import tqdm

    single = len(pairs) == 1
    rows, failures = [], {}
    for flair, output in tqdm(pairs, desc="segment", unit="scan", disable=single):
        if not single and output.exists() and not overwrite:
            tqdm.write(f"skip {flair}: {output} exists (pass --overwrite to redo)")
            continue
        try:
            labels = output.with_name(stem(output) + "_labels.nii.gz") if lesion_map else None
            row = predict_scan(model, flair, output, config, probabilities=probabilities, lesion_map=labels,
                               report=report, overlay=overlay, radiological=radiological, overwrite=overwrite,
                               batch_size=batch_size, uncertainty=uncertainty,
                               progress=single and progress)
        except Planar3DError as error:
            if single:
                raise
            tqdm.write(f"error: {error}", file=sys.stderr)  # on its own line, not on the bar's
            failures[str(flair)] = str(error)
            continue
        rows.append(row)
        tqdm.write(f"{flair}: {row['n_lesions']} lesions, {row['total_volume_ml']:.2f} ml -> {output}")
    return rows, failures


def select_device(choice: str) -> None:
    """Hide the GPUs for ``"cpu"``; say so when ``"auto"``/``"gpu"`` finds none."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if choice == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    elif choice in ("auto", "gpu") and not gpus:
        print("notice: no GPU visible, running on the CPU", file=sys.stderr)
