"""The grid as submitit jobs, without a scheduler: the SLURM submission, options, the missing extra.

The SLURM path runs for real up to ``sbatch``: fake ``srun``/``sbatch``/``sacct`` scripts on
``PATH`` stand in for the scheduler, so submitit's ``SlurmExecutor`` builds its sbatch file and
"submits" it; the fake ``sbatch`` keeps a copy of the file it was given and answers with a job id,
as SLURM does. The local executor (real jobs, real processes) is tested in ``test_grid.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planar3d.cli import crossval as crossval_cli
from planar3d.config import make_config
from planar3d.errors import Planar3DError
from planar3d.runs.launch import slurm_minutes

TINY_FLAGS = ["--preset", "demo", "--size", "32", "--epochs", "1", "--phantom-n-per-centre", "3"]

_SBATCH = """#!/bin/bash
# fake sbatch: keep the submission file, answer as SLURM does
n=$(ls "$FAKE_SLURM" | grep -c '^submitted_')
cp "$1" "$FAKE_SLURM/submitted_$n.sh"
echo "Submitted batch job $((4242 + n))"
"""
_SACCT = """#!/bin/bash
cat "$FAKE_SLURM/sacct.txt" 2>/dev/null
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "slurm"
    folder.mkdir()
    for name, text in (("sbatch", _SBATCH), ("srun", "#!/bin/bash\nexit 0\n"), ("sacct", _SACCT)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_slurm_submission_carries_the_options_and_records_the_jobs(fake_slurm, tmp_path, capsys):
    out = tmp_path / "grid"
    options = tmp_path / "cluster.yaml"
    options.write_text("partition: from-file\ntime: 60\naccount: mslab\nsetup:\n  - module load cuda/12\n")
    assert crossval_cli.main([*TINY_FLAGS, "--folds", "0", "1", "--seeds", "0", "1", "--launcher", "slurm",
                          "--slurm-config", str(options), "--slurm-partition", "gpu-a100", "--slurm-time", "2:30:00",
                          "--slurm-gpus-per-job", "2", "--slurm-mem", "48", "--slurm-array-parallelism", "3",
                          "--out", str(out)]) == 0
    assert f"python -m planar3d.crossval --gather {out}" in capsys.readouterr().out
    (sbatch,) = sorted(fake_slurm.glob("submitted_*.sh"))  # one job array for the four runs
    lines = sbatch.read_text().splitlines()
    jobs = out / "jobs"
    for expected in ("#SBATCH --partition=gpu-a100", "#SBATCH --time=150", "#SBATCH --gpus-per-node=2",
                     "#SBATCH --mem=48GB", "#SBATCH --array=0-3%3", "#SBATCH --account=mslab",
                     "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@90", "#SBATCH --job-name=planar3d-grid",
                     f"#SBATCH --output={jobs}/%A_%a_0_log.out", f"#SBATCH --error={jobs}/%A_%a_0_log.err",
                     "module load cuda/12"):
        assert expected in lines, expected
    assert lines[-1].startswith("srun --unbuffered") and lines[-1].endswith(f"{sys.executable} -u -m submitit.core._submit {jobs}")
    (submission,) = json.loads((out / "jobs.json").read_text())["submissions"]
    assert submission["launcher"] == "slurm"
    assert [(j["seed"], j["fold"], j["job_id"]) for j in submission["jobs"]] == [
        (0, 0, "4242_0"), (0, 1, "4242_1"), (1, 0, "4242_2"), (1, 1, "4242_3")]
    assert submission["jobs"][3]["stdout"] == str(jobs / "4242_3_0_log.out")
    assert not (out / "seed_0").exists()  # nothing trained on the submitting machine

    # nothing finished: gather names every run and its job
    assert crossval_cli.main(["--gather", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: no run has finished yet: seed 0 fold 0 unfinished (job 4242_0 queued")
    assert "seed 1 fold 1 unfinished (job 4242_3" in err

    # submitting again: the job still running is left alone, the others go out as a new array
    (fake_slurm / "sacct.txt").write_text("JobID|State|NodeList\n4242_0|FAILED|n1\n4242_1|RUNNING|n1\n"
                                          "4242_2|TIMEOUT|n1\n4242_3|PENDING|\n")
    assert crossval_cli.main([*TINY_FLAGS, "--folds", "0", "1", "--seeds", "0", "1", "--launcher", "slurm",
                          "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed 0 fold 1: job 4242_1 is still queued or running; not submitted again" in printed
    assert "seed 1 fold 1: job 4242_3 is still queued or running" in printed
    second = json.loads((out / "jobs.json").read_text())["submissions"][1]
    assert [(j["seed"], j["fold"], j["job_id"]) for j in second["jobs"]] == [(0, 0, "4243_0"), (1, 0, "4243_1")]
    text = (fake_slurm / "submitted_1.sh").read_text()
    assert "#SBATCH --array=0-1%2" in text and "#SBATCH --time=360" in text and "--partition" not in text


def test_slurm_options_are_checked_before_submitting(fake_slurm, tmp_path, capsys):
    out = tmp_path / "grid"
    bad = tmp_path / "cluster.json"
    bad.write_text('{"partitoin": "gpu"}')
    assert crossval_cli.main([*TINY_FLAGS, "--launcher", "slurm", "--slurm-config", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: unknown SLURM options ['partitoin']; known: [")
    bad.write_text('{"gpus_per_node": 4}')
    assert crossval_cli.main([*TINY_FLAGS, "--launcher", "slurm", "--slurm-config", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {bad}: options ['gpus_per_node'] are set by planar3d (use gpus_per_job for GPUs)\n")
    assert crossval_cli.main([*TINY_FLAGS, "--launcher", "slurm", "--slurm-time", "soon", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: time limit must be minutes or [D-]HH:MM:SS. Received: time='soon'\n"
    assert not out.exists() and not list(fake_slurm.glob("submitted_*"))


def test_slurm_without_a_scheduler_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    out = tmp_path / "grid"
    assert crossval_cli.main([*TINY_FLAGS, "--launcher", "slurm", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: --launcher slurm: no 'srun' on PATH; submit from a SLURM login node\n"
    assert not out.exists()


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    out = tmp_path / "grid"
    assert crossval_cli.main([*TINY_FLAGS, "--launcher", "local", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        'error: --launcher local needs the optional package submitit: pip install -e ".[cluster]"\n')
    assert not out.exists()


def test_submitit_is_imported_only_for_a_launcher():
    script = ("import sys; from planar3d.runs import crossval, grid, launch; from planar3d.training import segment; "
              "from planar3d.cli.common import make_parser, add_launcher_flags; p = make_parser('x', 'x'); "
              "add_launcher_flags(p); launch.launch_options(p.parse_args(['--slurm-time', '90'])); "
              "print('submitit' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_slurm_minutes():
    assert [slurm_minutes(v) for v in (90, "90", "1:30:00", "2-00:00:00", "0:00:30")] == [90, 90, 90, 2880, 1]
    with pytest.raises(Planar3DError, match=r"Received: time=0"):
        slurm_minutes(0)


def test_a_job_pickled_before_the_stage_layout_still_loads():
    """submitit pickled jobs of older grids as ``planar3d.launch.TrainJob``: they load as today's class."""
    import pickle

    from planar3d.runs.launch import TrainJob

    job = TrainJob(make_config("demo").to_dict(), 2, "/tmp/run", overwrite=True)
    today = pickle.dumps(job, protocol=2)  # no frames: the module name can be swapped in place
    assert b"planar3d.runs.launch" in today
    old = today.replace(b"planar3d.runs.launch\n", b"planar3d.launch\n")
    assert b"planar3d.runs" not in old
    loaded = pickle.loads(old)
    assert type(loaded) is TrainJob and vars(loaded) == vars(job)
