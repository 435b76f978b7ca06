"""Ensembles of segmentation models and their voxel uncertainty.

An ensemble's probability is the mean of its members' probabilities (nnU-Net's fold ensemble;
LST-AI's three U-Nets), accumulated in float64 so that an ensemble of identical members gives the
member exactly. Uncertainty follows the Shifts challenge's definitions for binary segmentation
(Malinin et al., "Shifts 2.0: Extending the dataset shifts benchmark", arXiv:2206.15407, 2022;
the MS lesion track):

* total uncertainty: the entropy of the ensemble's mean probability,
  ``H(p̄) = -p̄ ln p̄ - (1 - p̄) ln(1 - p̄)`` (nats);
* data uncertainty: the mean of the members' entropies, ``E_m[H(p_m)]``;
* knowledge uncertainty: their difference, the mutual information between the prediction and
  the member, ``MI = H(p̄) - E_m[H(p_m)]`` (0 for one member or identical members).

Probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` inside the logarithms.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from planar3d.errors import Planar3DError

__all__ = ["EPSILON", "ensemble_mean", "entropy", "mutual_information", "member_agreement"]


EPSILON = 1e-7


def _stack(members: Sequence[np.ndarray]) -> np.ndarray:
    if len(members) == 0:
        raise Planar3DError("an ensemble needs at least one member. Received: 0 members")
    shapes = {np.shape(m) for m in members}
    if len(shapes) != 1:
        raise Planar3DError(f"ensemble members must have one shape. Received: {sorted(shapes)}")
    return np.stack([np.asarray(m, dtype=np.float64) for m in members])


def ensemble_mean(members: Sequence[np.ndarray]) -> np.ndarray:
    """The members' mean probability, float32 (accumulated in float64: identical members give the member)."""
    return _stack(members).mean(axis=0).astype(np.float32)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Binary entropy (nats) of each voxel's probability, float32; 0 at 0 and 1 (up to EPSILON), ln 2 at 0.5."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    return (-(p * np.log(p) + (1 - p) * np.log1p(-p))).astype(np.float32)


def mutual_information(members: Sequence[np.ndarray]) -> np.ndarray:
    """Knowledge uncertainty ``H(mean) - mean(H(member))`` per voxel (nats, float32, >= 0)."""
    stack = _stack(members)
    total = entropy(stack.mean(axis=0)).astype(np.float64)
    data = np.mean([entropy(member).astype(np.float64) for member in stack], axis=0)
    return np.maximum(total - data, 0.0).astype(np.float32)


def member_agreement(lesions: np.ndarray, n_lesions: int, member_masks: Sequence[np.ndarray]) -> np.ndarray:
    """For each lesion id 1..n_lesions of a labelled map, the fraction of members whose binary mask touches it.

    Returns:
        float array of ``n_lesions`` values in ``[0, 1]`` (index 0 is lesion 1).
    """
    if n_lesions == 0:
        return np.zeros(0)
    found = np.zeros(n_lesions)
    for mask in member_masks:
        touched = np.unique(lesions[(np.asarray(mask) > 0) & (lesions > 0)])
        found[touched - 1] += 1
    return found / max(len(member_masks), 1)
