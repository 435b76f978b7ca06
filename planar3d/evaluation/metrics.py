"""Segmentation metrics of one scan: the paper's set and the MSSEG-2016 challenge set.

All functions take a binary ``reference`` (ground truth) and ``prediction`` of the same
`(slices, rows, cols)` shape (bool or 0/1) and, where distances or volumes enter, the voxel
``spacing`` in mm along `(slices, rows, cols)`. Every result is a finite float.

Empty masks (defined cases, never NaN or inf):

* A ratio whose denominator is 0 (sensitivity with an empty reference, PPV with an empty
  prediction, Dice with both empty, the same for lesion counts, specificity/NPV for a
  volume that is all lesion) is **1.0 when reference and prediction agree exactly** (both
  empty, or both identical) **and 0.0 otherwise**. An F1 of two zero scores is 0.
* Distances are 0 when both masks are empty and the image diagonal
  ``sqrt(sum((shape * spacing)**2))`` in mm (the largest distance the image allows) when
  exactly one is empty.
* The relative volume error is 0 when both are empty and +100 % when only the reference
  is empty (mirroring the -100 % of an empty prediction).

Sources: the paper (Kolarik et al. 2020) reports Dice (its Eq. 4) and sensitivity (Eq. 6)
per test scan. The MSSEG-2016 definitions follow Commowick et al., "Objective Evaluation
of Multiple Sclerosis Lesion Segmentation using a Data Management and Processing
Infrastructure", Sci Rep 8:13650 (2018), as implemented in Anima's ``animaSegPerfAnalyzer``
(``animaSegPerfCAnalyzer.cxx``, ``animaSegmentationMeasuresImageFilter.hxx``).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from planar3d.errors import Planar3DError
from planar3d.evaluation.lesions import as_mask, bounding_box, label_lesions, min_lesion_voxels, voxel_spacing
from planar3d.evaluation.reference import ANIMA_ALPHA, ANIMA_BETA, ANIMA_GAMMA, ANIMA_MIN_LESION_MM3

__all__ = [
    "dice",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "relative_volume_error",
    "absolute_volume_difference_ml",
    "surface_distances",
    "hausdorff_distance",
    "hd95",
    "mean_surface_distance",
    "lesion_f1",
    "lesion_detection",
    "overlap_table",
    "detected",
    "scan_metrics",
    "msseg_metrics",
    "summarise",
]

#: The keys of :func:`msseg_metrics`, in the order of ``metrics.csv``.
MSSEG_KEYS = (
    "dice", "sensitivity", "specificity", "ppv", "npv", "relative_volume_error", "hausdorff", "hd95",
    "mean_surface_distance", "lesion_sensitivity", "lesion_ppv", "lesion_f1", "n_reference_lesions",
    "n_predicted_lesions",
)
#: The keys of :func:`classification_metrics`.
CLASSIFICATION_KEYS = ("accuracy", "balanced_accuracy", "roc_auc")
SCAN_METRIC_KEYS = ("dice", "sensitivity", "ppv", "avd_ml", "hd95", "lesion_f1")


# ----------------------------------------------------------------------------- helpers
def _masks(reference: Any, prediction: Any) -> tuple[np.ndarray, np.ndarray]:
    reference = as_mask(reference, "reference")
    prediction = as_mask(prediction, "prediction")
    if reference.shape != prediction.shape:
        raise Planar3DError(
            f"reference and prediction must have the same shape; reference is {reference.shape}. "
            f"Received: prediction shape={prediction.shape}"
        )
    return reference, prediction


def _ratio(numerator: float, denominator: float, agree: bool) -> float:
    """``numerator / denominator``; for 0/0, 1.0 when the masks agree exactly, else 0.0."""
    if denominator == 0:
        return 1.0 if agree else 0.0
    return float(numerator) / float(denominator)


def _f1(recall: float, ppv: float) -> float:
    total = recall + ppv
    return 0.0 if total == 0 else 2.0 * recall * ppv / total


def _confusion(reference: np.ndarray, prediction: np.ndarray) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` voxel counts."""
    tp = int(np.count_nonzero(reference & prediction))
    n_reference = int(np.count_nonzero(reference))
    n_prediction = int(np.count_nonzero(prediction))
    fp = n_prediction - tp
    fn = n_reference - tp
    tn = reference.size - tp - fp - fn
    return tp, fp, fn, tn


