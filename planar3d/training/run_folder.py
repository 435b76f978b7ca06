"""A fold's run folder: its record (``config.json``, ``versions.json``, ``split.json``), the check
that it may be (re)used, ``done.json``, and reading its ``log.csv`` and ``metrics.csv``.
"""

from __future__ import annotations

import csv
import json
import platform
import shutil
from pathlib import Path

import numpy as np

from planar3d import __version__
from planar3d.atomic import write_text_atomic
from planar3d.config import Config, load_config
from planar3d.errors import Planar3DError
from planar3d.machine import numerics_record
from planar3d.runlock import LOCK_NAME

__all__ = ["DONE_NAME", "check_run_dir", "refuse_reuse", "read_log", "read_metrics", "source_revision", "versions", "write_run_record"]


DONE_NAME = "done.json"


def source_revision(package: Path | None = None) -> str | None:
    """The git commit planar3d runs from, with ``-dirty`` when tracked files differ from it;
    None unless the package is the ``planar3d/`` folder of a git checkout's root (an installed
    wheel, or a copy inside another repository) or without git. ``package``: the folder to
    ask about (default: this package's)."""
    import subprocess

    package = Path(__file__).resolve().parents[1] if package is None else Path(package).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != package.parent:
            return None
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def versions() -> dict[str, object]:
    """Versions of Python and of every library a result depends on, the git commit of the
    source (:func:`source_revision`), and under ``machine``
    the CPU's instruction sets, thread counts and oneDNN settings
    (:func:`planar3d.machine.numerics_record`): what makes float results differ between
    machines."""
    import keras
    import nibabel
    import scipy
    import tensorflow as tf


    return {
        "planar3d": __version__, "planar3d_source": source_revision(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "nibabel": nibabel.__version__, "platform": platform.platform(),
        "gpus": str([d.name for d in tf.config.list_physical_devices("GPU")]),
        "machine": numerics_record(),
    }


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def refuse_reuse(fold_dir: Path, config: Config, overwrite: bool, resume: bool | None) -> None:
    """Refuse a fold folder this run may not use, reading only (nothing is created or touched, so
    a refused run leaves the folder exactly as it found it): one from another configuration
    (unless ``overwrite``), or an unfinished one with ``resume=False``.

    Raises:
        Planar3DError: one line naming the folder and what differs.
    """
    saved = fold_dir / "config.json"
    if overwrite or not saved.is_file():
        return
    previous = load_config(saved).training_identity()
    if previous != config.training_identity():
        changed = sorted(k for k, v in config.training_identity().items() if previous[k] != v)
        raise Planar3DError(f"{fold_dir}: run folder from a different config (differs in {changed}); "
                            "choose another --out or pass --overwrite")
    if resume is False and not (fold_dir / DONE_NAME).is_file() and (fold_dir / "backup").exists():
        raise Planar3DError(f"{fold_dir}: holds an unfinished run; pass --resume or --overwrite")


def check_run_dir(fold_dir: Path, config: Config, overwrite: bool, resume: bool | None) -> bool:
    """Check a fold folder (:func:`refuse_reuse`; emptied with ``overwrite``) from inside its lock;
    return True when its training is done."""
    refuse_reuse(fold_dir, config, overwrite, resume)
    if not (fold_dir / "config.json").is_file():
        return False
    if overwrite:
        for item in fold_dir.iterdir():  # keep the lock held by this run
            if item.name == LOCK_NAME:
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()
        return False
    return (fold_dir / DONE_NAME).is_file()


def write_run_record(fold_dir: Path, config: Config, split: dict) -> None:
    """``config.json``, ``versions.json`` and ``split.json`` of a fold, atomically."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(fold_dir / "config.json", config.to_json())
    write_text_atomic(fold_dir / "versions.json", json.dumps(versions(), indent=2) + "\n")
    write_text_atomic(fold_dir / "split.json", json.dumps(split, indent=2) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """Rows of a fold's ``metrics.csv`` with numbers parsed."""
    rows = []
    for row in read_log(path):
        rows.append({k: (v if k in ("patient", "centre") else float(v) if k != "fold" else int(v)) for k, v in row.items()})
    return rows
