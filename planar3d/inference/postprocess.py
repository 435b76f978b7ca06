"""From probabilities to a binary mask: the paper's fixed threshold or the released code's rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planar3d.config import THRESHOLD_RULES
from planar3d.errors import Planar3DError

__all__ = ["binarize"]




def binarize(prob: Any, threshold: float = 16 / 256, rule: str = "fixed") -> np.ndarray:
    """Binary lesion mask from a probability volume.

    Rules:
        - ``"fixed"`` (default, the paper): predictions scaled to [0, 256] thresholded at 16,
          i.e. ``prob >= threshold`` with ``threshold = 16 / 256 = 0.0625``.
        - ``"reference"`` (the published code): ``scaled = uint8(prob * 255)`` (truncated),
          ``t = max(scaled) // 16`` over the whole given array, lesion where ``scaled > t``
          (the code set ``< t`` to 0 and ``> t`` to 255 and left ``== t``, which its
          evaluation read as background). ``threshold`` is ignored. The code computed ``t``
          over all test scans stacked; pass one scan for a per-scan threshold, the stacked
          test set to reproduce the code exactly.

    Args:
        prob: probability array of any shape, values in [0, 1].
        threshold: probability threshold of the ``"fixed"`` rule, in [0, 1].
        rule: ``"fixed"`` or ``"reference"``.

    Returns:
        uint8 array of ``prob``'s shape with values {0, 1}.

    Raises:
        Planar3DError: unknown rule or a threshold outside [0, 1].
    """
    if rule not in THRESHOLD_RULES:
        raise Planar3DError(f"rule must be one of {THRESHOLD_RULES}. Received: rule={rule!r}")
    if not 0 <= threshold <= 1:
        raise Planar3DError(f"threshold must be within [0, 1]. Received: threshold={threshold!r}")
    prob = np.asarray(prob)
    if rule == "fixed":
        return (prob >= threshold).astype(np.uint8)
    scaled = (prob * 255.0).astype(np.uint8)
    return (scaled > scaled.max() // 16).astype(np.uint8)
