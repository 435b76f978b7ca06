"""Evaluate predicted lesion masks against references: ``python -m planar3d.evaluate``.

``--reference`` and ``--prediction`` are two mask files (one pair) or two folders (pairs
matched by patient id; a file and a folder also work, matched by id). Each pair must be on
one voxel grid (:func:`planar3d.io.nifti.grid_mismatch`): equal shapes and affines equal within
1e-4 mm (absolute, per element; stricter than the readers' 1e-3, as a mask and its prediction
come from one pipeline). The
MSSEG-2016 metric set (:func:`planar3d.evaluation.metrics.msseg_metrics`) is computed per pair with the
reference's voxel size, and written to ``--out`` (default: ``evaluation/`` beside the
prediction, i.e. inside a prediction folder or in a prediction file's folder):

* ``metrics.csv``: one row per pair: ``patient``, ``centre`` (first two characters of the
  id) and the 14 MSSEG-2016 metrics;
* ``summary.md``: mean ± std (population) per centre and overall, with the paper's Table 2
  Dice and sensitivity beside ours;
* ``boxplot.png``: per-centre box plots of Dice, sensitivity, PPV and lesion F1;
* ``qc/<id>.png``: the FLAIR with the predicted (red) and reference (green, both: yellow)
  lesions in the three planes through the largest predicted lesion (unless ``--no-qc``);
* ``evaluation.json``: the effective arguments, the evaluated pairs and any problems;
* ``report.html``: one self-contained page (:mod:`planar3d.evaluation.html_report`): the
  summary, the per-scan table (sortable), the box plot and the QC pictures, problems first.

With ``--probabilities`` (a probability map file, or a folder matched by patient id as the
predictions: ``<id>_prob.nii.gz``, ``<id>_probabilities.nii.gz``, ...) each row also
gets the calibration and uncertainty columns of :mod:`planar3d.evaluation.calibration` (ECE,
Brier score, nDSC, R-AUC, lesion AUROC of the mean probability and of the mean uncertainty),
``reliability.png`` shows the reliability diagram of all scans' voxels pooled and
``summary.md`` a table of them with their definitions. ``--uncertainty`` gives the voxel
uncertainty maps (file or folder, ``<id>_entropy.nii.gz`` / ``<id>_uncertainty.nii.gz``;
default: the predictive entropy of the probability). Each map must be on the reference's grid.

Patient ids: a file named generically (``Consensus.nii.gz``, ``mask.nii.gz``,
``3DFLAIR.nii.gz``, ...) takes the id of its folder (skipping folder names such as
``Masks`` or ``Preprocessed_Data``); any other file the name without the extension and
without a trailing ``_mask``, ``_pred``, ``_prediction``, ``_seg`` or ``_consensus``
(``_flair`` for scans). Below a folder, only files recognisable as masks (generic mask
name or one of those suffixes) are taken when there are any, so an MSSEG-2016 patient
folder yields its ``Consensus.nii.gz`` and not the FLAIR or the seven manual
segmentations; otherwise every NIfTI file is taken.

QC overlays are drawn on the FLAIR of ``--flair`` (a file, or a folder matched by id);
without ``--flair`` on the FLAIR found beside the references (``3DFLAIR.nii.gz`` or
``FLAIR_preprocessed.nii.gz`` of the MSSEG-2016 layouts), else on a black background.
Volumes are reoriented (no resampling) to the axis order of :mod:`planar3d.data.preprocess`
so that the panels are the true sagittal, axial and coronal planes.

Exit status: 0 when every matched pair was evaluated; 1 when some pairs (folder mode) or
some overlays failed, each reported on stderr; 2 for a user error (bad single pair, no
matched pair, existing outputs without ``--overwrite``, bad flags).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planar3d import __version__
from planar3d.atomic import check_destinations, write_rows, write_text_atomic
from planar3d.errors import InputFileError, Planar3DError
from planar3d.evaluation.calibration import CALIBRATION_KEYS, N_BINS, NDSC_R, calibration_metrics, curve_ece, pool_reliability
from planar3d.evaluation.metrics import MSSEG_KEYS, msseg_metrics
from planar3d.evaluation.reference import ANIMA_ALPHA, ANIMA_BETA, ANIMA_GAMMA, ANIMA_MIN_LESION_MM3, paper_table2
from planar3d.evaluation.html_report import write_summary_report
from planar3d.evaluation.reports import evaluation_summary_markdown
from planar3d.io.datasets import find_patient_folders, known_dataset
from planar3d.io.nifti import check_binary, grid_mismatch, load_nifti, mask_voxels

__all__ = [
    "AFFINE_TOLERANCE", "Evaluation", "check_same_grid", "evaluate", "evaluate_pair", "find_volumes",
    "load_binary_mask", "load_probability_map", "load_uncertainty_map", "match_pairs", "patient_id"
]




#: Largest absolute difference allowed between the affine elements of a pair (mm).
AFFINE_TOLERANCE = 1e-4


_NIFTI_SUFFIXES = (".nii.gz", ".nii")


_GENERIC_NAMES = {
    "mask": ("consensus", "mask", "seg", "segmentation", "prediction", "pred", "lesions", "lesion_mask",
             "ground_truth", "groundtruth", "gt"),
    "scan": ("3dflair", "flair", "flair_preprocessed"),
    "probability": ("probability", "probabilities", "prob", "probs", "proba"),
    "uncertainty": ("uncertainty", "entropy"),
}


_ID_SUFFIXES = {
    "mask": ("_mask", "_pred", "_prediction", "_seg", "_consensus"),
    "scan": ("_flair", "_3dflair"),
    "probability": ("_prob", "_probs", "_proba", "_probability", "_probabilities"),
    "uncertainty": ("_uncertainty", "_entropy"),
}


#: Roles whose ids also drop a mask suffix (``<id>_mask_prob.nii.gz``).
_MAP_ROLES = ("probability", "uncertainty")


_GENERIC_FOLDERS = ("masks", "preprocessed_data", "unprocessed_data", "raw_data", "predictions", "anat")




_BOXPLOT_KEYS = ("dice", "sensitivity", "ppv", "lesion_f1")


def _name_stem(path: Path) -> str:
    for suffix in _NIFTI_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _folder_id(path: Path) -> str:
    for folder in path.resolve().parents:
        if folder.name and folder.name.lower() not in _GENERIC_FOLDERS:
            return folder.name
    return path.resolve().parent.name


def _check_role(role: str) -> None:
    if role not in _GENERIC_NAMES:
        raise Planar3DError(f"role must be one of {sorted(_GENERIC_NAMES)}. Received: role={role!r}")


def patient_id(path: str | Path, role: str = "mask") -> str:
    """The patient id of a mask (``role="mask"``), FLAIR (``"scan"``) or map file.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file (it need not exist).
        role: ``"mask"``, ``"scan"``, ``"probability"`` or ``"uncertainty"``: which generic
            names and suffixes apply (a map's id also drops a mask suffix: ``X_mask_prob`` -> ``X``).

    Returns:
        The name of the nearest folder not named like ``Masks`` / ``Preprocessed_Data``
        when the file name is generic (``Consensus``, ``mask``, ``3DFLAIR`` ...), else the
        file name without extension and trailing role suffixes (``01016SACH_mask`` ->
        ``01016SACH``).

    Raises:
        Planar3DError: an unknown role.
    """
    _check_role(role)
    path = Path(path)
    stem = _name_stem(path)
    if stem.lower() in _GENERIC_NAMES[role]:
        return _folder_id(path)
    suffixes = _ID_SUFFIXES[role] + (_ID_SUFFIXES["mask"] if role in _MAP_ROLES else ())
    stripped = True
    while stripped:
        stripped = False
        for suffix in suffixes:
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                stem, stripped = stem[: -len(suffix)], True
    return stem


def _is_marked(path: Path, role: str) -> bool:
    stem = _name_stem(path).lower()
    return stem in _GENERIC_NAMES[role] or stem.endswith(_ID_SUFFIXES[role])


def find_volumes(path: str | Path, role: str = "mask", marked_only: bool = False) -> dict[str, Path]:
    """The volumes of a file or folder, keyed by patient id.

    Args:
        path: one NIfTI file (returned as is, whatever its name) or a folder searched
            recursively for ``.nii`` / ``.nii.gz`` files (hidden files and folders skipped).
        role: ``"mask"`` or ``"scan"`` (see :func:`patient_id`).
        marked_only: in a folder, take only files named as the role (generic name or role
            suffix) even when there are none; by default all files are taken then.

    Returns:
        ``{patient id: path}`` sorted by id; empty only with ``marked_only``.

    Raises:
        InputFileError: the path does not exist, a folder holds no NIfTI file, or two files
            give the same patient id.
    """
    _check_role(role)
    path = Path(path)
    if path.is_file():
        return {patient_id(path, role): path}
    if not path.is_dir():
        raise InputFileError(path, "not found (expected a .nii/.nii.gz file or a folder)")
    files = sorted(
        p for p in path.rglob("*")
        if p.name.lower().endswith(_NIFTI_SUFFIXES) and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    marked = [p for p in files if _is_marked(p, role)]
    chosen = marked if marked or marked_only else files
    if not chosen and not marked_only:
        raise InputFileError(path, "no .nii or .nii.gz files in this folder")
    found: dict[str, Path] = {}
    for file in chosen:
        key = patient_id(file, role)
        if key in found:
            raise InputFileError(file, f"patient id {key!r} is also that of {found[key]}; keep one file per patient")
        found[key] = file
    return dict(sorted(found.items()))


def match_pairs(references: dict[str, Path], predictions: dict[str, Path]) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair references and predictions by patient id.

    Returns:
        ``(pairs, reference_only, prediction_only)``: ``(id, reference, prediction)``
        sorted by id, and the ids found on one side only.
    """
    pairs = [(key, references[key], predictions[key]) for key in sorted(references) if key in predictions]
    return (pairs, sorted(set(references) - set(predictions)), sorted(set(predictions) - set(references)))


def load_binary_mask(path: str | Path):
    """Load a binary 3D mask.

    Returns:
        ``(img, mask)``: the nibabel image and its `(i, j, k)` bool voxels (file axis order).

    Raises:
        InputFileError: as :func:`planar3d.io.nifti.load_nifti` (missing, not NIfTI, corrupt,
            not 3D, NaN), or values other than 0 and 1.
    """

    img = load_nifti(path)
    return img, check_binary(path, img.get_fdata(dtype=np.float32))


def check_same_grid(reference_img, img, path: str | Path, reference_path: str | Path) -> None:
    """Refuse an image whose voxel grid differs from the reference's.

    Args:
        reference_img, img: nibabel images.
        path: the file of ``img`` (named in the message).
        reference_path: the file of ``reference_img``.

    Raises:
        InputFileError: shapes differ, or an affine element differs by more than
            :data:`AFFINE_TOLERANCE` (absolute; no relative tolerance).
    """
    mismatch = grid_mismatch(img, reference_img, AFFINE_TOLERANCE)
    if mismatch:
        raise InputFileError(path, f"grid differs from the reference {reference_path}: {mismatch}")


#: How far outside [0, 1] a stored probability may stray (float rounding) before it is refused.
PROBABILITY_SLACK = 1e-5


def load_probability_map(path: str | Path, reference_img, reference_path: str | Path) -> np.ndarray:
    """A lesion probability map on the reference's grid.

    Returns:
        `(i, j, k)` float32 probabilities (file axis order), clipped to [0, 1].

    Raises:
        InputFileError: as :func:`planar3d.io.nifti.load_nifti`, a grid other than the
            reference's (:func:`check_same_grid`), or values outside [0, 1] by more than
            :data:`PROBABILITY_SLACK`.
    """
    img = load_nifti(path)
    check_same_grid(reference_img, img, path, reference_path)
    data = img.get_fdata(dtype=np.float32)
    low, high = float(data.min()), float(data.max())
    if low < -PROBABILITY_SLACK or high > 1 + PROBABILITY_SLACK:
        raise InputFileError(path, f"not a probability map: values from {low:g} to {high:g}, expected [0, 1]")
    return np.clip(data, 0.0, 1.0)


def load_uncertainty_map(path: str | Path, reference_img, reference_path: str | Path) -> np.ndarray:
    """A voxel uncertainty map on the reference's grid: `(i, j, k)` float32 (file axis order).

    Raises:
        InputFileError: as :func:`planar3d.io.nifti.load_nifti` (NaN/Inf included), or a grid
            other than the reference's.
    """
    img = load_nifti(path)
    check_same_grid(reference_img, img, path, reference_path)
    return img.get_fdata(dtype=np.float32)


def _map_lookup(path: str | Path | None, role: str, single: bool) -> dict[str, Path] | Path | None:
    """``--probabilities`` / ``--uncertainty``: one file for a single pair, else maps by patient id."""
    if path is None:
        return None
    path = Path(path)
    return path if single and path.is_file() else find_volumes(path, role=role)


def _pair_calibration(key: str, reference_path: Path, reference_img, reference: np.ndarray, prediction: np.ndarray,
                      maps: dict, n_bins: int, detection: dict) -> tuple[dict, dict[str, str]]:
    """The calibration columns of one pair (:func:`calibration_metrics`) and the map files used.

    ``maps`` is ``{role: (lookup, source)}`` for ``probability`` and optionally ``uncertainty``.

    Raises:
        InputFileError: a missing map for ``key``, a bad map, or one on another grid.
    """
    paths = {}
    for role, (found, source) in maps.items():
        path = found if isinstance(found, Path) else found.get(key)
        if path is None:
            raise InputFileError(source, f"no {role} map for patient {key!r}")
        paths[role] = path
    probability = load_probability_map(paths["probability"], reference_img, reference_path)
    uncertainty = None
    if "uncertainty" in paths:
        uncertainty = load_uncertainty_map(paths["uncertainty"], reference_img, reference_path)
    values = calibration_metrics(reference, prediction, probability, uncertainty, _spacing(reference_img), n_bins,
                                 **detection)
    return values, {role: str(path) for role, path in paths.items()}


def _nan_stats(values: list[float]) -> str:
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return "undefined (n=0)"
    return f"{finite.mean():.4f} ± {finite.std():.4f} (n={finite.size})"


def _calibration_markdown(rows: list[dict], n_bins: int, probabilities: Path, uncertainty: Path | None,
                          pooled_ece: float) -> str:
    """The summary's calibration section: definitions, then mean ± std per centre and overall."""
    source = f"`{uncertainty}`" if uncertainty else "the predictive entropy of the probability (nats)"
    lines = [
        "## Calibration and uncertainty", "",
        f"Probability maps: `{probabilities}`; voxel uncertainty: {source}. Every voxel of the grid counts "
        "(no brain mask); definitions in `planar3d/evaluation/calibration.py`.", "",
        f"* `ece`: expected calibration error (Guo et al. 2017) of the lesion probability, {n_bins} equal-width "
        "bins on [0, 1], right-closed (lo, hi] with 0 in the first, each weighted by its voxel count;",
        "* `brier`: Brier score, the mean of (probability − reference)² over the voxels;",
        f"* `ndsc`: normalised Dice of the predicted mask (Malinin et al. 2022, Shifts; r = {NDSC_R:g});",
        "* `r_auc`: area under the error (1 − nDSC) retention curve: voxels retained by increasing uncertainty, "
        "the rest replaced by the reference; 200 fractions ln(1..200)/ln(200) as Shifts (lower is better);",
        "* `lesion_auroc`: AUROC of the mean probability of each predicted lesion separating true from "
        "false-positive lesions (the detection rule above); `lesion_auroc_uncertainty`: the same with the "
        "lesion's mean voxel uncertainty (lower = true). Undefined for a scan whose predicted lesions are all "
        "true or all false: left out of the means (n counts the scans that have it).", "",
        f"Reliability diagram of all scans' voxels pooled: `reliability.png` (pooled ECE {pooled_ece:.4f}).", "",
    ]
    groups = sorted({str(row["centre"]) for row in rows}) + ["overall"]
    lines += ["| metric | " + " | ".join(f"centre {g}" if g != "overall" else g for g in groups) + " |",
              "|---|" + "---|" * len(groups)]
    for key in CALIBRATION_KEYS:
        cells = [_nan_stats([row[key] for row in rows if g == "overall" or str(row["centre"]) == g]) for g in groups]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_curve(curve: dict) -> dict:
    return {name: [None if not np.isfinite(v) else float(v) for v in values] for name, values in curve.items()}


def _spacing(img) -> list[float]:
    return [float(z) for z in img.header.get_zooms()[:3]]


def _dataset_records(reference: Path, target: str) -> list:
    """The records of a reference folder of a known data set layout, else [] (a folder of masks)."""
    if not reference.is_dir():
        if target != "auto":
            raise InputFileError(reference, f"--target {target} needs a BRATS data set folder as the reference")
        return []
    records = known_dataset(reference, target=target)
    if records is None and target != "auto":
        find_patient_folders(reference, target=target)  # raises: no patient folder of a known layout
    return records or []


def _load_pair(reference_path: Path, prediction_path: Path, labels=None):
    reference_img = load_nifti(reference_path)
    reference = mask_voxels(reference_path, reference_img.get_fdata(dtype=np.float32), labels)
    prediction_img, prediction = load_binary_mask(prediction_path)
    check_same_grid(reference_img, prediction_img, prediction_path, reference_path)
    return reference_img, reference, prediction


def evaluate_pair(
    reference: str | Path,
    prediction: str | Path,
    alpha: float = ANIMA_ALPHA,
    beta: float = ANIMA_BETA,
    gamma: float = ANIMA_GAMMA,
    min_lesion_mm3: float = ANIMA_MIN_LESION_MM3,
) -> dict:
    """The MSSEG-2016 metrics of one prediction file against its reference file.

    Args:
        reference, prediction: binary mask files on the same grid.
        alpha, beta, gamma, min_lesion_mm3: lesion detection rule
            (:func:`planar3d.evaluation.metrics.lesion_detection`; defaults of Anima).

    Returns:
        The dict of :func:`planar3d.evaluation.metrics.msseg_metrics` (keys :data:`MSSEG_KEYS`),
        with the reference's voxel size from its header.

    Raises:
        InputFileError: a bad file (see :func:`load_binary_mask`) or differing grids.
        Planar3DError: bad detection parameters.
    """

    reference_img, reference_mask, prediction_mask = _load_pair(Path(reference), Path(prediction))
    return msseg_metrics(reference_mask, prediction_mask, _spacing(reference_img), alpha=alpha, beta=beta,
                         gamma=gamma, min_lesion_mm3=min_lesion_mm3)


def _draw_qc(path: Path, reference_img, reference: np.ndarray, prediction: np.ndarray, flair_path: Path | None,
             reference_path: Path, title: str) -> str | None:
    """Write the QC mosaic (:mod:`planar3d.evaluation.qc_mosaic`); return a problem with the FLAIR
    (drawn on an empty background then), or None."""
    import nibabel as nib

    from planar3d.evaluation.qc_mosaic import plot_qc_mosaic

    background, problem = np.zeros(reference.shape, dtype=np.float32), None
    if flair_path is None:
        title += " (no FLAIR found: masks only)"
    else:
        try:
            flair_img = load_nifti(flair_path)
            check_same_grid(reference_img, flair_img, flair_path, reference_path)
            background = flair_img.get_fdata(dtype=np.float32)
        except Planar3DError as error:
            problem = str(error)
            title += " (FLAIR unusable: masks only)"
    plot_qc_mosaic(nib.Nifti1Image(background, reference_img.affine), prediction=prediction, reference=reference,
                   path=path, title=title)
    return problem


@dataclass
class Evaluation:
    """What :func:`evaluate` did.

    Attributes:
        rows: one dict per evaluated pair: ``patient``, ``centre`` and :data:`MSSEG_KEYS`
            (with probability maps also :data:`planar3d.evaluation.calibration.CALIBRATION_KEYS`).
        out: the output folder.
        failures: one-line messages of pairs skipped and overlays drawn without FLAIR.
        reference_only, prediction_only: unmatched patient ids.
    """

    rows: list[dict]
    out: Path
    failures: list[str] = field(default_factory=list)
    reference_only: list[str] = field(default_factory=list)
    prediction_only: list[str] = field(default_factory=list)


def _default_out(prediction: Path) -> Path:
    return (prediction if prediction.is_dir() else prediction.parent) / "evaluation"


def _flair_lookup(flair: str | Path | None, reference: Path, single: bool) -> dict[str, Path] | Path | None:
    """A FLAIR path for every id (or one path for every pair), from ``--flair`` or beside the references."""
    if flair is not None:
        flair = Path(flair)
        return flair if flair.is_file() else find_volumes(flair, role="scan")
    root = reference.parent if reference.is_file() else reference
    if reference.is_file():
        beside = sorted(p for p in root.iterdir() if p.is_file() and _is_marked(p, "scan")
                        and p.name.lower().endswith(_NIFTI_SUFFIXES))
        return beside[0] if len(beside) == 1 else None
    return find_volumes(root, role="scan", marked_only=True)


def evaluate(
    reference: str | Path,
    prediction: str | Path,
    out: str | Path | None = None,
    flair: str | Path | None = None,
    qc: bool = True,
    overwrite: bool = False,
    alpha: float = ANIMA_ALPHA,
    beta: float = ANIMA_BETA,
    gamma: float = ANIMA_GAMMA,
    min_lesion_mm3: float = ANIMA_MIN_LESION_MM3,
    target: str = "auto",
    probabilities: str | Path | None = None,
    uncertainty: str | Path | None = None,
    calibration_bins: int = N_BINS,
) -> Evaluation:
    """Evaluate predictions against references; write the CSV, summary, box plot and overlays.

    Args:
        reference: a mask file, a folder of masks (matched by patient id), or a data set folder
            of a known layout (:func:`planar3d.io.datasets.find_patient_folders`: MSSEG-2016,
            Ljubljana, BRATS), whose patients' masks (for BRATS, the ``target`` region of the
            label map), centres and FLAIRs are used.
        prediction: a mask file, or a folder of masks.
        out: output folder (default: ``evaluation/`` in the prediction folder, or beside
            the prediction file).
        flair: FLAIR file or folder for the overlays (default: found beside the references).
        qc: draw the overlays ``qc/<id>.png``.
        overwrite: replace existing outputs.
        alpha, beta, gamma, min_lesion_mm3: lesion detection rule (Anima defaults).
        target: a :data:`planar3d.config.TARGETS` name, for a BRATS reference folder.
        probabilities: a lesion probability map file, or a folder of them matched by patient
            id (:func:`patient_id` with ``role="probability"``): adds the calibration columns
            (:data:`planar3d.evaluation.calibration.CALIBRATION_KEYS`) and ``reliability.png``.
        uncertainty: voxel uncertainty map file or folder (``role="uncertainty"``), for the
            R-AUC and the lesion uncertainty AUROC; default the entropy of the probability.
        calibration_bins: equal-width bins of the ECE and the reliability diagram.

    Returns:
        An :class:`Evaluation`. With two files, the pair is evaluated whatever their ids.
        Otherwise unmatched ids are reported on stderr and skipped, and so is a pair that
        fails (bad file, differing grids), reported on stderr and in ``failures``.

    Raises:
        InputFileError: a missing input; with two files, a bad file (probability map
            included) or differing grids; an existing output without ``overwrite``. In folder
            mode a pair whose map is missing, bad or on another grid is skipped and reported.
        Planar3DError: no matched pair, no pair could be evaluated, ``uncertainty`` without
            ``probabilities``, ``calibration_bins`` < 1.
    """
    from planar3d.evaluation.report_figures import plot_metric_boxplots, plot_reliability_diagram

    reference, prediction = Path(reference), Path(prediction)
    if uncertainty is not None and probabilities is None:
        raise Planar3DError(f"--uncertainty needs --probabilities. Received: uncertainty={uncertainty}")
    if calibration_bins < 1:
        raise Planar3DError(f"calibration_bins must be >= 1. Received: calibration_bins={calibration_bins}")
    # match
    single = reference.is_file() and prediction.is_file()
    dataset = _dataset_records(reference, target)
    references = {r.patient_id: r.mask for r in dataset if r.mask is not None} if dataset else find_volumes(reference)
    labels = {r.patient_id: r.mask_labels for r in dataset}
    centres = {r.patient_id: r.centre for r in dataset}
    predictions = find_volumes(prediction)
    if single:
        key = next(iter(references))
        pairs, reference_only, prediction_only = [(key, reference, prediction)], [], []
    else:
        pairs, reference_only, prediction_only = match_pairs(references, predictions)
    if reference_only or prediction_only:
        print(f"warning: unmatched patient ids: reference only {reference_only or 'none'}; "
              f"prediction only {prediction_only or 'none'}", file=sys.stderr)
    if not pairs:
        raise Planar3DError(
            f"no patient id is both in {reference} ({len(references)} masks) and in {prediction} "
            f"({len(predictions)} masks). Received: reference ids {list(references)[:5]}, "
            f"prediction ids {list(predictions)[:5]}")
    if not qc:
        flairs = None
    elif dataset and flair is None:
        flairs = {r.patient_id: r.flair for r in dataset}
    else:
        flairs = _flair_lookup(flair, reference, single)
    detection = {"alpha": alpha, "beta": beta, "gamma": gamma, "min_lesion_mm3": min_lesion_mm3}
    maps = {role: (_map_lookup(source, role, single), source)
            for role, source in (("probability", probabilities), ("uncertainty", uncertainty)) if source is not None}

    # refuse existing outputs before computing anything
    out = Path(out) if out is not None else _default_out(prediction)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "output must be a folder")
    outputs = [out / name for name in ("metrics.csv", "summary.md", "boxplot.png", "evaluation.json", "report.html")]
    outputs += [out / "qc" / f"{key}.png" for key, _, _ in pairs] if qc else []
    outputs += [out / "reliability.png"] if maps else []
    check_destinations(outputs, overwrite=overwrite)  # exists, unwritable, below a regular file

    # evaluate
    rows, failures, done, curves = [], [], [], []
    for key, reference_path, prediction_path in pairs:
        try:
            reference_img, reference_mask, prediction_mask = _load_pair(reference_path, prediction_path, labels.get(key))
            metrics = msseg_metrics(reference_mask, prediction_mask, _spacing(reference_img), **detection)
            used = {}
            if maps:
                calibration, used = _pair_calibration(key, reference_path, reference_img, reference_mask,
                                                      prediction_mask, maps, calibration_bins, detection)
                curves.append(calibration.pop("reliability"))
                metrics.update(calibration)
        except InputFileError as error:
            if single:
                raise
            print(f"error: {error} (pair skipped)", file=sys.stderr)
            failures.append(str(error))
            continue
        keys = MSSEG_KEYS + (CALIBRATION_KEYS if maps else ())
        rows.append({"patient": key, "centre": centres.get(key, key[:2]), **{name: metrics[name] for name in keys}})
        print(f"{key}: dice {metrics['dice']:.3f} sensitivity {metrics['sensitivity']:.3f} "
              f"lesion F1 {metrics['lesion_f1']:.3f} ({metrics['n_predicted_lesions']} predicted / "
              f"{metrics['n_reference_lesions']} reference lesions)"
              + (f"; ECE {metrics['ece']:.4f} nDSC {metrics['ndsc']:.3f} R-AUC {metrics['r_auc']:.4f} "
                 f"lesion AUROC {metrics['lesion_auroc']:.3f}" if maps else ""))
        flair_path = flairs if isinstance(flairs, Path) or flairs is None else flairs.get(key)
        missing_flair = flair is not None and flair_path is None
        done.append({"patient": key, "reference": str(reference_path), "prediction": str(prediction_path),
                     "flair": None if flair_path is None else str(flair_path), **used})
        if qc:
            problem = _draw_qc(out / "qc" / f"{key}.png", reference_img, reference_mask, prediction_mask,
                               flair_path, reference_path,
                               f"{key}: Dice {metrics['dice']:.3f}, lesion F1 {metrics['lesion_f1']:.3f}")
            if missing_flair:
                problem = f"{flair}: no FLAIR for patient {key!r}"
            if problem:
                print(f"error: {problem} (overlay drawn without FLAIR)", file=sys.stderr)
                failures.append(problem)
    if not rows:
        raise Planar3DError(f"none of the {len(pairs)} matched pairs could be evaluated; see the errors above")

    # write
    write_rows(out / "metrics.csv", rows)
    notes = [f"Reference: `{reference}`; prediction: `{prediction}`; {len(rows)} scans "
             f"({len(failures)} problems). Std over scans (population). Lesion detection: alpha {alpha:g}, "
             f"beta {beta:g}, gamma {gamma:g}, lesions > {min_lesion_mm3:g} mm³ (Anima defaults "
             f"{ANIMA_ALPHA:g}/{ANIMA_BETA:g}/{ANIMA_GAMMA:g}/{ANIMA_MIN_LESION_MM3:g}).",
             "", "Per-scan values: `metrics.csv`; box plot: `boxplot.png`"
             + ("; overlays: `qc/<id>.png`." if qc else ".")]
    ms_lesions = all(labels.get(row["patient"]) is None for row in rows)  # BRATS label maps: tumours, another task
    if not ms_lesions:
        notes.append("The paper's MSSEG-2016 values are left out: these references are tumour labels, not MS lesions.")
    summary = evaluation_summary_markdown(rows, title="Evaluation (MSSEG-2016 metrics)", notes=notes,
                                          paper_rows=ms_lesions)
    calibration_record = {}
    if maps:
        pooled = pool_reliability(curves)
        pooled_ece = curve_ece(pooled)
        summary += "\n" + _calibration_markdown(rows, calibration_bins, Path(probabilities),
                                                None if uncertainty is None else Path(uncertainty), pooled_ece)
        plot_reliability_diagram(pooled, path=out / "reliability.png",
                                 title=f"planar3d evaluation: {len(rows)} scans, pooled ECE {pooled_ece:.4f}")
        calibration_record = {"probabilities": str(probabilities), "calibration_bins": calibration_bins,
                              "uncertainty": None if uncertainty is None else str(uncertainty),
                              "ndsc_r": NDSC_R, "pooled_ece": pooled_ece, "reliability": _json_curve(pooled)}
    write_text_atomic(out / "summary.md", summary)
    plot_metric_boxplots(rows, metrics=_BOXPLOT_KEYS, by="centre", path=out / "boxplot.png",
                         title=f"planar3d evaluation: {len(rows)} scans", paper=paper_table2() if ms_lesions else None)
    record = {"planar3d_version": __version__, "reference": str(reference), "prediction": str(prediction),
              "flair": None if flair is None else str(flair), "qc": qc, **detection, "pairs": done,
              "failures": failures, "reference_only": reference_only, "prediction_only": prediction_only,
              **calibration_record}
    write_text_atomic(out / "evaluation.json", json.dumps(record, indent=2) + "\n")
    unmatched = [f"unmatched patient ids: reference only {reference_only or 'none'}; prediction only "
                 f"{prediction_only or 'none'}"] if reference_only or prediction_only else []
    write_summary_report(out / "report.html", f"planar3d evaluation: {len(rows)} scans", summary, rows,
                         figures=[(out / "boxplot.png", "per-centre box plots (boxplot.png)")]
                         + ([(out / "reliability.png", "reliability diagram (reliability.png)")] if maps else []),
                         qc=[(out / "qc" / f"{row['patient']}.png", row["patient"]) for row in rows] if qc else [],
                         warnings=[*failures, *unmatched], rows_note="metrics.csv: one row per scan.")
    return Evaluation(rows, out, failures, reference_only, prediction_only)
