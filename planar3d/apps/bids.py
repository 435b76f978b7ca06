"""planar3d as a BIDS App: ``python -m planar3d.bids BIDS_DIR OUTPUT_DIR participant|group``.

``participant`` segments every FLAIR of the chosen participants (``--participant-label``,
``--session-label``; every run and acquisition, each named by its ``acq-``/``run-`` entities;
``--acq``/``--run`` narrow the choice) with a trained model and writes a BIDS derivative
dataset::

    OUTPUT_DIR/dataset_description.json       DatasetType derivative, GeneratedBy, SourceDatasets
    OUTPUT_DIR/.bidsignore                    the files outside the specification (below)
    OUTPUT_DIR/sub-01/[ses-x/]anat/
        sub-01_[ses-x_][acq-.._][run-.._]space-orig_label-lesion_mask.nii.gz   (+ .json)
        ..._space-orig_label-lesion_probseg.nii.gz (+ .json)                   with --probseg
        ..._desc-lesions_stats.tsv (+ .json describing the columns)            one row per lesion
    OUTPUT_DIR/sub-01/figures/sub-01_[ses-x_]..._desc-qc_FLAIR.png             QC picture
    OUTPUT_DIR/sub-01[_ses-x].html     the participant's (session's) HTML report: mosaics, lesion
                                       tables, totals, model, command, versions (as fMRIPrep names them)

``space-orig``: the outputs lie on the input FLAIR's own grid (its affine, qform and sform).
A participant whose outputs all exist is skipped unless ``--overwrite``; a scan left
unfinished by a killed run (some of its files missing) is redone. A participant that fails
is reported and the others go on; the exit status is 1 at the end if any failed, 2 for bad
input (one line, nothing written).

``group`` reads the participant outputs and writes ``group_lesions.tsv`` (one row per
FLAIR scan: lesion count and volume in ml, with a JSON sidecar), ``group_report.html`` (the
table, a plot, the metrics) and, where
reference lesion masks exist (``--masks-from PIPELINE`` or beside the raw scans, as
:mod:`planar3d.io.bids` finds them), the MSSEG-2016 metrics of :mod:`planar3d.evaluation.evaluate`:
``group_metrics.tsv`` (+ .json), ``group_metrics.md`` (mean ± sd per centre) and
``group_metrics_boxplot.png``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from planar3d import __version__
from planar3d.apps.predict import (
    check_calibration,
    check_runtime,
    inference_config,
    is_export,
    load_members,
    member_files,
    member_settings,
    resolve_runtime,
    segment_scan,
    select_device,
)
from planar3d.apps.report_pages import write_group_report, write_participant_report
from planar3d.atomic import check_destinations, write_rows, write_text_atomic
from planar3d.config import Config
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation.evaluate import evaluate_pair
from planar3d.evaluation.html_report import model_info
from planar3d.inference.runtimes import METADATA_NAME
from planar3d.evaluation.metrics import MSSEG_KEYS
from planar3d.evaluation.reference import paper_table2
from planar3d.evaluation.reports import evaluation_summary_markdown as summary_markdown
from planar3d.io.bids import BIDS_VERSION, BidsScan, find_bids_scans, format_name, read_json
from planar3d.io.nifti import save_nifti

__all__ = ["AppResult", "GROUP_COLUMNS", "GROUP_REPORT", "STATS_COLUMNS", "output_paths", "report_path", "run_group",
           "run_participant"]


_DESCRIPTION = "dataset_description.json"


_PIPELINE = "planar3d"


_BIDSIGNORE = "*_stats.tsv\n*_stats.json\nfigures/\ngroup_*\n*.html\n"


#: The group level's HTML page, in OUTPUT_DIR.
GROUP_REPORT = "group_report.html"


#: Columns of ``*_desc-lesions_stats.tsv`` (from :func:`planar3d.evaluation.lesions.lesion_table`), as the
#: JSON sidecar describes them.
STATS_COLUMNS = {
    "lesion_id": {"Description": "lesion number, 1 = the largest (6-connected component of the mask)"},
    "voxels": {"Description": "lesion size in voxels of the FLAIR grid"},
    "volume_mm3": {"Description": "lesion volume", "Units": "mm^3"},
    "centroid_i": {"Description": "centroid, first voxel index of the FLAIR image (0-based)"},
    "centroid_j": {"Description": "centroid, second voxel index (0-based)"},
    "centroid_k": {"Description": "centroid, third voxel index (0-based)"},
    "centroid_x_mm": {"Description": "centroid in scanner coordinates (the image affine), x", "Units": "mm"},
    "centroid_y_mm": {"Description": "centroid in scanner coordinates, y", "Units": "mm"},
    "centroid_z_mm": {"Description": "centroid in scanner coordinates, z", "Units": "mm"},
    "mean_probability": {"Description": "mean predicted lesion probability over the lesion's voxels"},
}


GROUP_COLUMNS = {
    "participant_id": {"Description": "participant, as in participants.tsv"},
    "session_id": {"Description": "session, n/a without sessions"},
    "scan": {"Description": "the entities of the segmented FLAIR image (one row per FLAIR: every run and acquisition)"},
    "n_lesions": {"Description": "number of lesions (6-connected components) of the predicted mask"},
    "lesion_volume_ml": {"Description": "total predicted lesion volume", "Units": "ml"},
}


@dataclass
class AppResult:
    """What a participant-level run did: participant ids done, skipped and failed."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def output_paths(scan: BidsScan, output_dir: str | Path, probseg: bool = False) -> dict[str, Path]:
    """Where the participant level writes a scan's outputs (names in canonical entity order)."""
    output_dir = Path(output_dir)
    folder = output_dir / scan.folder
    mask = {**scan.entities, "space": "orig", "label": "lesion"}
    stats = {**scan.entities, "desc": "lesions"}
    paths = {
        "stats": folder / format_name(stats, "stats", ".tsv"),
        "stats_json": folder / format_name(stats, "stats", ".json"),
        "qc": output_dir / scan.participant_id / "figures" / format_name({**scan.entities, "desc": "qc"}, "FLAIR", ".png"),
        "mask_json": folder / format_name(mask, "mask", ".json"),
        "mask": folder / format_name(mask, "mask", ".nii.gz"),  # last: written last
    }
    if probseg:
        paths = {"probseg": folder / format_name(mask, "probseg", ".nii.gz"),
                 "probseg_json": folder / format_name(mask, "probseg", ".json"), **paths}
    return paths


