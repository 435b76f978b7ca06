"""Segment new scans: ``python -m planar3d.predict --model best.keras --input FLAIR.nii.gz --output mask.nii.gz``.

With a classifier model (``--task classification``) it writes class probabilities instead:
``--input scans/ --output probabilities.csv`` (:func:`planar3d.classify.predict_classes`).

Raw FLAIR in, binary lesion mask out on the input's native grid, with its affine, qform
and sform. Also: ``--probabilities``, a per-scan lesion report (CSV and JSON), a labelled
lesion map, a QC overlay PNG, and a folder mode (``--input DIR --output DIR``) that loads the
model once, continues past bad files and writes one group table.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.atomic import atomic_path, check_destinations, check_writable, write_text_atomic
from planar3d.cli import add_inference_flags, make_parser, run_cli
from planar3d.config import Config, load_config, make_config
from planar3d.errors import InputFileError, Planar3DError
from planar3d.pipeline import INFERENCE_BATCH_SIZE  # no TensorFlow: windows is imported when used

__all__ = ["Segmentation", "inference_config", "input_scans", "load_keras_model", "load_segmentation_model", "main", "predict_scan",
           "scan_name", "scan_outputs", "segment_scan", "select_device"]

_SUFFIXES = (".nii.gz", ".nii")


def load_keras_model(path: str | Path):
    """Load any planar3d ``.keras`` model (custom layers registered) with ``safe_mode=True``.

    Raises:
        InputFileError: missing file, or a file Keras cannot load.
    """
    import keras

    import planar3d.nets.layers  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "model file not found")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise InputFileError(path, f"not a loadable planar3d .keras model ({reason})") from error


def load_segmentation_model(path: str | Path):
    """Load a planar3d segmentation ``.keras`` model with ``safe_mode=True``.

    Raises:
        InputFileError: missing file, or not a planar3d segmentation model.
    """
    path = Path(path)
    model = load_keras_model(path)
    shape, output = tuple(model.input_shape), tuple(model.output_shape)
    if len(shape) == 5 and len(output) == 2:
        raise InputFileError(path, f"a classifier (output {output}), not a segmentation model: give --output a .csv file")
    if len(shape) != 5 or len(output) != 5 or output[-1] != 1:
        raise InputFileError(path, f"not a planar3d segmentation model (input {shape}, output {output})")
    return model


def inference_config(model: str | Path, **overrides) -> Config:
    """The run's ``config.json`` beside the model (else the paper's), with overrides (None = keep).

    Raises:
        InputFileError: a bad ``config.json``.
        Planar3DError: an invalid override.
    """
    saved = Path(model).parent / "config.json"
    base = load_config(saved) if saved.is_file() else make_config("paper")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None}).validate()


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
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
        table: :func:`planar3d.lesions.lesion_table` rows (id 1 = largest lesion).
        config: the settings used (window and size from the model).
    """

    scan: object
    volume: np.ndarray
    probabilities: np.ndarray
    mask: np.ndarray
    resampled: np.ndarray
    table: list
    config: Config

    def summary(self) -> dict:
        """``{"n_lesions", "total_volume_ml"}`` of :func:`planar3d.lesions.lesion_summary`."""
        from planar3d.lesions import lesion_summary

        return lesion_summary(self.table)

    def qc_picture(self, path: str | Path, title: str, overwrite: bool = False) -> None:
        """The FLAIR with the predicted lesions in three planes (resampled cube) as a PNG."""
        from planar3d.plots import plot_overlay
        from planar3d.windows import binarize

        check_writable(path, overwrite)
        plot_overlay(self.volume, prediction=binarize(self.resampled, self.config.threshold, self.config.threshold_rule),
                     path=Path(path), title=title)


def segment_scan(model, flair_path: str | Path, config: Config, batch_size: int = INFERENCE_BATCH_SIZE,
                 progress: bool = False) -> Segmentation:
    """Load, preprocess and segment one raw FLAIR scan; write nothing (``config.crop`` and
    ``config.precision`` choose the inference path; ``progress`` shows a bar over the windows).

    Raises:
        InputFileError: a bad input file (see :func:`planar3d.io.load_scan`).
    """
    from planar3d.io import load_scan
    from planar3d.lesions import lesion_table
    from planar3d.pipeline import segment_volume
    from planar3d.preprocess import preprocess

    scan = load_scan(flair_path)
    size = int(model.input_shape[2])
    volume, _, meta = preprocess(scan, size=size, robust=config.robust_normalisation)
    config = replace(config, window=int(model.input_shape[1]), size=size)
    prob, mask, resampled = segment_volume(model, volume, meta, config, batch_size=batch_size, progress=progress)
    table = lesion_table(mask, scan.affine, probabilities=prob)
    return Segmentation(scan, volume, prob, mask, resampled, table, config)


