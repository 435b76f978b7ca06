"""A built-in, offline stand-in for MSSEG-2016: FLAIR-like head phantoms with MS-like lesions.

The anatomy comes from nilearn's bundled MNI152 templates (T1 brain, grey and white matter
probability maps, brain mask; no network). Each subject is a smoothly deformed copy of
that anatomy with FLAIR-like contrast (CSF dark, grey matter brighter than white matter),
a skull and scalp shell (the paper uses raw, not skull-stripped, scans), a smooth bias
field, Rician noise, a random intensity scale, and hyperintense ovoid lesions in white
matter that favour periventricular locations. The lesion mask is exact: it is the set of
voxels whose intensity was changed by a lesion.

Three centres mimic paper Table 1 (native grids ``144x512x512``, ``128x224x256``,
``261x336x336`` times ``scale``), each with its own voxel spacing and axis orientation in
the affine; patient ids follow the MSSEG style (``01...``, ``07...``, ``08...``) and the
files use the MSSEG-2016 layout (``<root>/<id>/3DFLAIR.nii.gz`` + ``Consensus.nii.gz``).
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from planar3d.atomic import replace_folder
from planar3d.config import CHOICES
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io.datasets import MSSEG_MASK_NAME, MSSEG_SCAN_NAME, find_msseg2016
from planar3d.io.phantom_realistic import lesion_anatomy, make_realistic_subject
from planar3d.io.records import Record

__all__ = [
    "make_phantom_dataset",
    "ensure_phantom",
    "default_phantom_root",
    "CentreSpec",
    "CENTRES",
    "DEFAULT_SCALE",
]

#: Native grids are this fraction of the paper's in each dimension (36x128x128, ...).
DEFAULT_SCALE = 0.25
#: phantom modes: ``simple`` (the original) and ``realistic`` (:mod:`planar3d.io.phantom_realistic`).
PHANTOM_VERSION = 1
INFO_NAME = "phantom.json"


@dataclass(frozen=True)
class CentreSpec:
    """How one centre acquires its scans.

    Attributes:
        centre: two-digit centre id, the prefix of its patient ids.
        shape: native voxel grid at scale 1 (paper Table 1).
        field_of_view_mm: physical extent of the grid along each voxel axis.
        axcodes: direction each voxel axis points to (nibabel axis codes).
        tilt_degrees: rotation of the grid about the left-right axis (oblique slices).
        lesion_load: mean fraction of lesion voxels (paper Table 1).
    """

    centre: str
    shape: tuple[int, int, int]
    field_of_view_mm: tuple[float, float, float]
    axcodes: tuple[str, str, str]
    tilt_degrees: float
    lesion_load: float


CENTRES = (
    CentreSpec("01", (144, 512, 512), (172.8, 256.0, 256.0), ("L", "P", "S"), 0.0, 0.00311),
    CentreSpec("07", (128, 224, 256), (166.4, 235.2, 256.0), ("R", "A", "S"), 4.0, 0.00141),
    CentreSpec("08", (261, 336, 336), (195.75, 252.0, 252.0), ("S", "A", "R"), 0.0, 0.00144),
)

# FLAIR-like tissue intensities (arbitrary units, before bias field and scaling)
_TISSUE_INTENSITY = {"gm": 0.75, "wm": 0.55, "csf": 0.12, "skull": 0.08, "marrow": 0.35, "scalp": 0.85}
_LESION_INTENSITY = 1.15
_HEAD_CENTRE_MM = np.array([0.0, -18.0, 12.0])
_MAX_LESIONS = 40
_LESION_RADIUS_MM = (4.0, 12.0)
_COARSE_TEMPLATE_MM = 1.9  # native grids this coarse are sampled from the 2 mm templates


def default_phantom_root() -> Path:
    """The folder holding built-in phantoms: ``$PLANAR3D_HOME/phantoms`` or ``~/.cache/planar3d/phantoms``."""
    home = os.environ.get("PLANAR3D_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "planar3d"
    return base / "phantoms"


def ensure_phantom(root: str | os.PathLike | None = None, **kwargs) -> Path:
    """Return a phantom dataset folder, generating it on first use.

    Args:
        root: dataset folder; default ``default_phantom_root() /
            "msseg-phantom-scale<scale>-n<n>-seed<seed>[-load<l>][-realistic]"``.
        **kwargs: ``n_per_centre``, ``scale``, ``seed``, ``lesion_load``, ``mode`` of
            :func:`make_phantom_dataset`.

    Returns:
        The dataset folder (MSSEG-2016 layout), ready for :func:`planar3d.io.datasets.find_dataset`.

    Raises:
        Planar3DError: bad generation arguments, or ``root`` holds a phantom made with
            other arguments.
    """
    options = _phantom_options(**kwargs)
    if root is None:
        name = f"msseg-phantom-scale{options['scale']:g}-n{options['n_per_centre']}-seed{options['seed']}"
        if options["lesion_load"] is not None:
            name += f"-load{options['lesion_load']:g}"
        if options["mode"] != "simple":
            name += f"-{options['mode']}"
        root = default_phantom_root() / name
    root = Path(root)
    info = root / INFO_NAME
    if info.is_file():
        stored = json.loads(info.read_text(encoding="utf-8")).get("options")
        if isinstance(stored, dict):
            stored = {"mode": "simple", **stored}  # phantoms written before modes existed are simple
        if stored != options:
            raise Planar3DError(f"{root}: holds a phantom made with {stored}, not {options}; choose another root")
        return root
    try:
        make_phantom_dataset(root, **options)
    except InputFileError:
        if not info.is_file():  # a concurrent process may have finished the same dataset
            raise
    return root


def make_phantom_dataset(
    root: str | os.PathLike,
    n_per_centre: int = 5,
    scale: float = DEFAULT_SCALE,
    seed: int = 0,
    lesion_load: float | None = None,
    overwrite: bool = False,
    mode: str = "simple",
) -> list[Record]:
    """Write a phantom dataset in the MSSEG-2016 layout, deterministic for a seed.

    The dataset is generated in a temporary folder beside ``root`` and renamed onto
    ``root`` at the end, so a killed run never leaves a half-written dataset. ``root``
    also gets ``phantom.json`` (options and per-subject facts: lesion count, lesion ratio).

    Args:
        root: output folder (must not exist unless ``overwrite``).
        n_per_centre: subjects per centre (3 centres).
        scale: native grids are the paper's times this factor in each dimension
            (voxel spacing grows accordingly), in (0, 1].
        seed: random seed; the same seed gives identical files.
        lesion_load: target fraction of lesion voxels per subject (e.g. 0.002); None
            uses each centre's paper Table 1 value. Each subject varies around it.
        overwrite: replace an existing ``root``.
        mode: ``simple`` (bright white-matter ovoids, one acquisition for all centres) or
            ``realistic`` (MS lesion types, sizes and partial-volume borders, per-centre
            contrast, bias field and SNR, lesion load per centre exactly Table 1 on average;
            :mod:`planar3d.io.phantom_realistic`).

    Returns:
        The records of the written dataset, sorted by patient id.

    Raises:
        Planar3DError: an argument out of range.
        InputFileError: ``root`` exists and ``overwrite`` is False.
    """
    options = _phantom_options(n_per_centre=n_per_centre, scale=scale, seed=seed, lesion_load=lesion_load, mode=mode)
    root = Path(root)
    if root.exists() and not overwrite:
        raise InputFileError(root, "output exists; pass --overwrite (overwrite=True) to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    finest_mm = min(min(np.array(spec.field_of_view_mm) / np.array(_native_affine(spec, scale)[0])) for spec in CENTRES)
    anatomy = _mni_anatomy(resolution=2 if finest_mm >= _COARSE_TEMPLATE_MM else 1)
    rng = np.random.default_rng(seed)
    sites = None
    if mode == "realistic":

        sites = lesion_anatomy(anatomy)
    subjects = []
    with replace_folder(root) as tmp:  # synced to disk, then renamed onto root
        for spec in CENTRES:
            ids = _patient_ids(spec.centre, n_per_centre, rng)
            subject_rngs = [np.random.default_rng(rng.integers(2**63)) for _ in ids] if sites is not None else None
            if sites is not None:  # loads around the centre's value, averaging to it exactly
                factors = np.array([r.uniform(0.5, 1.5) for r in subject_rngs])
                factors /= factors.mean()
            for index, patient_id in enumerate(ids):
                base_load = spec.lesion_load if lesion_load is None else lesion_load
                facts = {}
                if sites is None:
                    subject_rng = np.random.default_rng(rng.integers(2**63))
                    target = base_load * subject_rng.uniform(0.7, 1.3)
                    scan, mask, affine, n_lesions = _make_subject(anatomy, spec, scale, target, subject_rng)
                else:
                    target = base_load * float(factors[index])
                    scan, mask, affine, facts = _make_realistic_subject(anatomy, sites, spec, scale, target,
                                                                        subject_rngs[index])
                    n_lesions = facts.pop("n_lesions")
                folder = tmp / patient_id
                folder.mkdir()
                _save(scan, affine, folder / MSSEG_SCAN_NAME)
                _save(mask, affine, folder / MSSEG_MASK_NAME)
                subjects.append(
                    {
                        "patient_id": patient_id,
                        "centre": spec.centre,
                        "shape": list(scan.shape),
                        "spacing_mm": [float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(0))],
                        "axcodes": list(nib.aff2axcodes(affine)),
                        "n_lesions": n_lesions,
                        "lesion_ratio": float(mask.mean()),
                        "target_lesion_ratio": float(target),
                        **facts,
                    }
                )
        info = {"version": PHANTOM_VERSION, "options": options, "subjects": subjects}
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return find_msseg2016(root, require_masks=True)


def _phantom_options(
    n_per_centre: int = 5, scale: float = DEFAULT_SCALE, seed: int = 0, lesion_load: float | None = None,
    mode: str = "simple",
) -> dict:
    if mode not in CHOICES["phantom_mode"]:
        raise Planar3DError(f"mode must be one of {list(CHOICES['phantom_mode'])}. Received: mode={mode!r}")
    if isinstance(n_per_centre, bool) or not isinstance(n_per_centre, (int, np.integer)) or n_per_centre < 1:
        raise Planar3DError(f"n_per_centre must be a positive integer. Received: n_per_centre={n_per_centre!r}")
    if n_per_centre > 999:
        raise Planar3DError(f"n_per_centre must be at most 999. Received: n_per_centre={n_per_centre!r}")
    if not 0.05 <= float(scale) <= 1.0:
        raise Planar3DError(f"scale must be in [0.05, 1]. Received: scale={scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise Planar3DError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    if lesion_load is not None and not 0.0 < float(lesion_load) <= 0.05:
        raise Planar3DError(f"lesion_load must be in (0, 0.05] or None. Received: lesion_load={lesion_load!r}")
    return {
        "n_per_centre": int(n_per_centre),
        "scale": float(scale),
        "seed": int(seed),
        "lesion_load": None if lesion_load is None else float(lesion_load),
        "mode": mode,
    }


def _patient_ids(centre: str, count: int, rng: np.random.Generator) -> list[str]:
    numbers = np.sort(rng.choice(np.arange(1, 1000), size=count, replace=False))
    letters = rng.choice(list(string.ascii_uppercase), size=(count, 4))
    return [f"{centre}{number:03d}{''.join(code)}" for number, code in zip(numbers, letters)]


def _mni_anatomy(resolution: int) -> dict:
    """Tissue probability maps on the MNI grid (1 or 2 mm), with a synthetic skull and scalp."""
    from nilearn import datasets  # imported here: nilearn is slow to import

    brain_img = datasets.load_mni152_brain_mask(resolution=1)
    gm = _block_mean(datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32), resolution)
    wm = _block_mean(datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32), resolution)
    brain = _block_mean(brain_img.get_fdata(dtype=np.float32), resolution) > 0.5
    affine = brain_img.affine @ np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] += brain_img.affine[:3, :3] @ np.full(3, (resolution - 1) / 2.0)
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    tissue = np.clip(gm + wm, 0, 1)
    csf = np.where(brain, 1.0 - tissue, 0.0).astype(np.float32)
    # distance (mm) outside the brain: CSF rim, skull (with marrow), scalp
    outside = ndimage.distance_transform_edt(~brain, sampling=resolution).astype(np.float32)
    ramp = lambda a, b: np.clip((outside - a) / (b - a), 0, 1)  # noqa: E731
    csf += (ramp(0, 0.5) * (1 - ramp(2, 3))).astype(np.float32)
    skull = ramp(2, 3) * (1 - ramp(8, 9))
    marrow = ramp(4, 5) * (1 - ramp(6, 7))
    scalp = ramp(8, 9) * (1 - ramp(14, 15))
    # ventricles: CSF deep inside the brain; lesions favour their neighbourhood
    depth = ndimage.distance_transform_edt(brain, sampling=resolution)
    ventricles = (csf > 0.6) & (depth > 15)
    near_ventricles = np.exp(-ndimage.distance_transform_edt(~ventricles, sampling=resolution) / 8.0)
    lesion_weight = np.where(wm > 0.9, 0.15 + near_ventricles, 0.0)
    return {
        "affine": affine,
        "resolution": resolution,
        "channels": {
            "gm": gm,
            "wm": wm,
            "csf": csf,
            "skull": (skull - marrow).astype(np.float32),
            "marrow": marrow.astype(np.float32),
            "scalp": scalp.astype(np.float32),
        },
        "lesion_weight": lesion_weight.astype(np.float64),
    }


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor**3`` blocks (trailing voxels that do not fill a block are dropped)."""
    if factor == 1:
        return volume
    shape = [n // factor for n in volume.shape]
    cropped = volume[tuple(slice(0, n * factor) for n in shape)]
    return cropped.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))


