"""Sending the grid's trainings to a scheduler: ``--launcher local|slurm``, built on submitit.

One job per :class:`planar3d.runs.seeds.Task` (seed, fold[, variant]) that has not finished. Each
job calls :func:`planar3d.training.segment.train_fold` in its own process, so a finished fold is
reused and a job stopped by a time limit resumes from its last finished epoch; on SLURM,
submitit signals the job 90 s before its limit and requeues it (:meth:`TrainJob.checkpoint`).

- ``local``: submitit's local executor, the same jobs as separate processes on this
  machine, ``array_parallelism`` at a time (default 1); the outputs are gathered when
  they end.
- ``slurm``: one SLURM job array (``sbatch``), ``array_parallelism`` jobs at a time;
  ``crossval --gather RUN_DIR`` builds the outputs once the jobs have run.

Job logs go to ``RUN_DIR/jobs/<job id>_0_log.out`` (and ``.err``) and the job ids to
``RUN_DIR/jobs.json``.
submitit is an optional extra (``pip install -e ".[cluster]"``) imported only here, only
when a job is submitted.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from planar3d.atomic import write_text_atomic
from planar3d.config import Config, read_mapping_file
from planar3d.errors import InputFileError, Planar3DError
from planar3d.runs.grid import JOBS_NAME, read_jobs
from planar3d.runs.seeds import Task
from planar3d.training.segment import train_fold

__all__ = ["ACTIVE_SLURM_STATES", "INSTALL_HINT", "LaunchOptions", "TrainJob", "check_launcher",
           "import_submitit",
           "launch_options", "make_executor", "slurm_minutes", "submit"]

INSTALL_HINT = 'pip install -e ".[cluster]"'
#: SLURM states of a job that will still run: such a task is not submitted again.
ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                       "REQUEUE_HOLD", "REQUEUE_FED"}
#: options a ``--slurm-config`` file may give besides submitit's own SLURM parameters.
_OWN_KEYS = ("partition", "time", "gpus_per_job", "mem", "array_parallelism")
#: submitit parameters that planar3d sets itself.
_RESERVED = {"gpus_per_node", "job_name", "map_count", "command", "folder", "num_gpus"}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")


@dataclasses.dataclass
class LaunchOptions:
    """Where and how the jobs run.

    Attributes:
        partition: SLURM partition (``None``: the cluster's default).
        time: time limit per job, minutes or ``[D-]HH:MM:SS`` (default 360 = 6 h; the paper's
            folds took 2.5-3.5 h on one GPU); a job reaching it is requeued and resumes.
        gpus_per_job: GPUs per job (default 1).
        mem: memory per job in GB (``None``: the cluster's default).
        array_parallelism: jobs running at once (SLURM array ``%N``, default all; local
            default 1).
        extra: more submitit SLURM parameters from a ``--slurm-config`` file (``account``,
            ``qos``, ``cpus_per_task``, ``setup``, ``additional_parameters``, ...).
    """

    partition: str | None = None
    time: int | str = 360
    gpus_per_job: int = 1
    mem: float | None = None
    array_parallelism: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def import_submitit(launcher: str):
    """The submitit module, or a one-line error naming the install command.

    Raises:
        Planar3DError: submitit is not installed.
    """
    # At import, submitit reconfigures logging (logging.config.dictConfig), which closes the
    # handlers of libraries imported before it (absl's, once TensorFlow is loaded): keep its
    # default configuration for the job processes only.
    previous = os.environ.get("SUBMITIT_LOG_LEVEL")
    os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
    try:
        import submitit
    except ImportError:
        raise Planar3DError(f"--launcher {launcher} needs the optional package submitit: {INSTALL_HINT}") from None
    finally:
        if previous is None:
            os.environ.pop("SUBMITIT_LOG_LEVEL", None)
        else:
            os.environ["SUBMITIT_LOG_LEVEL"] = previous
    return submitit


def check_launcher(launcher: str) -> None:
    """Refuse, before any work, a launcher that cannot run here.

    Raises:
        Planar3DError: submitit is missing, or ``slurm`` without ``srun`` on ``PATH``.
    """
    import_submitit(launcher)
    if launcher == "slurm" and shutil.which("srun") is None:
        raise Planar3DError("--launcher slurm: no 'srun' on PATH; submit from a SLURM login node")


def slurm_minutes(value: int | str) -> int:
    """A SLURM time limit in whole minutes: ``90``, ``"90"``, ``"1:30:00"`` or ``"2-00:00:00"``.

    Raises:
        Planar3DError: another form, or not positive.
    """
    text = str(value).strip()
    if text.isdigit():
        minutes = int(text)
    else:
        match = _TIME.match(text)
        if match is None:
            raise Planar3DError(f"time limit must be minutes or [D-]HH:MM:SS. Received: time={value!r}")
        days, hours, mins, secs = (int(g or 0) for g in match.groups())
        minutes = days * 1440 + hours * 60 + mins + (secs > 0)
    if minutes <= 0:
        raise Planar3DError(f"time limit must be positive. Received: time={value!r}")
    return minutes


def _read_options_file(path: Path) -> dict[str, Any]:
    values = read_mapping_file(path, "SLURM options")
    return {str(k).removeprefix("slurm_").replace("-", "_"): v for k, v in values.items()}


def launch_options(args) -> LaunchOptions:
    """:class:`LaunchOptions` from the ``--slurm-*`` flags, over a ``--slurm-config`` file.

    Raises:
        InputFileError: an unreadable file or an unknown option in it (checked against
            submitit's SLURM parameters when submitit is installed).
    """
    values: dict[str, Any] = {}
    path = getattr(args, "slurm_config", None)
    if path:
        path = Path(path)
        values = _read_options_file(path)
        reserved = sorted(set(values) & _RESERVED)
        if reserved:
            raise InputFileError(path, f"options {reserved} are set by planar3d (use gpus_per_job for GPUs)")
        try:
            import_submitit("slurm")
            from submitit.slurm.slurm import _get_default_parameters

            known = set(_OWN_KEYS) | set(_get_default_parameters())
        except Planar3DError:
            known = None
        unknown = sorted(set(values) - known) if known is not None else []
        if unknown:
            raise InputFileError(path, f"unknown SLURM options {unknown}; known: {sorted(known - _RESERVED)}")
    for name in _OWN_KEYS:
        flag = getattr(args, f"slurm_{name}", None)
        if flag is not None:
            values[name] = flag
    own = {k: values.pop(k) for k in _OWN_KEYS if k in values}
    options = LaunchOptions(**own, extra=values)
    slurm_minutes(options.time)
    for name in ("gpus_per_job", "array_parallelism"):
        value = getattr(options, name)
        if value is not None and (not isinstance(value, int) or value < (0 if name == "gpus_per_job" else 1)):
            raise Planar3DError(f"{name} must be a whole number >= {0 if name == 'gpus_per_job' else 1}. "
                                f"Received: {name}={value!r}")
    if options.mem is not None and float(options.mem) <= 0:
        raise Planar3DError(f"mem must be positive (GB). Received: mem={options.mem!r}")
    return options


def _slurm_parameters(options: LaunchOptions, name: str) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters (sbatch names) for ``options``."""
    parameters: dict[str, Any] = {"job_name": name, "time": slurm_minutes(options.time),
                                  "gpus_per_node": options.gpus_per_job, "ntasks_per_node": 1}
    if options.partition:
        parameters["partition"] = options.partition
    if options.mem is not None:
        mem = float(options.mem)
        parameters["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    if options.array_parallelism is not None:
        parameters["array_parallelism"] = options.array_parallelism
    parameters.update(options.extra)
    return parameters


def make_executor(launcher: str, out: Path, options: LaunchOptions):
    """A submitit executor writing its files (``<job id>_0_log.out`` / ``.err``, pickles) in ``out/jobs/``.

    Raises:
        Planar3DError: submitit missing, no SLURM on this machine, or options SLURM refuses.
    """
    submitit = import_submitit(launcher)
    folder = out / "jobs"
    if launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=slurm_minutes(options.time), gpus_per_node=0)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
    except RuntimeError as error:
        raise Planar3DError(f"--launcher slurm: {error} (no 'srun' on PATH; submit from a SLURM login node)") from error
    try:
        executor.update_parameters(**_slurm_parameters(options, f"planar3d-{out.resolve().name}"))
    except ValueError as error:
        raise Planar3DError(f"SLURM options refused by submitit: {str(error).splitlines()[0]}") from error
    return executor


class TrainJob:
    """One task as a submitit job: :func:`planar3d.training.segment.train_fold` in the job's process.

    Picklable (plain attributes), so that submitit can send it to a cluster node.
    """

    def __init__(self, config: dict, fold: int, run_dir: str, overwrite: bool = False):
        self.config = dict(config)
        self.fold = int(fold)
        self.run_dir = str(run_dir)
        self.overwrite = bool(overwrite)

    def __call__(self) -> list[dict]:
        return train_fold(Config(**self.config).validate(), self.fold, self.run_dir, overwrite=self.overwrite,
                          verbose=2)

    def checkpoint(self):
        """Called by submitit when SLURM signals the time limit: requeue the same training,
        which resumes from its last finished epoch (never with ``overwrite``)."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.fold, self.run_dir))


def _active_slurm_jobs(out: Path, job_ids: Sequence[str]) -> set[str]:
    """The recorded SLURM jobs that are still queued or running (empty if ``sacct`` cannot tell)."""
    if not job_ids:
        return set()
    import submitit

    active = set()
    for job_id in job_ids:
        try:
            state = submitit.SlurmJob(out / "jobs", job_id).state
        except Exception:  # no sacct: assume it ended (the fold's run lock refuses a duplicate)
            state = "UNKNOWN"
        if state.split()[0] in ACTIVE_SLURM_STATES:
            active.add(job_id)
    return active


def _record(out: Path, launcher: str, records: list[dict], replace_last: bool = False) -> None:
    """Append a submission to ``jobs.json`` (or replace the last one, as a local one grows)."""

    submissions = read_jobs(out)
    if replace_last and submissions:
        submissions.pop()
    submissions.append({"submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        "launcher": launcher, "jobs": list(records)})
    write_text_atomic(out / JOBS_NAME, json.dumps({"submissions": submissions}, indent=2) + "\n")


def _job_record(task: Task, job) -> dict:
    return {**task.key, "job_id": str(job.job_id), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
            "result": str(job.paths.result_pickle)}


def submit(tasks: Sequence[Task], out: str | Path, launcher: str, options: LaunchOptions | None = None,
           overwrite: bool = False, poll_s: float = 2.0) -> list[Task]:
    """Submit every task not finished yet (all of them with ``overwrite``); record ``jobs.json``.

    ``local`` runs the jobs here, ``options.array_parallelism`` at a time, and returns when
    they have ended; ``slurm`` submits one job array and returns at once. SLURM jobs of an
    earlier submission that are still queued or running are not submitted again.

    Args:
        tasks: the grid (see :func:`planar3d.runs.seeds.grid_tasks`).
        out: the run folder (``jobs/`` and ``jobs.json`` go there).
        launcher: ``"local"`` or ``"slurm"``.
        options: time limit, resources, parallelism.
        overwrite: the jobs discard their fold folders first.
        poll_s: seconds between checks of running local jobs.

    Returns:
        The tasks submitted.

    Raises:
        Planar3DError: unknown launcher, submitit missing, no SLURM here, bad options.
    """
    if launcher not in ("local", "slurm"):
        raise Planar3DError(f"launcher must be 'local' or 'slurm' to submit jobs. Received: launcher={launcher!r}")
    out = Path(out)
    options = options or LaunchOptions()
    executor = make_executor(launcher, out, options)
    pending = [task for task in tasks if overwrite or not task.finished]
    if launcher == "slurm" and not overwrite:
        latest = {}
        for submission in read_jobs(out):
            for job in submission.get("jobs", []):
                latest[(job.get("seed"), job.get("fold"), job.get("variant"))] = job["job_id"]
        recorded = [latest.get((t.seed, t.fold, t.variant)) for t in pending]
        active = _active_slurm_jobs(out, [job_id for job_id in recorded if job_id])
        for task, job_id in zip(pending, recorded):
            if job_id in active:
                print(f"{task.describe()}: job {job_id} is still queued or running; not submitted again")
        pending = [task for task, job_id in zip(pending, recorded) if job_id not in active]
    if not pending:
        print(f"nothing to submit: every run of {out} has finished or is queued")
        return []
    jobs = [TrainJob(task.config.to_dict(), task.fold, str(task.run_dir), overwrite) for task in pending]
    if launcher == "slurm":
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
        _record(out, launcher, [_job_record(task, job) for task, job in zip(pending, submitted)])
        for task, job in zip(pending, submitted):
            print(f"{task.describe()}: SLURM job {job.job_id}, log {job.paths.stdout}")
        return list(pending)
    _run_local(executor, pending, jobs, out, options.array_parallelism or 1, poll_s)
    return list(pending)


def _run_local(executor, pending: list[Task], jobs: list[TrainJob], out: Path, parallelism: int,
               poll_s: float) -> None:
    """Start local jobs ``parallelism`` at a time, recording each in ``jobs.json``; wait for all."""
    queue, running, records, recorded = list(zip(pending, jobs)), [], [], 0
    while queue or running:
        while queue and len(running) < parallelism:
            task, job = queue.pop(0)
            handle = executor.submit(job)
            records.append(_job_record(task, handle))
            print(f"{task.describe()}: local job {handle.job_id}, log {handle.paths.stdout}", flush=True)
            running.append((task, handle))
        if len(records) > recorded:
            _record(out, "local", records, replace_last=recorded > 0)
            recorded = len(records)
        time.sleep(poll_s)
        for task, handle in list(running):
            if handle.done():
                running.remove((task, handle))
                print(f"{task.describe()}: job {handle.job_id} {'finished' if task.finished else 'failed'}",
                      flush=True)
