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


def test_a_job_signalled_at_its_time_limit_is_requeued_as_the_same_training(tmp_path, monkeypatch):
    """submitit's own SLURM signal handler (the one a job installs) on a TrainJob at its time limit:
    it calls TrainJob.checkpoint(), saves the returned submission over the job's pickle and runs
    ``scontrol requeue`` (a fake here); the requeued job is the same training (config, fold,
    run_dir) without ``overwrite``, so train_fold resumes from the fold's backup instead of
    discarding it (resuming itself: test_train's SIGKILL test)."""
    import signal
    import time

    import submitit
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import JobPaths
    from submitit.slurm.slurm import SlurmJobEnvironment

    from planar3d.config import Config
    from planar3d.runs import launch
    from planar3d.runs.launch import TrainJob

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path / "scontrol.txt"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name, value in (("SLURM_JOB_ID", "4245"), ("SLURM_ARRAY_JOB_ID", "4242"), ("SLURM_ARRAY_TASK_ID", "3"),
                        ("SLURM_PROCID", "0")):
        monkeypatch.setenv(name, value)

    config = make_config("demo", seed=3, epochs=7).to_dict()
    run_dir = str(tmp_path / "grid" / "seed_3")
    job = TrainJob(config, 2, run_dir, overwrite=True)  # submitted with --overwrite
    expected = {"config": config, "fold": 2, "run_dir": run_dir, "overwrite": False}

    direct = job.checkpoint()
    assert type(direct) is submitit.helpers.DelayedSubmission
    assert type(direct.function) is TrainJob and vars(direct.function) == expected
    assert (direct.args, direct.kwargs) == ((), {})

    paths = JobPaths(tmp_path / "grid" / "jobs", job_id="4242_3")
    paths.folder.mkdir(parents=True)
    submission = submitit.helpers.DelayedSubmission(job)
    submission.set_timeout(360, 3)  # --slurm-time 6:00:00, max_num_timeout=3 as make_executor sets it
    submission.dump(paths.submitted_pickle)
    handler = SignalHandler(SlurmJobEnvironment(), paths, submission)
    handler._start_time = time.time() - 359 * 60  # signalled 60 s before the 6 h limit
    with pytest.raises(SystemExit):
        handler.checkpoint_and_try_requeue(signal.SIGUSR2)
    assert (tmp_path / "scontrol.txt").read_text() == "requeue 4242_3\n"

    requeued = submitit.helpers.DelayedSubmission.load(paths.submitted_pickle)
    assert type(requeued.function) is TrainJob and vars(requeued.function) == expected
    assert (requeued._timeout_min, requeued._timeout_countdown) == (360, 2)  # one of the 3 requeues used
    calls = []
    monkeypatch.setattr(launch, "train_fold", lambda *args, **kwargs: calls.append((args, kwargs)) or ["rows"])
    assert requeued.result() == ["rows"]
    assert calls == [((Config(**config).validate(), 2, run_dir), {"overwrite": False, "verbose": 2})]


def test_transfer_vs_random_launcher_sends_one_job_per_seed_and_variant(fake_slurm, tmp_path, monkeypatch, capsys):
    """``benchmarks/transfer_vs_random.py --launcher slurm|local``: the (seed, variant) runs become
    jobs with the variant's configuration, through the fake ``sbatch``; nothing trains here."""
    import pickle

    from planar3d.runs import launch
    from planar3d.runs.launch import LaunchOptions, TrainJob

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import transfer_vs_random

    out, docs = tmp_path / "tvr", tmp_path / "docs"
    common = ["--seeds", "0,1", "--variants", "planar_imagenet_frozen,planar_random_trainable", "--epochs", "3",
              "--fold", "1", "--out", str(out), "--docs", str(docs)]
    transfer_vs_random.main([*common, "--launcher", "slurm", "--slurm-partition", "gpu-a100", "--slurm-time",
                             "1:00:00", "--slurm-mem", "24"])
    printed = capsys.readouterr().out
    lines = (fake_slurm / "submitted_0.sh").read_text().splitlines()
    assert not list(fake_slurm.glob("submitted_1.sh"))  # one job array
    for expected in ("#SBATCH --array=0-3%4", "#SBATCH --partition=gpu-a100", "#SBATCH --time=60",
                     "#SBATCH --mem=24GB", "#SBATCH --gpus-per-node=1", "#SBATCH --job-name=planar3d-tvr",
                     "#SBATCH --signal=USR2@90"):
        assert expected in lines, expected
    (submission,) = json.loads((out / "jobs.json").read_text())["submissions"]
    assert submission["launcher"] == "slurm"
    variants = ["planar_imagenet_frozen", "planar_random_trainable"]
    assert [(j["seed"], j["fold"], j["variant"], j["job_id"]) for j in submission["jobs"]] == [
        (0, 1, variants[0], "4242_0"), (0, 1, variants[1], "4242_1"), (1, 1, variants[0], "4242_2"),
        (1, 1, variants[1], "4242_3")]
    for index, (seed, variant) in enumerate([(0, variants[0]), (0, variants[1]), (1, variants[0]), (1, variants[1])]):
        assert f"not finished: seed {seed}" in printed and f"4242_{index}" in printed
        with (out / "jobs" / f"4242_{index}_submitted.pkl").open("rb") as handle:
            job = pickle.load(handle).function
        assert type(job) is TrainJob and (job.fold, job.run_dir, job.overwrite) == (1, str(out / f"seed_{seed}" / variant), False)
        config = job.config
        assert (config["seed"], config["epochs"], config["patience"], config["folds"]) == (seed, 3, 3, [1])
        assert (config["mapping"], config["encoder_weights"], config["freeze_encoder"]) == (
            ("planar", "imagenet", True) if variant == variants[0] else ("planar", "none", False))
    assert not (out / "seed_0").exists() and not docs.exists()  # nothing trained, no report without a finished run

    # --launcher local: the same tasks and options reach submit (faked: it would train here)
    asked = []
    monkeypatch.setattr(launch, "submit", lambda tasks, run_dir, launcher, options: asked.append(
        ([(t.seed, t.fold, t.variant, t.run_dir, t.config.epochs) for t in tasks], run_dir, launcher, options)))
    transfer_vs_random.main([*common, "--launcher", "local", "--slurm-array-parallelism", "2", "--slurm-time", "90"])
    assert asked == [([(0, 1, variants[0], out / "seed_0" / variants[0], 3), (0, 1, variants[1], out / "seed_0" / variants[1], 3),
                       (1, 1, variants[0], out / "seed_1" / variants[0], 3), (1, 1, variants[1], out / "seed_1" / variants[1], 3)],
                      out, "local", LaunchOptions(time="90", array_parallelism=2))]
