"""Reading and writing NIfTI scans, and finding a dataset's patients on disk.

Two dataset layouts are understood:

* MSSEG-2016 *unprocessed* training layout: one folder per patient id holding
  ``3DFLAIR.nii.gz`` and ``Consensus.nii.gz``. The path given may be that folder's parent
  (``TrainingDataset_MSSEG/``) or any ancestor up to three levels above the patient
  folders (e.g. the folder holding ``Unprocessed training dataset/``). The centre is the
  first two characters of the patient id.
* A table (``.csv`` or ``.tsv``) with the columns ``subject, centre, flair, mask``; an
  empty ``mask`` cell means "no mask". Relative paths are resolved against the table's
  folder.
* A BIDS dataset (a folder holding ``dataset_description.json``), read by
  :mod:`planar3d.bidsio`.

Every problem with a file raises :class:`~planar3d.errors.InputFileError` whose one-line
message starts with the file's path.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from planar3d.atomic import atomic_path
from planar3d.errors import InputFileError, Planar3DError

__all__ = [
    "Record",
    "load_nifti",
    "load_scan",
    "load_mask",
    "check_binary",
    "save_nifti",
    "find_dataset",
    "find_msseg2016",
    "read_dataset_table",
    "MSSEG_SCAN_NAME",
    "MSSEG_MASK_NAME",
]

MSSEG_SCAN_NAME = "3DFLAIR.nii.gz"
MSSEG_MASK_NAME = "Consensus.nii.gz"
TABLE_COLUMNS = ("subject", "centre", "flair", "mask")
_MAX_SEARCH_DEPTH = 3  # patient folders at most this many levels below the given root
_AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Record:
    """One patient: where its FLAIR scan and (optional) lesion mask are.

    Attributes:
        patient_id: unique id, e.g. ``"01016SACH"``.
        centre: centre label, e.g. ``"01"`` (first two characters of an MSSEG id).
        flair: path of the FLAIR scan.
        mask: path of the binary lesion mask, or None when the patient has none.
        subject: the person the scan belongs to when one person has several scans (BIDS
            sessions: ``"sub-01"``); the cross-validation keeps them in one fold. None:
            the patient id is the person.
    """

    patient_id: str
    centre: str
    flair: Path
    mask: Path | None = None
    subject: str | None = None


def load_nifti(path: str | os.PathLike) -> nib.Nifti1Image:
    """Load a 3D NIfTI image and check that its voxels can be read and are finite.

    A 4D image whose trailing axes all have length 1 is accepted and treated as 3D.
    The voxel data are read once (as float32, cached in the image), so a truncated or
    corrupt file fails here rather than later.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        The image; ``img.get_fdata(dtype=np.float32)`` returns the cached voxels of
        shape ``img.shape[:3]``.

    Raises:
        InputFileError: missing file, not a NIfTI file, unreadable (truncated or corrupt)
            voxel data, not 3D, or NaN/Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    if not path.is_file():
        raise InputFileError(path, "not a file")
    img = _read_image(path)
    shape = img.shape
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        img = img.slicer[(slice(None),) * 3 + (0,) * (len(shape) - 3)]
    if len(img.shape) != 3:
        raise InputFileError(path, f"expected a 3D image, got {len(shape)}D of shape {tuple(shape)}")
    try:
        data = img.get_fdata(dtype=np.float32, caching="fill")
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise InputFileError(path, f"truncated or corrupt voxel data ({_one_line(error)})") from error
    if not np.all(np.isfinite(data)):
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise InputFileError(path, f"{n_bad} voxels are NaN or Inf; clean the image first")
    return img


def load_scan(path: str | os.PathLike) -> nib.Nifti1Image:
    """Load a FLAIR scan: :func:`load_nifti` plus a check that it is not constant.

    Raises:
        InputFileError: as :func:`load_nifti`, or every voxel has the same value.
    """
    img = load_nifti(path)
    data = img.get_fdata(dtype=np.float32)
    if data.min() == data.max():
        raise InputFileError(path, f"constant image (every voxel is {float(data.min())!r})")
    return img


