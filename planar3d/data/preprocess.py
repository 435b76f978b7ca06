"""Paper preprocessing of a raw FLAIR scan, and its exact inverse.

:func:`preprocess` reorients a scan from its affine so that axis 0 runs left-right
(slices along axis 0 are sagittal, as in the paper), resamples it to ``size**3`` with
``scipy.ndimage.zoom`` (spline order 2 for the scan, 0 for the mask) and scales the scan
to ``[-1, 1]``. :func:`to_native` undoes the resampling and the reorientation of a
probability volume so that it lands on the scan's original voxel grid.

The reference code hard-codes a ``rot90`` + flip and ignores the affine; here the
orientation comes from the affine (nibabel orientation tools), so scans stored with any
axis order or flips give the same preprocessed volume.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage

from planar3d.errors import Planar3DError
from planar3d.io.nifti import grid_mismatch

__all__ = ["preprocess", "preprocess_channels", "to_native", "check_size", "SAGITTAL_AXCODES", "PREPROCESS_VERSION", "SIZE_MULTIPLE"]

#: Voxel axis directions after reorientation: axis 0 toward Right (sagittal slices),
#: axis 1 toward Inferior (image rows top to bottom), axis 2 toward Posterior
#: (image columns, nose on the left as in radiological sagittal views).
SAGITTAL_AXCODES = ("R", "I", "P")
#: Bump when the preprocessing changes so that cached volumes are rebuilt.
PREPROCESS_VERSION = 1
SIZE_MULTIPLE = 16
SCAN_SPLINE_ORDER = 2  # paper
MASK_SPLINE_ORDER = 0
ROBUST_PERCENTILES = (0.5, 99.5)


def preprocess(
    flair_img: nib.Nifti1Image,
    mask_img: nib.Nifti1Image | None = None,
    size: int = 256,
    robust: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Reorient, resample and normalise a FLAIR scan (and its mask) as in the paper.

    Steps: (1) reorient from the affine to :data:`SAGITTAL_AXCODES`; (2) resample to
    ``(size, size, size)`` with ``scipy.ndimage.zoom`` (corner-aligned grids, spline
    order 2 for the scan, 0 for the mask); (3) min-max scale the scan to ``[-1, 1]``
    (``robust=True``: between the 0.5th and 99.5th percentiles, then clipped) and
    keep the mask in ``{0, 1}``.

    Args:
        flair_img: the 3D scan (e.g. from :func:`planar3d.io.nifti.load_scan`).
        mask_img: its binary mask on the same grid, or None.
        size: edge of the output cube, a positive multiple of 16 (paper: 256).
        robust: percentile instead of plain min-max scaling (paper: plain).

    Returns:
        ``(volume, mask, meta)``: ``volume`` float32 ``(slices, rows, cols)`` =
        ``(size, size, size)`` in ``[-1, 1]`` with slices sagittal; ``mask`` float32 of
        the same shape in ``{0, 1}`` or None; ``meta`` a JSON-serialisable dict with
        what :func:`to_native` needs (native shape, affine, orientation transform,
        zoom factors) plus native spacing and, with a mask, the native lesion ratio.

    Raises:
        Planar3DError: ``size`` is not a positive multiple of 16, or the scan is not 3D.
    """
    size = check_size(size)
    if len(flair_img.shape) != 3:
        raise Planar3DError(f"scan must be 3D. Received: shape={tuple(flair_img.shape)}")
    native_shape = tuple(int(n) for n in flair_img.shape)
    native_ornt = io_orientation(flair_img.affine)
    target_ornt = axcodes2ornt(SAGITTAL_AXCODES)
    transform = ornt_transform(native_ornt, target_ornt)

    # reorient
    scan = apply_orientation(flair_img.get_fdata(dtype=np.float32), transform)
    reoriented_shape = scan.shape
    zoom = [size / n for n in reoriented_shape]

    # resample
    scan = ndimage.zoom(scan, zoom, order=SCAN_SPLINE_ORDER)
    _check_resampled(scan, (size,) * 3)

    # normalise
    low, high = _intensity_range(scan, robust)
    volume = np.clip((scan - low) / (high - low) * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)

    mask = None
    lesion_ratio = None
    if mask_img is not None:
        if tuple(mask_img.shape) != native_shape:
            raise Planar3DError(
                f"mask shape must equal the scan shape {native_shape}. Received: shape={tuple(mask_img.shape)}"
            )
        native_mask = np.asarray(mask_img.get_fdata(dtype=np.float32) > 0.5, dtype=np.float32)
        lesion_ratio = float(native_mask.mean())
        mask = ndimage.zoom(apply_orientation(native_mask, transform), zoom, order=MASK_SPLINE_ORDER)
        _check_resampled(mask, (size,) * 3)
        mask = (mask > 0.5).astype(np.float32)

    meta = {
        "version": PREPROCESS_VERSION,
        "size": size,
        "robust": bool(robust),
        "native_shape": list(native_shape),
        "native_affine": np.asarray(flair_img.affine, dtype=float).tolist(),
        "native_axcodes": list(nib.aff2axcodes(flair_img.affine)),
        "native_spacing": [float(z) for z in flair_img.header.get_zooms()[:3]],
        "target_axcodes": list(SAGITTAL_AXCODES),
        "orientation_transform": transform.tolist(),
        "reoriented_shape": [int(n) for n in reoriented_shape],
        "zoom": zoom,
        "intensity_range": [float(low), float(high)],
        "native_lesion_ratio": lesion_ratio,
    }
    return volume, mask, meta


