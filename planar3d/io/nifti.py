"""Reading and writing NIfTI files: scans, masks on the scan's grid, binary checks, atomic saves.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from planar3d.atomic import atomic_path
from planar3d.errors import InputFileError, Planar3DError

__all__ = ["AFFINE_TOLERANCE_MM", "check_binary", "grid_mismatch", "load_channel", "load_mask", "load_nifti", "load_scan", "mask_voxels", "one_line", "save_nifti"]


#: Largest absolute difference between two affines' entries (mm) for one voxel grid.
AFFINE_TOLERANCE_MM = 1e-3


def grid_mismatch(img: nib.Nifti1Image, reference: nib.Nifti1Image, tolerance: float = AFFINE_TOLERANCE_MM) -> str | None:
    """How ``img``'s voxel grid differs from ``reference``'s, or None when they share it.

    Two grids are the same when their shapes are equal and their affines agree to within
    ``tolerance`` (mm, absolute) in every entry, so voxel ``(i, j, k)`` of one lies where it
    does in the other. Every grid check of the package (masks, other modalities, ``evaluate``'s
    pairs) asks this function.

    Returns:
        None, or a phrase such as ``"shape (10, 12, 8) differs from (10, 12, 9)"`` or
        ``"affine differs (by up to 0.5)"``, for the caller's one-line error.
    """
    if tuple(img.shape[:3]) != tuple(reference.shape[:3]):
        return f"shape {tuple(img.shape)} differs from {tuple(reference.shape)}"
    difference = float(np.max(np.abs(np.asarray(img.affine, float) - np.asarray(reference.affine, float))))
    if not difference <= tolerance:  # also refuses NaN
        return f"affine differs (by up to {difference:.2g})"
    return None


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
        raise InputFileError(path, f"truncated or corrupt voxel data ({one_line(error)})") from error
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


def load_channel(path: str | os.PathLike, flair_img: nib.Nifti1Image, modality: str) -> nib.Nifti1Image:
    """Load another scan of the FLAIR's patient (:func:`load_scan`) and check that it lies on the FLAIR's grid.

    Raises:
        InputFileError: as :func:`load_scan`, or its shape or affine differs from the FLAIR's (the
            scans are stacked voxel by voxel: co-register and resample it onto the FLAIR first).
    """
    img = load_scan(path)
    mismatch = grid_mismatch(img, flair_img)
    if mismatch:
        raise InputFileError(path, f"{modality} scan is not on the FLAIR's grid: {mismatch}; "
                             "resample it onto the FLAIR's grid first")
    return img


def load_mask(path: str | os.PathLike, scan_img: nib.Nifti1Image,
              labels: Sequence[int] | None = None) -> nib.Nifti1Image:
    """Load a binary lesion mask (or a label map) and check it against its scan.

    Masks must contain only the values 0 and 1 (any dtype); they are not binarised
    silently, because a soft or label mask usually means the wrong file. A label map
    (BRATS) is read with ``labels``: the voxels holding one of those values become 1.

    Args:
        path: the mask file.
        scan_img: the scan the mask belongs to (from :func:`load_scan`).
        labels: the label values that are the target; None for a binary mask.

    Returns:
        The binary mask (values 0 and 1) on the scan's grid.

    Raises:
        InputFileError: as :func:`load_nifti`, or the mask's shape or affine differs from
            the scan's, or it holds values other than 0 and 1 (binary mask), or values that
            are not whole numbers (label map).
    """
    img = load_nifti(path)
    mismatch = grid_mismatch(img, scan_img)
    if mismatch:
        raise InputFileError(path, f"mask is not on the scan's grid: {mismatch}")
    target = mask_voxels(path, img.get_fdata(dtype=np.float32), labels)
    if labels is None:
        return img
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    return nib.Nifti1Image(target.astype(np.uint8), img.affine, header)


def mask_voxels(path: str | os.PathLike, data: np.ndarray, labels: Sequence[int] | None = None) -> np.ndarray:
    """The target voxels of a binary mask (``labels`` None, :func:`check_binary`) or of a label map
    (the voxels holding one of ``labels``), as a bool array.

    Raises:
        InputFileError: a binary mask with other values than 0 and 1, or a label map with values
            that are not whole numbers.
    """
    if labels is None:
        return check_binary(path, data)
    fractional = data[data != np.round(data)]
    if fractional.size:
        raise InputFileError(path, f"label map holds {fractional.size} voxels that are not whole numbers "
                             f"(e.g. {float(fractional[0])!r})")
    return np.isin(data, np.asarray(labels, dtype=np.float32))


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
            reference (use :func:`planar3d.data.preprocess.to_native` first).
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


def _read_image(path: Path) -> nib.Nifti1Image:
    """Parse a NIfTI file; a ``.gz`` file is decompressed whole so that its CRC is checked."""
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        except gzip.BadGzipFile as error:
            problem = "not a NIfTI image" if "not a gzipped file" in str(error).lower() else "truncated or corrupt voxel data"
            raise InputFileError(path, f"{problem} ({one_line(error)})") from error
        except (EOFError, zlib.error, OSError) as error:
            raise InputFileError(path, f"truncated or corrupt voxel data ({one_line(error)})") from error
        image_class = nib.Nifti2Image if raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Image
        parse = lambda: image_class.from_bytes(raw)  # noqa: E731
    else:
        parse = lambda: nib.load(path)  # noqa: E731
    try:
        with _quiet_nibabel():
            img = parse()
    except Exception as error:  # nibabel raises many types for a foreign file
        raise InputFileError(path, f"not a NIfTI image ({one_line(error)})") from error
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


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
