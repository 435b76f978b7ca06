"""The public Ljubljana multiple-sclerosis data sets, in the layouts they are distributed in.

Laboratory of Imaging Technologies, University of Ljubljana (CC BY): Lesjak et al.,
Neuroinformatics 16:51-63, 2018 (cross-sectional, 30 patients, three-rater consensus
lesion masks) and Lesjak et al., Neuroinformatics 14:403-420, 2016 (longitudinal, 20
patients, two visits, masks of new or enlarged lesions). Every patient is a ``patientNN/``
folder; its files, by variant (names may carry a ``patientNN_`` prefix):

* cross-sectional ``raw/`` and ``coregistered/``: ``FLAIR.nii.gz``, ``T1W.nii.gz`` (``t1``),
  ``T1WKS.nii.gz`` (``t1c``, after contrast), ``T2W.nii.gz`` (``t2``) and the lesion mask ``consensus_gt.nii.gz``;
* cross-sectional ``MNI/`` (the open_ms_data repository's registration to MNI):
  ``FLAIR_…_regtoMNI.nii.gz``, ``T1_…`` (``t1``), ``T1POST_…`` (``t1c``), ``T2_…`` (``t2``) and
  ``GOLD_STANDARD_…_regtoMNI.nii.gz``;
* longitudinal ``raw/`` and ``coregistered/``: ``study{1,2}_FLAIR.nii.gz``, their ITK
  transforms ``study{1,2}_FLAIR_to_common_space.txt`` and ``gt.nii.gz``, the new and enlarged
  lesions on the common grid (not a mask of every lesion, so no visit gets it as its mask).

The patient id is the folder name (``patient07``; a visit ``patient01_study2``, whose
subject is ``patient01`` so both visits share a fold); every patient has the centre
:data:`CENTRE`, so the paper's split leaves one patient out per fold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planar3d.errors import InputFileError
from planar3d.io.records import Record, files_matching, modality_files

__all__ = [
    "CENTRE", "LongitudinalPatient", "cross_sectional_record", "is_cross_sectional_patient", "is_longitudinal_patient",
    "longitudinal_patient", "longitudinal_records", "read_itk_affine", "to_common_grid",
]


CENTRE = "ljubljana"


_PATIENT = re.compile(r"^patient\d+$")


_FLAIR = re.compile(r"^(patient\d+_)?(FLAIR\.nii\.gz|FLAIR_.*regtoMNI\.nii\.gz)$")


#: the other scans: ``T1W``/``T1_…`` (t1), ``T1WKS``/``T1POST_…`` (t1c: after contrast), ``T2W``/``T2_…`` (t2).
_CHANNELS = {
    "t1": re.compile(r"^(patient\d+_)?(T1W\.nii\.gz|T1_.*regtoMNI\.nii\.gz)$"),
    "t1c": re.compile(r"^(patient\d+_)?(T1WKS\.nii\.gz|T1POST_.*regtoMNI\.nii\.gz)$"),
    "t2": re.compile(r"^(patient\d+_)?(T2W\.nii\.gz|T2_.*regtoMNI\.nii\.gz)$"),
}


_MASK = re.compile(r"^(patient\d+_)?(consensus_gt\.nii\.gz|GOLD_STANDARD_.*regtoMNI\.nii\.gz)$")


_VISIT = re.compile(r"^study(\d+)_FLAIR\.nii\.gz$")


_CHANGE_MASK = "gt.nii.gz"


@dataclass(frozen=True)
class LongitudinalPatient:
    """One patient of the longitudinal set.

    Attributes:
        patient: the folder name, e.g. ``"patient01"``.
        visits: ``{visit number: FLAIR path}`` of the visits present.
        transforms: ``{visit number: ITK transform to the common grid}`` of the visits present.
        change_mask: ``gt.nii.gz`` (new or enlarged lesions, on the common grid), or None.
    """

    patient: str
    visits: dict[int, Path]
    transforms: dict[int, Path]
    change_mask: Path | None


def is_cross_sectional_patient(folder: Path) -> bool:
    """Whether ``folder`` is a cross-sectional ``patientNN/`` folder holding a FLAIR."""
    return bool(_PATIENT.match(folder.name)) and bool(files_matching(folder, _FLAIR))


def is_longitudinal_patient(folder: Path) -> bool:
    """Whether ``folder`` is a longitudinal ``patientNN/`` folder holding a ``studyK_FLAIR.nii.gz``."""
    return bool(_PATIENT.match(folder.name)) and bool(files_matching(folder, _VISIT))


def cross_sectional_record(folder: Path, require_masks: bool = False) -> Record:
    """The :class:`Record` of one cross-sectional patient folder.

    Raises:
        InputFileError: several FLAIRs or masks, or no mask while ``require_masks``.
    """
    flairs, masks = files_matching(folder, _FLAIR), files_matching(folder, _MASK)
    for found, what in ((flairs, "FLAIR"), (masks, "consensus mask")):
        if len(found) > 1:
            raise InputFileError(folder, f"several {what} files: {[path.name for path in found]}")
    if not masks and require_masks:
        raise InputFileError(folder, "no consensus mask (consensus_gt.nii.gz or GOLD_STANDARD_*regtoMNI.nii.gz); "
                             "every patient needs one")
    return Record(folder.name, CENTRE, flairs[0], masks[0] if masks else None, channels=modality_files(folder, _CHANNELS))


def longitudinal_patient(folder: Path) -> LongitudinalPatient:
    """The visits, transforms and change mask of one longitudinal patient folder."""
    visits = {int(_VISIT.match(path.name).group(1)): path for path in files_matching(folder, _VISIT)}
    transforms = {
        visit: folder / f"study{visit}_FLAIR_to_common_space.txt"
        for visit in visits
        if (folder / f"study{visit}_FLAIR_to_common_space.txt").is_file()
    }
    change = folder / _CHANGE_MASK
    return LongitudinalPatient(folder.name, visits, transforms, change if change.is_file() else None)


def longitudinal_records(folder: Path, require_masks: bool = False) -> list[Record]:
    """One mask-less :class:`Record` per visit (``patient01_study1``, subject ``patient01``).

    Raises:
        InputFileError: ``require_masks``: the longitudinal set has no mask of every lesion
            (its ``gt.nii.gz`` marks new and enlarged lesions only, on another grid).
    """
    if require_masks:
        raise InputFileError(folder, "the longitudinal Ljubljana set has no mask of every lesion (gt.nii.gz marks new "
                             "and enlarged lesions on the common grid): train on the cross-sectional set")
    patient = longitudinal_patient(folder)
    return [
        Record(f"{patient.patient}_study{visit}", CENTRE, path, None, subject=patient.patient)
        for visit, path in sorted(patient.visits.items())
    ]


def read_itk_affine(path: str | Path) -> np.ndarray:
    """The 4x4 world (RAS, as NIfTI) matrix of an ITK ``MatrixOffsetTransformBase`` file.

    ITK maps a point ``x`` of the fixed (here: common) space to the moving (visit) space as
    ``A (x - c) + c + t``, in LPS coordinates; the matrix returned does the same in RAS.

    Raises:
        InputFileError: missing or unreadable file, another transform type, or parameters
            that are not 12 (+3 fixed) numbers.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"cannot read the ITK transform ({error.__class__.__name__})") from error
    fields = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key.strip()] = value.strip()
    kind = fields.get("Transform", "")
    if not re.match(r"^(MatrixOffsetTransformBase|AffineTransform)_double_3_3$", kind):
        raise InputFileError(path, f"not a 3D affine ITK transform (Transform: {kind or 'missing'})")
    try:
        parameters = [float(value) for value in fields.get("Parameters", "").split()]
        centre = [float(value) for value in fields.get("FixedParameters", "0 0 0").split()]
    except ValueError as error:
        raise InputFileError(path, f"ITK transform parameters are not numbers ({error})") from error
    if len(parameters) != 12 or len(centre) != 3:
        raise InputFileError(path, f"an affine ITK transform needs 12 parameters and 3 fixed parameters, "
                             f"got {len(parameters)} and {len(centre)}")
    matrix = np.asarray(parameters[:9]).reshape(3, 3)
    offset = np.asarray(parameters[9:]) + np.asarray(centre) - matrix @ np.asarray(centre)
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = matrix, offset
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def to_common_grid(array: np.ndarray, visit_affine: np.ndarray, transform: np.ndarray, common_shape: tuple[int, ...],
                   common_affine: np.ndarray, order: int = 0) -> np.ndarray:
    """A visit's image or mask resampled onto the common grid.

    Args:
        array: the visit's `(i, j, k)` voxels (a mask for ``order=0``).
        visit_affine: its voxel -> world (RAS) matrix.
        transform: :func:`read_itk_affine` of ``studyK_FLAIR_to_common_space.txt`` (common
            world -> visit world).
        common_shape, common_affine: the common grid (``gt.nii.gz``'s).
        order: spline order (0 nearest, for masks; 1 linear).

    Returns:
        float32 array of ``common_shape``; 0 outside the visit's field of view.
    """
    from scipy.ndimage import map_coordinates

    ijk = np.indices(tuple(common_shape[:3]), dtype=np.float64).reshape(3, -1)
    world = np.asarray(common_affine) @ np.vstack([ijk, np.ones(ijk.shape[1])])
    voxel = np.linalg.inv(visit_affine) @ (np.asarray(transform) @ world)
    values = map_coordinates(np.asarray(array, dtype=np.float32), voxel[:3], order=order, cval=0.0)
    return values.reshape(tuple(common_shape[:3]))

