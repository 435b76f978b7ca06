"""FLAIR scans and lesion masks of a BIDS dataset: a small reader (pybids is not needed).

A BIDS dataset root is a folder holding ``dataset_description.json``. Scans are found as

* FLAIR images: ``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_acq-..][_ce-..]
  [_rec-..][_run-..]_FLAIR.nii[.gz]``. ``every_flair`` (the BIDS App) takes every one of them,
  each a scan named by its entities; otherwise (training) a subject (or session) with several
  is ambiguous and refused, naming the candidates and the flag that picks one (``acq``,
  ``run``). ``acq`` and ``run`` narrow the choice either way; ``participant_label`` and
  ``session_label`` select subjects and sessions.
* lesion masks, binary (0/1) on the FLAIR's own grid, in this order of search:

  1. in the derivatives folder named by ``masks_from`` (``derivatives/<PIPELINE>/``, or a
     folder path): ``<source entities>[_space-orig|native]_label-lesion[_desc-..]_mask``
     (the BIDS derivatives mask), ``..._desc-lesion_dseg`` or ``..._label-lesion_dseg`` (a
     discrete segmentation whose only values are 0 and 1), ``..._label-lesion_roi``;
  2. beside the raw scan (the convention fMRIPrep users follow, outside the BIDS raw
     specification, so list them in ``.bidsignore``): ``anat/<source entities>_label-lesion_roi``
     or ``anat/<source entities>_FLAIR_label-lesion_roi``.

  A mask's source entities (everything but ``space, seg, res, den, label, desc, ...``) must
  each equal the FLAIR's, but it may name fewer (``sub-01_label-lesion_mask`` serves
  ``sub-01_acq-3d_FLAIR``); the most specific mask wins, then the kinds in the order above.
  Masks in another ``space`` (a template) are ignored.
* the centre of a subject (for the cross-validation split), from a participants.tsv column
  (``centre_column``, e.g. ``site``) or else the scanner in the FLAIR's JSON sidecar:
  ``"<Manufacturer> <MagneticFieldStrength>T"`` (e.g. ``"Siemens 3T"``), read with the BIDS
  inheritance principle (sidecars at the root, subject, session and anat levels, the deeper
  overriding). A subject with sessions on several scanners takes its first session's.

Every problem raises :class:`~planar3d.errors.InputFileError` naming the file or folder.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from planar3d.atomic import replace_folder
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io.records import Record

__all__ = [
    "BidsName",
    "BidsScan",
    "DERIVED_ENTITIES",
    "ENTITY_ORDER",
    "MSSEG2016_SCANNERS",
    "bids_records",
    "find_bids_scans",
    "format_name",
    "is_bids_root",
    "parse_name",
    "read_json",
    "read_participants",
    "write_bids_dataset",
]

#: Entity keys in the order the BIDS specification puts them in a file name (schema 1.11).
ENTITY_ORDER = (
    "sub", "tpl", "ses", "cohort", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain",
    "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split",
    "recording", "chunk", "atlas", "seg", "scale", "res", "den", "label", "desc",
)
#: Entities a derivative adds to its source's; the others must match the source file.
DERIVED_ENTITIES = frozenset({"tpl", "cohort", "space", "seg", "res", "den", "label", "desc", "atlas", "scale", "hemi", "split"})
#: ``space`` values taken as the scan's own grid (no ``space`` entity means the same).
NATIVE_SPACES = ("orig", "native")
#: (suffix, entity, value) of a lesion mask, in order of preference.
MASK_KINDS = (("mask", "label", "lesion"), ("dseg", "desc", "lesion"), ("dseg", "label", "lesion"),
              ("roi", "label", "lesion"))
#: Entities that pick one FLAIR among several, with the option that sets each.
PICK_FLAGS = {"acq": "--acq", "run": "--run", "ses": "--session-label"}

#: The MSSEG-2016 training centres' scanners (Commowick et al. 2018, Table 1 of the paper).
MSSEG2016_SCANNERS = {
    "01": {"Manufacturer": "Philips", "ManufacturersModelName": "Ingenia", "MagneticFieldStrength": 3},
    "07": {"Manufacturer": "Siemens", "ManufacturersModelName": "Aera", "MagneticFieldStrength": 1.5},
    "08": {"Manufacturer": "Siemens", "ManufacturersModelName": "Verio", "MagneticFieldStrength": 3},
}
BIDS_VERSION = "1.10.0"

_IMAGE_EXTENSIONS = (".nii.gz", ".nii")
_LABEL = re.compile(r"[0-9a-zA-Z+]+")
_DESCRIPTION = "dataset_description.json"


@dataclass(frozen=True)
class BidsName:
    """A parsed BIDS file name.

    Attributes:
        entities: ``{key: value}`` in file order, e.g. ``{"sub": "01", "acq": "3d"}``.
        suffix: e.g. ``"FLAIR"``, ``"mask"``.
        extension: with its dot(s), e.g. ``".nii.gz"``.
        source_suffix: the suffix of the source named inside the name, as in fMRIPrep's
            ``sub-01_FLAIR_label-lesion_roi`` (``"FLAIR"``), else None.
    """

    entities: dict
    suffix: str
    extension: str
    source_suffix: str | None = None

    def source_entities(self) -> dict:
        """The entities that identify the source scan (all but :data:`DERIVED_ENTITIES`)."""
        return {k: v for k, v in self.entities.items() if k not in DERIVED_ENTITIES}


@dataclass(frozen=True)
class BidsScan:
    """One FLAIR image of a BIDS dataset, with its lesion mask and metadata.

    Attributes:
        entities: the FLAIR's entities, e.g. ``{"sub": "01", "ses": "a", "acq": "3d"}``.
        flair: path of the FLAIR image.
        mask: path of its lesion mask, or None.
        metadata: its JSON sidecar (inheritance principle applied), ``{}`` without one.
        centre: the subject's centre (see the module docstring), or None when unknown.
    """

    entities: dict
    flair: Path
    mask: Path | None = None
    metadata: dict = field(default_factory=dict)
    centre: str | None = None

    @property
    def subject(self) -> str:
        return self.entities["sub"]

    @property
    def session(self) -> str | None:
        return self.entities.get("ses")

    @property
    def participant_id(self) -> str:
        """``"sub-<label>"`` as in participants.tsv."""
        return f"sub-{self.subject}"

    @property
    def prefix(self) -> str:
        """The FLAIR's entities in canonical order, e.g. ``"sub-01_ses-a_acq-3d"``."""
        return format_name(self.entities)

    @property
    def folder(self) -> Path:
        """``sub-<label>[/ses-<label>]/anat``, relative to a dataset root."""
        parts = [f"sub-{self.subject}"] + ([f"ses-{self.session}"] if self.session else []) + ["anat"]
        return Path(*parts)


