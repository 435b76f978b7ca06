"""Get the public Ljubljana MS data sets (30 cross-sectional, 20 longitudinal patients) and check them.

The files come from the public repository muschellij2/open_ms_data (a copy of the data
published by the Laboratory of Imaging Technologies, University of Ljubljana, CC BY; cite
Lesjak et al., Neuroinformatics 16:51-63, 2018 and 14:403-420, 2016), in its own layout, which
``--data`` reads as is (see planar3d.io.ljubljana). ``--source`` may also be a local folder
with that layout (a clone or a mirror).

Usage:
    python data_prep/get_open_ms_data.py OUT [--sets cross_sectional/MNI longitudinal/raw]
        [--patients 1 2 ...] [--source URL_OR_FOLDER]

Every file is written to a temporary name, checked (a NIfTI image loads in full and holds no
NaN; an ITK transform parses) and renamed into place; files already in OUT that pass the
check are kept. The patients of each set are then read with planar3d's reader. Exit status 0:
all files are there and valid; 2: one line naming the file or URL that failed (nothing
half-written is left behind).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from planar3d.atomic import atomic_path
from planar3d.errors import InputFileError, Planar3DError

SOURCE = "https://raw.githubusercontent.com/muschellij2/open_ms_data/master"
_MNI = "_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
#: set -> (patients, files of one patient folder)
SETS: dict[str, tuple[range, tuple[str, ...]]] = {
    "cross_sectional/MNI": (range(1, 31), (f"FLAIR{_MNI}", f"T1{_MNI}", f"T1POST{_MNI}", f"T2{_MNI}",
                                           "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")),
    "cross_sectional/raw": (range(1, 31), ("FLAIR.nii.gz", "T1W.nii.gz", "T1WKS.nii.gz", "T2W.nii.gz",
                                           "consensus_gt.nii.gz")),
    "cross_sectional/coregistered": (range(1, 31), ("FLAIR.nii.gz", "T1W.nii.gz", "T1WKS.nii.gz", "T2W.nii.gz",
                                                    "consensus_gt.nii.gz", "brainmask.nii.gz")),
    "longitudinal/raw": (range(1, 21), tuple(f"study{v}_{m}.nii.gz" for v in (1, 2) for m in ("FLAIR", "T1W", "T2W"))
                         + ("gt.nii.gz", "study1_FLAIR_to_common_space.txt", "study2_FLAIR_to_common_space.txt")),
    "longitudinal/coregistered": (range(1, 21), tuple(f"study{v}_{m}.nii.gz" for v in (1, 2)
                                                      for m in ("FLAIR", "T1W", "T2W")) + ("gt.nii.gz", "brainmask.nii.gz")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to fill (created; existing valid files are kept)")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["cross_sectional/MNI", "longitudinal/raw"],
                        help="sets to get; default: cross_sectional/MNI longitudinal/raw")
    parser.add_argument("--patients", nargs="+", type=int, default=None,
                        help="patient numbers (default: all of each set: 1-30 cross-sectional, 1-20 longitudinal)")
    parser.add_argument("--source", default=SOURCE, help=f"base URL or local folder in the repository's layout; default: {SOURCE}")
    return parser


def check_file(path: Path, shown: str) -> None:
    """Raise :class:`InputFileError` naming ``shown`` unless ``path`` is a valid NIfTI image or ITK transform."""
    if path.suffix == ".txt":
        from planar3d.io.ljubljana import read_itk_affine

        try:
            read_itk_affine(path)
        except InputFileError as error:
            raise InputFileError(shown, str(error).split(": ", 1)[-1]) from error
        return
    import numpy as np

    from planar3d.io.nifti import load_nifti

    try:
        image = load_nifti(path)
        finite = bool(np.isfinite(image.get_fdata(dtype=np.float32)).all())
    except InputFileError as error:
        raise InputFileError(shown, str(error).split(": ", 1)[-1]) from error
    if not finite:
        raise InputFileError(shown, "image holds NaN or Inf")


class _Absent(Exception):
    """The file is not at the source (some patients lack a sequence)."""


def fetch(source: str, relative: str, target: Path) -> bool:
    """Copy ``source/relative`` to ``target`` through a checked temporary file; False when absent at the source."""
    shown = f"{source.rstrip('/')}/{relative}"
    try:
        with atomic_path(target, overwrite=True) as tmp:
            _copy(source, relative, shown, tmp)
            check_file(tmp, shown)
    except _Absent:
        return False
    return True


def _copy(source: str, relative: str, shown: str, tmp: Path) -> None:
    local = Path(source)
    if local.is_dir():
        if not (local / relative).is_file():
            raise _Absent(shown)
        shutil.copyfile(local / relative, tmp)
        return
    try:
        with urllib.request.urlopen(shown, timeout=60) as response, open(tmp, "wb") as handle:
            shutil.copyfileobj(response, handle)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise _Absent(shown) from error
        raise InputFileError(shown, f"download failed (HTTP {error.code})") from error
    except (urllib.error.URLError, OSError) as error:
        raise InputFileError(shown, f"download failed ({getattr(error, 'reason', error)})") from error


def get_sets(out: Path, sets: list[str], patients: list[int] | None, source: str) -> dict[str, int]:
    """Fill ``out``; return ``{set: patients read back}``.

    Raises:
        InputFileError: a file failed to download or its check; a patient has no FLAIR at the source.
    """
    from planar3d.io.datasets import find_dataset

    counts = {}
    for name in sets:
        numbers, files = SETS[name]
        for number in patients or numbers:
            folder = f"{name}/patient{number:02d}"
            got = []
            for file in files:
                target = out / folder / file
                if target.is_file():
                    try:
                        check_file(target, str(target))
                        got.append(file)
                        continue
                    except InputFileError:
                        target.unlink()
                if fetch(source, f"{folder}/{file}", target):
                    got.append(file)
            if not got and (out / folder).is_dir() and not any((out / folder).iterdir()):
                (out / folder).rmdir()
            if not any("FLAIR" in file and file.endswith(".nii.gz") for file in got):
                raise InputFileError(f"{source.rstrip('/')}/{folder}", "no FLAIR at the source")
            missing = sorted(set(files) - set(got))
            if missing:
                print(f"{folder}: not at the source: {', '.join(missing)}", file=sys.stderr)
        counts[name] = len(find_dataset(out / name))
    return counts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        counts = get_sets(args.out, args.sets, args.patients, args.source)
    except (InputFileError, Planar3DError) as error:
        print(f"get_open_ms_data: {error}", file=sys.stderr)
        return 2
    for name, count in counts.items():
        print(f"{args.out / name}: {count} scans read (python -m planar3d.crossval --data {args.out / name} ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
