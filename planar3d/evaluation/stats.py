"""Statistics over seeds and scans: mean ± sd, and paired comparisons of two settings.

A figure from one training run is one draw: on the phantom a change of seed (or of the CPU's
kernels, README "What is reproducible") moves a fold's mean test Dice by a few points. So
figures are reported over seeds, and two settings (say ImageNet vs random encoder) are
compared *paired*: both are trained with the same seeds and tested on the same scans, and
the per-(seed, scan) differences are what is summarised.

- :func:`paired_difference`: the mean difference with a 95 % bootstrap interval that
  resamples seeds and scans independently (a two-way bootstrap for the crossed
  seeds × scans design; Davison & Hinkley 1997, *Bootstrap Methods and their Application*,
  section 3.8), and Wilcoxon signed-rank tests (scipy.stats.wilcoxon, two-sided) on the
  per-seed mean differences and on all pairs.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from planar3d.errors import Planar3DError

__all__ = ["describe", "format_mean_sd", "mean_sd", "paired_difference", "paired_matrix"]


def describe(values: Iterable[float]) -> dict:
    """``{"mean", "sd", "n", "min", "max"}`` of ``values``: the sample sd (ddof=1), NaN for one value.

    The one mean ± sd of the package (over seeds, folds or scans); summaries format it with
    :func:`format_mean_sd`.

    Raises:
        Planar3DError: no values.
    """
    values = np.asarray([float(v) for v in values], dtype=np.float64)
    if not values.size:
        raise Planar3DError("mean_sd needs at least one value. Received: []")
    sd = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return {"mean": float(values.mean()), "sd": sd, "n": int(values.size),
            "min": float(values.min()), "max": float(values.max())}


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """``(mean, sample sd, n)`` of :func:`describe`; sd is NaN for one value.

    Raises:
        Planar3DError: no values.
    """
    stats = describe(values)
    return stats["mean"], stats["sd"], stats["n"]


def format_mean_sd(values: Iterable[float], digits: int = 3, with_n: bool = True) -> str:
    """``"mean ± sd (n=k)"`` of the finite values (NaN, e.g. an undefined AUC, left out); the sd is
    omitted for one value, ``"—"`` when none is finite."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return "—"
    stats = describe(finite)
    sd = f" ± {stats['sd']:.{digits}f}" if stats["n"] > 1 else ""
    return f"{stats['mean']:.{digits}f}{sd}" + (f" (n={stats['n']})" if with_n else "")


def paired_matrix(
    a: Mapping[tuple[int, str], float], b: Mapping[tuple[int, str], float]
) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """Align two ``{(seed, scan): value}`` tables into ``(seeds, scans)`` matrices.

    Returns:
        ``(A, B, seeds, scans)`` with ``A[i, j] = a[(seeds[i], scans[j])]``; seeds and scans sorted.

    Raises:
        Planar3DError: the tables do not hold the same (seed, scan) pairs, or a seed lacks a scan.
    """
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))
        raise Planar3DError(f"paired comparison needs the same (seed, scan) pairs on both sides. Unmatched: {missing[:6]}")
    seeds = sorted({seed for seed, _ in a})
    scans = sorted({scan for _, scan in a})
    if len(a) != len(seeds) * len(scans):
        raise Planar3DError(f"every seed must be tested on the same scans. Received: {len(a)} pairs for "
                            f"{len(seeds)} seeds x {len(scans)} scans")
    A = np.array([[a[(s, c)] for c in scans] for s in seeds], dtype=float)
    B = np.array([[b[(s, c)] for c in scans] for s in seeds], dtype=float)
    return A, B, seeds, scans


def paired_difference(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired difference ``a - b`` over a ``(seeds, scans)`` grid of matched results.

    Args:
        a, b: ``(seeds, scans)`` arrays; ``a[i, j]`` and ``b[i, j]`` come from the same seed
            ``i`` and test scan ``j``.
        n_boot: bootstrap resamples.
        confidence: level of the percentile interval.
        seed: seed of the bootstrap (the interval is reproducible).

    Returns:
        ``mean_a``, ``mean_b``, ``difference`` (mean of ``a - b``), ``ci_low``, ``ci_high``
        (percentile interval of the two-way bootstrap: seeds and scans each resampled with
        replacement), ``n_seeds``, ``n_scans``, ``wins`` (fraction of pairs with ``a > b``),
        ``p_seeds`` (Wilcoxon signed-rank on the per-seed mean differences; with 5 seeds the
        smallest possible two-sided p is 0.0625) and ``p_pairs`` (Wilcoxon on all
        seeds × scans differences, which treats the pairs as independent although they
        share scans and seeds: read it as descriptive). A p-value is NaN when every
        difference is 0.

    Raises:
        Planar3DError: shapes differ or are not 2-D, or fewer than 2 pairs.
    """
    from scipy.stats import wilcoxon

    A, B = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if A.shape != B.shape or A.ndim != 2 or A.size < 2:
        raise Planar3DError(f"a and b must be equal (seeds, scans) arrays with 2 or more pairs. Received: {A.shape}, {B.shape}")
    if not 0 < confidence < 1:
        raise Planar3DError(f"confidence must be in (0, 1). Received: confidence={confidence}")
    D = A - B
    n_seeds, n_scans = D.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    cols = rng.integers(0, n_scans, size=(n_boot, n_scans))
    # mean over the resampled grid = mean over i, j of D[rows[k, i], cols[k, j]]
    boots = np.einsum("kij->k", D[rows[:, :, None], cols[:, None, :]]) / (n_seeds * n_scans)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha])

    def _p(values: np.ndarray) -> float:
        if values.size < 2 or not np.any(values):
            return math.nan
        return float(wilcoxon(values, alternative="two-sided").pvalue)

    return {
        "mean_a": float(A.mean()), "mean_b": float(B.mean()), "difference": float(D.mean()),
        "ci_low": float(low), "ci_high": float(high), "n_seeds": n_seeds, "n_scans": n_scans,
        "wins": float(np.mean(D > 0)), "p_seeds": _p(D.mean(axis=1)), "p_pairs": _p(D.ravel()),
    }
