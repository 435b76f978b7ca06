"""Two processes at once, with real processes: the run-folder lock and a shared preprocessing cache."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from planar3d.cli import crossval as crossval_cli
from planar3d.cli import train as train_cli
from planar3d.errors import InputFileError
from planar3d.runlock import LOCK_NAME, lock_owner, run_lock
from planar3d.training import segment

ROOT = Path(__file__).resolve().parents[1]
HOLD_LOCK = (
    "import sys, time\n"
    "from planar3d.runlock import run_lock\n"
    "with run_lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(120)\n"
)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock of a folder; yield (process, folder)."""
    processes = []

    def start(folder: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE,
                                   text=True, env=_env())
        assert process.stdout.readline() == "locked\n"
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_run_is_refused_while_the_first_is_alive(tmp_path, holder, capsys, monkeypatch):
    run = tmp_path / "run"
    first = holder(run / "fold_0")
    owner = lock_owner(run / "fold_0")
    assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()

    def refuse(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(segment, "dataset_records", refuse)
    code = train_cli.main(["--fold", "0", "--preset", "demo", "--out", str(run), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'fold_0'}: in use by another run (pid {first.pid} on {socket.gethostname()} since ")
    assert err.endswith("); wait for it to end or choose another --out\n") and err.count("\n") == 1
    # a cross-validation of the same run folder is refused too
    holder(tmp_path / "cv")
    assert crossval_cli.main(["--preset", "demo", "--out", str(tmp_path / "cv"), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "in use by another run" in capsys.readouterr().err
    # the refused runs left nothing: only the holders' lock files
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "cv", f"cv/{LOCK_NAME}", "run", "run/fold_0", f"run/fold_0/{LOCK_NAME}"]


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, holder):
    folder = tmp_path / "run" / "fold_0"
    first = holder(folder)
    first.send_signal(signal.SIGKILL)  # no chance to clean up
    first.wait()
    assert lock_owner(folder)["pid"] == first.pid  # the stale lock file is still there
    with run_lock(folder) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(InputFileError, match="in use by another run"):
            with run_lock(folder):  # a second holder, even in this process, is refused
                pass
    assert list(folder.iterdir()) == []  # the lock file goes with its holder


def test_a_stale_lock_file_from_a_dead_pid_is_taken_over(tmp_path):
    folder = tmp_path / "fold_0"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    (folder / "log.csv").write_text("epoch\n0\n")
    with run_lock(folder):
        assert lock_owner(folder)["pid"] == os.getpid()
    assert sorted(p.name for p in folder.iterdir()) == ["log.csv"]  # the run's files stay


# ----------------------------------------------------------------------------- shared cache
#: Fills a cache from a child process. Before publishing an entry, each of the two processes
#: writes ``<barrier>/<entry>.<name>`` and waits (up to 120 s) for the other's file for that
#: entry: both have then built the entry in their own temporary folder and race to publish it.
#: Prints which entries this process published (True) or found published by the other (False).
FILL_CACHE = (
    "import sys, time, json\n"
    "from pathlib import Path\n"
    "from planar3d.io.datasets import find_dataset\n"
    "from planar3d.data import cache\n"
    "data, cache_dir, barrier, me, other = sys.argv[1:]\n"
    "records = find_dataset(data, require_masks=True)\n"
    "published, publish = {}, cache.publish_folder\n"
    "def racing_publish(tmp, entry):\n"
    "    (Path(barrier) / f'{entry.name}.{me}').touch()\n"
    "    deadline = time.monotonic() + 120\n"
    "    while not (Path(barrier) / f'{entry.name}.{other}').exists():\n"
    "        if time.monotonic() > deadline:\n"
    "            sys.exit(f'timed out waiting for {other} at {entry.name}')\n"
    "        time.sleep(0.005)\n"
    "    published[entry.name] = publish(tmp, entry)\n"
    "    return published[entry.name]\n"
    "cache.publish_folder = racing_publish\n"
    "cases = cache.load_cases(records, size=16, cache_dir=cache_dir, progress=False)\n"
    "print(json.dumps({'cases': {c.patient_id: [float(c.volume.sum()), float(c.mask.sum())] for c in cases},\n"
    "                  'published': published}))\n"
)


def test_two_processes_fill_one_cache_at_once(tmp_path, rng):
    data = tmp_path / "data"
    ids = ["01001AAAA", "01002BBBB", "07001CCCC", "08001DDDD"]
    for pid in ids:
        (data / pid).mkdir(parents=True)
        scan = rng.random((14, 18, 12)).astype(np.float32)
        nib.save(nib.Nifti1Image(scan, np.eye(4)), data / pid / "3DFLAIR.nii.gz")
        nib.save(nib.Nifti1Image((scan > 0.8).astype(np.uint8), np.eye(4)), data / pid / "Consensus.nii.gz")
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    previous = os.umask(0o022)
    try:
        processes = [subprocess.Popen([sys.executable, "-c", FILL_CACHE, str(data), str(cache), str(barrier), me, other],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
                     for me, other in (("a", "b"), ("b", "a"))]
        results = [process.communicate(timeout=900) for process in processes]
    finally:
        os.umask(previous)
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in results]
    first, second = (json.loads(out) for out, _ in results)
    assert first["cases"] == second["cases"] and sorted(first["cases"]) == ids
    entries = sorted(cache.iterdir())
    # both processes reached the publishing of every entry (the barrier): each entry was published
    # by exactly one of them, the other found it there and used it
    assert sorted(first["published"]) == sorted(second["published"]) == [e.name for e in entries]
    assert all(first["published"][e.name] != second["published"][e.name] for e in entries), (first, second)
    assert sorted(p.name for p in barrier.iterdir()) == sorted(f"{e.name}.{me}" for e in entries for me in "ab")
    assert [e.name.split("-")[0] for e in entries] == ids  # one entry per scan, no .tmp-/.trash- left
    for entry in entries:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o755
        assert sorted(p.name for p in entry.iterdir()) == ["mask.npy", "meta.json", "volume.npy"]
        assert {stat.S_IMODE(p.stat().st_mode) for p in entry.iterdir()} == {0o644}
        assert np.load(entry / "volume.npy").shape == (16, 16, 16)
