"""The HTML pages of ``predict`` (folder mode) and of the BIDS App, from the files they wrote.

Each page is built by :func:`planar3d.evaluation.html_report.write_report` from what is on
disk (the masks' lesion tables and QC mosaics), so a rerun that skips finished scans still
shows every scan of the folder:

* ``predict --input DIR --output OUT``: ``OUT/report.html`` (:func:`write_predict_report`);
* the BIDS App's participant level: ``OUTPUT_DIR/sub-<label>[_ses-<label>].html``, one page
  per participant and session as fMRIPrep names its per-session reports
  (:func:`write_participant_report`);
* its group level: ``OUTPUT_DIR/group_report.html`` (:func:`write_group_report`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from planar3d.evaluation.html_report import figure_png, lesions_outside_head, write_report

__all__ = ["LESION_COLUMNS", "lesion_load_figure", "read_lesion_table", "scan_section", "write_group_report", "write_participant_report",
           "write_predict_report"]


#: The lesion table columns a page shows, in order (others, e.g. an ensemble's, follow).
LESION_COLUMNS = ("id", "voxels", "volume_mm3", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "mean_probability")


def read_lesion_table(path: Path) -> list[dict] | None:
    """The rows of a ``*_lesions.csv``/``.json`` or a BIDS ``*_stats.tsv``; None when unreadable."""
    try:
        if path.suffix == ".json":
            return list(json.loads(path.read_text(encoding="utf-8")).get("lesions", []))
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))
    except (OSError, ValueError, AttributeError):
        return None
    return [{("id" if key == "lesion_id" else key): value for key, value in row.items()} for row in rows]


def _columns(rows: Sequence[Mapping]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys += [key for key in row if key not in keys]
    return [c for c in LESION_COLUMNS if c in keys] + [k for k in keys if k not in LESION_COLUMNS]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _volume_ml(rows: Sequence[Mapping]) -> float:
    return sum(float(row["volume_mm3"]) for row in rows if row.get("volume_mm3") not in (None, "", "n/a")) / 1000.0


def scan_section(name: str, qc: Path | None, lesions: Sequence[Mapping] | None, note: str | None = None) -> dict:
    """A section for one scan: its QC mosaic and its lesion table (sortable)."""
    text = [note] if note else []
    if lesions is not None:
        text.append(f"{_count(len(lesions), 'lesion')}, {_volume_ml(lesions):.2f} ml.")
    tables = []
    if lesions is not None:
        tables.append({"title": f"{name}: lesions", "rows": list(lesions), "columns": _columns(lesions),
                       "empty": "no lesion predicted"})
    images = [(qc, f"{name}: the FLAIR with the predicted lesions outlined")] if qc is not None else []
    return {"title": name, "text": text, "images": images, "tables": tables}


def _outside_head_warning(name: str, lesions: Sequence[Mapping] | None) -> list[str]:
    ids = lesions_outside_head(lesions or [])
    return [f"{name}: {_count(len(ids), 'lesion')} outside the head mask (id {', '.join(map(str, ids[:10]))}"
            f"{' ...' if len(ids) > 10 else ''}): false positives, most likely"] if ids else []


def write_predict_report(output_dir: Path, pairs: Sequence[tuple[Path, Path]], failures: Sequence[str],
                         model: Mapping, command: str) -> Path:
    """``output_dir/report.html`` for ``predict``'s folder mode.

    Args:
        output_dir: the output folder.
        pairs: every ``(FLAIR, mask)`` of the run (:func:`planar3d.apps.predict.scan_outputs_pairs`).
        failures: the FLAIRs that failed this time; a mapping also gives each one's error line.
        model: :func:`planar3d.evaluation.html_report.model_info`.
        command: the command line.
    """
    failed = set(failures)
    rows, sections, warnings = [], [], []
    for flair, mask in pairs:
        name = mask.name[: -len("_mask.nii.gz")] if mask.name.endswith("_mask.nii.gz") else mask.name
        base = mask.parent / (mask.name[: -len(".nii.gz")] if mask.name.endswith(".nii.gz") else mask.stem)
        table_file = base.with_name(base.name + "_lesions.json")
        qc = base.with_name(base.name + "_qc.png")
        if str(flair) in failed or not mask.is_file():
            status = "failed" if str(flair) in failed else "not segmented"
            if str(flair) in failed:
                reason = failures.get(str(flair)) if isinstance(failures, Mapping) else None
                warnings.append(f"{name}: segmentation failed: {reason}" if reason
                                else f"{name}: segmentation failed ({flair}); the error is printed on stderr")
            rows.append({"scan": name, "status": status, "lesions": None, "volume_ml": None, "flair": str(flair)})
            continue
        lesions = read_lesion_table(table_file) if table_file.is_file() else None
        warnings += _outside_head_warning(name, lesions)
        rows.append({"scan": name, "status": "segmented", "lesions": None if lesions is None else len(lesions),
                     "volume_ml": None if lesions is None else round(_volume_ml(lesions), 4), "flair": str(flair)})
        sections.append(scan_section(name, qc if qc.is_file() else None, lesions,
                                     note=f"FLAIR {flair}; mask {mask.name}"))
    done = [r for r in rows if r["status"] == "segmented"]
    totals = {"scans": len(rows), "segmented": len(done), "failed": sum(r["status"] == "failed" for r in rows),
              "lesions": sum(r["lesions"] or 0 for r in done),
              "lesion volume (ml)": round(sum(r["volume_ml"] or 0.0 for r in done), 3)}
    summary = {"title": "Scans", "tables": [{"rows": rows, "columns": ["scan", "status", "lesions", "volume_ml", "flair"]}],
               "text": ["One row per input scan; click a column header to sort. Per-lesion tables and QC mosaics below; "
                        f"the group table is {output_dir / 'lesion_summary.csv'}."]}
    return write_report(output_dir / "report.html", f"planar3d predict: {output_dir.name}",
                        sections=[summary, *sections], warnings=warnings, totals=totals, model=model, command=command)


def write_participant_report(path: Path, title: str, scans: Sequence[Mapping], failures: Sequence[str],
                             model: Mapping, command: str) -> Path:
    """One BIDS participant (and session) page.

    Args:
        path: ``OUTPUT_DIR/sub-<label>[_ses-<label>].html``.
        title: e.g. ``"sub-01 ses-1"``.
        scans: one mapping per FLAIR: ``name`` (its entities), ``flair``, ``qc`` (the mosaic's
            path), ``stats`` (the ``*_stats.tsv``).
        failures: error lines for the participant.
        model, command: as :func:`write_predict_report`.
    """
    rows, sections, warnings = [], [], [f"{title}: {failure}" for failure in failures]
    for scan in scans:
        stats = Path(scan["stats"])
        lesions = read_lesion_table(stats) if stats.is_file() else None
        if lesions is None:
            warnings.append(f"{scan['name']}: no outputs ({stats.name} missing)")
        warnings += _outside_head_warning(scan["name"], lesions)
        rows.append({"scan": scan["name"], "lesions": None if lesions is None else len(lesions),
                     "volume_ml": None if lesions is None else round(_volume_ml(lesions), 4), "flair": str(scan["flair"])})
        qc = Path(scan["qc"])
        sections.append(scan_section(scan["name"], qc if qc.is_file() else None, lesions, note=f"FLAIR {scan['flair']}"))
    totals = {"FLAIR scans": len(rows), "lesions": sum(r["lesions"] or 0 for r in rows),
              "lesion volume (ml)": round(sum(r["volume_ml"] or 0.0 for r in rows), 3)}
    summary = {"title": "Scans", "tables": [{"rows": rows, "columns": ["scan", "lesions", "volume_ml", "flair"]}]}
    return write_report(path, f"planar3d: {title}", sections=[summary, *sections], warnings=warnings, totals=totals,
                        model=model, command=command)


def write_group_report(path: Path, lesions: Sequence[Mapping], metrics: Sequence[Mapping], missing: Sequence[str],
                       metrics_markdown: str | None, boxplot: Path | None, model: Mapping, command: str) -> Path:
    """The BIDS App's group page: every scan's lesion count and volume (table and plot), and the
    metrics against references when there are any."""
    warnings = [f"no participant outputs for {', '.join(missing)} (run the participant level for them)"] if missing else []
    volumes = [float(row["lesion_volume_ml"]) for row in lesions]
    totals = {"scans": len(lesions), "participants": len({row["participant_id"] for row in lesions}),
              "lesions": sum(int(row["n_lesions"]) for row in lesions), "lesion volume (ml)": round(sum(volumes), 3)}
    figure = lesion_load_figure(lesions, label="scan", title=f"planar3d: {len(lesions)} scans")
    sections = [{"title": "Lesion load", "tables": [{"rows": list(lesions)}],
                 "images": [{"data": figure_png(figure), "caption": "lesion count and volume per scan"}],
                 "text": ["One row per FLAIR scan (group_lesions.tsv); click a column header to sort. Each participant's "
                          "page (sub-<label>[_ses-<label>].html) shows its mosaics and lesion tables."]}]
    if metrics:
        section = {"title": "Metrics against the references", "tables": [{"title": "per scan (group_metrics.tsv)",
                                                                          "rows": list(metrics)}],
                   "markdown": metrics_markdown or ""}
        if boxplot is not None:
            section["images"] = [(boxplot, "MSSEG-2016 metrics per centre (group_metrics_boxplot.png)")]
        sections.append(section)
    return write_report(path, "planar3d: group report", sections=sections, warnings=warnings, totals=totals,
                        model=model, command=command)


def lesion_load_figure(rows: Sequence[Mapping], label: str = "scan", title: str | None = None):
    """Two bar charts, one bar per scan: lesion count (``n_lesions``) and total lesion volume
    (``lesion_volume_ml``), scans in the order of ``rows``, labelled by ``label``; a matplotlib
    figure on an Agg canvas (:func:`planar3d.evaluation.report_figures.new_figure`)."""
    from matplotlib.ticker import MaxNLocator

    from planar3d.evaluation.report_figures import new_figure

    names = [str(row[label]) for row in rows]
    figure = new_figure(11.0, max(2.6, 0.28 * len(rows) + 1.4))
    left, right = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(rows))
    for axes, key, colour, name in ((left, "n_lesions", "#4c78a8", "lesions"),
                                    (right, "lesion_volume_ml", "#e45756", "lesion volume (ml)")):
        axes.barh(positions, [float(row[key]) for row in rows], color=colour)
        axes.set_xlabel(name)
        axes.grid(axis="x", alpha=0.3)
        if key == "n_lesions":
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_yticks(positions)
    left.set_yticklabels(names, fontsize=8)
    left.invert_yaxis()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
