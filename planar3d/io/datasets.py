"""Finding a dataset's patients on disk, whatever its layout.

These layouts are understood:

* MSSEG-2016 *unprocessed* training layout: one folder per patient id holding
  ``3DFLAIR.nii.gz`` and ``Consensus.nii.gz`` (and the other scans :data:`MSSEG_CHANNELS`). The path given may be that folder's parent
  (``TrainingDataset_MSSEG/``) or any ancestor up to three levels above the patient
  folders (e.g. the folder holding ``Unprocessed training dataset/``). The centre is the
  first two characters of the patient id.
* A table (``.csv`` or ``.tsv``) with the columns ``subject, centre, flair, mask``; an
  empty ``mask`` cell means "no mask"; optional columns named after the other scans
  (``t1, t1c, t2, pd``) give them. Relative paths are resolved against the table's
  folder.
* A BIDS dataset (a folder holding ``dataset_description.json``), read by
  :mod:`planar3d.io.bids`.
* The public Ljubljana MS sets as distributed (cross-sectional ``raw/``, ``coregistered/``
  and ``MNI/`` variants of ``patientNN/``; the longitudinal ``patientNN/study{1,2}_*``
  layout), read by :mod:`planar3d.io.ljubljana`.
* BRATS case folders (2013 as shipped with DeepMedic; 2017-2021), read by
  :mod:`planar3d.io.brats`, whose label maps give the ``target`` region.

A folder is searched up to three levels down and must hold one layout (one variant).

Every problem with a file raises :class:`~planar3d.errors.InputFileError` whose one-line
message starts with the file's path.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from planar3d.config import MODALITIES
from planar3d.errors import InputFileError
from planar3d.io import brats, ljubljana
from planar3d.io.bids import bids_records
from planar3d.io.nifti import one_line
from planar3d.io.records import Record

__all__ = [
    "LAYOUTS", "MSSEG_CHANNELS", "MSSEG_MASK_NAME", "MSSEG_SCAN_NAME", "TABLE_COLUMNS", "find_dataset", "find_msseg2016", "find_patient_folders",
    "known_dataset", "read_dataset_table", "scan_channels",
]


MSSEG_SCAN_NAME = "3DFLAIR.nii.gz"


MSSEG_MASK_NAME = "Consensus.nii.gz"


#: the MSSEG-2016 unprocessed scans besides the FLAIR, by modality (on their own grids: they are
#: stacked only after co-registration onto the FLAIR).
MSSEG_CHANNELS = {"t1": "3DT1.nii.gz", "t1c": "3DT1GADO.nii.gz", "t2": "T2.nii.gz", "pd": "DP.nii.gz"}


TABLE_COLUMNS = ("subject", "centre", "flair", "mask")


_MAX_SEARCH_DEPTH = 3  # patient folders at most this many levels below the given root


#: folder layouts -> (is this folder a patient of the layout, its records).
LAYOUTS = {
    "MSSEG-2016": (lambda folder: (folder / MSSEG_SCAN_NAME).is_file(), None),
    "Ljubljana cross-sectional": (ljubljana.is_cross_sectional_patient,
                                  lambda folder, masks, target: [ljubljana.cross_sectional_record(folder, masks)]),
    "Ljubljana longitudinal": (ljubljana.is_longitudinal_patient,
                               lambda folder, masks, target: ljubljana.longitudinal_records(folder, masks)),
    "BRATS": (brats.is_brats_case, lambda folder, masks, target: [brats.brats_record(folder, masks, target)]),
}


def find_dataset(path: str | os.PathLike, require_masks: bool = False, bids: dict | None = None,
                 target: str = "auto") -> list[Record]:
    """Find the patients of a dataset: a BIDS root, a folder of patient folders or a CSV/TSV table.

    Args:
        path: a BIDS dataset root (holding ``dataset_description.json``) for
            :func:`planar3d.io.bids.bids_records`, another folder for
            :func:`find_patient_folders` (MSSEG-2016, Ljubljana or BRATS layout), or a
            ``.csv``/``.tsv`` file for :func:`read_dataset_table`.
        require_masks: raise if a patient has no mask (training needs them all).
        bids: keyword options of :func:`planar3d.io.bids.find_bids_scans` (``masks_from``,
            ``acq``, ``run``, ``centre_column``, ``participant_label``, ``session_label``);
            options set to a value other than None are refused for other layouts.
        target: a :data:`planar3d.config.TARGETS` name; BRATS regions need BRATS folders.

    Returns:
        Records sorted by patient id.

    Raises:
        InputFileError: the path is missing, has an unknown type, or a listed file is
            missing; no patients; duplicate patient ids; a missing mask when required; a
            tumour target for a dataset that is not BRATS.
    """
    path = Path(path)
    bids = {k: v for k, v in (bids or {}).items() if v is not None}
    if path.is_dir() and (path / "dataset_description.json").is_file():
        _refuse_target(path, target, "a BIDS dataset")
        return bids_records(path, require_masks=require_masks, **bids)
    if bids:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(bids))
        raise InputFileError(path, f"{flags} need a BIDS dataset (a folder holding dataset_description.json)")
    if path.is_dir():
        return find_patient_folders(path, require_masks=require_masks, target=target)
    if path.is_file():
        _refuse_target(path, target, "a dataset table")
        return read_dataset_table(path, require_masks=require_masks)
    raise InputFileError(path, "dataset not found (expected a folder or a .csv/.tsv table)")


def find_patient_folders(root: str | os.PathLike, require_masks: bool = False, target: str = "auto") -> list[Record]:
    """The patients of the one :data:`LAYOUTS` layout found in ``root`` (up to three levels down).

    Raises:
        InputFileError: ``root`` is not a folder; no patient folder; folders of several
            layouts, or of several variants of one (``raw/`` and ``MNI/``); duplicate
            patient ids; a missing mask when required; a tumour target without BRATS.
    """
    records = known_dataset(root, require_masks=require_masks, target=target)
    if records is None:
        raise InputFileError(root, f"no patient folders of a known layout ({', '.join(LAYOUTS)}) found up to "
                             f"{_MAX_SEARCH_DEPTH} levels down")
    return records


def known_dataset(root: str | os.PathLike, require_masks: bool = False, target: str = "auto") -> list[Record] | None:
    """:func:`find_patient_folders`, or None when ``root`` holds no patient folder of a known layout
    (a plain folder of scans or masks, for ``predict`` and ``evaluate``).

    Raises:
        InputFileError: as :func:`find_patient_folders`, except for finding no patient folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "not a folder")
    found: dict[str, list[Path]] = {}
    for folder in _folders_below(root, _MAX_SEARCH_DEPTH):
        layout = next((name for name, (is_patient, _) in LAYOUTS.items() if is_patient(folder)), None)
        if layout is not None:
            found.setdefault(layout, []).append(folder)
    if not found:
        return None
    if len(found) > 1:
        examples = "; ".join(f"{name}: {folders[0].relative_to(root).as_posix() or '.'}" for name, folders in found.items())
        raise InputFileError(root, f"holds several dataset layouts ({examples}); point --data at one of them")
    (layout, folders), = found.items()
    if layout != "BRATS":
        _refuse_target(root, target, f"the {layout} layout")
    if layout == "MSSEG-2016":
        return find_msseg2016(root, require_masks=require_masks)
    variants = sorted({folder.parent for folder in folders})
    if len(variants) > 1:
        names = [variant.relative_to(root).as_posix() or "." for variant in variants]
        raise InputFileError(root, f"holds {len(variants)} variants of the {layout} set ({', '.join(names)}); "
                             "point --data at one of them")
    records = [record for folder in folders for record in LAYOUTS[layout][1](folder, require_masks, target)]
    return sorted(records, key=lambda record: record.patient_id)