def load_mask(path: str | os.PathLike, scan_img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Load a binary lesion mask and check it against its scan.

    Masks must contain only the values 0 and 1 (any dtype); they are not binarised
    silently, because a soft or label mask usually means the wrong file.

    Args:
        path: the mask file.
        scan_img: the scan the mask belongs to (from :func:`load_scan`).

    Raises:
        InputFileError: as :func:`load_nifti`, or the mask's shape or affine differs from
            the scan's, or it holds values other than 0 and 1.
    """
    img = load_nifti(path)
    if img.shape != scan_img.shape:
        raise InputFileError(
            path, f"mask shape {tuple(img.shape)} does not match scan shape {tuple(scan_img.shape)}"
        )
    if not np.allclose(img.affine, scan_img.affine, rtol=0, atol=_AFFINE_TOLERANCE_MM):
        worst = float(np.max(np.abs(img.affine - scan_img.affine)))
        raise InputFileError(path, f"mask affine differs from the scan's (by up to {worst:.4g})")
    check_binary(path, img.get_fdata(dtype=np.float32))
    return img


def check_binary(path: str | os.PathLike, data: np.ndarray) -> np.ndarray:
    """Return ``data == 1`` after checking that every voxel is 0 or 1.

    Raises:
        InputFileError: other values (e.g. a 0/255 mask), named with their count.
    """
    others = data[(data != 0) & (data != 1)]
    if others.size:
        raise InputFileError(
            path,
            f"mask is not binary: {others.size} voxels have values other than 0 and 1 "
            f"(e.g. {float(others[0])!r}); binarise it first",
        )
    return data == 1


def save_nifti(
    array: np.ndarray,
    reference_img: nib.Nifti1Image,
    path: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Write ``array`` on the grid of ``reference_img``, atomically.

    The output keeps the reference's qform and sform (matrices and codes) and its
    spatial header fields (voxel sizes, units, dim_info); the data type is the array's
    (bool is written as uint8, float64 as float32) without intensity scaling.

    Args:
        array: voxels of shape ``reference_img.shape[:3]``, same axis order as the
            reference (use :func:`planar3d.preprocess.to_native` first).
        reference_img: the image whose grid the array is on.
        path: output file, ``.nii`` or ``.nii.gz``.
        overwrite: replace an existing file.

    Returns:
        The output path.

    Raises:
        Planar3DError: the array's shape differs from the reference's.
        InputFileError: the output exists and ``overwrite`` is False.
    """
    array = np.asarray(array)
    shape = tuple(reference_img.shape[:3])
    if array.shape != shape:
        raise Planar3DError(
            f"array shape must equal the reference image shape {shape}. Received: shape={array.shape}"
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    header = reference_img.header.copy()
    if len(header.get_data_shape()) != 3:
        header.set_data_shape(shape)
    header.set_data_dtype(array.dtype)
    img = type(reference_img)(array, reference_img.affine, header)
    for form in ("qform", "sform"):
        matrix, code = getattr(reference_img.header, f"get_{form}")(coded=True)
        if matrix is None:
            matrix = getattr(reference_img.header, f"get_{form}")(coded=False)
        getattr(img, f"set_{form}")(matrix, code=int(code))
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, tmp)
    return Path(path)


def find_dataset(path: str | os.PathLike, require_masks: bool = False, bids: dict | None = None) -> list[Record]:
    """Find the patients of a dataset: a BIDS root, a folder (MSSEG-2016 layout) or a CSV/TSV table.

    Args:
        path: a BIDS dataset root (holding ``dataset_description.json``) for
            :func:`planar3d.bidsio.bids_records`, another folder for :func:`find_msseg2016`,
            or a ``.csv``/``.tsv`` file for :func:`read_dataset_table`.
        require_masks: raise if a patient has no mask (training needs them all).
        bids: keyword options of :func:`planar3d.bidsio.find_bids_scans` (``masks_from``,
            ``acq``, ``run``, ``centre_column``, ``participant_label``, ``session_label``);
            options set to a value other than None are refused for other layouts.

    Returns:
        Records sorted by patient id.

    Raises:
        InputFileError: the path is missing, has an unknown type, or a listed file is
            missing; no patients; duplicate patient ids; a missing mask when required.
    """
    path = Path(path)
    bids = {k: v for k, v in (bids or {}).items() if v is not None}
    if path.is_dir() and (path / "dataset_description.json").is_file():
        from planar3d.bidsio import bids_records

        return bids_records(path, require_masks=require_masks, **bids)
    if bids:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(bids))
        raise InputFileError(path, f"{flags} need a BIDS dataset (a folder holding dataset_description.json)")
    if path.is_dir():
        return find_msseg2016(path, require_masks=require_masks)
    if path.is_file():
        return read_dataset_table(path, require_masks=require_masks)
    raise InputFileError(path, "dataset not found (expected a folder or a .csv/.tsv table)")


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
        records[patient_id] = Record(patient_id, patient_id[:2], scan, mask)
    if not records:
        raise InputFileError(
            root, f"no patient folders with {MSSEG_SCAN_NAME} found up to {_MAX_SEARCH_DEPTH} levels down"
        )
    return [records[key] for key in sorted(records)]


def read_dataset_table(path: str | os.PathLike, require_masks: bool = False) -> list[Record]:
    """Read a dataset table with the columns ``subject, centre, flair, mask``.

    The delimiter is a tab for ``.tsv`` and a comma for ``.csv``. Extra columns are
    ignored; an empty ``mask`` cell (or no ``mask`` column) means no mask. Relative
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
        raise InputFileError(path, f"cannot read table ({_one_line(error)})") from error
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
        records[subject] = Record(subject, centre, flair_path, mask_path)
    return [records[key] for key in sorted(records)]


def _read_image(path: Path) -> nib.Nifti1Image:
    """Parse a NIfTI file; a ``.gz`` file is decompressed whole so that its CRC is checked."""
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        except gzip.BadGzipFile as error:
            problem = "not a NIfTI image" if "not a gzipped file" in str(error).lower() else "truncated or corrupt voxel data"
            raise InputFileError(path, f"{problem} ({_one_line(error)})") from error
        except (EOFError, zlib.error, OSError) as error:
            raise InputFileError(path, f"truncated or corrupt voxel data ({_one_line(error)})") from error
        image_class = nib.Nifti2Image if raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Image
        parse = lambda: image_class.from_bytes(raw)  # noqa: E731
    else:
        parse = lambda: nib.load(path)  # noqa: E731
    try:
        with _quiet_nibabel():
            img = parse()
    except Exception as error:  # nibabel raises many types for a foreign file
        raise InputFileError(path, f"not a NIfTI image ({_one_line(error)})") from error
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputFileError(path, f"not a NIfTI image (read as {type(img).__name__})")
    return img


@contextlib.contextmanager
def _quiet_nibabel():
    """Silence nibabel's header-check log lines ("sizeof_hdr should be 348; ..."): a bad
    header is reported in our one-line error instead, a fixable one is used as fixed."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


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


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