def _image_diagonal_mm(shape: tuple[int, ...], spacing: np.ndarray) -> float:
    return float(np.sqrt(np.sum((np.asarray(shape) * spacing) ** 2)))


# ----------------------------------------------------------------------------- voxel-wise
def dice(reference: Any, prediction: Any) -> float:
    """Dice coefficient ``2 TP / (2 TP + FP + FN)`` (paper Eq. 4; Anima's mean overlap).

    Both masks empty: 1.0.

    Raises:
        Planar3DError: masks not binary, not 3D or of different shapes (all functions here).
    """
    reference, prediction = _masks(reference, prediction)
    tp, fp, fn, _ = _confusion(reference, prediction)
    return _ratio(2 * tp, 2 * tp + fp + fn, agree=fp + fn == 0)


def sensitivity(reference: Any, prediction: Any) -> float:
    """Voxel sensitivity (recall) ``TP / (TP + FN)`` (paper Eq. 6).

    Empty reference: 1.0 if the prediction is empty too, else 0.0.
    """
    reference, prediction = _masks(reference, prediction)
    tp, fp, fn, _ = _confusion(reference, prediction)
    return _ratio(tp, tp + fn, agree=fp + fn == 0)


def specificity(reference: Any, prediction: Any) -> float:
    """Voxel specificity ``TN / (TN + FP)``. All-lesion reference: 1.0 if equal, else 0.0."""
    reference, prediction = _masks(reference, prediction)
    tp, fp, fn, tn = _confusion(reference, prediction)
    return _ratio(tn, tn + fp, agree=fp + fn == 0)


def ppv(reference: Any, prediction: Any) -> float:
    """Positive predictive value ``TP / (TP + FP)`` (the "precision" of detection papers).

    Empty prediction: 1.0 if the reference is empty too, else 0.0.
    """
    reference, prediction = _masks(reference, prediction)
    tp, fp, fn, _ = _confusion(reference, prediction)
    return _ratio(tp, tp + fp, agree=fp + fn == 0)


def npv(reference: Any, prediction: Any) -> float:
    """Negative predictive value ``TN / (TN + FN)``. All-lesion prediction: 1.0 if equal, else 0.0."""
    reference, prediction = _masks(reference, prediction)
    tp, fp, fn, tn = _confusion(reference, prediction)
    return _ratio(tn, tn + fn, agree=fp + fn == 0)


def relative_volume_error(reference: Any, prediction: Any) -> float:
    """Signed relative volume error in percent, ``100 (V_pred - V_ref) / V_ref`` (Anima's RVE).

    Empty reference: 0.0 if the prediction is empty too, else +100.0.
    """
    reference, prediction = _masks(reference, prediction)
    n_reference = int(np.count_nonzero(reference))
    n_prediction = int(np.count_nonzero(prediction))
    if n_reference == 0:
        return 0.0 if n_prediction == 0 else 100.0
    return 100.0 * (n_prediction - n_reference) / n_reference


def absolute_volume_difference_ml(reference: Any, prediction: Any, spacing: Sequence[float]) -> float:
    """Absolute lesion volume difference ``|V_pred - V_ref|`` in millilitres (1 ml = 1000 mm³).

    Args:
        spacing: voxel size in mm along `(slices, rows, cols)`.
    """
    reference, prediction = _masks(reference, prediction)
    voxel_volume = float(np.prod(voxel_spacing(spacing)))
    difference = abs(int(np.count_nonzero(prediction)) - int(np.count_nonzero(reference)))
    return difference * voxel_volume / 1000.0


