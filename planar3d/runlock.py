"""One run per run folder: a lock file holding the owner's pid and host.

``train`` locks its fold folder (``RUN_DIR/fold_k/``) and ``crossval`` the whole run folder
for as long as they work there, so a second run pointed at the same folder is refused in
one line while the first is alive. The lock is an exclusive ``flock`` on ``.run.lock``,
which the kernel drops when its holder dies, even by SIGKILL: the lock left by a killed run
is stale and the next run takes it over (and resumes as usual). The file's content, the
owner's pid, host and start time, is only for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from planar3d.errors import InputFileError

__all__ = ["LOCK_NAME", "lock_owner", "run_lock"]

#: Name of the lock file inside a locked folder.
LOCK_NAME = ".run.lock"


def lock_owner(folder: str | os.PathLike) -> dict | None:
    """What the lock file of ``folder`` says about its owner (pid, host, since), or None."""
    try:
        return json.loads((Path(folder) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _missing_folders(folder: Path) -> list[Path]:
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) for the duration of the block.

    On exit the lock file is removed, and so are the folders created here if they are still
    empty, so a run refused later (bad data) leaves nothing behind.

    Raises:
        InputFileError: another live process holds the lock (its pid and host are named).
    """
    folder = Path(folder)
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = lock_owner(folder) or {}
            _remove_empty(created)
            raise InputFileError(
                folder, f"in use by another run (pid {owner.get('pid', '?')} on {owner.get('host', '?')} "
                        f"since {owner.get('since', '?')}); wait for it to end or choose another --out") from None
        # the file may have been removed by its previous owner between open and flock
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break