def predict_scan(model, flair_path: str | Path, output: str | Path, config: Config, probabilities: str | Path | None = None,
                 lesion_map: str | Path | None = None, report: bool = True, overlay: bool = True,
                 overwrite: bool = False, batch_size: int = INFERENCE_BATCH_SIZE, progress: bool = False) -> dict:
    """Segment one scan and write its outputs; return its summary row.

    ``config.crop`` and ``config.precision`` choose the inference path (see
    :func:`planar3d.inference.predict_volume`); ``progress`` shows a bar over the windows on a
    terminal.

    Outputs beside ``output`` (``<name>.nii.gz``): ``<name>_lesions.csv`` / ``.json`` (one
    row per lesion: id, voxels, volume in mm³, centroid in voxels and in scanner mm, mean
    probability) and ``<name>_qc.png`` (FLAIR with the lesions in three planes).

    Raises:
        InputFileError: a bad input, the output equals the input, or an output exists
            without ``overwrite``.
    """
    from planar3d.io import save_nifti
    from planar3d.lesions import label_lesions

    flair_path, output = Path(flair_path), Path(output)
    _check_not_input(flair_path, output, probabilities)
    base = output.parent / _stem(output)
    # refuse existing or unwritable outputs before computing anything
    check_destinations(scan_outputs(output, probabilities, lesion_map, report, overlay), overwrite=overwrite)

    result = segment_scan(model, flair_path, config, batch_size=batch_size, progress=progress)
    scan, mask, table = result.scan, result.mask, result.table
    summary = {"scan": str(flair_path), "mask": str(output), **result.summary()}

    save_nifti(mask, scan, output, overwrite=overwrite)
    if probabilities:
        save_nifti(result.probabilities, scan, probabilities, overwrite=overwrite)
    if lesion_map:
        labels, _ = label_lesions(mask)
        save_nifti(labels.astype(np.int16), scan, lesion_map, overwrite=overwrite)
    if report:
        _write_table(base.with_name(base.name + "_lesions.csv"), table, overwrite)
        write_text_atomic(base.with_name(base.name + "_lesions.json"),
                          json.dumps({**summary, "lesions": table}, indent=2) + "\n", overwrite=overwrite)
    if overlay:
        result.qc_picture(base.with_name(base.name + "_qc.png"), overwrite=overwrite,
                          title=f"{flair_path.name}: {summary['n_lesions']} lesions, {summary['total_volume_ml']:.2f} ml")
    return summary


def _check_not_input(flair_path: Path, output: Path, probabilities: str | Path | None) -> None:
    if output.resolve() == flair_path.resolve() or (probabilities and Path(probabilities).resolve() == flair_path.resolve()):
        raise InputFileError(output, "output path equals the input; choose another --output")


def scan_outputs(output: str | Path, probabilities: str | Path | None = None, lesion_map: str | Path | None = None,
                 report: bool = True, overlay: bool = True) -> list[Path]:
    """Every file :func:`predict_scan` writes for one scan, the mask first."""
    output = Path(output)
    base = output.parent / _stem(output)
    paths = [output, *(Path(p) for p in (probabilities, lesion_map) if p)]
    if report:
        paths += [base.with_name(base.name + "_lesions.csv"), base.with_name(base.name + "_lesions.json")]
    if overlay:
        paths.append(base.with_name(base.name + "_qc.png"))
    return paths


def _write_table(path: Path, rows: Sequence[dict], overwrite: bool) -> None:
    import csv

    columns = list(rows[0]) if rows else ["id", "voxels", "volume_mm3"]
    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def input_scans(inputs: Sequence[str]) -> list[Path]:
    """The scans named by ``--input``: files, folders (every ``.nii``/``.nii.gz`` below, masks and
    probability maps excluded) and CSV/TSV dataset tables.

    Raises:
        InputFileError: a folder without scans, a bad table.
    """
    from planar3d.io import find_dataset

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.name.endswith(_SUFFIXES) and p.is_file())
            found = [p for p in found if not any(k in p.name.lower() for k in ("mask", "consensus", "_prob"))]
            if not found:
                raise InputFileError(path, "no .nii or .nii.gz scans in this folder")
            paths += found
        elif path.suffix.lower() in (".csv", ".tsv"):
            paths += [record.flair for record in find_dataset(path)]
        else:
            paths.append(path)
    return paths


def scan_name(path: Path) -> str:
    """A scan's name: its file stem, or its folder's name for MSSEG's ``3DFLAIR.nii.gz``."""
    return _stem(path) if path.name not in ("3DFLAIR.nii.gz", "FLAIR.nii.gz") else path.parent.name


def _inputs_and_outputs(inputs: Sequence[str], output: str) -> list[tuple[Path, Path]]:
    """Pair every input scan with its output mask path."""
    paths = input_scans(inputs)
    folder_mode = len(paths) > 1 or Path(inputs[0]).is_dir() or Path(output).is_dir() or not output.endswith(_SUFFIXES)
    if not folder_mode:
        return [(paths[0], Path(output))]
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(out_dir, "several inputs need an output folder, not a file")
    names = [scan_name(p) for p in paths]
    if len(set(names)) != len(names):
        names = [f"{p.parent.name}_{_stem(p)}" for p in paths]
    return [(p, out_dir / f"{name}_mask.nii.gz") for p, name in zip(paths, names)]


