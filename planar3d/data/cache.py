"""Preprocessed-volume cache and the paper's cross-validation split.

Preprocessing a raw scan to 256^3 takes seconds to minutes, so it happens once: each
case is stored under ``<cache_dir>/<key>/`` as ``volume.npy`` (float32; with several modalities
their channels on the last axis, FLAIR first), ``mask.npy``
(float32, when the case has a mask) and ``meta.json``, and later loads memory-map the
arrays. The key is a SHA-256 of the scans' and mask's file contents and of every
preprocessing parameter (the modalities stacked among them) (size, robust scaling, target orientation, preprocessing
version), so a changed file or parameter is a cache miss. An entry is written into a
temporary folder, synced to disk and renamed into place when complete, so a killed process
or a power cut never leaves an entry that is read as valid, and readers never see a
half-written one; an entry whose files are unreadable is moved aside and rebuilt. Several
processes may fill one cache at once (folds started in parallel): each entry is published
by exactly one of them, the others use it. Entries get the modes the umask implies (0755
folders, 0644 files under umask 022), so a cache can be shared.

The default cache folder is ``$PLANAR3D_HOME/cache`` (else ``~/.cache/planar3d/cache``):
keys depend on content only, so one cache serves every dataset and run, including
read-only data folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.atomic import publish_folder, temp_folder
from planar3d.data.preprocess import PREPROCESS_VERSION, SAGITTAL_AXCODES, check_size, preprocess_channels
from planar3d.errors import Planar3DError
from planar3d.io.nifti import load_channel, load_mask, load_scan
from planar3d.io.records import Record

__all__ = ["CachedCase", "cache_key", "default_cache_dir", "load_case", "load_cases"]


_VOLUME_NAME = "volume.npy"


_MASK_NAME = "mask.npy"


_META_NAME = "meta.json"


_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class CachedCase:
    """One preprocessed patient, memory-mapped from the cache.

    Attributes:
        patient_id: the record's patient id.
        centre: the record's centre.
        volume: read-only float32 memmap ``(slices, rows, cols)`` = ``(size, size, size)``
            in ``[-1, 1]``, slices sagittal; with several modalities ``(size, size, size, channels)``,
            the FLAIR as channel 0.
        mask: read-only float32 memmap of the same shape in ``{0, 1}``, or None.
        meta: JSON-serialisable preprocessing facts for
            :func:`planar3d.data.preprocess.to_native`.
        record: where the case came from.
    """

    patient_id: str
    centre: str
    volume: np.ndarray
    mask: np.ndarray | None
    meta: dict
    record: Record


def default_cache_dir() -> Path:
    """``$PLANAR3D_HOME/cache`` if set, else ``~/.cache/planar3d/cache``."""
    home = os.environ.get("PLANAR3D_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "planar3d"
    return base / "cache"


def cache_key(record: Record, size: int = 256, robust: bool = False, modalities: Sequence[str] = ("flair",)) -> str:
    """Hex SHA-256 of the record's file contents and the preprocessing parameters.

    Raises:
        InputFileError: a modality the record has no scan of.
    """
    digest = hashlib.sha256()
    parameters = {
        "version": PREPROCESS_VERSION,
        "size": int(size),
        "robust": bool(robust),
        "axcodes": list(SAGITTAL_AXCODES),
    }
    if record.mask_labels is not None:  # absent for binary masks, so their keys stay as they were
        parameters["mask_labels"] = sorted(int(label) for label in record.mask_labels)
    scans = record.scan_files(modalities)
    if list(modalities) != ["flair"]:  # absent for the FLAIR alone, so its keys stay as they were
        parameters["modalities"] = list(modalities)
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    for path in (scans[0], record.mask, *scans[1:]):
        digest.update(b"\0mask\0" if path is record.mask else b"\0scan\0")
        if path is not None:
            digest.update(_file_sha256(path).encode())
    return digest.hexdigest()


def load_cases(
    records: list[Record],
    size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    robust: bool = False,
    progress: bool = True,
    modalities: Sequence[str] = ("flair",),
) -> list[CachedCase]:
    """Preprocess (on a cache miss) and memory-map (always) every record.

    Args:
        records: from :func:`planar3d.io.datasets.find_dataset`.
        size: edge of the preprocessed cube, a positive multiple of 16 (paper: 256).
        cache_dir: cache folder; default :func:`default_cache_dir`.
        robust: percentile intensity scaling instead of plain min-max (paper: False).
        progress: show a tqdm progress bar.
        modalities: the scans to stack as channels (:data:`planar3d.config.MODALITIES`, FLAIR first);
            ``("flair",)``: the FLAIR alone, volumes `(size, size, size)`.

    Returns:
        One :class:`CachedCase` per record, in the records' order.

    Raises:
        Planar3DError: bad ``size``, duplicate patient ids.
        InputFileError: a bad scan or mask file (see :mod:`planar3d.io.datasets`), a modality a
            patient has no scan of, or a scan not on its FLAIR's grid.
    """
    size = check_size(size)
    ids = [record.patient_id for record in records]
    duplicates = sorted({pid for pid in ids if ids.count(pid) > 1})
    if duplicates:
        raise Planar3DError(f"patient ids must be unique. Received duplicates: {duplicates}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    iterator = records
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(records, desc=f"preprocess {size}^3", unit="scan")
    return [load_case(record, size, cache_dir, robust, modalities) for record in iterator]


def load_case(record: Record, size: int, cache_dir: str | os.PathLike, robust: bool = False,
              modalities: Sequence[str] = ("flair",)) -> CachedCase:
    """Load one record through the cache (see :func:`load_cases`)."""
    readable_id = re.sub(r"[^A-Za-z0-9_-]", "_", record.patient_id)[:40]
    entry = Path(cache_dir) / f"{readable_id}-{cache_key(record, size, robust, modalities)[:32]}"
    shape = (size,) * 3 if list(modalities) == ["flair"] else (size,) * 3 + (len(modalities),)
    for _ in range(3):  # a damaged entry is moved aside, rebuilt, and read again
        case = _read_entry(entry, record, shape)
        if case is not None:
            return case
        _write_entry(entry, record, size, robust, modalities)
    raise Planar3DError(f"{entry}: cache entry unreadable right after writing it")


def _read_entry(entry: Path, record: Record, shape: tuple[int, ...]) -> CachedCase | None:
    """The cached case, or None when the entry is missing or damaged (it is then removed)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / _META_NAME).read_text(encoding="utf-8"))
        volume = np.load(entry / _VOLUME_NAME, mmap_mode="r")
        mask = np.load(entry / _MASK_NAME, mmap_mode="r") if record.mask is not None else None
        if volume.shape != shape or (mask is not None and mask.shape != shape[:3]):
            raise ValueError("wrong shape")
        if any(array.dtype != np.float32 for array in (volume, mask) if array is not None):
            raise ValueError("wrong dtype")
    except (OSError, ValueError, KeyError):
        _discard(entry)
        return None
    return CachedCase(record.patient_id, record.centre, volume, mask, meta, record)


