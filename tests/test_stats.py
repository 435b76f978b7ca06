"""Paired comparisons over seeds and scans."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planar3d.errors import Planar3DError
from planar3d.evaluation.stats import mean_sd, paired_difference, paired_matrix


def test_mean_sd():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    mean, sd, n = mean_sd([0.5])
    assert (mean, n) == (0.5, 1) and math.isnan(sd)
    with pytest.raises(Planar3DError, match=r"mean_sd needs at least one value. Received: \[\]"):
        mean_sd([])


def test_constant_difference_has_a_degenerate_interval_and_exact_p():
    b = np.arange(15, dtype=float).reshape(5, 3) / 20
    result = paired_difference(b + 0.25, b, n_boot=500)
    assert result["difference"] == pytest.approx(0.25, abs=1e-12)
    assert result["ci_low"] == pytest.approx(0.25, abs=1e-12) and result["ci_high"] == pytest.approx(0.25, abs=1e-12)
    assert (result["n_seeds"], result["n_scans"], result["wins"]) == (5, 3, 1.0)
    distinct = paired_difference(b + 0.25 + np.arange(15).reshape(5, 3) / 1000, b, n_boot=10)
    assert distinct["p_seeds"] == pytest.approx(2 / 2**5)  # exact test: every rank positive
    assert distinct["p_pairs"] == pytest.approx(2 / 2**15)
    same = paired_difference(b, b, n_boot=10)
    assert math.isnan(same["p_seeds"]) and same["difference"] == 0.0


def test_bootstrap_resamples_seeds_and_scans_as_a_loop_would():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=(4, 3)), rng.uniform(size=(4, 3))
    result = paired_difference(a, b, n_boot=200, seed=7)
    draws = np.random.default_rng(7)
    rows, cols = draws.integers(0, 4, size=(200, 4)), draws.integers(0, 3, size=(200, 3))
    d = a - b
    loop = [np.mean([[d[i, j] for j in cols[k]] for i in rows[k]]) for k in range(200)]
    assert result["ci_low"] == pytest.approx(np.quantile(loop, 0.025))
    assert result["ci_high"] == pytest.approx(np.quantile(loop, 0.975))
    assert result["ci_low"] < result["difference"] < result["ci_high"]


def test_paired_matrix_aligns_and_refuses_unmatched():
    a = {(1, "x"): 1.0, (0, "y"): 2.0, (0, "x"): 3.0, (1, "y"): 4.0}
    b = {key: 10 * value for key, value in a.items()}
    A, B, seeds, scans = paired_matrix(a, b)
    assert seeds == [0, 1] and scans == ["x", "y"]
    np.testing.assert_array_equal(A, [[3.0, 2.0], [1.0, 4.0]])
    np.testing.assert_array_equal(B, 10 * A)
    with pytest.raises(Planar3DError, match=r"same \(seed, scan\) pairs on both sides. Unmatched: \[\(1, 'y'\)\]"):
        paired_matrix(a, {k: v for k, v in b.items() if k != (1, "y")})
    with pytest.raises(Planar3DError, match="every seed must be tested on the same scans"):
        paired_matrix({(0, "x"): 1.0, (1, "y"): 1.0}, {(0, "x"): 1.0, (1, "y"): 1.0})
    with pytest.raises(Planar3DError, match=r"equal \(seeds, scans\) arrays"):
        paired_difference([[1.0, 2.0]], [[1.0]])