def _native_affine(spec: CentreSpec, scale: float) -> tuple[tuple[int, int, int], np.ndarray]:
    shape = tuple(max(8, int(round(n * scale))) for n in spec.shape)
    spacing = np.array(spec.field_of_view_mm) / np.array(shape)
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    linear = np.zeros((3, 3))
    for column, code in enumerate(spec.axcodes):
        row, sign = axes[code]
        linear[row, column] = sign * spacing[column]
    tilt = np.deg2rad(spec.tilt_degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    linear = rotation @ linear
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = _HEAD_CENTRE_MM - linear @ ((np.array(shape) - 1) / 2.0)
    return shape, affine


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, control: int = 5) -> np.ndarray:
    """A smooth random field of ``shape`` with unit-ish amplitude.

    A ``control**3`` grid of normal values is upsampled cubically to about an eighth of
    ``shape`` per axis, then linearly to ``shape`` (cheap, and smooth at that scale).
    """
    coarse = rng.standard_normal((control,) * len(shape))
    middle_shape = [max(control, n // 8) for n in shape]
    middle = ndimage.zoom(coarse, [m / control for m in middle_shape], order=3, mode="nearest", grid_mode=True)
    return ndimage.zoom(middle, [n / m for n, m in zip(shape, middle_shape)], order=1, mode="nearest", grid_mode=True)


def _subject_geometry(anatomy: dict, spec: CentreSpec, scale: float, rng: np.random.Generator):
    """Native grid, affine, spacing, and the template-space position of every native voxel
    (the subject's head: the template rotated, scaled, shifted and smoothly deformed)."""
    shape, affine = _native_affine(spec, scale)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))

    # world (mm) of every native voxel, deformed into template space
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=-1)
    world = grid @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    angles = np.deg2rad(rng.uniform(-4, 4, size=3))
    rotation = _rotation(angles) * rng.uniform(0.94, 1.06)
    shift = rng.uniform(-4, 4, size=3)
    template_world = (world - _HEAD_CENTRE_MM) @ rotation.T.astype(np.float32) + _HEAD_CENTRE_MM + shift
    for axis in range(3):
        template_world[..., axis] += 3.0 * _sample_field(_smooth_field((6, 6, 6), rng, control=6), template_world)
    mni_inverse = np.linalg.inv(anatomy["affine"])
    template_voxels = template_world @ mni_inverse[:3, :3].T + mni_inverse[:3, 3]
    coords = np.moveaxis(template_voxels, -1, 0).astype(np.float32)
    return shape, affine, spacing, template_world, coords


