"""Temperature scaling of lesion probabilities (Guo et al., "On calibration of modern neural
networks", ICML 2017), for a binary voxel classifier.

A model's probability ``p`` is turned back into its logit ``z = ln(p / (1 - p))`` (``p`` clipped
to ``[EPSILON, 1 - EPSILON]``) and rescaled: ``p_T = sigmoid(z / T)``. One temperature ``T > 0``
per model is fitted on its fold's validation scans by minimising the mean voxel binary negative
log-likelihood of ``p_T`` against the validation masks (:func:`fit_temperature`); training stores
it as ``RUN/fold_k/calibration.json`` (:mod:`planar3d.training.calibrate`) and ``predict
--calibration temperature`` applies it (:func:`apply_temperature`).

``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens them. ``T > 0`` keeps the
sign of every logit, so ``p_T`` is above 0.5 exactly where ``p`` is: a mask thresholded at 0.5
does not change, but one thresholded elsewhere (the paper's 16/256) may, as may everything read
from the probabilities (lesion mean probability, entropy, calibration error).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from planar3d.errors import Planar3DError

__all__ = ["EPSILON", "TEMPERATURE_BOUNDS", "apply_temperature", "binary_nll", "fit_temperature", "logits"]


#: probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before their logit is taken.
EPSILON = 1e-7
#: the interval :func:`fit_temperature` searches.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def logits(probabilities: np.ndarray) -> np.ndarray:
    """``ln(p / (1 - p))`` in float64, ``p`` clipped to ``[EPSILON, 1 - EPSILON]``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probability: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)`` as float32; ``T == 1`` returns the probabilities unchanged (no clipping).

    The mask at threshold 0.5 is unchanged for any ``T > 0`` (the logit keeps its sign); at any
    other threshold it can change. An exact 0 (e.g. a voxel the crop skipped) is clipped first, so
    it becomes ``sigmoid(logit(EPSILON) / T)``: 3e-4 at ``T = 2``, above the paper's 16/256 from
    ``T ≈ 6``; :func:`fit_temperature` sees the same voxels of the cube and pays for that.

    Raises:
        Planar3DError: ``temperature`` is not a finite positive number.
    """
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature <= 0:
        raise Planar3DError(f"temperature must be a finite positive number. Received: temperature={temperature}")
    if temperature == 1.0:
        return np.asarray(probability, dtype=np.float32)
    from scipy.special import expit  # the sigmoid, without overflow

    return expit(logits(probability) / temperature).astype(np.float32)


def _grouped(probabilities: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray]):
    """``(negatives, positives)``: the distinct logits of background and lesion voxels and how
    often each occurs (a scan's probability map repeats few values many times: the NLL is then a
    sum over them, exactly the voxel sum)."""
    if isinstance(probabilities, np.ndarray):
        probabilities, masks = [probabilities], [masks]
    if len(probabilities) != len(masks):
        raise Planar3DError(f"one mask per probability map. Received: {len(probabilities)} maps, {len(masks)} masks")
    values, labels = [], []
    for p, m in zip(probabilities, masks):
        if np.shape(p) != np.shape(m):
            raise Planar3DError(f"a probability map and its mask must have one shape. Received: {np.shape(p)}, {np.shape(m)}")
        values.append(np.asarray(p, dtype=np.float32).ravel())
        labels.append(np.asarray(m).ravel() > 0.5)
    value, label = np.concatenate(values), np.concatenate(labels)
    if value.size == 0:
        raise Planar3DError("temperature scaling needs at least one voxel. Received: 0 voxels")
    groups = []
    for part in (value[~label], value[label]):
        distinct, counts = np.unique(part, return_counts=True)
        groups.append((logits(distinct), counts.astype(np.float64)))
    return groups


def _nll(groups, temperature: float) -> float:
    (z0, c0), (z1, c1) = groups
    # -ln(1 - sigmoid(t)) = softplus(t); -ln sigmoid(t) = softplus(-t)
    total = np.dot(c0, np.logaddexp(0.0, z0 / temperature)) + np.dot(c1, np.logaddexp(0.0, -z1 / temperature))
    return float(total / (c0.sum() + c1.sum()))


def binary_nll(probabilities: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray],
               temperature: float = 1.0) -> float:
    """Mean voxel binary negative log-likelihood (nats) of ``sigmoid(logit(p) / T)`` against the
    masks (``> 0.5`` is a lesion); one array or a sequence of them (scans)."""
    return _nll(_grouped(probabilities, masks), float(temperature))


def fit_temperature(probabilities: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray],
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature minimising :func:`binary_nll` within ``bounds`` (bounded Brent search,
    ``scipy.optimize.minimize_scalar``; the NLL is convex in ``1/T``, so it has one minimum).

    Args:
        probabilities: a probability map or a sequence of them (the validation scans).
        masks: the reference masks, one per map, of the same shapes.
        bounds: the interval searched.

    Raises:
        Planar3DError: maps and masks that do not pair up, or no voxels.
    """
    from scipy.optimize import minimize_scalar

    groups = _grouped(probabilities, masks)
    result = minimize_scalar(lambda t: _nll(groups, t), bounds=bounds, method="bounded", options={"xatol": 1e-6})
    return float(result.x)
