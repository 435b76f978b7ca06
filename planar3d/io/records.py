"""One scan of a data set: :class:`Record` (patient, centre, FLAIR path, optional mask path and the
mask labels that count as foreground, subject).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Record", "files_matching"]


@dataclass(frozen=True)
class Record:
    """One patient: where its FLAIR scan and (optional) lesion mask are.

    Attributes:
        patient_id: unique id, e.g. ``"01016SACH"``.
        centre: centre label, e.g. ``"01"`` (first two characters of an MSSEG id).
        flair: path of the FLAIR scan.
        mask: path of the binary lesion mask, or None when the patient has none.
        subject: the person the scan belongs to when one person has several scans (BIDS
            sessions: ``"sub-01"``); the cross-validation keeps them in one fold. None:
            the patient id is the person.
        mask_labels: the label values of ``mask`` that are the target (BRATS label maps:
            ``(1, 2, 3, 4)`` for the whole tumour); None: ``mask`` is binary (0/1).
    """

    patient_id: str
    centre: str
    flair: Path
    mask: Path | None = None
    subject: str | None = None
    mask_labels: tuple[int, ...] | None = None


def files_matching(folder: Path, pattern: re.Pattern) -> list[Path]:
    """The files directly in ``folder`` whose names match ``pattern`` (from the start), sorted."""
    return sorted(path for path in folder.iterdir() if path.is_file() and pattern.match(path.name))
