"""The ``realistic`` phantom mode: MS-like lesions and per-centre acquisition.

The ``simple`` mode (:mod:`planar3d.io.phantom`) draws bright ovoids in white matter with one
contrast, bias and noise level for every centre. A method can score well on it for reasons
that do not hold on MSSEG-2016, so this mode adds what makes the real task hard:

- **Lesion types and places** as MS lesions have them (the McDonald/MAGNIMS locations:
  periventricular, juxtacortical, infratentorial; Filippi et al., Lancet Neurol 15:292,
  2016, and Thompson et al., Lancet Neurol 17:162, 2018): periventricular ovoids whose long
  axis is perpendicular to the ventricular wall ("Dawson's fingers", Horowitz et al., AJNR
  10:303, 1989), juxtacortical lesions touching the cortex, infratentorial lesions in the
  brainstem and cerebellar white matter, deep white-matter lesions, and confluent plaques
  (clusters of overlapping ovoids around the ventricles).
- **Sizes** from 3 mm³ (MSSEG-2016's smallest scored lesion, Commowick et al., Sci Rep
  8:13650, 2018) to several ml, log-normal (heavy right tail: few large plaques, many
  small lesions).
- **Partial-volume borders**: each voxel's lesion fraction falls from 1 to 0 over one voxel
  across the lesion surface; the voxel's intensity mixes tissue and lesion by that fraction,
  and the mask is the set of voxels whose fraction is at least one half (as a rater marks a
  voxel that is mostly lesion). Lesions below a voxel leave a faint, unmasked brightening.
- **Acquisition per centre** (:data:`ACQUISITION`): contrast (grey/white and lesion/white
  ratios), a smooth multiplicative bias field (intensity non-uniformity of 20-40 % across
  the head, the range BrainWeb simulates; Kwan, Evans & Pike, IEEE TMI 18:1085, 1999; Sled,
  Zijdenbos & Evans, IEEE TMI 17:87, 1998) and Rician magnitude noise (Gudbjartsson & Patz,
  MRM 34:910, 1995) at a per-centre SNR, the resolution of the centre's native grid (paper
  Table 1) with a point-spread blur anisotropic like its voxels, and its orientation.
- **Lesion load per centre** as paper Table 1 (0.311 %, 0.141 %, 0.144 % of the voxels):
  each subject's target varies around it, normalised so that a centre's mean is exactly
  Table 1, and lesions are added until the mask reaches the target.

The contrast and SNR values are assumptions (the paper reports neither), ordered as the
MSSEG-2016 scanners would be: centre 07 stands for the 1.5 T scanner of the challenge's
training data (lower SNR and contrast), 01 and 08 for 3 T scanners.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ACQUISITION", "LESION_TYPES", "Acquisition", "acquire", "lesion_anatomy", "make_realistic_subject"]


@dataclass(frozen=True)
class Acquisition:
    """How one centre's scanner renders a head (the ``realistic`` mode).

    Attributes:
        snr: mean white-matter signal / noise sigma of the Rician noise.
        bias_amplitude: standard deviation of the log bias field (0.06: about 1.3x between the
            brightest and darkest point of the head).
        gm_wm: grey-matter / white-matter intensity ratio (FLAIR: grey brighter).
        lesion_wm: lesion / white-matter intensity ratio at a lesion's core.
        csf_wm: CSF / white-matter ratio (FLAIR: dark, imperfect suppression).
    """

    snr: float
    bias_amplitude: float
    gm_wm: float
    lesion_wm: float
    csf_wm: float


#: per centre; assumed values (see the module docstring): 07 is the 1.5 T-like centre.
ACQUISITION = {
    "01": Acquisition(snr=22.0, bias_amplitude=0.06, gm_wm=1.28, lesion_wm=1.60, csf_wm=0.22),
    "07": Acquisition(snr=12.0, bias_amplitude=0.04, gm_wm=1.15, lesion_wm=1.38, csf_wm=0.30),
    "08": Acquisition(snr=18.0, bias_amplitude=0.07, gm_wm=1.22, lesion_wm=1.50, csf_wm=0.18),
}

#: lesion type -> probability of a new lesion being of that type.
LESION_TYPES = {"periventricular": 0.40, "juxtacortical": 0.20, "infratentorial": 0.12, "deep_white": 0.18,
                "confluent": 0.10}

_WM_INTENSITY = 0.55
_VOLUME_MEDIAN_MM3 = 40.0
_VOLUME_SIGMA = 1.3  # log-normal: 5 % of lesions above ~340 mm³, 1 % above ~800 mm³
_VOLUME_RANGE_MM3 = (3.0, 6000.0)
_MAX_ATTEMPTS = 600
_TENTORIUM_Z_MM = -22.0  # MNI z below which lesions count as infratentorial


def lesion_anatomy(anatomy: dict) -> dict:
    """Where each lesion type may start, on the template grid, and the ventricles' normals.

    Args:
        anatomy: from ``planar3d.io.phantom._mni_anatomy`` (tissue maps and affine).

    Returns:
        ``weights`` (type -> cumulative sampling weights over template voxels) and
        ``normal`` (unit vectors, ``(x, y, z, 3)``: the gradient of the distance to the
        ventricles, i.e. perpendicular to the ventricular wall).
    """
    channels, resolution, affine = anatomy["channels"], anatomy["resolution"], anatomy["affine"]
    wm, gm, csf = channels["wm"], channels["gm"], channels["csf"]
    brain = (wm + gm) > 0.5
    depth = ndimage.distance_transform_edt(brain | (csf > 0.5), sampling=resolution)
    ventricles = (csf > 0.6) & (depth > 15)
    to_ventricles = ndimage.distance_transform_edt(~ventricles, sampling=resolution)
    to_cortex = ndimage.distance_transform_edt(gm < 0.5, sampling=resolution)
    x_mm, y_mm, z_mm = (affine[:3, :3] @ np.indices(wm.shape).reshape(3, -1) + affine[:3, 3:4]).reshape(3, *wm.shape)
    # posterior fossa (MNI): cerebellum behind y = -40 mm, brainstem within 15 mm of the midline
    posterior_fossa = (z_mm < _TENTORIUM_Z_MM) & ((y_mm < -40) | ((np.abs(x_mm) < 15) & (y_mm < -10)))
    supratentorial = z_mm > _TENTORIUM_Z_MM + 8
    weights = {
        "periventricular": (wm > 0.7) & (to_ventricles > 1) & (to_ventricles < 9) & supratentorial,
        "juxtacortical": (wm > 0.45) & (to_cortex < 3.5) & supratentorial & (to_ventricles > 12),
        "infratentorial": (wm > 0.6) & posterior_fossa,
        "deep_white": (wm > 0.9) & (to_ventricles > 10) & supratentorial,
    }
    weights["confluent"] = weights["periventricular"]
    gradient = np.stack(np.gradient(to_ventricles), axis=-1)
    normal = gradient / np.maximum(np.linalg.norm(gradient, axis=-1, keepdims=True), 1e-6)
    return {"weights": {name: np.cumsum(mask.ravel().astype(np.float64)) for name, mask in weights.items()},
            "shape": wm.shape, "normal": normal.astype(np.float32)}


def acquire(clean: np.ndarray, bias: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply by the bias field and add Rician noise: ``|clean * bias + n_re + i n_im|``.

    Args:
        clean: noiseless magnitude image.
        bias: multiplicative field of the same shape.
        sigma: standard deviation of each of the two Gaussian noise channels.
        rng: noise source.

    Returns:
        float32 magnitude image; where the signal is 0 it is Rayleigh-distributed with mean
        ``sigma * sqrt(pi / 2)``.
    """
    signal = (clean * bias).astype(np.float32)
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real**2 + imaginary**2)


