"""Durable, atomic file writes and destination checks.

Every output goes to a temporary file in the target's folder that is flushed to disk
(``fsync``), given the mode the process' umask implies (``0666 & ~umask``, as ``open()``
would), renamed onto the real name, and the folder is synced after the rename. So a
killed process or a power cut leaves at most a ``.tmp-*`` file behind, never a half-written
or empty output under the real name. A write that fails (disk full, a folder removed under
the run) removes its temporary file and raises :class:`~planar3d.errors.OutputError` naming
the path. Existing outputs are only replaced when asked.

:func:`check_destinations` refuses, before any work starts, outputs that could not be
written: it creates the missing folders, probes that a file can be created there, and
removes what it created.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from planar3d.errors import InputFileError, OutputError

__all__ = [
    "atomic_path",
    "check_destinations",
    "check_writable",
    "file_mode",
    "folder_mode",
    "fsync_folder",
    "publish_folder",
    "replace_folder",
    "temp_folder",
    "umask",
    "write_error",
    "write_text_atomic",
]

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process' umask, read without changing it (``/proc/self/status`` on Linux).

    Elsewhere it is set and restored at once under a lock, so no file of this process is
    created with a wrong mode in between.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file, as ``open()`` gives it: ``0o666 & ~umask`` (0644 under umask 022)."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """Mode of a new folder, as ``mkdir`` gives it: ``0o777 & ~umask`` (0755 under umask 022)."""
    return 0o777 & ~umask()


def write_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """One-line :class:`OutputError` for a failed write of ``path`` (disk full said as such)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(path, f"could not write: the disk is full ({error.strerror or 'no space left'})")
    reason = error.strerror or str(error) or type(error).__name__
    return OutputError(path, f"could not write: {reason}")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing output unless ``overwrite``; return the path.

    Raises:
        InputFileError: the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputFileError(path, "output exists; pass --overwrite (overwrite=True) to replace it")
    return path


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; make it durable and rename it onto ``path`` on success.

    The temporary name keeps the suffixes of ``path`` (``.nii.gz``, ``.npy``) so that
    writers choosing a format from the extension behave as for the real name. On success
    the file gets mode ``0o666 & ~umask``, is synced to disk (``fsync``, unless
    ``fsync=False``), renamed onto ``path``, and the folder is synced.

    Raises:
        InputFileError: ``path`` exists and ``overwrite`` is False.
        OutputError: the write failed (disk full, folder gone, ...); no temporary file and
            no partial output are left.
    """
    path = check_writable(path, overwrite)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=_suffix(path), dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, file_mode())
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
        tmp = None
        if fsync:
            fsync_folder(path.parent)
    except OSError as error:
        raise write_error(path, error) from error
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically and durably (UTF-8); return the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
    return Path(path)


# ----------------------------------------------------------------------------- folders
def temp_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, empty temporary folder in ``parent`` with mode ``0o777 & ~umask``."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, folder_mode())
    return folder


@contextlib.contextmanager
def replace_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``target`` to fill; when the block ends without an
    error, ``target`` (if any) is removed and the folder, synced to disk, renamed onto it.

    On an error the temporary folder is removed and ``target`` is left as it was.

    Raises:
        InputFileError: ``target`` reappeared between its removal and the rename (another process).
    """
    target = Path(target)
    tmp = temp_folder(target.parent, prefix=f".tmp-{target.name}-")
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        if not publish_folder(tmp, target):
            raise InputFileError(target, "output appeared while writing")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def publish_folder(tmp: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Sync every file of ``tmp`` to disk, then rename ``tmp`` onto ``target``.

    Returns:
        True when ``tmp`` became ``target``; False when ``target`` already existed (another
        process published it first); ``tmp`` is then left for the caller to remove.
    """
    tmp, target = Path(tmp), Path(target)
    for root, _, files in os.walk(tmp):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_folder(root)
    try:
        os.rename(tmp, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.is_dir():
            return False
        raise
    fsync_folder(target.parent)
    return True


# ----------------------------------------------------------------------------- destination checks
def _missing_chain(folder: Path, named: Path) -> list[Path]:
    """The missing folders from ``folder`` up to its first existing ancestor (deepest first).

    Raises:
        InputFileError: naming ``named``: an ancestor (or ``folder`` itself) is not a folder.
    """
    missing, current = [], folder
    while True:
        try:
            exists = current.exists()
        except OSError as error:
            raise InputFileError(named, f"cannot be inspected: {current}: {error.strerror}") from error
        if exists or current.parent == current:
            break
        missing.append(current)
        current = current.parent
    if current.exists() and not current.is_dir():
        if current == named:
            raise InputFileError(named, "exists and is not a folder")
        raise InputFileError(named, f"cannot be created: {current} is a file, not a folder")
    return missing


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder`` (raises the OSError that a write would)."""
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
    os.close(fd)
    os.unlink(name)


def _check_folder(folder: Path, named: Path) -> None:
    """Check that files can be created in ``folder``; errors name ``named`` (an output file or ``folder``)."""
    prefix = "" if named == folder else f"cannot be written: {folder} "
    missing = _missing_chain(folder, named)
    created = []
    try:
        for item in reversed(missing):
            try:
                item.mkdir()
            except FileExistsError:
                continue  # made by another process meanwhile
            except OSError as error:
                where = f"cannot be written: {item} " if named != folder else ""
                raise InputFileError(named, f"{where}cannot be created ({error.strerror})") from error
            created.append(item)
        try:
            _probe(folder)
        except OSError as error:
            what = f"{prefix}is not writable" if prefix else "folder is not writable"
            raise InputFileError(named, f"{what} ({error.strerror})") from error
    finally:
        for item in reversed(created):
            with contextlib.suppress(OSError):
                item.rmdir()


def check_destinations(
    files: Iterable[str | os.PathLike] = (),
    folders: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
) -> None:
    """Refuse, before any work, destinations that could not be written.

    Each output file must not exist (unless ``overwrite``) and must not be a folder; its
    folder, and each of ``folders``, must be a folder or creatable, and writable: the
    missing folders are created, a probe file is created and removed in each, and the
    folders created here are removed again, so nothing is left behind either way.

    Args:
        files: output files.
        folders: folders that outputs will be written into (run folders, caches).
        overwrite: existing output files may be replaced.

    Raises:
        InputFileError: one line naming the path and the reason (exists, is a folder,
            below a regular file, cannot be created, not writable).
    """
    checks: dict[Path, Path] = {}  # folder -> the path its errors name
    for item in files:
        path = Path(item)
        if path.is_dir():
            raise InputFileError(path, "output is a folder; give a file name")
        check_writable(path, overwrite)
        checks.setdefault(path.parent, path)
    for item in folders:
        checks[Path(item)] = Path(item)
    for folder, named in checks.items():
        _check_folder(folder, named)


def write_rows(path: str | os.PathLike, rows: Sequence[dict], overwrite: bool = True,
               columns: Sequence[str] | None = None, delimiter: str = ",") -> Path:
    """Write dict rows as a CSV (or, with ``delimiter="\\t"``, a TSV) table, atomically; return its path.

    Args:
        columns: the header (default: the first row's keys); rows may not add keys.
        overwrite: replace an existing file (default); False refuses it before writing.

    The one table writer of the package: a run's ``metrics.csv`` and ``results.csv``, lesion
    tables, the BIDS App's TSVs, labels.
    """
    columns = list(rows[0]) if columns is None else list(columns)
    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        lineterminator = "\n" if delimiter == "\t" else "\r\n"
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter=delimiter, lineterminator=lineterminator)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)