def preprocess_channels(
    flair_img: nib.Nifti1Image,
    channel_imgs: list[nib.Nifti1Image],
    mask_img: nib.Nifti1Image | None = None,
    size: int = 256,
    robust: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """:func:`preprocess` of the FLAIR, then of each other scan on its grid, stacked as channels.

    Every scan is reoriented, resampled and scaled to ``[-1, 1]`` on its own intensity range, as
    the FLAIR; since they share the FLAIR's grid (:func:`planar3d.io.nifti.load_channel`), their
    voxels stay aligned. Without ``channel_imgs`` this is :func:`preprocess` exactly.

    Returns:
        ``(volume, mask, meta)``: ``volume`` float32 ``(size, size, size)`` without other scans, else
        ``(size, size, size, 1 + len(channel_imgs))`` with the FLAIR as channel 0; ``mask`` and
        ``meta`` the FLAIR's (``meta["channel_intensity_ranges"]`` added with other scans).

    Raises:
        Planar3DError: as :func:`preprocess`, or a scan not on the FLAIR's grid.
    """
    volume, mask, meta = preprocess(flair_img, mask_img, size=size, robust=robust)
    if not channel_imgs:
        return volume, mask, meta
    channels, ranges = [volume], [meta["intensity_range"]]
    for img in channel_imgs:
        mismatch = grid_mismatch(img, flair_img)
        if mismatch:
            raise Planar3DError(f"every scan must lie on the FLAIR's grid: {mismatch}")
        channel, _, channel_meta = preprocess(img, None, size=size, robust=robust)
        channels.append(channel)
        ranges.append(channel_meta["intensity_range"])
    return np.stack(channels, axis=-1), mask, {**meta, "channel_intensity_ranges": ranges}


def to_native(prob_volume: np.ndarray, meta: dict, order: int = 1) -> np.ndarray:
    """Map a volume from the preprocessed cube back onto the scan's native voxel grid.

    Inverts :func:`preprocess`: resamples ``(size, size, size)`` to the reoriented
    native shape with ``scipy.ndimage.zoom`` (same corner-aligned grid) and undoes the
    reorientation. Saving the result with
    ``save_nifti(out, reference_img=<original scan>, ...)`` puts it on the original grid.
    Threshold after this call, in native space.

    Args:
        prob_volume: ``(size, size, size)`` array in preprocessed orientation, e.g.
            lesion probabilities.
        meta: the dict returned by :func:`preprocess` (or read back from JSON).
        order: spline order of the resampling (1 = linear; orders above 1 are clipped
            to the input's range).

    Returns:
        float32 array of shape ``meta["native_shape"]`` in the scan's axis order.

    Raises:
        Planar3DError: the volume's shape does not match ``meta`` or ``order`` is not
            in 0..5.
    """
    size = int(meta["size"])
    prob_volume = np.asarray(prob_volume, dtype=np.float32)
    if prob_volume.shape != (size,) * 3:
        raise Planar3DError(
            f"volume shape must be {(size,) * 3} as in meta. Received: shape={prob_volume.shape}"
        )
    if order not in range(6):
        raise Planar3DError(f"order must be an integer in 0..5. Received: order={order!r}")
    reoriented_shape = tuple(int(n) for n in meta["reoriented_shape"])
    zoom = [n / size for n in reoriented_shape]
    native = ndimage.zoom(prob_volume, zoom, order=order)
    _check_resampled(native, reoriented_shape)
    if order > 1:
        native = np.clip(native, prob_volume.min(), prob_volume.max())
    # invert the reorientation: from the target axis codes back to the native ones
    inverse = ornt_transform(axcodes2ornt(tuple(meta["target_axcodes"])), _native_ornt(meta))
    native = apply_orientation(native, inverse)
    if list(native.shape) != list(meta["native_shape"]):
        raise Planar3DError(f"inverse produced shape {native.shape}, expected {tuple(meta['native_shape'])}")
    return np.ascontiguousarray(native, dtype=np.float32)


def _native_ornt(meta: dict) -> np.ndarray:
    return io_orientation(np.asarray(meta["native_affine"], dtype=float))


def check_size(size: int) -> int:
    """Return ``size`` as an int if it is a positive multiple of 16, else raise Planar3DError."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0 or size % SIZE_MULTIPLE:
        raise Planar3DError(f"size must be a positive multiple of {SIZE_MULTIPLE}. Received: size={size!r}")
    return int(size)


def _check_resampled(array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != tuple(expected):
        raise Planar3DError(f"resampling produced shape {array.shape}, expected {tuple(expected)}")


def _intensity_range(scan: np.ndarray, robust: bool) -> tuple[float, float]:
    if robust:
        low, high = (float(v) for v in np.percentile(scan, ROBUST_PERCENTILES))
    else:
        low, high = float(scan.min()), float(scan.max())
    if high <= low:
        raise Planar3DError(f"scan has no intensity range after resampling. Received: min=max={low!r}")
    return low, high