def select_device(choice: str) -> None:
    """Hide the GPUs for ``"cpu"``; say so when ``"auto"``/``"gpu"`` finds none."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if choice == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    elif choice in ("auto", "gpu") and not gpus:
        print("notice: no GPU visible, running on the CPU", file=sys.stderr)


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Segment MS lesions in raw FLAIR scans with a trained planar3d model.", "planar3d.predict")
    parser.add_argument("--model", required=True, help="trained model (RUN_DIR/fold_k/best.keras)")
    parser.add_argument("--input", nargs="+", required=True, help="FLAIR .nii/.nii.gz file(s), a folder, or a CSV/TSV list")
    parser.add_argument("--output", required=True, help="mask .nii.gz for one input; a folder for several; "
                        "with a classifier model a .csv of class probabilities (one row per scan)")
    parser.add_argument("--probabilities", help="also write the probability map here (single input only)")
    parser.add_argument("--lesion-map", action="store_true", help="also write a labelled lesion map (<name>_labels.nii.gz)")
    parser.add_argument("--no-report", action="store_true", help="skip the per-lesion CSV/JSON report")
    parser.add_argument("--no-qc", action="store_true", help="skip the QC overlay PNG")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the run's config, else 16/256)")
    parser.add_argument("--threshold-rule", choices=("fixed", "reference"), help="see planar3d.windows.binarize (default fixed)")
    parser.add_argument("--blend", choices=("middle", "mean", "gaussian"), help="window recomposition (default middle, paper Eq. 1)")
    parser.add_argument("--tta", action="store_true", default=None, help="average over flips (8x slower)")
    parser.add_argument("--stride", type=int, help="slices between windows (default: the run's, 8)")
    parser.add_argument("--batch-size", type=int, default=INFERENCE_BATCH_SIZE,
                        help="windows per forward pass (default 1: on a CPU as fast as 2, with less memory)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="where to run")
    add_inference_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar over the windows of a "
                        "single scan, on a terminal only)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them in folder mode, refuse for one scan)")
    args = parser.parse_args(argv)

    config = inference_config(args.model, **{k: getattr(args, k) for k in ("threshold", "threshold_rule", "blend", "tta", "stride",
                                                                            "crop", "precision")})
    if config.task == "classification" or args.output.lower().endswith(".csv"):
        from planar3d.classify import predict_classes

        select_device(args.device)
        rows, failures = predict_classes(args.model, args.input, args.output, config, overwrite=args.overwrite)
        if failures:
            print(f"error: {len(failures)} of {len(rows) + len(failures)} scans failed: {', '.join(failures)}", file=sys.stderr)
            return 1
        print(f"class probabilities: {args.output}")
        return 0
    pairs = _inputs_and_outputs(args.input, args.output)
    if args.probabilities and len(pairs) > 1:
        raise Planar3DError("--probabilities takes one input; in folder mode probability maps are not written")
    # refuse unwritable destinations before loading the model
    if len(pairs) == 1:
        flair, output = pairs[0]
        labels = output.with_name(_stem(output) + "_labels.nii.gz") if args.lesion_map else None
        _check_not_input(flair, output, args.probabilities)
        check_destinations(scan_outputs(output, args.probabilities, labels, not args.no_report, not args.no_qc),
                           overwrite=args.overwrite)
    else:
        check_destinations(folders=[args.output])
    select_device(args.device)
    model = load_segmentation_model(args.model)

    from tqdm.auto import tqdm

    rows, failures = [], []
    for flair, output in tqdm(pairs, desc="segment", unit="scan", disable=len(pairs) == 1):
        if len(pairs) > 1 and output.exists() and not args.overwrite:
            tqdm.write(f"skip {flair}: {output} exists (pass --overwrite to redo)")
            continue
        try:
            labels = output.with_name(_stem(output) + "_labels.nii.gz") if args.lesion_map else None
            row = predict_scan(model, flair, output, config, probabilities=args.probabilities, lesion_map=labels,
                               report=not args.no_report, overlay=not args.no_qc, overwrite=args.overwrite,
                               batch_size=args.batch_size, progress=len(pairs) == 1 and not args.quiet)
        except Planar3DError as error:
            if len(pairs) == 1:
                raise
            tqdm.write(f"error: {error}", file=sys.stderr)  # on its own line, not on the bar's
            failures.append(str(flair))
            continue
        rows.append(row)
        tqdm.write(f"{flair}: {row['n_lesions']} lesions, {row['total_volume_ml']:.2f} ml -> {output}")
    if len(pairs) > 1 and rows:
        _write_table(Path(args.output) / "lesion_summary.csv", rows, overwrite=True)
        print(f"group table: {Path(args.output) / 'lesion_summary.csv'}")
    if failures:
        print(f"error: {len(failures)} of {len(pairs)} scans failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