def is_bids_root(path: str | os.PathLike) -> bool:
    """True for a folder holding ``dataset_description.json``."""
    return (Path(path) / _DESCRIPTION).is_file()


def parse_name(name: str) -> BidsName | None:
    """Parse ``key-value_..._suffix.ext``; return None when ``name`` is not of that form.

    At least one entity; labels alphanumeric (``+`` allowed), as the specification says.
    One bare word between entities is taken as a source suffix (fMRIPrep's
    ``sub-01_FLAIR_label-lesion_roi.nii.gz``).
    """
    stem, dot, rest = name.partition(".")
    if not dot or not rest:
        return None
    *parts, suffix = stem.split("_")
    if not suffix.isalnum():
        return None
    entities: dict[str, str] = {}
    source_suffix = None
    for index, part in enumerate(parts):
        key, dash, value = part.partition("-")
        if not dash:
            if source_suffix is None and 0 < index < len(parts) - 1 and part.isalnum():
                source_suffix = part
                continue
            return None
        if not key.isalnum() or key in entities or not _LABEL.fullmatch(value):
            return None
        entities[key] = value
    if not entities:
        return None
    return BidsName(entities, suffix, "." + rest, source_suffix)


def format_name(entities: Mapping[str, str], suffix: str | None = None, extension: str = "") -> str:
    """Entities in canonical order, then ``_suffix`` and the extension.

    Raises:
        Planar3DError: an unknown entity key or a value that is not a BIDS label.
    """
    unknown = sorted(set(entities) - set(ENTITY_ORDER))
    if unknown:
        raise Planar3DError(f"unknown BIDS entities {unknown}. Known: {list(ENTITY_ORDER)}")
    bad = {k: v for k, v in entities.items() if not _LABEL.fullmatch(str(v))}
    if bad:
        raise Planar3DError(f"BIDS entity values must be alphanumeric labels. Received: {bad}")
    parts = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if key in entities]
    if suffix:
        parts.append(suffix)
    return "_".join(parts) + extension