def _write_entry(entry: Path, record: Record, size: int, robust: bool, modalities: Sequence[str]) -> None:
    flair, *others = record.scan_files(modalities)
    scan_img = load_scan(flair)
    channel_imgs = [load_channel(path, scan_img, name) for name, path in zip(modalities[1:], others)]
    mask_img = load_mask(record.mask, scan_img, record.mask_labels) if record.mask is not None else None
    volume, mask, meta = preprocess_channels(scan_img, channel_imgs, mask_img, size=size, robust=robust)
    meta = {**meta, "patient_id": record.patient_id, "flair": str(record.flair), "mask": _str_or_none(record.mask)}
    if others:
        meta["modalities"] = {name: str(path) for name, path in zip(modalities, (flair, *others))}
    tmp = temp_folder(entry.parent, prefix=f".tmp-{entry.name}-")
    try:
        np.save(tmp / _VOLUME_NAME, volume.astype(np.float32))
        if mask is not None:
            np.save(tmp / _MASK_NAME, mask.astype(np.float32))
        (tmp / _META_NAME).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        publish_folder(tmp, entry)  # False: another process published the same entry first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(entry: Path) -> None:
    """Move a damaged entry aside in one rename (so no reader sees it half-deleted), then delete it."""
    trash = entry.with_name(f".trash-{entry.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(entry, trash)
    except OSError:
        return  # already moved aside (or replaced) by another process
    shutil.rmtree(trash, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)