# ----------------------------------------------------------------------------- surfaces
def _contour(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour inside the image and outside the mask.

    As ITK's ``BinaryContourImageFilter`` (not fully connected, which Anima uses): the
    outside of the image is not background, so a mask voxel on the image border is contour
    only if it touches background inside the image (checked against SimpleITK 2.5 on random
    masks). A mask filling the whole image has no such voxel; its contour is then taken as
    its border voxels (ITK's would be empty and its distances undefined).
    """
    structure = ndimage.generate_binary_structure(3, 1)
    contour = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=1)
    if not contour.any() and mask.any():
        contour = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return contour


def surface_distances(reference: Any, prediction: Any, spacing: Sequence[float]) -> dict:
    """Distances in mm between the contours of two masks, and Anima's Hausdorff distance.

    The contour of a mask is its voxels with a face neighbour outside the mask inside the
    image, as ITK's contour filter that Anima uses (voxels on the image border are contour
    only where they touch background inside the image; see ``_contour``). Each contour voxel of one mask gets the Euclidean distance in mm
    from its centre to the nearest contour voxel centre of the other, found with a k-d tree
    (``scipy.spatial.cKDTree``) over voxel centres scaled by ``spacing``: the same values as
    ``scipy.ndimage.distance_transform_edt(~contour, sampling=spacing)``, at a cost that
    grows with the number of lesion voxels instead of the image size.

    Args:
        reference, prediction: `(slices, rows, cols)` binary masks.
        spacing: voxel size in mm along `(slices, rows, cols)`.

    Returns:
        ``{"hausdorff", "hd95", "mean_surface_distance"}`` in mm:

        * ``hausdorff``: as ``animaSegPerfAnalyzer`` (ITK ``HausdorffDistanceImageFilter`` on
          the masks themselves): the larger over both directions of the largest distance from
          a voxel of one mask to the nearest voxel of the other. A voxel outside the other
          mask is nearest to that mask's contour, so this is read off the same distance maps;
          a prediction nested inside the reference contributes 0 in that direction.
        * ``hd95``: 95th percentile version on the contours, MONAI's convention
          (``compute_hausdorff_distance(percentile=95, directed=False)``): the larger of the
          two directed 95th percentiles (``numpy.percentile``, linear interpolation). Not an
          Anima output.
        * ``mean_surface_distance``: the symmetric average surface distance of Anima
          (``computeAverageSurfaceDistance``): the mean of both directed contour distance
          sets pooled, ``(sum d(ref->pred) + sum d(pred->ref)) / (n_ref + n_pred)``.

        Both masks empty: all 0. Exactly one empty: all equal to the image diagonal in mm.
    """
    reference, prediction = _masks(reference, prediction)
    spacing = voxel_spacing(spacing)
    reference_empty = not reference.any()
    prediction_empty = not prediction.any()
    if reference_empty or prediction_empty:
        value = 0.0 if reference_empty and prediction_empty else _image_diagonal_mm(reference.shape, spacing)
        return {"hausdorff": value, "hd95": value, "mean_surface_distance": value}

    # crop to the masks with one voxel of background kept where the image goes on, so that
    # the crop's edge is not mistaken for the image border (see _contour)
    box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n))
                for b, n in zip(bounding_box(reference, prediction), reference.shape))
    reference, prediction = reference[box], prediction[box]
    reference_contour = np.argwhere(_contour(reference)) * spacing  # (n, 3) mm
    prediction_contour = np.argwhere(_contour(prediction)) * spacing
    reference_tree = cKDTree(reference_contour)
    prediction_tree = cKDTree(prediction_contour)

    # contour to contour
    reference_to_prediction = prediction_tree.query(reference_contour)[0]
    prediction_to_reference = reference_tree.query(prediction_contour)[0]
    # mask voxel to mask: 0 inside the other mask; outside it, the nearest voxel of the other
    # mask is on its contour (a step towards the point from an inner voxel gets closer)
    outside_prediction = np.argwhere(reference & ~prediction) * spacing
    outside_reference = np.argwhere(prediction & ~reference) * spacing
    hausdorff = max(
        float(prediction_tree.query(outside_prediction)[0].max()) if len(outside_prediction) else 0.0,
        float(reference_tree.query(outside_reference)[0].max()) if len(outside_reference) else 0.0,
    )
    pooled = np.concatenate([reference_to_prediction, prediction_to_reference])
    return {
        "hausdorff": hausdorff,
        "hd95": float(max(np.percentile(reference_to_prediction, 95), np.percentile(prediction_to_reference, 95))),
        "mean_surface_distance": float(pooled.mean()),
    }


def hausdorff_distance(reference: Any, prediction: Any, spacing: Sequence[float]) -> float:
    """Hausdorff distance in mm as ``animaSegPerfAnalyzer`` (see :func:`surface_distances`)."""
    return surface_distances(reference, prediction, spacing)["hausdorff"]


def hd95(reference: Any, prediction: Any, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance between contours in mm (see :func:`surface_distances`)."""
    return surface_distances(reference, prediction, spacing)["hd95"]


def mean_surface_distance(reference: Any, prediction: Any, spacing: Sequence[float]) -> float:
    """Symmetric mean contour distance in mm (see :func:`surface_distances`)."""
    return surface_distances(reference, prediction, spacing)["mean_surface_distance"]


# ----------------------------------------------------------------------------- lesions
def overlap_table(reference_labels: np.ndarray, n_reference: int, prediction_labels: np.ndarray,
                   n_prediction: int) -> np.ndarray:
    """Voxel counts ``table[i, j]`` of reference lesion ``i`` meeting predicted lesion ``j``.

    Row 0 and column 0 are background (voxels of no kept lesion). Shape
    `(n_reference + 1, n_prediction + 1)`, int64; ``table[0, 0]`` counts the remaining voxels
    of the arrays passed in.
    """
    in_a_lesion = (reference_labels > 0) | (prediction_labels > 0)
    pairs = reference_labels[in_a_lesion].astype(np.int64) * (n_prediction + 1) + prediction_labels[in_a_lesion]
    counts = np.bincount(pairs, minlength=(n_reference + 1) * (n_prediction + 1))
    counts[0] += reference_labels.size - pairs.size
    return counts.reshape(n_reference + 1, n_prediction + 1)


def detected(table: np.ndarray, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Which lesions of A (rows 1.. of ``table``) are detected by the lesions of B (columns).

    Anima's rule (``getTruePositiveLesions`` and ``falsePositiveRatioTester``): lesion ``i``
    is detected when more than ``alpha`` of its voxels lie in B's lesions and, visiting the
    B lesions overlapping it by decreasing overlap (ties in column order, i.e. larger lesion
    first, as after ITK's RelabelComponentImageFilter) until their
    overlaps reach ``gamma`` of that covered part, none of them has more than ``beta`` of
    its own voxels outside A's lesions (``table[0, j] / table[:, j].sum()``).

    Args:
        table: `(n_a + 1, n_b + 1)` overlap counts, row/column 0 background.

    Returns:
        `(n_a,)` bool array.
    """
    lesion_sizes = table[1:].sum(axis=1)
    covered = table[1:, 1:].sum(axis=1)
    b_sizes = table.sum(axis=0)
    outside_fraction = np.divide(table[0], b_sizes, out=np.zeros(table.shape[1]), where=b_sizes > 0)
    detected = np.zeros(table.shape[0] - 1, dtype=bool)
    for i in np.flatnonzero(covered / np.maximum(lesion_sizes, 1) > alpha):
        overlaps = table[i + 1, 1:]
        share = 0.0
        detected[i] = True
        for j in np.argsort(-overlaps, kind="stable"):
            if overlaps[j] == 0 or share >= gamma:
                break
            if outside_fraction[j + 1] > beta:
                detected[i] = False
                break
            share += overlaps[j] / covered[i]
    return detected


def lesion_detection(
    reference: Any,
    prediction: Any,
    spacing: Sequence[float],
    alpha: float = ANIMA_ALPHA,
    beta: float = ANIMA_BETA,
    gamma: float = ANIMA_GAMMA,
    min_lesion_mm3: float = ANIMA_MIN_LESION_MM3,
) -> dict:
    """MSSEG-2016 lesion detection scores (Commowick et al. 2018; ``animaSegPerfAnalyzer``).

    Lesions are 3D face-connected (6-connectivity) components of each mask; components of at
    most ``floor(min_lesion_mm3 / voxel volume)`` voxels are dropped from both masks. A
    reference lesion is detected when more than ``alpha`` of its voxels are covered by
    predicted lesions and, taking the overlapping predicted lesions by decreasing overlap
    until they account for ``gamma`` of the covered part, none has more than ``beta`` of its
    own voxels outside the reference lesions. With the roles swapped the same test decides
    whether a predicted lesion is a true detection.

    Args:
        reference, prediction: `(slices, rows, cols)` binary masks.
        spacing: voxel size in mm along `(slices, rows, cols)`.
        alpha: minimum covered fraction of a lesion (strictly more is needed); in (0, 1].
        beta: maximum fraction of a detecting lesion lying outside; in (0, 1].
        gamma: share of the overlap whose lesions are checked against ``beta``; in (0, 1].
        min_lesion_mm3: minimum lesion volume in mm³ (>= 0).

    Returns:
        ``{"lesion_sensitivity", "lesion_ppv", "lesion_f1", "n_reference_lesions",
        "n_predicted_lesions"}``: detected reference lesions / reference lesions, true
        predicted lesions / predicted lesions, their harmonic mean, and the lesion counts
        (int). No lesion in a mask: its ratio is 1.0 if the other has none either, else 0.0.

    Raises:
        Planar3DError: bad masks, spacing, thresholds or minimum volume.
    """
    reference, prediction = _masks(reference, prediction)
    spacing = voxel_spacing(spacing)
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not 0 < value <= 1:
            raise Planar3DError(f"{name} must be in (0, 1]. Received: {name}={value}")
    min_voxels = min_lesion_voxels(min_lesion_mm3, float(np.prod(spacing)))

    box = bounding_box(reference, prediction)
    if box is not None:
        reference, prediction = reference[box], prediction[box]
    reference_labels, n_reference = label_lesions(reference, 6, min_voxels)
    prediction_labels, n_prediction = label_lesions(prediction, 6, min_voxels)
    table = overlap_table(reference_labels, n_reference, prediction_labels, n_prediction)
    detected_reference = int(detected(table, alpha, beta, gamma).sum())
    true_predictions = int(detected(table.T, alpha, beta, gamma).sum())

    agree = n_reference == 0 and n_prediction == 0
    lesion_sensitivity = _ratio(detected_reference, n_reference, agree)
    lesion_ppv = _ratio(true_predictions, n_prediction, agree)
    return {
        "lesion_sensitivity": lesion_sensitivity,
        "lesion_ppv": lesion_ppv,
        "lesion_f1": 1.0 if agree else _f1(lesion_sensitivity, lesion_ppv),
        "n_reference_lesions": n_reference,
        "n_predicted_lesions": n_prediction,
    }


def lesion_f1(reference: Any, prediction: Any, connectivity: int = 6) -> float:
    """Lesion-wise detection F1 with the simple overlap rule (no size filter).

    Lesions are connected components (``connectivity`` 6, 18 or 26). A reference lesion is
    detected when any of its voxels is predicted; a predicted lesion is a true detection
    when any of its voxels is in the reference. F1 is the harmonic mean of lesion
    sensitivity (detected / reference lesions) and lesion PPV (true / predicted
    lesions). No lesion in either mask: 1.0; in exactly one: 0.0.
    """
    reference, prediction = _masks(reference, prediction)
    box = bounding_box(reference, prediction)
    if box is None:
        return 1.0
    reference, prediction = reference[box], prediction[box]
    reference_labels, n_reference = label_lesions(reference, connectivity)
    prediction_labels, n_prediction = label_lesions(prediction, connectivity)
    if n_reference == 0 or n_prediction == 0:
        return 0.0
    detected = np.unique(reference_labels[prediction]).size  # labels met by the prediction
    detected -= int(np.any(prediction & ~reference))  # label 0 is not a lesion
    true_predictions = np.unique(prediction_labels[reference]).size
    true_predictions -= int(np.any(reference & ~prediction))
    return _f1(detected / n_reference, true_predictions / n_prediction)


# ----------------------------------------------------------------------------- per scan
def scan_metrics(reference: Any, prediction: Any, spacing: Sequence[float]) -> dict:
    """The paper-level metric set of one test scan (one row of ``metrics.csv``).

    Args:
        reference, prediction: `(slices, rows, cols)` binary masks.
        spacing: voxel size in mm along `(slices, rows, cols)`.

    Returns:
        ``{"dice", "sensitivity", "ppv", "avd_ml", "hd95", "lesion_f1"}``: see :func:`dice`,
        :func:`sensitivity`, :func:`ppv`, :func:`absolute_volume_difference_ml` (ml),
        :func:`hd95` (mm) and :func:`lesion_f1` (6-connectivity, any overlap).
    """
    reference, prediction = _masks(reference, prediction)
    return {
        "dice": dice(reference, prediction),
        "sensitivity": sensitivity(reference, prediction),
        "ppv": ppv(reference, prediction),
        "avd_ml": absolute_volume_difference_ml(reference, prediction, spacing),
        "hd95": hd95(reference, prediction, spacing),
        "lesion_f1": lesion_f1(reference, prediction),
    }


def msseg_metrics(
    reference: Any,
    prediction: Any,
    spacing: Sequence[float],
    alpha: float = ANIMA_ALPHA,
    beta: float = ANIMA_BETA,
    gamma: float = ANIMA_GAMMA,
    min_lesion_mm3: float = ANIMA_MIN_LESION_MM3,
) -> dict:
    """The MSSEG-2016 challenge metrics of one scan (Commowick et al. 2018, Anima).

    Defaults are those of ``animaSegPerfAnalyzer`` (``-x 0.10 -y 0.70 -z 0.65 -v 3``).

    Args:
        reference, prediction: `(slices, rows, cols)` binary masks.
        spacing: voxel size in mm along `(slices, rows, cols)`.
        alpha, beta, gamma, min_lesion_mm3: lesion detection rule, see :func:`lesion_detection`.

    Returns:
        A dict with exactly the keys ``dice``, ``sensitivity``, ``specificity``, ``ppv``,
        ``npv``, ``relative_volume_error`` (%), ``hausdorff``, ``hd95``,
        ``mean_surface_distance`` (mm, see :func:`surface_distances`),
        ``lesion_sensitivity``, ``lesion_ppv``, ``lesion_f1``, ``n_reference_lesions``,
        ``n_predicted_lesions`` (int). All values are finite (see the module docstring for
        empty masks).

    Raises:
        Planar3DError: bad masks, spacing, thresholds or minimum volume.
    """
    reference, prediction = _masks(reference, prediction)
    tp, fp, fn, tn = _confusion(reference, prediction)
    agree = fp + fn == 0
    result = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, agree),
        "sensitivity": _ratio(tp, tp + fn, agree),
        "specificity": _ratio(tn, tn + fp, agree),
        "ppv": _ratio(tp, tp + fp, agree),
        "npv": _ratio(tn, tn + fn, agree),
        "relative_volume_error": relative_volume_error(reference, prediction),
    }
    result.update(surface_distances(reference, prediction, spacing))
    result.update(lesion_detection(reference, prediction, spacing, alpha, beta, gamma, min_lesion_mm3))
    return result


# ----------------------------------------------------------------------------- tables
def summarise(
    rows: Sequence[dict],
    by: str = "centre",
    keys: Sequence[str] = SCAN_METRIC_KEYS,
    ddof: int = 0,
) -> dict:
    """Mean, standard deviation and count of metrics per group and overall.

    Args:
        rows: one dict per scan holding ``by`` and every name in ``keys``.
        by: the grouping key (e.g. ``"centre"``); its values become group names (``str``).
        keys: metric names to summarise.
        ddof: delta degrees of freedom of the standard deviation (0: population, as
            ``numpy.std``; 1: sample).

    Returns:
        ``{group: {key: {"mean": float, "std": float, "n": int}}}`` with groups sorted by
        name, then ``"overall"`` over all rows. A group of ``n <= ddof`` rows has std 0.

    Raises:
        Planar3DError: no rows, a row missing ``by`` or a key, a non-numeric value, or a
            group named ``"overall"``.
    """
    if not rows:
        raise Planar3DError("summarise needs at least one row. Received: rows=[]")
    groups: dict[str, list[dict]] = {}
    for index, row in enumerate(rows):
        missing = [name for name in (by, *keys) if name not in row]
        if missing:
            raise Planar3DError(f"row {index} lacks {missing}. Received: keys={sorted(row)}")
        groups.setdefault(str(row[by]), []).append(row)
    if "overall" in groups:
        raise Planar3DError(f"a group may not be named 'overall' (it names all rows). Received: {by}='overall'")

    def _stats(members: list[dict]) -> dict:
        summary = {}
        for key in keys:
            try:
                values = np.asarray([float(row[key]) for row in members], dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise Planar3DError(f"metric {key!r} must be numeric. Received: {error}") from error
            std = float(values.std(ddof=ddof)) if values.size > ddof else 0.0
            summary[key] = {"mean": float(values.mean()), "std": std, "n": int(values.size)}
        return summary

    result = {name: _stats(groups[name]) for name in sorted(groups)}
    result["overall"] = _stats(list(rows))
    return result


def classification_metrics(labels: Sequence[int], probabilities: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, ROC AUC and confusion matrix (scikit-learn).

    Args:
        labels: true class of each scan, `(n,)`.
        probabilities: `(n, n_classes)` predicted class probabilities.

    Returns:
        ``n``, ``accuracy``, ``balanced_accuracy``, ``roc_auc`` (binary: of class 1; more
        classes: one-vs-rest macro average; NaN when a class is absent from ``labels``, where
        it is undefined) and ``confusion_matrix`` (rows: true class, columns: predicted).
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    if len(np.unique(labels)) < n_classes:
        auc = float("nan")
    elif n_classes == 2:
        auc = float(roc_auc_score(labels, probabilities[:, 1]))
    else:
        auc = float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=list(range(n_classes))))
    with warnings.catch_warnings():  # a test fold may lack a class: recall over the classes present
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predicted))
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": balanced,
        "roc_auc": auc,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=list(range(n_classes))).tolist(),
    }


def prediction_metrics(rows: Sequence[dict]) -> dict:
    """:func:`classification_metrics` of prediction rows (``label``, ``prob_<k>``)."""
    n_classes = sum(key.startswith("prob_") for key in rows[0])
    probabilities = np.array([[row[f"prob_{k}"] for k in range(n_classes)] for row in rows])
    return classification_metrics([row["label"] for row in rows], probabilities)

