"""What the command lines promise about files: refusals before work, one-line errors, quiet start-up.

Each refusal is checked for its message, its exit status, the files left (none) and the
input left unchanged. The tests run as root on the project's machine, where chmod does not
stop a write; "unwritable" is therefore ``/sys`` (sysfs refuses to create files for every
user, root included) or a path below a regular file (ENOTDIR for every user).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import OS_REFUSAL

from planar3d import atomic
from planar3d.cli import crossval as crossval_cli
from planar3d.cli import evaluate as evaluate_cli
from planar3d.cli import predict as predict_cli
from planar3d.cli import train as train_cli
from planar3d.cli.common import run_cli
from planar3d.config import make_config

ROOT = Path(__file__).resolve().parents[1]
PREPARE = ROOT / "data_prep" / "prepare_msseg2016.py"
MAKE_PHANTOM = ROOT / "data_prep" / "make_phantom.py"
AFFINE = np.diag([1.0, 1.2, 1.1, 1.0])


def _env() -> dict:
    """This checkout first on the path; TF_CPP_MIN_LOG_LEVEL unset, as for a user."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=900)


def _digest(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with its SHA-256 (to prove the inputs unchanged)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _scan(path: Path, rng: np.random.Generator, shape=(12, 14, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), AFFINE), path)
    return path


@pytest.fixture
def inputs(tmp_path, rng):
    """A scan, a reference and a prediction mask, and a regular file ``notes.txt``."""
    folder = tmp_path / "in"
    scan = _scan(folder / "scan.nii.gz", rng)
    reference = np.zeros((12, 14, 10), np.uint8)
    reference[3:7, 4:9, 2:6] = 1
    nib.save(nib.Nifti1Image(reference, AFFINE), folder / "ref.nii.gz")
    nib.save(nib.Nifti1Image(np.roll(reference, 1, axis=0), AFFINE), folder / "pred.nii.gz")
    (folder / "notes.txt").write_text("a regular file\n")
    return folder, scan, _digest(folder)


# ----------------------------------------------------------------------------- --help
def test_help_of_every_cli_answers_without_tensorflow():
    code = (
        "import contextlib, io, runpy, sys\n"
        "from planar3d import bids, crossval, evaluate, predict, train\n"
        f"prepare = runpy.run_path({str(PREPARE)!r})['main']\n"
        f"phantom = runpy.run_path({str(MAKE_PHANTOM)!r})['main']\n"
        "for name, main in [('train', train.main), ('crossval', crossval.main), ('predict', predict.main),\n"
        "                   ('evaluate', evaluate.main), ('prepare', prepare), ('phantom', phantom), ('bids', bids.main)]:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main(['--help'])\n"
        "        except SystemExit as stop:\n"
        "            assert stop.code == 0, (name, stop.code)\n"
        "    assert out.getvalue().startswith('usage: '), name\n"
        "    print(name, 'default' in out.getvalue())\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["train True", "crossval True", "predict True", "evaluate True",
                                          "prepare True", "phantom True", "bids True", "False False"]
    assert result.stderr == ""


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_hidden(inputs, tmp_path):
    # the real TensorFlow, imported by predict before loading the model
    folder, scan, before = inputs
    result = _run("-m", "planar3d.predict", "--model", str(tmp_path / "absent.keras"), "--input", str(scan),
                  "--output", str(tmp_path / "out" / "m.nii.gz"), "--device", "cpu")
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'absent.keras'}: model file not found\n"
    assert not (tmp_path / "out").exists() and _digest(folder) == before