def _volume_mm3(rng: np.random.Generator) -> float:
    low, high = _VOLUME_RANGE_MM3
    return float(np.clip(rng.lognormal(np.log(_VOLUME_MEDIAN_MM3), _VOLUME_SIGMA), low, high))


def _frame(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation whose first column is ``direction`` (others random around it)."""
    first = direction / max(np.linalg.norm(direction), 1e-9)
    helper = rng.standard_normal(3)
    second = helper - first * (helper @ first)
    second /= max(np.linalg.norm(second), 1e-9)
    return np.stack([first, second, np.cross(first, second)], axis=1)


def make_realistic_subject(
    flat_world: np.ndarray,
    template_flair_args: dict,
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    centre: str,
    lesion_load: float,
    sites: dict,
    anatomy: dict,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One realistic subject on its native grid.

    Args:
        flat_world: ``(n_voxels, 3)`` template-space position (mm) of every native voxel.
        template_flair_args: ``coords`` (template voxel coordinates of the native voxels,
            ``(3, *shape)``) and ``world_spacing`` (native voxel size along the world x, y, z axes).
        shape, spacing: native grid and voxel size (mm) per voxel axis.
        centre: centre id, a key of :data:`ACQUISITION`.
        lesion_load: target fraction of lesion voxels of this subject.
        sites: from :func:`lesion_anatomy`.
        anatomy: tissue maps (``planar3d.io.phantom._mni_anatomy``).
        rng: the subject's generator.

    Returns:
        ``(scan, mask, facts)``: int16 scan, uint8 mask, and facts for ``phantom.json``
        (lesion count per type, noise sigma, SNR, bias range inside the head).
    """
    acq = ACQUISITION[centre]
    channels, resolution = anatomy["channels"], anatomy["resolution"]
    wm_level = _WM_INTENSITY
    contrast = {"wm": wm_level, "gm": wm_level * acq.gm_wm, "csf": wm_level * acq.csf_wm, "skull": 0.08,
                "marrow": 0.35, "scalp": 0.85}
    contrast = {name: value * rng.uniform(0.95, 1.05) for name, value in contrast.items()}
    template = sum(contrast[name] * channels[name] for name in channels)
    # point-spread function: a Gaussian of 0.45 voxel along each world axis (anisotropic voxels)
    sigma = 0.45 * np.asarray(template_flair_args["world_spacing"], dtype=float) / resolution
    template = ndimage.gaussian_filter(template, np.where(sigma > 0.3, sigma, 0.0))
    coords = template_flair_args["coords"]
    flair = ndimage.map_coordinates(template, coords, order=1, cval=0.0).astype(np.float32).reshape(-1)
    wm = ndimage.map_coordinates(channels["wm"], coords, order=1, cval=0.0).reshape(-1)
    gm = ndimage.map_coordinates(channels["gm"], coords, order=1, cval=0.0).reshape(-1)
    # lesions grow in white matter and up to the cortex, never into CSF or outside the brain
    gate = np.clip((wm + 0.5 * gm - 0.25) / 0.3, 0.0, 1.0).astype(np.float32)

    n = flat_world.shape[0]
    fraction = np.zeros(n, dtype=np.float32)
    peak = np.zeros(n, dtype=np.float32)
    voxel_mm3 = float(np.prod(spacing))
    edge_mm = float(np.cbrt(voxel_mm3))
    target = lesion_load * n
    by_x = np.argsort(flat_world[:, 0], kind="stable")
    sorted_x = flat_world[by_x, 0]
    names = list(LESION_TYPES)
    probabilities = np.array([LESION_TYPES[name] for name in names])
    counts = dict.fromkeys(names, 0)
    masked = 0
    template_affine = anatomy["affine"]

    def add_ovoid(centre_mm: np.ndarray, frame: np.ndarray, radii: np.ndarray, brightness: float) -> int:
        reach = float(radii.max()) + 1.5 * edge_mm
        start, stop = np.searchsorted(sorted_x, [centre_mm[0] - reach, centre_mm[0] + reach])
        slab = by_x[start:stop]
        near = slab[np.abs(flat_world[slab, 1:] - centre_mm[1:]).max(axis=1) <= reach]
        if near.size == 0:
            return 0
        local = (flat_world[near] - centre_mm) @ frame
        r = np.sqrt(((local / radii) ** 2).sum(axis=1))
        distance_mm = (r - 1.0) * float(radii.min())  # signed distance to the surface, approximately
        own = np.clip(0.5 - distance_mm / edge_mm, 0.0, 1.0) * gate[near]
        before = int(np.count_nonzero(fraction[near] >= 0.5))
        fraction[near] = np.maximum(fraction[near], own)
        core = brightness * (1.0 - 0.2 * np.clip(r, 0, 1) ** 2)
        peak[near] = np.where(own > 0, np.maximum(peak[near], core), peak[near])
        return int(np.count_nonzero(fraction[near] >= 0.5)) - before

    for _ in range(_MAX_ATTEMPTS):
        if masked >= target:
            break
        kind = names[int(rng.choice(len(names), p=probabilities))]
        cumulative = sites["weights"][kind]
        if cumulative[-1] == 0:
            continue
        index = int(np.searchsorted(cumulative, rng.uniform(0, cumulative[-1]), side="right"))
        voxel = np.array(np.unravel_index(min(index, cumulative.size - 1), sites["shape"]))
        start_mm = template_affine[:3, :3] @ voxel + template_affine[:3, 3]
        remaining_mm3 = max((target - masked) * voxel_mm3, _VOLUME_RANGE_MM3[0])
        volume = min(_volume_mm3(rng), remaining_mm3 * 1.2)
        brightness = wm_level * acq.lesion_wm * rng.uniform(0.9, 1.1)
        if kind in ("periventricular", "confluent"):
            normal = sites["normal"][tuple(voxel)]
            parts = int(rng.integers(3, 7)) if kind == "confluent" else 1
            for part in range(parts):
                elongation = rng.uniform(1.8, 3.0)
                b = np.cbrt(volume / parts / (4 / 3 * np.pi * elongation))
                radii = np.array([elongation * b, b, b * rng.uniform(0.8, 1.0)])
                offset = 0 if part == 0 else rng.normal(0, 1.2 * elongation * b, 3)
                masked += add_ovoid(start_mm + offset, _frame(normal + rng.normal(0, 0.15, 3), rng), radii, brightness)
        else:
            elongation = rng.uniform(1.0, 1.6)
            b = np.cbrt(volume / (4 / 3 * np.pi * elongation))
            radii = np.array([elongation * b, b, b])
            masked += add_ovoid(start_mm, _frame(rng.standard_normal(3), rng), radii, brightness)
        counts[kind] += 1

    lesioned = (1.0 - fraction) * flair + fraction * np.maximum(peak, flair)
    clean = lesioned.reshape(shape)
    bias = np.exp(acq.bias_amplitude * _low_frequency_field(shape, spacing, rng)).astype(np.float32)
    head = clean > 0.2 * wm_level
    scale = rng.uniform(400, 900)
    sigma_noise = scale * wm_level / acq.snr
    scan = acquire(clean * scale, bias, sigma_noise, rng)
    mask = (fraction >= 0.5).reshape(shape).astype(np.uint8)
    facts = {
        "lesions_per_type": counts, "n_lesions": int(sum(counts.values())),
        "noise_sigma": float(sigma_noise), "snr": acq.snr,
        "bias_range": float(bias[head].max() / bias[head].min()) if head.any() else 1.0,
    }
    return np.round(scan).astype(np.int16), mask, facts


def _low_frequency_field(shape: tuple[int, int, int], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth field of unit standard deviation varying over ~10 cm (a scanner's non-uniformity)."""
    extent = np.asarray(shape) * np.asarray(spacing)
    control = np.maximum(2, np.round(extent / 100.0).astype(int) + 1)
    coarse = rng.standard_normal(tuple(control))
    field = ndimage.zoom(coarse, [n / c for n, c in zip(shape, control)], order=3, mode="nearest", grid_mode=True)
    field = field[tuple(slice(0, n) for n in shape)]
    return (field - field.mean()) / max(float(field.std()), 1e-6)
