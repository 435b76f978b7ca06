"""Tests of planar3d.atomic: modes from the umask, fsync before rename, disk full, destination checks.

The tests run as root on the project's machine, and chmod does not stop root. Unwritable
folders are therefore ones that root cannot write either: ``/sys`` (sysfs refuses to create
files, EACCES, for every user) and a path below a regular file (ENOTDIR for every user).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import OS_REFUSAL

from planar3d import atomic
from planar3d.atomic import (
    atomic_path,
    check_destinations,
    publish_folder,
    replace_folder,
    temp_folder,
    umask,
    write_text_atomic,
)
from planar3d.errors import InputFileError, OutputError
from planar3d.io.nifti import save_nifti

UNWRITABLE = Path("/sys")  # EACCES on file creation, for root as for anyone


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(params=[0o022, 0o077, 0o002])
def process_umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_umask_is_read_without_changing_it(process_umask):
    assert umask() == process_umask
    assert umask() == process_umask  # unchanged by the first read


def test_outputs_get_the_mode_the_umask_implies(tmp_path, process_umask):
    text = write_text_atomic(tmp_path / "new" / "summary.md", "hello\n")
    image = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4))
    mask = save_nifti(np.ones((4, 5, 6), np.uint8), image, tmp_path / "new" / "mask.nii.gz")
    folder = temp_folder(tmp_path / "cache", prefix=".tmp-entry-")
    (folder / "volume.npy").write_bytes(b"x")
    assert publish_folder(folder, tmp_path / "cache" / "entry")
    for path in (text, mask):
        assert _mode(path) == 0o666 & ~process_umask, oct(_mode(path))
    for path in (tmp_path / "new", tmp_path / "cache" / "entry"):
        assert _mode(path) == 0o777 & ~process_umask, oct(_mode(path))
    assert text.read_text() == "hello\n"
    assert _listing(tmp_path) == ["cache", "cache/entry", "cache/entry/volume.npy", "new", "new/mask.nii.gz",
                                  "new/summary.md"]


def test_replace_folder_swaps_in_the_new_tree_or_leaves_the_old_one(tmp_path, process_umask):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with replace_folder(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert _listing(tmp_path) == ["dataset", "dataset/old.txt"]  # old tree kept, no temporary folder left
    with replace_folder(target) as tmp:
        assert tmp.parent == tmp_path and not (tmp / "old.txt").exists()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
    assert _listing(tmp_path) == ["dataset", "dataset/sub", "dataset/sub/new.txt"]
    assert _mode(target) == 0o777 & ~process_umask, oct(_mode(target))


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", Path(target).name))
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    write_text_atomic(tmp_path / "a.txt", "12345")
    assert events == [("fsync", 5), ("replace", "a.txt"), ("fsync", "folder")]
    events.clear()
    with atomic_path(tmp_path / "b.txt", fsync=False) as tmp:
        tmp.write_text("x")
    assert events == [("replace", "b.txt")]


def _fake_save_filling_the_disk(img, path):
    Path(path).write_bytes(b"\x1f\x8b partial gzip")  # some bytes reach the disk, then it is full
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_in_the_writer_leaves_nothing(tmp_path, monkeypatch):
    image = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4))
    monkeypatch.setattr("planar3d.io.nifti.nib.save", _fake_save_filling_the_disk)
    target = tmp_path / "out" / "mask.nii.gz"
    with pytest.raises(OutputError) as caught:
        save_nifti(np.ones((4, 5, 6), np.uint8), image, target)
    assert str(caught.value) == f"{target}: could not write: the disk is full (No space left on device)"
    assert caught.value.exit_status == 1
    assert _listing(tmp_path) == ["out"]  # no temporary file, no partial output


def test_disk_full_at_fsync_keeps_the_previous_output(tmp_path, monkeypatch):
    # delayed allocation: ENOSPC can come from fsync; the old file must survive
    target = write_text_atomic(tmp_path / "summary.md", "old\n")

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(OutputError, match=r"summary\.md: could not write: the disk is full"):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert _listing(tmp_path) == ["summary.md"]


def test_another_os_error_names_the_path(tmp_path):
    target = tmp_path / "gone" / "metrics.csv"
    with pytest.raises(OutputError) as caught:
        with atomic_path(target) as tmp:
            tmp.unlink()
            tmp.parent.rmdir()  # the folder removed under the run
    assert str(caught.value) == f"{target}: could not write: No such file or directory"
    assert not target.parent.exists()


def test_an_exception_in_the_writer_removes_the_temporary_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "a.npy") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------- destinations
def test_check_destinations_creates_nothing_and_accepts_writable_paths(tmp_path):
    check_destinations([tmp_path / "a" / "b" / "mask.nii.gz"], folders=[tmp_path / "run" / "fold_0"])
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("case", ["below_file", "folder_is_file", "output_is_folder", "exists", "unwritable",
                                  "cannot_create"])
def test_check_destinations_refusals(tmp_path, case):
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    files, folders = [], []
    if case == "below_file":
        files = [regular / "sub" / "m.nii.gz"]
        expected = f"{regular / 'sub' / 'm.nii.gz'}: cannot be created: {regular} is a file, not a folder"
    elif case == "folder_is_file":
        folders, expected = [regular], f"{regular}: exists and is not a folder"
    elif case == "output_is_folder":
        files, expected = [tmp_path], f"{tmp_path}: output is a folder; give a file name"
    elif case == "exists":
        files, expected = [regular], f"{regular}: output exists; pass --overwrite (overwrite=True) to replace it"
    elif case == "unwritable":
        files = [UNWRITABLE / "m.nii.gz"]
        expected = f"{UNWRITABLE / 'm.nii.gz'}: cannot be written: {UNWRITABLE} is not writable ({OS_REFUSAL})"
    else:
        folders, expected = [UNWRITABLE / "run"], f"{UNWRITABLE / 'run'}: cannot be created ({OS_REFUSAL})"
    with pytest.raises(InputFileError) as caught:
        check_destinations(files, folders=folders)
    # the OS words a refusal per user: root gets "Operation not permitted", others "Permission denied"
    assert re.fullmatch(re.escape(expected).replace(re.escape(OS_REFUSAL), OS_REFUSAL), str(caught.value))
    assert _listing(tmp_path) == ["notes.txt"] and regular.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; /sys covers the case")
def test_check_destinations_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    # the refusal names the file and the folder that cannot take it (seen only as a non-root user)
    expected = rf"^{re.escape(str(folder / 'm.nii.gz'))}: cannot be written: {re.escape(str(folder))} is not writable \({OS_REFUSAL}\)$"
    with pytest.raises(InputFileError, match=expected):
        check_destinations([folder / "m.nii.gz"])
    assert list(folder.iterdir()) == []


def test_a_written_bids_dataset_is_readable_by_others(tmp_path):
    from planar3d.io.bids import write_bids_dataset
    from planar3d.io.records import Record

    scan = tmp_path / "in" / "scan.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), scan)
    previous = os.umask(0o022)
    try:
        root = write_bids_dataset([Record("01001AAA", "01", scan, None)], tmp_path / "bids")
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(root)): _mode(p) for p in [root, *root.rglob("*")]}
    assert modes["."] == 0o755
    assert all(mode == (0o755 if (root / name).is_dir() else 0o644) for name, mode in modes.items()), modes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
