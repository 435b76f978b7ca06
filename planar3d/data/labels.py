"""Whole-volume labels for classification: the ``subject,label`` table and the phantom's target.

A labels table is a CSV (or TSV) file with the columns ``subject`` and ``label``; every
label is a class index ``0, 1, ...`` (``0``/``1`` for a binary target), and the indices
used must be ``0 .. K-1`` without gaps. :func:`read_labels` checks the table against the
dataset's scans: every scan needs a label and every labelled subject a scan.

The built-in phantom has no clinical label, so :func:`lesion_load_labels` gives it one that a
model must read from the image: **lesion load above the median of the subject's centre**
(``1``) or not (``0``). Lesion load is the fraction of lesion voxels of the subject's
reference mask on its native grid. The median is taken per centre because the phantom's
centres (as MSSEG-2016's, paper Table 1) differ about twofold in lesion load *and* in grid,
spacing, orientation and intensity: a median over all subjects would be predictable from
the scanner alone, without looking at a single lesion. Within a centre the scanner says
nothing, only the lesions' volume does.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.atomic import write_rows
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io.nifti import load_mask, load_scan
from planar3d.io.records import Record

__all__ = ["LABEL_COLUMNS", "lesion_load_labels", "read_labels", "write_labels"]

LABEL_COLUMNS = ("subject", "label")


def read_labels(path: str | os.PathLike, records: Sequence[Record]) -> dict[str, int]:
    """Read a ``subject,label`` table and check it against the dataset's records.

    Args:
        path: the ``.csv`` / ``.tsv`` table (extra columns are ignored).
        records: the dataset's scans (:func:`planar3d.io.datasets.find_dataset`).

    Returns:
        ``{patient_id: class index}`` for every record, in the records' order.

    Raises:
        InputFileError: the table is missing or lacks a column; a label that is not a class
            index (``unknown label``); a subject listed twice; a subject without a scan in
            the dataset; a scan without a label (``missing subject``); one class only;
            class indices with a gap.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "labels table not found")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not set(LABEL_COLUMNS) <= set(columns):
            raise InputFileError(path, f"labels table needs the columns subject,label. Received: {columns}")
        rows = [({k.strip(): (v or "").strip() for k, v in row.items() if k}, reader.line_num) for row in reader]
    labels: dict[str, int] = {}
    for row, line in rows:
        subject, value = row["subject"], row["label"]
        if not subject:
            raise InputFileError(path, f"line {line}: empty subject")
        if not value.isdigit():
            raise InputFileError(
                path, f"line {line}: unknown label {value!r} for subject {subject} (labels are class indices 0, 1, ...)"
            )
        if subject in labels:
            raise InputFileError(path, f"line {line}: subject {subject} is listed twice")
        labels[subject] = int(value)

    scans = {record.patient_id for record in records}
    for row, line in rows:
        if row["subject"] not in scans:
            raise InputFileError(path, f"line {line}: subject {row['subject']} has no scan in the dataset")
    missing = [record.patient_id for record in records if record.patient_id not in labels]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputFileError(path, f"missing subject: no label for {len(missing)} scan(s) of the dataset: {shown}")
    classes = sorted(set(labels.values()))
    if len(classes) < 2:
        raise InputFileError(path, f"one class only: every subject has label {classes[0]}; a classifier needs two or more")
    if classes != list(range(len(classes))):
        raise InputFileError(path, f"class indices must be 0..{len(classes) - 1} without gaps. Received: {classes}")
    return {record.patient_id: labels[record.patient_id] for record in records}


def lesion_load_labels(records: Sequence[Record]) -> dict[str, int]:
    """The phantom's classification target: lesion load above the median of the centre.

    Args:
        records: scans with reference masks (lesion load is their mean on the native grid).

    Returns:
        ``{patient_id: 1 if its lesion load exceeds its centre's median else 0}``; with an odd
        number of subjects per centre the median subject is 0 (5 per centre: 2 ones, 3 zeros).

    Raises:
        Planar3DError: a record without a mask, or fewer than two subjects in a centre.
        InputFileError: an unreadable scan or mask.
    """
    loads: dict[str, dict[str, float]] = defaultdict(dict)
    for record in records:
        if record.mask is None:
            raise Planar3DError(f"{record.flair}: the lesion-load target needs a lesion mask for every subject")
        mask = np.asarray(load_mask(record.mask, load_scan(record.flair), record.mask_labels).dataobj) > 0.5
        loads[record.centre][record.patient_id] = float(mask.mean())
    labels: dict[str, int] = {}
    for centre, by_subject in loads.items():
        if len(by_subject) < 2:
            raise Planar3DError(f"the lesion-load target needs two or more subjects per centre. Received: 1 in centre {centre}")
        median = float(np.median(list(by_subject.values())))
        labels.update({subject: int(load > median) for subject, load in by_subject.items()})
    return {record.patient_id: labels[record.patient_id] for record in records}


def write_labels(path: str | os.PathLike, labels: dict[str, int], overwrite: bool = False) -> Path:
    """Write ``{subject: label}`` as a ``subject,label`` CSV, atomically; return its path.

    Raises:
        InputFileError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    return write_rows(path, [dict(zip(LABEL_COLUMNS, item)) for item in sorted(labels.items())], overwrite=overwrite)