def _make_subject(
    anatomy: dict, spec: CentreSpec, scale: float, lesion_load: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    shape, affine, spacing, template_world, coords = _subject_geometry(anatomy, spec, scale, rng)

    # FLAIR-like contrast, blurred to the native resolution before sampling
    contrast = {name: value * rng.uniform(0.92, 1.08) for name, value in _TISSUE_INTENSITY.items()}
    channels = anatomy["channels"]
    template_flair = sum(contrast[name] * channels[name] for name in channels)
    sigma = 0.4 * float(spacing.min()) / anatomy["resolution"]
    if sigma > 0.5:
        template_flair = ndimage.gaussian_filter(template_flair, sigma)
    flair = ndimage.map_coordinates(template_flair, coords, order=1, cval=0.0).astype(np.float32)
    wm = ndimage.map_coordinates(channels["wm"], coords, order=1, cval=0.0)

    # lesions: ovoids in template space, until the target lesion load is reached
    flat_world = template_world.reshape(-1, 3)
    by_x = np.argsort(flat_world[:, 0], kind="stable")
    sorted_x = flat_world[by_x, 0]
    flat_flair, flat_wm = flair.reshape(-1), wm.reshape(-1)
    flat_mask = np.zeros(flat_flair.size, dtype=bool)
    weight = anatomy["lesion_weight"]
    cumulative = np.cumsum(weight.ravel())
    n_lesions = 0
    target_voxels = lesion_load * flat_mask.size
    while flat_mask.sum() < target_voxels and n_lesions < _MAX_LESIONS:
        index = int(np.searchsorted(cumulative, rng.uniform(0, cumulative[-1])))
        centre = anatomy["affine"][:3, :3] @ np.array(np.unravel_index(index, weight.shape)) + anatomy["affine"][:3, 3]
        radii = rng.uniform(*_LESION_RADIUS_MM) * rng.uniform(0.6, 1.0, size=3)
        axes = _rotation(rng.uniform(0, np.pi, size=3))
        brightness = _LESION_INTENSITY * rng.uniform(0.9, 1.1)
        start, stop = np.searchsorted(sorted_x, [centre[0] - radii.max(), centre[0] + radii.max()])
        slab = by_x[start:stop]
        near = slab[np.abs(flat_world[slab, 1:] - centre[1:]).max(axis=1) <= radii.max()]
        local = (flat_world[near] - centre) @ axes
        r2 = ((local / radii) ** 2).sum(axis=1)
        inside = (r2 <= 1.0) & (flat_wm[near] > 0.3)
        if not inside.any():
            continue
        voxels = near[inside]
        flat_flair[voxels] = np.maximum(flat_flair[voxels], brightness * (1.0 - 0.35 * r2[inside]))
        flat_mask[voxels] = True
        n_lesions += 1
    mask = flat_mask.reshape(shape)

    # acquisition: bias field, intensity scale, Rician noise, integer storage
    bias = np.exp(0.15 * _smooth_field(shape, rng, control=4)).astype(np.float32)
    flair = flair * bias * rng.uniform(400, 900)
    sigma_noise = 0.025 * float(np.percentile(flair, 99))
    real = flair + rng.normal(0, sigma_noise, shape).astype(np.float32)
    imaginary = rng.normal(0, sigma_noise, shape).astype(np.float32)
    scan = np.round(np.sqrt(real**2 + imaginary**2)).astype(np.int16)
    return scan, mask.astype(np.uint8), affine, n_lesions


def _make_realistic_subject(
    anatomy: dict, sites: dict, spec: CentreSpec, scale: float, lesion_load: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:

    shape, affine, spacing, template_world, coords = _subject_geometry(anatomy, spec, scale, rng)
    linear = np.abs(affine[:3, :3]) / spacing  # direction cosines of the voxel axes
    world_spacing = spacing[np.argmax(linear, axis=1)]  # voxel size along world x, y, z
    scan, mask, facts = make_realistic_subject(
        template_world.reshape(-1, 3), {"coords": coords, "world_spacing": world_spacing}, shape, spacing,
        spec.centre, lesion_load, sites, anatomy, rng,
    )
    return scan, mask, affine, facts


def _sample_field(field: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Sample a small field spanning a 240 mm cube around the head centre at ``world`` (mm)."""
    span = 240.0
    voxel = (world - (_HEAD_CENTRE_MM - span / 2)) * ((np.array(field.shape) - 1) / span)
    return ndimage.map_coordinates(field, np.moveaxis(voxel, -1, 0), order=1, mode="nearest").astype(np.float32)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
