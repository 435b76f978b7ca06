"""Cross-validation splits: the paper's folds (one test patient per centre) and leave-one-centre-out,
from a data set's records; scans of one subject always share a role.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from planar3d.errors import Planar3DError
from planar3d.io.records import Record

__all__ = ["centre_split", "cv_split", "fold_split", "n_folds", "n_split_folds"]


def n_folds(patient_ids: list[str], centres: Mapping[str, str] | None = None,
            subjects: Mapping[str, str] | None = None) -> int:
    """Number of cross-validation folds: the smallest number of subjects in a centre
    (``centres`` and ``subjects`` as in :func:`cv_split`)."""
    by_centre, _ = _group_by_centre(patient_ids, centres, subjects)
    return min(len(people) for people in by_centre.values())


def cv_split(patient_ids: list[str], fold: int, centres: Mapping[str, str] | None = None,
             subjects: Mapping[str, str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """The paper's cross-validation split for one fold.

    Ids are grouped by centre (by default their first two characters) and sorted
    alphabetically within a centre; fold ``k`` tests the ``k``-th patient of every centre.
    Of the remaining ids, sorted alphabetically, the last validates and the rest train.
    There are :func:`n_folds` folds: the smallest centre's patient count (with unequal
    centres the extra patients of larger centres are never tested; they always train or
    validate).

    With ``subjects`` the rule applies to subjects instead of ids, and every scan of a
    subject (e.g. the BIDS sessions of ``sub-01``) takes its subject's role, so no person
    is both trained on and tested.

    Args:
        patient_ids: MSSEG-style ids, e.g. ``["01016SACH", "07001MOEL", ...]``.
        fold: index in ``0 .. n_folds - 1``.
        centres: ``{id: centre}`` for every id; default: the first two characters.
        subjects: ``{id: subject}`` for every id; default: each id is its own subject.

    Returns:
        ``(train_ids, val_ids, test_ids)``, each sorted; without ``subjects``, ``val_ids``
        has one id and ``test_ids`` one per centre.

    Raises:
        Planar3DError: duplicate ids, ``fold`` out of range, fewer than two subjects left
            for training and validation, an id missing from ``centres``/``subjects``, or a
            subject whose scans name different centres.
    """
    by_centre, scans = _group_by_centre(patient_ids, centres, subjects)
    folds = min(len(people) for people in by_centre.values())
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < folds:
        raise Planar3DError(f"fold must be in 0..{folds - 1}. Received: fold={fold!r}")
    test = sorted(people[fold] for people in by_centre.values())
    remaining = sorted(set(scans) - set(test))
    if len(remaining) < 2:
        raise Planar3DError(
            "too few patients: after one test patient per centre at least 2 must remain for training "
            f"and validation. Received: {len(scans)} patients in {len(by_centre)} centres"
        )

    def expand(people: list[str]) -> list[str]:
        return sorted(pid for person in people for pid in scans[person])

    return expand(remaining[:-1]), expand(remaining[-1:]), expand(test)


def centre_split(centres: Mapping[str, str], fold: int,
                 subjects: Mapping[str, str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """Leave-one-centre-out split: fold ``k`` tests every patient of the ``k``-th centre.

    Centres are sorted; the patients of the other centres train, except the last patient
    (alphabetically) of each training centre, who validates, so that model selection sees
    every training centre and never the test centre. There are as many folds as centres.
    :func:`cv_split` (the paper's split) is unchanged beside it.

    Args:
        centres: ``{patient_id: centre}`` for every patient (e.g. from the records).
        fold: index in ``0 .. n_centres - 1``.
        subjects: ``{patient_id: subject}``; the rule then applies to subjects and every
            scan of a subject takes its subject's role (see :func:`cv_split`).

    Returns:
        ``(train_ids, val_ids, test_ids)``, each sorted; ``val_ids`` has one id per training
        centre.

    Raises:
        Planar3DError: fewer than 2 centres, ``fold`` out of range, or a training centre
            with fewer than 2 patients (one validates, at least one must train).
    """
    if not centres:
        raise Planar3DError("centres must not be empty. Received: {}")
    by_centre, scans = _group_by_centre(list(centres), centres, subjects)
    groups = {centre: people for centre, people in by_centre.items()}
    names = sorted(groups)
    if len(names) < 2:
        raise Planar3DError(f"leave-one-centre-out needs at least 2 centres. Received: {names}")
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < len(names):
        raise Planar3DError(f"fold must be in 0..{len(names) - 1} (one per centre {names}). Received: fold={fold!r}")
    small = [name for name in names if name != names[fold] and len(groups[name]) < 2]
    if small:
        raise Planar3DError(f"each training centre needs at least 2 patients (one validates). Received: centres {small} "
                            "with 1 patient")

    def expand(people) -> list[str]:
        return sorted(pid for person in people for pid in scans[person])

    test_ids = expand(groups[names[fold]])
    val_ids = expand(groups[name][-1] for name in names if name != names[fold])
    train_ids = expand(p for name in names if name != names[fold] for p in groups[name][:-1])
    return train_ids, val_ids, test_ids


def _group_by_centre(patient_ids: list[str], centres: Mapping[str, str] | None = None,
                     subjects: Mapping[str, str] | None = None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``({centre: sorted subjects}, {subject: its ids})``."""
    ids = [str(pid) for pid in patient_ids]
    if not ids:
        raise Planar3DError("patient_ids must not be empty. Received: patient_ids=[]")
    duplicates = sorted({pid for pid in ids if ids.count(pid) > 1})
    if duplicates:
        raise Planar3DError(f"patient ids must be unique. Received duplicates: {duplicates}")
    for name, mapping in (("centres", centres), ("subjects", subjects)):
        missing = [] if mapping is None else [pid for pid in ids if pid not in mapping]
        if missing:
            raise Planar3DError(f"{name} must name every patient id. Received: no entry for {missing[:5]}")
    if centres is None:
        short = [pid for pid in ids if len(pid) < 3]
        if short:
            raise Planar3DError(f"patient ids must start with a 2-character centre. Received: {short}")
    scans: dict[str, list[str]] = {}
    centre_of: dict[str, str] = {}
    for pid in sorted(ids):
        person = str(subjects[pid]) if subjects is not None else pid
        centre = str(centres[pid]) if centres is not None else pid[:2]
        if centre_of.setdefault(person, centre) != centre:
            raise Planar3DError(
                f"every scan of a subject must name one centre. Received: {person} in {centre_of[person]!r} and {centre!r}")
        scans.setdefault(person, []).append(pid)
    by_centre: dict[str, list[str]] = {}
    for person in sorted(scans):
        by_centre.setdefault(centre_of[person], []).append(person)
    return by_centre, scans


def fold_split(records: Sequence[Record], fold: int, split: str = "patient") -> tuple[list[str], list[str], list[str]]:
    """``(train_ids, val_ids, test_ids)`` of one fold: the paper's split
    (:func:`planar3d.data.splits.cv_split`) or leave-one-centre-out (:func:`planar3d.data.splits.centre_split`,
    centres from the records). Scans of one subject (``Record.subject``, BIDS sessions) share a role."""
    centres = {r.patient_id: r.centre for r in records}
    subjects = {r.patient_id: r.subject or r.patient_id for r in records}
    if split == "centre":
        return centre_split(centres, fold, subjects=subjects)
    return cv_split([r.patient_id for r in records], fold, centres=centres, subjects=subjects)


def n_split_folds(records: Sequence[Record], split: str = "patient") -> int:
    """Number of folds of a split: the smallest centre's size (paper) or the number of centres."""

    if split == "centre":
        return len({r.centre for r in records})
    return n_folds([r.patient_id for r in records], centres={r.patient_id: r.centre for r in records},
                   subjects={r.patient_id: r.subject or r.patient_id for r in records})