def report_path(scan: BidsScan, output_dir: str | Path) -> Path:
    """The HTML page of a scan's participant and session: ``OUTPUT_DIR/sub-<label>[_ses-<label>].html``
    (fMRIPrep's names for its per-subject and per-session reports); every run of the session is on it."""
    return Path(output_dir) / format_name({k: v for k, v in scan.entities.items() if k in ("sub", "ses")}, None, ".html")


def run_participant(
    bids_dir: str | Path,
    output_dir: str | Path,
    model: str | Path | Sequence[str | Path],
    config: Config | None = None,
    participant_label: Sequence[str] | None = None,
    session_label: Sequence[str] | None = None,
    acq: str | None = None,
    run: int | None = None,
    probseg: bool = False,
    overwrite: bool = False,
    batch_size: int = 1,
    command: str | None = None,
    overrides: dict | None = None,
    device: str = "auto",
    runtime: str = "auto",
) -> AppResult:
    """Segment the FLAIR scans of the chosen participants into a BIDS derivative dataset.

    Args:
        bids_dir: the raw BIDS dataset.
        output_dir: the derivative dataset (created; may be ``bids_dir/derivatives/<name>``).
        model: a trained planar3d ``.keras`` model, or several models and run folders (an
            ensemble, see :func:`planar3d.apps.predict.member_files`); the first model's run
            ``config.json`` gives the inference settings.
        config: inference settings; default: the model's run config with ``overrides``
            (``threshold``, ``threshold_rule``, ``blend``, ``tta``, ``stride``, ``crop``,
            ``precision``; None = keep).
        participant_label, session_label, acq, run: as :func:`planar3d.io.bids.find_bids_scans`;
            every FLAIR that matches is segmented (several runs: several scans).
        probseg: also write the probability maps.
        overwrite: redo finished participants and replace a dataset description made
            with another model.
        batch_size: windows per forward pass.
        command: the command line recorded in ``GeneratedBy``.
        device: ``"auto"``, ``"cpu"`` or ``"gpu"`` (see :func:`planar3d.apps.predict.select_device`).
        runtime: the engine (:data:`planar3d.config.RUNTIME_CHOICES`): ``"auto"`` as
            :func:`planar3d.apps.predict.resolve_runtime`; another than ``"tensorflow"`` runs one
            ``planar3d export`` folder given as ``model`` (:func:`planar3d.apps.predict.check_runtime`).

    Returns:
        An :class:`AppResult`.

    Raises:
        InputFileError / Planar3DError: bad input, found before anything is written.
    """
    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    # check everything before TensorFlow loads and anything is written
    scans = find_bids_scans(bids_dir, participant_label, session_label, acq=acq, run=run, every_flair=True)
    _check_output_dir(bids_dir, output_dir)
    check_destinations(folders=[output_dir])
    files = member_files(model if isinstance(model, (list, tuple)) else [model])
    for file in files:
        if not (file.is_file() or is_export(file)):
            raise InputFileError(file, "model file not found")
    shas = [_sha256(file / METADATA_NAME if is_export(file) else file) for file in files]  # an export: its record
    # an ensemble's identity: the hash of its members' hashes, in order
    model_sha = shas[0] if len(files) == 1 else hashlib.sha256("\n".join(shas).encode()).hexdigest()
    model = files[0] if len(files) == 1 else files
    command = command or "python -m planar3d.bids " + shlex.join(sys.argv[1:])
    description = _description(bids_dir, model, model_sha, command)
    _check_description(output_dir, model_sha, overwrite)
    facts = model_info(files, shas)

    config = config or inference_config(files[0], **(overrides or {}))
    exported = check_runtime(files, runtime, config, device)
    check_calibration(files, config)
    runtime, _ = resolve_runtime(files, runtime, config.precision)
    select_device(device if runtime == "tensorflow" else "cpu")
    loaded = load_members(files, runtime, config.precision)
    if not exported:
        member_settings(loaded, config, announce=True)

    output_dir.mkdir(parents=True, exist_ok=True)
    if overwrite or not (output_dir / _DESCRIPTION).is_file():
        write_text_atomic(output_dir / _DESCRIPTION, json.dumps(description, indent=2) + "\n")
    _write_bidsignore(output_dir / ".bidsignore")

    result = AppResult()
    by_participant: dict[str, list[BidsScan]] = {}
    for scan in scans:
        by_participant.setdefault(scan.participant_id, []).append(scan)
    for participant, own in by_participant.items():
        todo = [s for s in own if overwrite or not all(p.is_file() for p in output_paths(s, output_dir, probseg).values())]
        if not todo:
            print(f"skip {participant}: finished in {output_dir / participant} (pass --overwrite to redo)")
            result.skipped.append(participant)
            _write_pages(own, output_dir, [], facts, command, missing_only=True)
            continue
        failures = []
        try:
            for scan in todo:
                summary = _segment(loaded, scan, bids_dir, output_dir, config, model, model_sha, probseg, batch_size)
                print(f"{scan.prefix}: {summary['n_lesions']} lesions, {summary['total_volume_ml']:.2f} ml")
        except (Planar3DError, OSError) as error:
            print(f"error: {participant}: {error}", file=sys.stderr)
            result.failed[participant] = str(error)
            failures.append(f"failed at {scan.prefix}: {error}")
        _write_pages(own, output_dir, failures, facts, command)
        if not failures:
            result.done.append(participant)
    return result