def read_json(path: Path) -> dict:
    """A JSON object from a file.

    Raises:
        InputFileError: unreadable, not JSON, or not an object.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputFileError(path, f"not readable JSON ({' '.join(str(error).split())})") from error
    if not isinstance(value, dict):
        raise InputFileError(path, "must hold a JSON object")
    return value


def read_participants(root: str | os.PathLike) -> dict[str, dict[str, str]]:
    """participants.tsv as ``{"sub-01": {column: value}}``; ``{}`` when there is none.

    Raises:
        InputFileError: unreadable, no ``participant_id`` column, duplicate ids.
    """
    path = Path(root) / "participants.tsv"
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputFileError(path, f"cannot read table ({error})") from error
    if rows and "participant_id" not in rows[0]:
        raise InputFileError(path, f"no participant_id column (columns: {list(rows[0])})")
    table: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        pid = (row.get("participant_id") or "").strip()
        if pid in table:
            raise InputFileError(path, f"line {line}: duplicate participant_id {pid!r}")
        table[pid] = {k: (v or "").strip() for k, v in row.items() if k is not None}
    return table


def find_bids_scans(
    root: str | os.PathLike,
    participant_label: Sequence[str] | None = None,
    session_label: Sequence[str] | None = None,
    acq: str | None = None,
    run: str | int | None = None,
    masks_from: str | None = None,
    centre_column: str | None = None,
    require_masks: bool = False,
    require_centre: bool = False,
    every_flair: bool = False,
) -> list[BidsScan]:
    """The FLAIR scans of a BIDS dataset: one per subject and session, or every one (``every_flair``).

    Args:
        root: the dataset folder (holds ``dataset_description.json``).
        participant_label: subjects to take (with or without ``sub-``); default all.
        session_label: sessions to take (with or without ``ses-``); default all.
        acq, run: keep only FLAIR images with this ``acq-`` label / ``run-`` index.
        masks_from: derivatives pipeline (``derivatives/<name>``) or folder holding masks.
        centre_column: participants.tsv column naming each subject's centre; default: the
            scanner from the sidecar.
        require_masks: refuse a scan without a lesion mask (training needs them).
        require_centre: refuse a scan whose centre is unknown.
        every_flair: take every FLAIR of a subject/session that matches ``acq``/``run`` (several
            runs or acquisitions are several scans) instead of refusing more than one.

    Returns:
        Scans sorted by subject, session and name. Subjects or sessions without a matching
        FLAIR are skipped with a notice on stderr (an explicitly requested subject without
        any is an error).

    Raises:
        InputFileError: not a BIDS root, an unknown subject label, ambiguous FLAIR images
            (without ``every_flair``),
            a missing masks folder, a missing mask or centre when required, a bad sidecar
            or participants.tsv.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "not a folder")
    description = read_json(root / _DESCRIPTION) if is_bids_root(root) else None
    if description is None:
        raise InputFileError(root, f"not a BIDS dataset (no {_DESCRIPTION})")
    if str(description.get("DatasetType", "raw")).lower() == "derivative":
        raise InputFileError(root / _DESCRIPTION, "is a derivative dataset; pass the raw BIDS dataset's root")
    masks_root = _masks_root(root, masks_from) if masks_from else None
    subjects = _select(root, "sub", participant_label, root)
    sessions_wanted = _labels(session_label, "ses")
    participants = read_participants(root) if centre_column else {}
    if centre_column:
        _check_centre_column(root, participants, centre_column)

    scans: list[BidsScan] = []
    for subject_dir in subjects:
        subject = subject_dir.name[4:]
        found = []
        session_dirs = sorted(p for p in subject_dir.glob("ses-*") if p.is_dir())
        for folder in ([subject_dir] if (subject_dir / "anat").is_dir() else []) + session_dirs:
            session = folder.name[4:] if folder.name.startswith("ses-") else None
            if sessions_wanted is not None and session not in sessions_wanted:
                continue
            flairs = _flairs(folder / "anat", subject, session, acq, run)
            if not every_flair:
                flairs = _pick_flair(folder / "anat", subject, session, flairs)
            found += [_scan(root, flair, masks_root, require_masks) for flair in flairs]
        if not found:
            what = "" if acq is None and run is None else f" matching {_criteria(acq, run)}"
            sessions = "" if sessions_wanted is None else f" in sessions {sorted(sessions_wanted)}"
            if participant_label:
                raise InputFileError(subject_dir, f"no FLAIR image{what}{sessions}")
            print(f"notice: {subject_dir.name}: no FLAIR image{what}{sessions}; skipped", file=sys.stderr)
            continue
        centre = _centre(root, found[0], participants, centre_column, require_centre)
        scans.extend(BidsScan(s.entities, s.flair, s.mask, s.metadata, centre) for s in found)
    if not scans:
        raise InputFileError(root, "no FLAIR images found (sub-*/[ses-*/]anat/*_FLAIR.nii[.gz])")
    return scans


