"""One scan of a data set: :class:`Record` (patient, centre, FLAIR path, optional mask path and the
mask labels that count as foreground, subject, the other scans of the patient by modality).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from planar3d.errors import InputFileError

__all__ = ["Record", "files_matching", "modality_files"]


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
        channels: the patient's other scans, ``(modality, path)`` pairs with
            :data:`planar3d.config.MODALITIES` names (``("t1c", .../T1c.nii.gz)``), on the FLAIR's grid
            when a model stacks them (checked when they are read).
    """

    patient_id: str
    centre: str
    flair: Path
    mask: Path | None = None
    subject: str | None = None
    mask_labels: tuple[int, ...] | None = None
    channels: tuple[tuple[str, Path], ...] = ()

    def scan_files(self, modalities: Sequence[str] = ("flair",)) -> list[Path]:
        """The files of ``modalities`` in that order (``"flair"``: :attr:`flair`).

        Raises:
            InputFileError: a modality this patient has no scan of (naming the FLAIR and what it has).
        """
        offered = {"flair": self.flair, **dict(self.channels)}
        missing = [name for name in modalities if name not in offered]
        if missing:
            raise InputFileError(self.flair, f"patient {self.patient_id} has no {' or '.join(missing)} scan beside this "
                                 f"FLAIR (it has: {' '.join(offered)})")
        return [Path(offered[name]) for name in modalities]


def files_matching(folder: Path, pattern: re.Pattern) -> list[Path]:
    """The files directly in ``folder`` whose names match ``pattern`` (from the start), sorted."""
    return sorted(path for path in folder.iterdir() if path.is_file() and pattern.match(path.name))


def modality_files(folder: Path, patterns: dict[str, re.Pattern]) -> tuple[tuple[str, Path], ...]:
    """``(modality, file)`` for each modality whose pattern matches one file in ``folder`` (:attr:`Record.channels`).

    Raises:
        InputFileError: a pattern matching several files (the folder and their names).
    """
    found = []
    for modality, pattern in patterns.items():
        files = files_matching(folder, pattern)
        if len(files) > 1:
            raise InputFileError(folder, f"several {modality} scans: {[path.name for path in files]}")
        found += [(modality, files[0])] if files else []
    return tuple(found)