def _refuse_target(path: Path, target: str, what: str) -> None:
    if target != "auto":
        raise InputFileError(path, f"--target {target} needs BRATS case folders (label maps); {what} has binary masks")


def find_msseg2016(root: str | os.PathLike, require_masks: bool = False) -> list[Record]:
    """Find the patients of an MSSEG-2016 unprocessed training set below ``root``.

    A patient folder is a folder holding ``3DFLAIR.nii.gz``, at most three levels below
    ``root`` (so ``root`` may be the patients' parent ``TrainingDataset_MSSEG/`` or an
    ancestor up to the archive's top folder). Its name is the patient id; the first two
    characters are the centre. ``Consensus.nii.gz`` beside it is the mask (None if
    absent).

    Args:
        root: the folder to search.
        require_masks: raise if a patient folder has no ``Consensus.nii.gz``.

    Returns:
        Records sorted by patient id.

    Raises:
        InputFileError: ``root`` is not a folder, no patient folder was found, two
            folders have the same patient id, a patient id is shorter than 3 characters,
            or a mask is missing while required.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "not a folder")
    records: dict[str, Record] = {}
    for folder in _folders_below(root, _MAX_SEARCH_DEPTH):
        scan = folder / MSSEG_SCAN_NAME
        if not scan.is_file():
            continue
        patient_id = folder.name
        if len(patient_id) < 3:
            raise InputFileError(folder, "patient folder name must be an id starting with a 2-character centre")
        if patient_id in records:
            raise InputFileError(
                folder, f"duplicate patient id {patient_id!r} (also at {records[patient_id].flair.parent})"
            )
        mask = folder / MSSEG_MASK_NAME
        if not mask.is_file():
            if require_masks:
                raise InputFileError(mask, "file not found (every patient needs a lesion mask)")
            mask = None
        channels = tuple((name, folder / file) for name, file in MSSEG_CHANNELS.items() if (folder / file).is_file())
        records[patient_id] = Record(patient_id, patient_id[:2], scan, mask, channels=channels)
    if not records:
        raise InputFileError(
            root, f"no patient folders with {MSSEG_SCAN_NAME} found up to {_MAX_SEARCH_DEPTH} levels down"
        )
    return [records[key] for key in sorted(records)]


def read_dataset_table(path: str | os.PathLike, require_masks: bool = False) -> list[Record]:
    """Read a dataset table with the columns ``subject, centre, flair, mask``.

    The delimiter is a tab for ``.tsv`` and a comma for ``.csv``. Columns named after a modality
    other than the FLAIR (``t1``, ``t1c``, ``t2``, ``pd``) give that scan (an empty cell: none);
    other extra columns are ignored; an empty ``mask`` cell (or no ``mask`` column) means no mask. Relative
    paths are resolved against the table's folder.

    Returns:
        Records sorted by patient id (``subject``).

    Raises:
        InputFileError: unknown extension, unreadable table, missing columns, empty
            cells, no rows, duplicate subjects, or a listed file that does not exist.
    """
    path = Path(path)
    delimiters = {".csv": ",", ".tsv": "\t"}
    if path.suffix.lower() not in delimiters:
        raise InputFileError(path, f"dataset table must end in .csv or .tsv, got {path.suffix or 'no extension'!r}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, delimiter=delimiters[path.suffix.lower()]))
            columns = [name.strip() for name in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputFileError(path, f"cannot read table ({one_line(error)})") from error
    if not rows:
        raise InputFileError(path, "table has no rows")
    missing = [name for name in TABLE_COLUMNS[:3] if name not in columns]
    if missing:
        raise InputFileError(path, f"missing columns {missing}; expected {list(TABLE_COLUMNS)}, found {columns}")
    records: dict[str, Record] = {}
    for line, row in enumerate(rows, start=2):
        row = {(key or "").strip(): (value or "").strip() for key, value in row.items()}
        subject, centre, flair, mask = (row.get(name, "") for name in TABLE_COLUMNS)
        for name, value in zip(TABLE_COLUMNS[:3], (subject, centre, flair)):
            if not value:
                raise InputFileError(path, f"line {line}: empty {name!r}")
        if subject in records:
            raise InputFileError(path, f"line {line}: duplicate subject {subject!r}")
        flair_path = _resolve(path.parent, flair)
        if not flair_path.is_file():
            raise InputFileError(flair_path, f"file not found (listed in {path.name} line {line})")
        mask_path = _resolve(path.parent, mask) if mask else None
        if mask_path is not None and not mask_path.is_file():
            raise InputFileError(mask_path, f"file not found (listed in {path.name} line {line})")
        if mask_path is None and require_masks:
            raise InputFileError(path, f"line {line}: subject {subject!r} has no mask")
        channels = []
        for modality in (name for name in MODALITIES[1:] if row.get(name)):
            channel = _resolve(path.parent, row[modality])
            if not channel.is_file():
                raise InputFileError(channel, f"file not found (listed in {path.name} line {line}, column {modality})")
            channels.append((modality, channel))
        records[subject] = Record(subject, centre, flair_path, mask_path, channels=tuple(channels))
    return [records[key] for key in sorted(records)]


def scan_channels(flair: str | os.PathLike, modalities: Sequence[str]) -> list[Path]:
    """The files of ``modalities`` (FLAIR first) for one FLAIR, its other scans found beside it.

    The FLAIR's folder must be a patient folder of a known layout (:data:`LAYOUTS`: a BRATS case,
    a Ljubljana or MSSEG-2016 patient) listing the other scans; for the FLAIR alone, no search.

    Raises:
        InputFileError: the folder is of no known layout, or the patient has no scan of a modality.
    """
    flair = Path(flair)
    if list(modalities) == ["flair"]:
        return [flair]
    records = known_dataset(flair.parent) if flair.parent.is_dir() else None
    record = next((r for r in records or () if r.flair.resolve() == flair.resolve()), None)
    if record is None:
        raise InputFileError(flair, f"the model stacks {' '.join(modalities)}: planar3d finds the other scans in the "
                             f"FLAIR's patient folder of a known layout ({', '.join(LAYOUTS)}), and this FLAIR is not "
                             "in one")
    return record.scan_files(modalities)


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _folders_below(root: Path, depth: int) -> list[Path]:
    """``root`` and its sub-folders down to ``depth`` levels, hidden ones skipped."""
    found, level = [root], [root]
    for _ in range(depth):
        level = [
            child
            for folder in level
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.name.startswith(".")
        ]
        found.extend(level)
    return found