def bids_records(root: str | os.PathLike, require_masks: bool = False, **options):
    """:class:`planar3d.io.records.Record` s of :func:`find_bids_scans` (same keyword options).

    Each record's ``patient_id`` is the scan's entity prefix (``sub-01_ses-a``), its
    ``subject`` the participant (``sub-01``: all its sessions stay in one fold) and its
    ``centre`` the subject's centre.
    """

    scans = find_bids_scans(root, require_masks=require_masks, require_centre=True, **options)
    return [Record(scan.prefix, scan.centre, scan.flair, scan.mask, subject=scan.participant_id) for scan in scans]


# ----------------------------------------------------------------------------- helpers
def _labels(values: Sequence[str] | None, key: str) -> set[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    labels = {str(v)[len(key) + 1:] if str(v).startswith(f"{key}-") else str(v) for v in values}
    bad = sorted(v for v in labels if not _LABEL.fullmatch(v))
    if bad:
        flag = "--participant-label" if key == "sub" else "--session-label"
        raise Planar3DError(f"{flag} takes alphanumeric labels. Received: {bad}")
    return labels


def _select(root: Path, key: str, wanted: Sequence[str] | None, where: Path) -> list[Path]:
    folders = sorted(p for p in where.glob(f"{key}-*") if p.is_dir() and _LABEL.fullmatch(p.name[len(key) + 1:]))
    labels = _labels(wanted, key)
    if labels is None:
        return folders
    present = {p.name[len(key) + 1:] for p in folders}
    missing = sorted(labels - present)
    if missing:
        raise InputFileError(root, f"no subject {', '.join('sub-' + m for m in missing)} "
                                   f"(found {_preview(sorted(present), 'sub-')})")
    return [p for p in folders if p.name[len(key) + 1:] in labels]


def _preview(labels: list[str], prefix: str, limit: int = 6) -> str:
    shown = ", ".join(prefix + label for label in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "") if labels else "none"


def _criteria(acq: str | None, run: str | int | None) -> str:
    return " ".join(part for part in (f"--acq {acq}" if acq is not None else "",
                                      f"--run {run}" if run is not None else "") if part)


def _images(folder: Path) -> list[tuple[Path, BidsName]]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(_IMAGE_EXTENSIONS) or not path.is_file():
            continue
        name = parse_name(path.name)
        if name is not None and name.extension in _IMAGE_EXTENSIONS:
            found.append((path, name))
    return found


def _same_run(value: str, run: str | int) -> bool:
    try:
        return int(value) == int(run)
    except ValueError:
        return False


def _flairs(anat: Path, subject: str, session: str | None, acq: str | None,
            run: str | int | None) -> list[tuple[Path, BidsName]]:
    """The FLAIR images of a subject/session folder matching ``acq``/``run``, sorted by name."""
    candidates = [
        (path, name) for path, name in _images(anat)
        if name.suffix == "FLAIR" and name.source_suffix is None and name.entities.get("sub") == subject
        and name.entities.get("ses") == session
    ]
    if acq is not None:
        candidates = [(p, n) for p, n in candidates if n.entities.get("acq") == str(acq)]
    if run is not None:
        candidates = [(p, n) for p, n in candidates if "run" in n.entities and _same_run(n.entities["run"], run)]
    return candidates


def _pick_flair(anat: Path, subject: str, session: str | None,
                candidates: list[tuple[Path, BidsName]]) -> list[tuple[Path, BidsName]]:
    """The one FLAIR of :func:`_flairs` (``[]`` if none); several are refused, naming the flags that pick one."""
    if len(candidates) <= 1:
        return candidates
    keys = sorted({k for _, n in candidates for k in n.entities
                   if len({n2.entities.get(k) for _, n2 in candidates}) > 1}, key=ENTITY_ORDER.index)
    where = f"sub-{subject}" + (f" ses-{session}" if session else "")
    names = ", ".join(p.name for p, _ in candidates)
    picks = [f"{PICK_FLAGS[k]} {'|'.join(sorted({n.entities.get(k, '') for _, n in candidates} - {''}))}"
             for k in keys if k in PICK_FLAGS]
    advice = f"pick one with {' or '.join(picks)}" if picks else (
        f"they differ in {', '.join(k + '-' for k in keys)}, which no flag selects; move the others aside "
        "or list the scans in a CSV table")
    raise InputFileError(anat, f"{where}: {len(candidates)} FLAIR images match: {names}; {advice}")


def _masks_root(root: Path, masks_from: str) -> Path:
    candidate = Path(masks_from).expanduser()
    if os.sep in masks_from or candidate.is_absolute():
        folder = candidate
    else:
        if not _LABEL.fullmatch(masks_from.replace("-", "").replace("_", "").replace(".", "")):
            raise Planar3DError(f"--masks-from takes a pipeline name or a folder. Received: {masks_from!r}")
        folder = root / "derivatives" / masks_from
    if not folder.is_dir():
        derivatives = root / "derivatives"
        available = sorted(p.name for p in derivatives.iterdir() if p.is_dir()) if derivatives.is_dir() else []
        raise InputFileError(folder, f"masks folder not found (--masks-from); derivatives/ holds {available or 'nothing'}")
    return folder


def _mask_rank(name: BidsName) -> int | None:
    """Position of a file's kind in :data:`MASK_KINDS`, or None when it is not a lesion mask."""
    if name.extension not in _IMAGE_EXTENSIONS or name.entities.get("space", "orig") not in NATIVE_SPACES:
        return None
    for rank, (suffix, key, value) in enumerate(MASK_KINDS):
        if name.suffix == suffix and name.entities.get(key) == value:
            return rank
    return None


def _find_mask(flair: BidsName, folders: Sequence[Path]) -> Path | None:
    source = flair.source_entities()
    best: list[tuple[tuple[int, int], Path]] = []
    for folder in folders:
        for path, name in _images(folder):
            rank = _mask_rank(name)
            if rank is None or (name.source_suffix not in (None, "FLAIR")):
                continue
            own = name.source_entities()
            if own.get("sub") != source.get("sub") or own.get("ses") != source.get("ses"):
                continue
            if any(source.get(k) != v for k, v in own.items()):
                continue
            best.append(((-len(own), rank), path))
        if best:
            break  # the first folder holding a matching mask wins
    if not best:
        return None
    best.sort(key=lambda item: (item[0], item[1].name))
    top = [path for key, path in best if key == best[0][0]]
    if len(top) > 1:
        raise InputFileError(top[0].parent, f"{len(top)} lesion masks match {format_name(source)}: "
                                            f"{', '.join(p.name for p in top)}; keep one")
    return top[0]


def _sidecar(root: Path, flair: Path, name: BidsName) -> dict:
    """The FLAIR's metadata by the inheritance principle: root, subject, session, anat levels."""
    relative = flair.parent.relative_to(root).parts
    metadata: dict = {}
    for depth in range(len(relative) + 1):
        folder = root.joinpath(*relative[:depth])
        layer = []
        for path in sorted(folder.glob("*FLAIR.json")):
            other = parse_name(path.name) if "_" in path.name else BidsName({}, path.name.split(".")[0], ".json")
            if other is None or other.suffix != "FLAIR" or other.extension != ".json":
                continue
            if all(name.entities.get(k) == v for k, v in other.entities.items()):
                layer.append((len(other.entities), path))
        for _, path in sorted(layer):
            metadata.update(read_json(path))
    return metadata


def _scan(root: Path, flair: tuple[Path, BidsName], masks_root: Path | None, require_masks: bool) -> BidsScan:
    path, name = flair
    folders = ([masks_root / path.parent.relative_to(root)] if masks_root is not None else []) + [path.parent]
    mask = _find_mask(name, folders)
    if mask is None and require_masks:
        looked = " and ".join(str(f) for f in folders)
        raise InputFileError(path, f"no lesion mask (looked in {looked} for *_label-lesion_mask, "
                                   "*_desc-lesion_dseg, *_label-lesion_roi)")
    return BidsScan(dict(name.entities), path, mask, _sidecar(root, path, name))


def _check_centre_column(root: Path, participants: dict, column: str) -> None:
    path = root / "participants.tsv"
    if not participants:
        raise InputFileError(path, f"not found or empty (needed by --centre-column {column})")
    columns = list(next(iter(participants.values())))
    if column not in columns:
        raise InputFileError(path, f"no column {column!r} (--centre-column); columns: {columns}")


def _centre(root: Path, scan: BidsScan, participants: dict, column: str | None, required: bool) -> str | None:
    if column:
        value = participants.get(scan.participant_id, {}).get(column, "")
        if value in ("", "n/a"):
            raise InputFileError(root / "participants.tsv",
                                 f"{scan.participant_id} has no {column!r} value (--centre-column)")
        return value
    manufacturer = str(scan.metadata.get("Manufacturer", "")).strip()
    strength = scan.metadata.get("MagneticFieldStrength")
    if manufacturer and isinstance(strength, (int, float)) and not isinstance(strength, bool):
        return f"{manufacturer} {strength:g}T"
    if required:
        raise InputFileError(scan.flair, "no Manufacturer and MagneticFieldStrength in the JSON sidecar to tell its "
                                         "centre; name a participants.tsv column with --centre-column")
    return None


# ----------------------------------------------------------------------------- writing
def write_bids_dataset(records: Sequence, root: str | os.PathLike, name: str = "planar3d dataset",
                       scanners: Mapping[str, dict] | None = None, masks_pipeline: str = "consensus",
                       overwrite: bool = False) -> Path:
    """Write MSSEG-layout records (:class:`planar3d.io.records.Record`) as a BIDS dataset.

    The layout written: ``dataset_description.json``, ``README``, ``participants.tsv``
    (``participant_id``, ``site`` = the record's centre) with its ``participants.json``,
    ``sub-<id>/anat/sub-<id>_FLAIR.nii.gz`` with a JSON sidecar (the centre's scanner from
    ``scanners``), and the masks as ``derivatives/<masks_pipeline>/sub-<id>/anat/
    sub-<id>_space-orig_label-lesion_mask.nii.gz``. Files are copied byte for byte, so the
    preprocessing cache keys stay the same. Written in a temporary folder and renamed.

    Args:
        records: patients with alphanumeric ids (MSSEG ids are).
        root: output folder (must not exist unless ``overwrite``).
        name: the dataset's ``Name``.
        scanners: ``{centre: sidecar fields}``; default :data:`MSSEG2016_SCANNERS`.
        masks_pipeline: derivatives folder for the masks.
        overwrite: replace an existing ``root``.

    Returns:
        ``root``.

    Raises:
        InputFileError: ``root`` exists without ``overwrite``; a file is not gzipped NIfTI.
        Planar3DError: an id that is not a BIDS label.
    """
    import shutil


    root = Path(root)
    if root.exists() and not overwrite:
        raise InputFileError(root, "output exists; pass --overwrite (overwrite=True) to replace it")
    bad = [r.patient_id for r in records if not _LABEL.fullmatch(r.patient_id)]
    if bad:
        raise Planar3DError(f"patient ids must be alphanumeric to become BIDS labels. Received: {bad[:5]}")
    for record in records:
        for path in (record.flair, record.mask):
            if path is not None and not str(path).endswith(".nii.gz"):
                raise InputFileError(path, "expected a .nii.gz file")
    scanners = MSSEG2016_SCANNERS if scanners is None else scanners
    with replace_folder(root) as tmp:  # synced to disk, then renamed onto root
        description = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
                       "GeneratedBy": [{"Name": "planar3d", "Description": "planar3d.io.bids.write_bids_dataset"}]}
        _write_json(tmp / _DESCRIPTION, description)
        (tmp / "README").write_text(f"{name}: FLAIR scans; lesion masks in derivatives/{masks_pipeline}/.\n",
                                    encoding="utf-8")
        rows = ["participant_id\tsite"] + [f"sub-{r.patient_id}\t{r.centre}" for r in sorted(records, key=lambda r: r.patient_id)]
        (tmp / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        _write_json(tmp / "participants.json", {"site": {"Description": "acquisition centre"}})
        derivatives = tmp / "derivatives" / masks_pipeline
        if any(r.mask is not None for r in records):
            _write_json(derivatives / _DESCRIPTION, {
                "Name": f"{name}: lesion masks", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "Manual", "Description": "consensus lesion masks"}],
            })
        for record in records:
            entities = {"sub": record.patient_id}
            anat = tmp / f"sub-{record.patient_id}" / "anat"
            anat.mkdir(parents=True)
            shutil.copyfile(record.flair, anat / format_name(entities, "FLAIR", ".nii.gz"))
            _write_json(anat / format_name(entities, "FLAIR", ".json"), dict(scanners.get(record.centre, {})))
            if record.mask is not None:
                target = derivatives / f"sub-{record.patient_id}" / "anat"
                target.mkdir(parents=True)
                mask_name = format_name({**entities, "space": "orig", "label": "lesion"}, "mask", ".nii.gz")
                shutil.copyfile(record.mask, target / mask_name)
    return root


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
