"""BRATS glioma cases in their case-folder layouts, with a binary target chosen from the label map.

Two layouts are read, one folder per case:

* BRATS 2013 as shipped with DeepMedic's examples: ``Flair_subtrMeanDivStd.nii.gz``,
  ``T1c_subtrMeanDivStd.nii.gz`` (the ``t1c`` channel; ``T1_*``, ``T2_*`` where present), ``brainmask.nii.gz`` and the expert labels
  ``OTMultiClass.nii.gz`` (any file starting ``Flair``/``OT``; case-insensitive).
* BraTS 2017-2021: ``<case>_flair.nii.gz``, ``<case>_t1.nii.gz``, ``<case>_t1ce.nii.gz`` (``t1c``),
  ``<case>_t2.nii.gz`` and ``<case>_seg.nii.gz``.

Both label necrosis 1, oedema 2, non-enhancing tumour 3 (2013 only) and enhancing tumour 4
(Menze et al., IEEE TMI 34:1993-2024, 2015); :data:`TARGET_LABELS` turns them into the three
BRATS regions. BraTS 2023 renumbers the regions (enhancing = 3) and is not read, rather than
read wrongly. The patient id is the case folder's name and every case has the centre
:data:`CENTRE`, so the paper's split leaves one case out per fold.
"""

from __future__ import annotations

import re
from pathlib import Path

from planar3d.config import TARGETS
from planar3d.errors import InputFileError
from planar3d.io.records import Record, files_matching, modality_files

__all__ = ["CENTRE", "TARGET_LABELS", "brats_record", "is_brats_case"]


CENTRE = "brats"


#: the label values of each BRATS region (``auto`` is the whole tumour).
TARGET_LABELS: dict[str, tuple[int, ...]] = {
    "whole_tumour": (1, 2, 3, 4),
    "tumour_core": (1, 3, 4),
    "enhancing_tumour": (4,),
}
TARGET_LABELS["auto"] = TARGET_LABELS["whole_tumour"]
assert set(TARGET_LABELS) == set(TARGETS)


_FLAIR = re.compile(r"^(flair.*|.+_flair)\.nii(\.gz)?$", re.IGNORECASE)


#: the other scans: 2013 ``T1_*``, ``T1c_*``, ``T2_*``; 2017-2021 ``<case>_t1``, ``<case>_t1ce``, ``<case>_t2``.
_CHANNELS = {
    "t1": re.compile(r"^(t1_.*|.+_t1)\.nii(\.gz)?$", re.IGNORECASE),
    "t1c": re.compile(r"^(t1c_.*|.+_t1ce)\.nii(\.gz)?$", re.IGNORECASE),
    "t2": re.compile(r"^(t2_.*|.+_t2)\.nii(\.gz)?$", re.IGNORECASE),
}


_LABELS = re.compile(r"^(ot.*|.+_seg)\.nii(\.gz)?$", re.IGNORECASE)


def is_brats_case(folder: Path) -> bool:
    """Whether ``folder`` holds a BRATS FLAIR (``Flair*.nii[.gz]`` or ``*_flair.nii[.gz]``)."""
    return bool(files_matching(folder, _FLAIR))


def brats_record(folder: Path, require_masks: bool = False, target: str = "auto") -> Record:
    """The :class:`Record` of one case folder: its FLAIR, its label map and the target's labels.

    Raises:
        InputFileError: no FLAIR or several, several label maps, or no label map while
            ``require_masks``.
    """
    flairs, label_maps = files_matching(folder, _FLAIR), files_matching(folder, _LABELS)
    for found, what in ((flairs, "FLAIR"), (label_maps, "label map")):
        if len(found) > 1:
            raise InputFileError(folder, f"several BRATS {what} files: {[path.name for path in found]}")
    if not flairs:
        raise InputFileError(folder, "no BRATS FLAIR (Flair*.nii.gz or <case>_flair.nii.gz)")
    if not label_maps and require_masks:
        raise InputFileError(folder, "no BRATS label map (OT*.nii.gz or <case>_seg.nii.gz); every case needs one")
    mask = label_maps[0] if label_maps else None
    return Record(folder.name, CENTRE, flairs[0], mask, mask_labels=TARGET_LABELS[target] if mask else None,
                  channels=modality_files(folder, _CHANNELS))

