"""Calibration and uncertainty metrics of one scan's lesion probabilities.

Arrays: ``reference`` and ``prediction`` are binary (bool or 0/1), ``probability`` holds the
lesion probability in [0, 1], ``uncertainty`` any finite voxel score (higher = less sure);
all have one shape, e.g. `(slices, rows, cols)`, and are flattened in C order inside, every
voxel counting once (the whole grid: no brain mask is applied here).

Definitions (each function's docstring says more):

* expected calibration error (ECE): Guo et al., "On calibration of modern neural networks",
  ICML 2017, Eq. 3, ``sum_b |B_b| / n * |freq(B_b) - mean_p(B_b)|`` over equal-width bins of
  the lesion probability, in its binary (positive-class, reliability-diagram) form;
* Brier score: Brier, Monthly Weather Review 78 (1950): the mean squared difference of
  probability and 0/1 outcome;
* normalised Dice (nDSC), retention curve and its area (R-AUC): Malinin et al., "Shifts 2.0:
  Extending the dataset shifts benchmark", arXiv:2206.15407 (2022), the MS lesion track;
* lesion AUROC: the area under the ROC curve of a per-lesion score separating the true from
  the false-positive predicted lesions, decided by the MSSEG-2016 detection rule of
  :func:`planar3d.evaluation.metrics.lesion_detection`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from planar3d.errors import Planar3DError
from planar3d.evaluation.metrics import detected, overlap_table
from planar3d.evaluation.lesions import as_mask, label_lesions, min_lesion_voxels, voxel_spacing
from planar3d.evaluation.reference import ANIMA_ALPHA, ANIMA_BETA, ANIMA_GAMMA, ANIMA_MIN_LESION_MM3
from planar3d.inference.ensemble import entropy

__all__ = [
    "CALIBRATION_KEYS", "NDSC_R", "N_BINS", "auroc", "brier_score", "calibration_metrics", "curve_ece",
    "expected_calibration_error", "lesion_auroc", "lesion_means", "normalised_dice", "pool_reliability",
    "predicted_lesion_outcomes", "reliability_curve", "retention_auc", "retention_curve", "retention_fractions",
]


#: The columns :func:`calibration_metrics` adds to a row of ``metrics.csv``.
CALIBRATION_KEYS = ("ece", "brier", "ndsc", "r_auc", "lesion_auroc", "lesion_auroc_uncertainty")

#: nDSC reference lesion load ``r`` of the Shifts challenge (0.1 % of the voxels).
NDSC_R = 0.001

#: Default number of equal-width probability bins.
N_BINS = 10

#: Number of retained fractions of the Shifts retention grid.
N_RETENTION = 200


# ----------------------------------------------------------------------------- inputs
def _flat(array: Any, name: str) -> np.ndarray:
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0:
        raise Planar3DError(f"{name} must hold at least one voxel. Received: shape={np.shape(array)}")
    return flat


def _binary(array: Any, name: str) -> np.ndarray:
    flat = _flat(array, name)
    if flat.dtype != bool:
        if not np.issubdtype(flat.dtype, np.number) or np.any((flat != 0) & (flat != 1)):
            raise Planar3DError(f"{name} must be binary (0/1 or bool). Received: values starting {np.unique(flat)[:5].tolist()}")
        flat = flat != 0
    return flat


def _finite(array: Any, name: str) -> np.ndarray:
    """Flat finite values, float32 kept as is (other types as float64)."""
    flat = _flat(array, name)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise Planar3DError(f"{name} must be finite. Received: {int(np.count_nonzero(~np.isfinite(flat)))} NaN/inf values")
    return flat


def _real(array: Any, name: str) -> np.ndarray:
    return _finite(array, name).astype(np.float64, copy=False)


def _probability(array: Any, name: str = "probability") -> np.ndarray:
    flat = _real(array, name)
    if flat.min() < 0 or flat.max() > 1:
        raise Planar3DError(f"{name} must lie in [0, 1]. Received: min {flat.min():g}, max {flat.max():g}")
    return flat


def _same_size(**arrays: np.ndarray) -> None:
    sizes = {name: a.size for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise Planar3DError(f"arrays must have one number of voxels. Received: {sizes}")


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise Planar3DError(f"n_bins must be an integer >= 1. Received: n_bins={n_bins!r}")


# ----------------------------------------------------------------------------- calibration
def reliability_curve(reference: Any, probability: Any, n_bins: int = N_BINS) -> dict:
    """The reliability diagram's bins: mean probability against observed lesion frequency.

    Bins are ``n_bins`` equal-width intervals of [0, 1], closed on the right,
    ``(lo, hi]``, the first also holding 0 (``[0, 1/n_bins]``): the convention of Guo et
    al.'s code and of ``sklearn.calibration.calibration_curve(strategy="uniform")``.

    Args:
        reference: binary array, any shape (e.g. `(slices, rows, cols)`).
        probability: lesion probabilities in [0, 1], the same number of voxels.
        n_bins: number of bins (>= 1).

    Returns:
        ``{"edges": (n_bins + 1,), "centres", "mean_predicted", "observed_frequency",
        "counts": (n_bins,)}`` float64 arrays (``counts`` int64): per bin the mean
        probability and the fraction of reference voxels, NaN in an empty bin.

    Raises:
        Planar3DError: a non-binary reference, probabilities outside [0, 1] or not finite,
            different sizes, a bad ``n_bins``.
    """
    _check_bins(n_bins)
    y, p = _binary(reference, "reference"), _probability(probability)
    _same_size(reference=y, probability=p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p, side="left")  # p == inner edge -> lower bin
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    return _curve(edges, counts, sum_p, sum_y)


def _curve(edges: np.ndarray, counts: np.ndarray, sum_p: np.ndarray, sum_y: np.ndarray) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frequency = sum_p / counts, sum_y / counts
    return {"edges": edges, "centres": (edges[:-1] + edges[1:]) / 2, "mean_predicted": mean_p,
            "observed_frequency": frequency, "counts": counts.astype(np.int64)}


def pool_reliability(curves: Sequence[dict]) -> dict:
    """One reliability curve of several scans' voxels together (bins of equal edges).

    Args:
        curves: :func:`reliability_curve` results with one ``edges`` array.

    Returns:
        The :func:`reliability_curve` of all their voxels.
    """
    if not curves:
        raise Planar3DError("pool_reliability needs at least one curve. Received: []")
    edges = curves[0]["edges"]
    if any(c["edges"].shape != edges.shape or not np.allclose(c["edges"], edges) for c in curves):
        raise Planar3DError("reliability curves must share their bin edges to be pooled")
    counts = sum(c["counts"] for c in curves)
    sum_p = sum(np.nan_to_num(c["mean_predicted"]) * c["counts"] for c in curves)
    sum_y = sum(np.nan_to_num(c["observed_frequency"]) * c["counts"] for c in curves)
    return _curve(edges, counts, sum_p, sum_y)


def curve_ece(curve: dict) -> float:
    """ECE of a :func:`reliability_curve`: ``sum_b counts_b / n * |freq_b - mean_p_b|`` over non-empty bins."""
    counts = curve["counts"]
    filled = counts > 0
    gaps = np.abs(curve["observed_frequency"][filled] - curve["mean_predicted"][filled])
    return float(np.sum(counts[filled] * gaps) / counts.sum())


def expected_calibration_error(reference: Any, probability: Any, n_bins: int = N_BINS) -> float:
    """Expected calibration error of lesion probabilities (Guo et al. 2017, Eq. 3).

    ``ECE = sum_b |B_b| / n * |freq(B_b) - mean_p(B_b)|``: the gap between the observed
    lesion frequency and the mean probability in each of ``n_bins`` equal-width bins of
    [0, 1], weighted by the bin's voxel count. Bins are right-closed, ``(lo, hi]``, the
    first also holding 0 (:func:`reliability_curve`). This is the binary, positive-class form
    (the reliability diagram's gap), not the top-label form over max(p, 1 - p).

    Args:
        reference: binary array, any shape (e.g. `(slices, rows, cols)`).
        probability: lesion probabilities in [0, 1], the same number of voxels.
        n_bins: number of bins (>= 1).

    Returns:
        ECE in [0, 1]; 0 for a perfectly calibrated (e.g. exact 0/1 and correct) map.
    """
    return curve_ece(reliability_curve(reference, probability, n_bins))


def brier_score(reference: Any, probability: Any) -> float:
    """Brier score ``mean((p - y)^2)`` over the voxels (Brier 1950; ``sklearn.metrics.brier_score_loss``).

    Args:
        reference: binary array ``y``, any shape (e.g. `(slices, rows, cols)`).
        probability: lesion probabilities ``p`` in [0, 1], the same number of voxels.

    Returns:
        A float in [0, 1]; 0 when every probability equals its voxel's 0/1 reference.
    """
    y, p = _binary(reference, "reference"), _probability(probability)
    _same_size(reference=y, probability=p)
    return float(np.mean((p - y) ** 2))


# ----------------------------------------------------------------------------- nDSC
def _check_r(r: float) -> None:
    if not 0 < r < 1:
        raise Planar3DError(f"r must be in (0, 1). Received: r={r}")


def _ndsc(tp, fp, fn, n_positive: int, n_voxels: int, r: float) -> np.ndarray:
    """nDSC from voxel counts (arrays broadcast); 1.0 where reference and prediction are both empty."""
    if 0 < n_positive < n_voxels:
        k = (1 - r) / r * n_positive / (n_voxels - n_positive)
    else:  # no lesion (as Shifts: plain Dice) or all lesion (no false positive possible)
        k = 1.0
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + k * fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 1.0)


def normalised_dice(reference: Any, prediction: Any, r: float = NDSC_R) -> float:
    """Normalised Dice coefficient nDSC (Malinin et al. 2022, Shifts 2.0, MS lesion track).

    Dice with the false positives rescaled as if the reference held a fraction ``r`` of the
    voxels instead of its own lesion load ``h = |reference| / n``:
    ``nDSC = 2 TP / (2 TP + k FP + FN)`` with ``k = (1 - r) / r * h / (1 - h)``, so that a
    scan's score does not depend on how much lesion it has. ``r = h`` gives the plain Dice.

    Edge cases: both masks empty: 1.0; empty reference: ``k = 1`` (plain Dice, 0 for any
    false positive), as the Shifts code; a reference covering every voxel: ``k = 1`` (there
    can be no false positive).

    Args:
        reference, prediction: binary arrays of one size, any shape (e.g. `(slices, rows, cols)`).
        r: the reference lesion load in (0, 1) (Shifts: 0.001).

    Returns:
        nDSC in [0, 1].
    """
    _check_r(r)
    y, s = _binary(reference, "reference"), _binary(prediction, "prediction")
    _same_size(reference=y, prediction=s)
    tp = np.count_nonzero(y & s)
    fp = np.count_nonzero(s) - tp
    fn = np.count_nonzero(y) - tp
    return float(_ndsc(tp, fp, fn, int(np.count_nonzero(y)), y.size, r))


# ----------------------------------------------------------------------------- retention
def retention_fractions(n: int = N_RETENTION) -> np.ndarray:
    """The Shifts retention grid: ``ln(1..n) / ln(n)``, ``n`` fractions from 0 to 1 denser near 1.

    The default (``n = 200``) is the grid of the Shifts MS lesion baseline; the first
    fraction is 0 (every voxel replaced), the last 1 (none).
    """
    if n < 2:
        raise Planar3DError(f"the retention grid needs n >= 2. Received: n={n}")
    return np.log(np.arange(1, n + 1)) / np.log(n)


def _check_fractions(fractions: Any) -> np.ndarray:
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if fractions.size < 2 or not np.all(np.isfinite(fractions)) or fractions.min() < 0 or fractions.max() > 1 \
            or np.any(np.diff(fractions) < 0):
        raise Planar3DError(f"fractions must be >= 2 non-decreasing values in [0, 1]. Received: {fractions[:5].tolist()}...")
    return fractions


def retention_curve(reference: Any, prediction: Any, uncertainty: Any, fractions: Any = None,
                    r: float = NDSC_R) -> dict:
    """nDSC as the most uncertain voxels are handed to an expert (Shifts retention curve).

    Voxels are sorted by increasing uncertainty (stable: ties keep C order); for a retained
    fraction ``f`` the first ``floor(f * n)`` keep the prediction and the others are replaced
    by the reference (counted as correct), and the nDSC (:func:`normalised_dice`, with the
    whole reference's lesion load) of that mixed prediction is taken.

    Args:
        reference, prediction: binary arrays of one size, any shape (e.g. `(slices, rows, cols)`).
        uncertainty: finite voxel uncertainties of the same size (higher = less sure), e.g.
            the predictive entropy (:func:`planar3d.inference.ensemble.entropy`).
        fractions: non-decreasing retained fractions in [0, 1], `(m,)`; default the Shifts
            grid :func:`retention_fractions` (200 values ``ln(1..200)/ln(200)``).
        r: nDSC reference lesion load.

    Returns:
        ``{"fractions": (m,), "ndsc": (m,), "error": (m,)}`` float64, ``error = 1 - ndsc``.
    """
    _check_r(r)
    fractions = retention_fractions() if fractions is None else _check_fractions(fractions)
    y, s, u = _binary(reference, "reference"), _binary(prediction, "prediction"), _finite(uncertainty, "uncertainty")
    _same_size(reference=y, prediction=s, uncertainty=u)
    order = _stable_order(u)
    y, s = y[order], s[order]
    n = y.size
    positions = np.floor(n * fractions).astype(np.int64)  # as int(N * f) in the Shifts code

    def prefix(voxels: np.ndarray) -> np.ndarray:  # count of true voxels among the first `positions`
        return np.concatenate([[0], np.cumsum(voxels, dtype=np.int64)])[positions]

    n_positive = int(np.count_nonzero(y))
    tp_kept, fp, fn = prefix(y & s), prefix(s & ~y), prefix(y & ~s)
    tp = tp_kept + (n_positive - prefix(y))  # replaced reference lesion voxels: true positives
    ndsc = _ndsc(tp, fp, fn, n_positive, n, r)
    return {"fractions": fractions, "ndsc": ndsc, "error": 1.0 - ndsc}


def _stable_order(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` of a flat finite array; for float32 (NIfTI maps) one
    sort of 64-bit keys (order-preserving bits of the value, then the index): the same order, faster."""
    if values.dtype != np.float32 or values.size >= 2**32:
        return np.argsort(values, kind="stable")
    bits = (values + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0, which sort equal
    keys = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(values.size, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def retention_auc(reference: Any, prediction: Any, uncertainty: Any, fractions: Any = None,
                  r: float = NDSC_R) -> float:
    """R-AUC: the area under the error (1 - nDSC) retention curve (trapezoidal rule).

    With the default grid (0 to 1, :func:`retention_fractions`) this is the Shifts
    ``1 - auc(fractions, nDSC)``, the area above the nDSC retention curve: lower is better;
    0 when the prediction is perfect. Arguments as :func:`retention_curve`.
    """
    curve = retention_curve(reference, prediction, uncertainty, fractions, r)
    return _trapezoid(curve["error"], curve["fractions"])


# ----------------------------------------------------------------------------- lesions
def predicted_lesion_outcomes(
    reference: Any,
    prediction: Any,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    alpha: float = ANIMA_ALPHA,
    beta: float = ANIMA_BETA,
    gamma: float = ANIMA_GAMMA,
    min_lesion_mm3: float = ANIMA_MIN_LESION_MM3,
) -> tuple[np.ndarray, np.ndarray]:
    """Each predicted lesion, and whether it is a true detection (MSSEG-2016 rule).

    The lesions and the test are those of :func:`planar3d.evaluation.metrics.lesion_detection`
    (6-connected components above the minimum volume in both masks; a predicted lesion is true
    when the reference lesions cover more than ``alpha`` of it and those checked by ``gamma``
    lie at most ``beta`` outside the prediction), so ``true.sum()`` is its true-prediction count.

    Args:
        reference, prediction: `(slices, rows, cols)` binary masks.
        spacing: voxel size in mm along `(slices, rows, cols)`.
        alpha, beta, gamma, min_lesion_mm3: the detection rule (Anima defaults).

    Returns:
        ``(labels, true)``: `(slices, rows, cols)` int32 labels of the kept predicted lesions
        (1..n, largest first, 0 elsewhere) and an `(n,)` bool array (index 0 is lesion 1).
    """
    reference, prediction = as_mask(reference, "reference"), as_mask(prediction, "prediction")
    if reference.shape != prediction.shape:
        raise Planar3DError(f"reference and prediction must have one shape. Received: {reference.shape} and {prediction.shape}")
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not 0 < value <= 1:
            raise Planar3DError(f"{name} must be in (0, 1]. Received: {name}={value}")
    min_voxels = min_lesion_voxels(min_lesion_mm3, float(np.prod(voxel_spacing(spacing))))
    reference_labels, n_reference = label_lesions(reference, 6, min_voxels)
    labels, n_predicted = label_lesions(prediction, 6, min_voxels)
    # the rule exactly as lesion_detection applies it (its helpers in metrics.py are private)
    table = overlap_table(reference_labels, n_reference, labels, n_predicted)
    return labels, detected(table.T, alpha, beta, gamma)


def lesion_means(labels: np.ndarray, values: Any) -> np.ndarray:
    """The mean of ``values`` inside each lesion 1..n of ``labels`` (both `(slices, rows, cols)`); `(n,)` float64."""
    labels = np.asarray(labels).reshape(-1)
    values = _real(values, "values")
    _same_size(labels=labels, values=values)
    n = int(labels.max(initial=0))
    sums = np.bincount(labels, weights=values, minlength=n + 1)[1:]
    counts = np.bincount(labels, minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def auroc(positive: Any, negative: Any) -> float:
    """Area under the ROC curve: ``P(score_pos > score_neg) + P(equal) / 2`` (Mann-Whitney U / n+ n-).

    Args:
        positive, negative: `(n+,)` and `(n-,)` scores of the two classes.

    Returns:
        AUROC in [0, 1]; NaN when either class is empty (undefined).
    """
    positive = np.asarray(positive, dtype=np.float64).reshape(-1, 1)
    negative = np.asarray(negative, dtype=np.float64).reshape(1, -1)
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    wins = np.count_nonzero(positive > negative) + 0.5 * np.count_nonzero(positive == negative)
    return float(wins / (positive.size * negative.size))


def lesion_auroc(
    reference: Any,
    prediction: Any,
    voxel_scores: Any,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    lower_is_true: bool = False,
    alpha: float = ANIMA_ALPHA,
    beta: float = ANIMA_BETA,
    gamma: float = ANIMA_GAMMA,
    min_lesion_mm3: float = ANIMA_MIN_LESION_MM3,
) -> float:
    """How well a lesion score separates true from false-positive predicted lesions (AUROC).

    Each predicted lesion (:func:`predicted_lesion_outcomes`) is scored by the mean of
    ``voxel_scores`` inside it: the mean probability (higher = true), or with
    ``lower_is_true`` the mean voxel uncertainty, the lesion uncertainty score (lower = true).

    Args:
        reference, prediction: `(slices, rows, cols)` binary masks.
        voxel_scores: `(slices, rows, cols)` finite voxel values.
        spacing, alpha, beta, gamma, min_lesion_mm3: as :func:`predicted_lesion_outcomes`.
        lower_is_true: a low score marks a true lesion.

    Returns:
        AUROC in [0, 1] (:func:`auroc`); NaN when the predicted lesions are all true, all
        false, or none.
    """
    labels, true = predicted_lesion_outcomes(reference, prediction, spacing, alpha, beta, gamma, min_lesion_mm3)
    scores = lesion_means(labels, voxel_scores)
    if lower_is_true:
        scores = -scores
    return auroc(scores[true], scores[~true])


# ----------------------------------------------------------------------------- one scan
def calibration_metrics(
    reference: Any,
    prediction: Any,
    probability: Any,
    uncertainty: Any = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    n_bins: int = N_BINS,
    alpha: float = ANIMA_ALPHA,
    beta: float = ANIMA_BETA,
    gamma: float = ANIMA_GAMMA,
    min_lesion_mm3: float = ANIMA_MIN_LESION_MM3,
) -> dict:
    """The calibration and uncertainty columns of one scan, and its reliability bins.

    Args:
        reference, prediction: `(slices, rows, cols)` binary masks.
        probability: `(slices, rows, cols)` lesion probabilities in [0, 1].
        uncertainty: `(slices, rows, cols)` voxel uncertainty; default the predictive entropy
            of ``probability`` (:func:`planar3d.inference.ensemble.entropy`, nats).
        spacing: voxel size in mm along `(slices, rows, cols)`.
        n_bins: ECE / reliability bins.
        alpha, beta, gamma, min_lesion_mm3: lesion detection rule.

    Returns:
        ``{key: float for key in CALIBRATION_KEYS}`` (``ece``, ``brier``, ``ndsc`` of the
        prediction, ``r_auc`` over the Shifts grid, ``lesion_auroc`` of the mean probability,
        ``lesion_auroc_uncertainty`` of the mean uncertainty) and ``"reliability"``: the
        :func:`reliability_curve`.
    """
    if uncertainty is None:
        uncertainty = entropy(probability)
    detection = {"alpha": alpha, "beta": beta, "gamma": gamma, "min_lesion_mm3": min_lesion_mm3}
    curve = reliability_curve(reference, probability, n_bins)
    return {
        "ece": curve_ece(curve),
        "brier": brier_score(reference, probability),
        "ndsc": normalised_dice(reference, prediction),
        "r_auc": retention_auc(reference, prediction, uncertainty),
        "lesion_auroc": lesion_auroc(reference, prediction, probability, spacing, **detection),
        "lesion_auroc_uncertainty": lesion_auroc(reference, prediction, uncertainty, spacing, lower_is_true=True,
                                                 **detection),
        "reliability": curve,
    }