def _write_pages(scans: Sequence[BidsScan], output_dir: Path, failures: Sequence[str], model: dict, command: str,
                 missing_only: bool = False) -> None:
    """One HTML page per session of a participant's scans (:func:`report_path`); a page that cannot be
    written is reported on stderr (the segmentations stand)."""
    pages: dict[Path, list[BidsScan]] = {}
    for scan in scans:
        pages.setdefault(report_path(scan, output_dir), []).append(scan)
    for path, own in pages.items():
        if missing_only and path.is_file():
            continue
        paths = [output_paths(scan, output_dir) for scan in own]
        entries = [{"name": scan.prefix, "flair": scan.flair, "qc": p["qc"], "stats": p["stats"]} for scan, p in zip(own, paths)]
        try:
            write_participant_report(path, path.stem.replace("_", " "), entries, failures, model, command)
        except (Planar3DError, OSError) as error:
            print(f"error: {path}: report not written ({error})", file=sys.stderr)


def _write_bidsignore(path: Path) -> None:
    """``.bidsignore`` with the lines of :data:`_BIDSIGNORE` (kept: lines already there)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    missing = [line for line in _BIDSIGNORE.splitlines() if line not in lines]
    if missing:
        write_text_atomic(path, "\n".join([*lines, *missing]) + "\n")


def _segment(model, scan: BidsScan, bids_dir: Path, output_dir: Path, config: Config, model_path: Path,
             model_sha: str | None, probseg: bool, batch_size: int) -> dict:
    """Segment one scan and write its outputs (an unfinished scan's leftovers are replaced)."""

    paths = output_paths(scan, output_dir, probseg)
    result = segment_scan(model, scan.flair, config, batch_size=batch_size)
    summary = result.summary()
    source = f"bids:raw:{scan.flair.relative_to(bids_dir).as_posix()}"
    common = {"Sources": [source], "SpatialReference": source}
    _write_stats(paths["stats"], result.table)
    write_text_atomic(paths["stats_json"], json.dumps(STATS_COLUMNS, indent=2) + "\n")
    if probseg:
        save_nifti(result.probabilities, result.scan, paths["probseg"], overwrite=True)
        write_text_atomic(paths["probseg_json"], json.dumps({
            **common, "Description": f"lesion probability from planar3d (windows blended by '{result.config.blend}', "
                                     "resampled linearly to the FLAIR grid)"}, indent=2) + "\n")
    result.qc_picture(paths["qc"], overwrite=True,
                      title=f"{scan.prefix}: {summary['n_lesions']} lesions, {summary['total_volume_ml']:.2f} ml")
    write_text_atomic(paths["mask_json"], json.dumps({
        "Type": "Lesion", **common,
        "Description": f"binary lesion mask: probability >= {result.config.threshold:g} "
                       f"({result.config.threshold_rule} rule), on the FLAIR grid",
        "Threshold": result.config.threshold, "ThresholdRule": result.config.threshold_rule,
        "Model": _model_text(model_path), "ModelSHA256": model_sha,
        "LesionCount": summary["n_lesions"], "LesionVolumeMl": summary["total_volume_ml"]}, indent=2) + "\n")
    save_nifti(result.mask, result.scan, paths["mask"], overwrite=True)
    return summary


def _write_stats(path: Path, table: Sequence[dict]) -> None:
    rows = []
    for row in table:
        values = {"lesion_id": row["id"], **row}
        rows.append({c: "n/a" if values[c] is None else values[c] for c in STATS_COLUMNS})
    write_rows(path, rows, columns=STATS_COLUMNS, delimiter="\t")


def _check_output_dir(bids_dir: Path, output_dir: Path) -> None:
    raw, out = bids_dir.resolve(), output_dir.resolve()
    if out == raw or raw.is_relative_to(out):
        raise InputFileError(output_dir, "OUTPUT_DIR must not be the BIDS dataset or hold it")
    if out.is_relative_to(raw) and not out.is_relative_to(raw / "derivatives"):
        raise InputFileError(output_dir, "OUTPUT_DIR inside the BIDS dataset must be below its derivatives/ folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise InputFileError(output_dir, "OUTPUT_DIR is not a folder")


def _model_text(model) -> str:
    """One model's resolved path, or an ensemble's paths joined by ``; ``."""
    paths = model if isinstance(model, (list, tuple)) else [model]
    return "; ".join(str(Path(path).resolve()) for path in paths)


def _check_description(output_dir: Path, model_sha: str | None, overwrite: bool) -> None:
    """Refuse an OUTPUT_DIR holding another pipeline's or another model's derivatives."""
    path = output_dir / _DESCRIPTION
    if not path.is_file():
        return
    existing = read_json(path)
    names = [g.get("Name") for g in existing.get("GeneratedBy", []) if isinstance(g, dict)]
    if _PIPELINE not in names:
        raise InputFileError(path, f"OUTPUT_DIR holds derivatives generated by {names or 'an unknown pipeline'}; "
                                   "choose another OUTPUT_DIR")
    found = re.search(r"sha256 ([0-9a-f]{64})", existing["GeneratedBy"][names.index(_PIPELINE)].get("Description", ""))
    if found and model_sha and found.group(1) != model_sha and not overwrite:
        raise InputFileError(path, f"OUTPUT_DIR holds segmentations made with another model (sha256 "
                                   f"{found.group(1)[:12]}...); choose another OUTPUT_DIR or pass --overwrite")


def _description(bids_dir: Path, model: Path, model_sha: str | None, command: str | None) -> dict:

    source = read_json(bids_dir / _DESCRIPTION)
    dataset = {"URL": bids_dir.resolve().as_uri()}
    if source.get("DatasetDOI"):
        dataset["DOI"] = str(source["DatasetDOI"])
    if source.get("DatasetVersion"):
        dataset["Version"] = str(source["DatasetVersion"])
    return {
        "Name": f"planar3d lesion segmentations of {source.get('Name', bids_dir.name)}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": _PIPELINE,
            "Version": __version__,
            "Description": (f"MS lesion segmentation of raw FLAIR (planar 3D transfer learning, Kolarik et al. 2020). "
                            f"Model: {_model_text(model)} (sha256 {model_sha}). Command: {command}"),
        }],
        "SourceDatasets": [dataset],
        "DatasetLinks": {"raw": bids_dir.resolve().as_uri()},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_group(
    bids_dir: str | Path,
    output_dir: str | Path,
    masks_from: str | None = None,
    participant_label: Sequence[str] | None = None,
    session_label: Sequence[str] | None = None,
    acq: str | None = None,
    run: int | None = None,
    centre_column: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> dict:
    """Gather the participant outputs into group tables (and metrics, with references) and
    :data:`GROUP_REPORT`, one row per FLAIR (every run; ``acq``/``run`` narrow the choice).

    ``command`` is the command line the page records (default ``sys.argv``).

    Returns:
        ``{"lesions": rows of group_lesions.tsv, "metrics": rows of group_metrics.tsv,
        "missing": participants/sessions without outputs}``.

    Raises:
        InputFileError: OUTPUT_DIR holds no planar3d outputs; existing group outputs
            without ``overwrite``; bad BIDS input.
    """
    from planar3d.evaluation.report_figures import plot_metric_boxplots

    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    scans = find_bids_scans(bids_dir, participant_label, session_label, acq=acq, run=run, masks_from=masks_from,
                            centre_column=centre_column, every_flair=True)
    description = output_dir / _DESCRIPTION
    if not description.is_file() or _PIPELINE not in json.dumps(read_json(description).get("GeneratedBy", [])):
        raise InputFileError(output_dir, "holds no planar3d participant outputs; run the participant level first")
    names = ["group_lesions.tsv", "group_lesions.json", GROUP_REPORT]
    if any(scan.mask is not None for scan in scans):
        names += ["group_metrics.tsv", "group_metrics.json", "group_metrics.md", "group_metrics_boxplot.png"]
    check_destinations([output_dir / name for name in names], overwrite=overwrite)

    lesions, metrics, missing = [], [], []
    for scan in scans:
        paths = output_paths(scan, output_dir)
        if not all(paths[k].is_file() for k in ("mask", "stats")):
            missing.append(scan.prefix)
            continue
        with paths["stats"].open(newline="", encoding="utf-8") as handle:
            volumes = [float(row["volume_mm3"]) for row in csv.DictReader(handle, delimiter="\t")]
        lesions.append({"participant_id": scan.participant_id, "session_id": f"ses-{scan.session}" if scan.session else "n/a",
                        "scan": scan.prefix, "n_lesions": len(volumes), "lesion_volume_ml": sum(volumes) / 1000.0})
        if scan.mask is not None:
            values = evaluate_pair(scan.mask, paths["mask"])
            metrics.append({"patient": scan.prefix, "centre": scan.centre or "all",
                            **{key: values[key] for key in MSSEG_KEYS}})
    if missing:
        print(f"warning: no participant outputs for {', '.join(missing)} (run the participant level for them)",
              file=sys.stderr)
    if not lesions:
        raise InputFileError(output_dir, "no participant outputs for the chosen participants")
    _write_tsv(output_dir / "group_lesions.tsv", lesions)
    write_text_atomic(output_dir / "group_lesions.json", json.dumps(GROUP_COLUMNS, indent=2) + "\n")
    if metrics:
        _write_tsv(output_dir / "group_metrics.tsv", metrics)
        columns = {"patient": {"Description": "the entities of the segmented FLAIR image"},
                   "centre": {"Description": "centre (--centre-column, else the sidecar's scanner; all if unknown)"},
                   **{key: {"Description": f"MSSEG-2016 metric {key} (planar3d.evaluation.metrics.msseg_metrics)"} for key in MSSEG_KEYS}}
        write_text_atomic(output_dir / "group_metrics.json", json.dumps(columns, indent=2) + "\n")
        notes = [f"Predictions: `{output_dir}`; references: {masks_from or 'beside the raw scans'}; {len(metrics)} scans."]
        write_text_atomic(output_dir / "group_metrics.md",
                          summary_markdown(metrics, title="planar3d BIDS App: MSSEG-2016 metrics", notes=notes))
        plot_metric_boxplots(metrics, metrics=("dice", "sensitivity", "ppv", "lesion_f1"), by="centre",
                             path=output_dir / "group_metrics_boxplot.png",
                             title=f"planar3d: {len(metrics)} scans", paper=paper_table2())
    model = model_info(_described_models(read_json(description)))
    write_group_report(output_dir / GROUP_REPORT, lesions, metrics, missing,
                       (output_dir / "group_metrics.md").read_text(encoding="utf-8") if metrics else None,
                       output_dir / "group_metrics_boxplot.png" if metrics else None, model,
                       command or "python -m planar3d.bids " + shlex.join(sys.argv[1:]))
    return {"lesions": lesions, "metrics": metrics, "missing": missing}


def _described_models(description: dict) -> list[str]:
    """The model files named in a planar3d ``dataset_description.json`` (``Model: a; b (sha256 ...)``)."""
    for generated in description.get("GeneratedBy", []):
        if isinstance(generated, dict) and generated.get("Name") == _PIPELINE:
            found = re.search(r"Model: (.*?) \(sha256 ", str(generated.get("Description", "")))
            if found:
                return found.group(1).split("; ")
    return []


def _write_tsv(path: Path, rows: Sequence[dict]) -> None:
    write_rows(path, rows, delimiter="\t")