FAKE_TENSORFLOW = """
import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1796115447.801134   10155 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"E0000 00:00:1796115542.805063   11066 cuda_platform.cc:52] failed call to cuInit\\n")
os.write(2, b"a line of the user's own\\n")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_shows_what_a_normal_run_hides(tmp_path, verbose):
    # a stand-in ``tensorflow`` that writes TensorFlow's start-up lines to file descriptor 2
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "from planar3d.cli.common import run_cli\n"
            "@run_cli\n"
            "def main(argv):\n"
            "    import tensorflow\n"
            "    print('after', file=sys.stderr)\n"
            "    return 0\n"
            f"sys.exit(main({['--verbose'] if verbose else []!r}))\n")
    result = _run("-c", code)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    if verbose:
        assert len(lines) == 5 and lines[0].startswith("WARNING: All log messages before absl")
    else:
        assert lines == ["a line of the user's own", "after"]


# ----------------------------------------------------------------------------- refusals before work
def _refused(capsys, main, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1, captured.err
    return captured.err


def test_predict_refuses_an_unwritable_folder_before_loading_the_model(inputs, tmp_path, capsys, no_work):
    folder, scan, before = inputs
    err = _refused(capsys, predict_cli.main, ["--model", str(tmp_path / "m.keras"), "--input", str(scan),
                                          "--output", "/sys/mask.nii.gz"])
    assert re.fullmatch(rf"error: /sys/mask\.nii\.gz: cannot be written: /sys is not writable \({OS_REFUSAL}\)\n", err)
    err = _refused(capsys, predict_cli.main, ["--model", str(tmp_path / "m.keras"), "--input", str(folder),
                                          "--output", "/sys/masks"])
    assert re.fullmatch(rf"error: /sys/masks: cannot be created \({OS_REFUSAL}\)\n", err)
    assert _digest(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_predict_refuses_an_output_below_a_regular_file(inputs, tmp_path, capsys, no_work):
    folder, scan, before = inputs
    notes = folder / "notes.txt"
    err = _refused(capsys, predict_cli.main, ["--model", str(tmp_path / "m.keras"), "--input", str(scan),
                                          "--output", str(notes / "mask.nii.gz")])
    assert err == f"error: {notes / 'mask.nii.gz'}: cannot be created: {notes} is a file, not a folder\n"
    assert _digest(folder) == before


def test_evaluate_refuses_an_out_below_a_regular_file_or_unwritable(inputs, tmp_path, capsys, no_work):
    folder, _, before = inputs
    notes = folder / "notes.txt"
    common = ["--reference", str(folder / "ref.nii.gz"), "--prediction", str(folder / "pred.nii.gz")]
    err = _refused(capsys, evaluate_cli.main, [*common, "--out", str(notes / "ev")])
    assert err == f"error: {notes / 'ev' / 'metrics.csv'}: cannot be created: {notes} is a file, not a folder\n"
    err = _refused(capsys, evaluate_cli.main, [*common, "--out", "/sys"])
    assert re.fullmatch(rf"error: /sys/metrics\.csv: cannot be written: /sys is not writable \({OS_REFUSAL}\)\n", err)
    assert _digest(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("tool", [train_cli.main, crossval_cli.main])
def test_train_and_crossval_refuse_bad_run_folders_and_caches(inputs, tmp_path, capsys, no_work, tool):
    folder, _, before = inputs
    notes = folder / "notes.txt"
    fold = ["--fold", "0"] if tool is train_cli.main else []
    base = [*fold, "--preset", "demo", "--size", "32", "--cache-dir", str(tmp_path / "cache")]
    err = _refused(capsys, tool, [*base, "--out", str(notes / "run")])
    assert err == f"error: {notes / 'run'}: cannot be created: {notes} is a file, not a folder\n"
    err = _refused(capsys, tool, [*base, "--out", "/sys/run"])
    assert re.fullmatch(rf"error: /sys/run: cannot be created \({OS_REFUSAL}\)\n", err)
    err = _refused(capsys, tool, [*fold, "--preset", "demo", "--out", str(tmp_path / "run"), "--cache-dir", str(notes)])
    assert err == f"error: {notes}: exists and is not a folder\n"
    assert _digest(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# ----------------------------------------------------------------------------- errors during the work
def test_an_os_error_during_the_work_is_one_line_with_status_1(capsys):
    @run_cli
    def failing(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/log.csv")

    @run_cli
    def vanished(argv):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/data/run/fold_0")

    assert failing([]) == 1
    assert capsys.readouterr().err == "error: /data/run/log.csv: the disk is full (No space left on device)\n"
    assert vanished([]) == 1
    assert capsys.readouterr().err == "error: /data/run/fold_0: No such file or directory\n"


def test_evaluate_on_a_full_disk_ends_in_one_line_and_leaves_no_file(inputs, tmp_path, capsys, monkeypatch):
    folder, _, before = inputs

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    out = tmp_path / "ev"
    code = evaluate_cli.main(["--reference", str(folder / "ref.nii.gz"), "--prediction", str(folder / "pred.nii.gz"),
                          "--out", str(out), "--no-qc"])
    assert code == 1
    err = capsys.readouterr().err
    assert err == f"error: {out / 'metrics.csv'}: could not write: the disk is full (No space left on device)\n"
    assert [p for p in out.rglob("*")] == [] and _digest(folder) == before


def test_an_error_never_shares_a_line_with_a_progress_bar(tmp_path, rng):
    # the second scan is a gzip file that is not NIfTI: nibabel's own header-check lines
    # ("data code ... not recognized") must not precede our one-line error either
    data = tmp_path / "data"
    good = _scan(data / "01001GOOD" / "3DFLAIR.nii.gz", rng)
    nib.save(nib.Nifti1Image((np.asarray(nib.load(good).dataobj) > 0.9).astype(np.uint8), AFFINE),
             data / "01001GOOD" / "Consensus.nii.gz")
    bad = data / "07001BAD" / "3DFLAIR.nii.gz"
    bad.parent.mkdir()
    import gzip

    bad.write_bytes(gzip.compress(b"this is a text file, not a NIfTI image\n" * 20))
    (data / "07001BAD" / "Consensus.nii.gz").write_bytes((data / "01001GOOD" / "Consensus.nii.gz").read_bytes())
    before = _digest(data)
    result = _run(str(PREPARE), str(data), "--size", "16", "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "preprocess 16^3" in result.stderr  # the bar was drawn
    bar, error = result.stderr.rsplit("\n", 2)[:2]
    assert error == f"error: {bad}: not a NIfTI image (data code 18720 not recognized)"
    assert "\r" not in error and "not attempting fix" not in result.stderr
    assert _digest(data) == before
    [entry] = (tmp_path / "cache").iterdir()  # the good scan's entry, no temporary folder
    assert entry.name.startswith("01001GOOD-")


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_evaluate_outputs_get_the_umask_modes(inputs, tmp_path, capsys, mask):
    folder, _, before = inputs
    previous = os.umask(mask)
    try:
        code = evaluate_cli.main(["--reference", str(folder / "ref.nii.gz"), "--prediction", str(folder / "pred.nii.gz"),
                              "--out", str(tmp_path / "ev")])
    finally:
        os.umask(previous)
    assert code == 0
    written = {str(p.relative_to(tmp_path / "ev")): p.stat().st_mode & 0o777 for p in (tmp_path / "ev").rglob("*")}
    assert sorted(written) == ["boxplot.png", "evaluation.json", "metrics.csv", "qc", "qc/ref.png", "report.html",
                               "summary.md"]
    assert written == {name: (0o777 if name == "qc" else 0o666) & ~mask for name in written}
    assert (tmp_path / "ev").stat().st_mode & 0o777 == 0o777 & ~mask
    assert _digest(folder) == before


def test_prepare_refuses_a_cache_dir_that_is_a_regular_file(inputs, tmp_path, capsys):
    import runpy

    folder, _, before = inputs
    notes = folder / "notes.txt"
    prepare = runpy.run_path(str(PREPARE))["main"]
    err = _refused(capsys, prepare, [str(tmp_path / "absent"), "--size", "16", "--cache-dir", str(notes)])
    assert err == f"error: {notes}: exists and is not a folder\n"
    assert _digest(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# ----------------------------------------------------------------------------- refusals touch nothing
def _snapshot(folder: Path) -> list[tuple[str, int, int]]:
    """Every entry below ``folder`` (and the folder itself) with its modification time and size."""
    return [(str(p.relative_to(folder.parent)), p.stat().st_mtime_ns, p.stat().st_size)
            for p in [folder, *sorted(folder.rglob("*"))]]


@pytest.mark.parametrize("tool", ["train", "crossval"])
def test_a_run_refused_for_another_configuration_leaves_its_folder_as_it_was(tmp_path, capsys, no_work, tool):
    run = tmp_path / "RUN"
    trained = make_config("demo", size=32, epochs=2)
    (run / "fold_0").mkdir(parents=True)
    (run / "fold_0" / "config.json").write_text(trained.to_json())
    (run / "grid.json").write_text(json.dumps({"config": trained.to_dict(), "folds": [0]}) + "\n")
    before = _snapshot(run)
    time.sleep(0.01)  # a touch would show in the nanosecond times
    main = train_cli.main if tool == "train" else crossval_cli.main
    argv = [*(["--fold", "0"] if tool == "train" else ["--folds", "0"]), "--preset", "demo", "--size", "32",
            "--epochs", "3", "--out", str(run), "--cache-dir", str(tmp_path / "cache")]
    err = _refused(capsys, main, argv)
    where = run / "fold_0" if tool == "train" else run
    assert err == f"error: {where}: run folder from a different config (differs in ['epochs']); choose another --out " \
                  "or pass --overwrite\n"
    assert _snapshot(run) == before and not (tmp_path / "cache").exists()


#: (tool, flag, bad value): every numeric flag of every command is checked by the parser.
BAD_NUMBERS = [
    ("predict", "--batch-size", "0"), ("predict", "--stride", "0"), ("predict", "--threshold", "1.5"),
    ("predict", "--threshold", "0"), ("train", "--epochs", "0"), ("train", "--batch-size", "-2"),
    ("train", "--lr", "0"), ("train", "--size", "0"), ("train", "--window", "-16"), ("train", "--patience", "-1"),
    ("train", "--lr-decay", "-0.5"), ("train", "--phantom-lesion-load", "2"), ("train", "--phantom-scale", "0"),
    ("train", "--phantom-n-per-centre", "0"), ("train", "--fold", "-1"), ("crossval", "--folds", "-1"),
    ("crossval", "--slurm-array-parallelism", "0"), ("crossval", "--slurm-mem", "-4"), ("evaluate", "--alpha", "0"),
    ("evaluate", "--gamma", "1.5"), ("evaluate", "--min-lesion-mm3", "-1"), ("bids", "--batch-size", "0"),
    ("predict", "--batch-size", "two"),
]


@pytest.mark.parametrize("tool, flag, value", BAD_NUMBERS)
def test_numeric_flags_out_of_range_are_one_line_errors_before_any_work(tool, flag, value, tmp_path, capsys,
                                                                         no_work):
    from planar3d.cli import bids as bids_cli

    scan = _scan(tmp_path / "in" / "scan.nii.gz", np.random.default_rng(0))
    required = {
        "predict": ["--model", str(tmp_path / "m.keras"), "--input", str(scan), "--output", str(tmp_path / "o.nii.gz")],
        "train": ["--fold", "0", "--out", str(tmp_path / "run")], "crossval": ["--out", str(tmp_path / "run")],
        "evaluate": ["--reference", str(scan), "--prediction", str(scan), "--out", str(tmp_path / "ev")],
        "bids": [str(tmp_path / "in"), str(tmp_path / "out"), "participant", "--model", str(tmp_path / "m.keras")],
    }[tool]
    main = {"predict": predict_cli.main, "train": train_cli.main, "crossval": crossval_cli.main,
            "evaluate": evaluate_cli.main, "bids": bids_cli.main}[tool]
    argv = [*required, flag, value] if flag != "--fold" else [*required[2:], flag, value]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"argument {flag}: " in err
    assert f"Received: {value}" in err or f"not an integer: '{value}'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
