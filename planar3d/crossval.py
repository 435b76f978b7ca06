"""Five-fold cross-validation as in the paper: ``python -m planar3d.crossval``.

Runs the folds of ``--folds`` (default: the preset's) one after another, or one per GPU
with ``--parallel``; finished folds are reused, so an interrupted cross-validation goes
on where it stopped. Writes ``results.csv`` (one row per test scan), ``summary.md`` (the
paper's Table 2 layout with the paper's figures beside ours) and ``boxplot.png``.
``--seeds 0 1 2 3 4`` repeats the whole cross-validation per seed in ``seed_<s>/`` folders
and summarises over seeds (:mod:`planar3d.grid`). ``--launcher local|slurm`` sends one job
per (seed, fold) to submitit instead (:mod:`planar3d.launch`); ``--gather RUN_DIR`` builds
the outputs from the runs finished so far.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from planar3d.atomic import check_destinations
from planar3d.cli import add_config_flags, add_launcher_flags, add_run_flags, config_from_args, make_parser, run_cli
from planar3d.config import Config
from planar3d.errors import Planar3DError
from planar3d.plots import paper_table2

__all__ = ["PAPER_TABLE2", "main", "run_crossval", "summary_markdown"]

#: Kolarik et al. 2020, Table 2: mean ± std per centre and ``"overall"``
#: (the same figures as :func:`planar3d.plots.paper_table2`, which names the overall group "all").
PAPER_TABLE2 = {
    metric: {("overall" if centre == "all" else centre): value for centre, value in table.items()}
    for metric, table in paper_table2().items()
}


def summary_markdown(rows: Sequence[dict], config: Config) -> str:
    """The paper's Table 2 layout: mean ± std of Dice and sensitivity per centre and overall."""
    from planar3d.metrics import summarise

    summary = summarise(rows, by="centre", keys=("dice", "sensitivity"))
    groups = list(summary)
    data_name = "built-in phantom (NOT MSSEG-2016)" if config.data is None else config.data
    lines = [
        f"# Cross-validation results ({config.preset} preset)",
        "",
        f"Data: {data_name}; {len(rows)} test scans; metrics in "
        f"{'native' if config.eval_space == 'native' else 'resampled'} space; threshold "
        f"{config.threshold:g} ({config.threshold_rule}); std over scans (population).",
        "",
        *_split_lines(rows, config),
        "| metric | " + " | ".join(f"centre {g}" if g != "overall" else "overall" for g in groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for key in ("dice", "sensitivity"):
        ours = [f"{summary[g][key]['mean']:.2f} ± {summary[g][key]['std']:.2f} (n={summary[g][key]['n']})" for g in groups]
        lines.append(f"| {key} (planar3d) | " + " | ".join(ours) + " |")
        paper = [
            "%.2f ± %.2f" % PAPER_TABLE2[key][g] if g in PAPER_TABLE2[key] else "—" for g in groups
        ]
        lines.append(f"| {key} (paper, MSSEG-2016) | " + " | ".join(paper) + " |")
    lines += ["", "Per-scan values: `results.csv`; box plot: `boxplot.png`.", ""]
    return "\n".join(lines)


def _split_lines(rows: Sequence[dict], config: Config) -> list[str]:
    if config.split != "centre":
        return ["Split: the paper's (fold k tests the k-th patient of every centre).", ""]
    tested = sorted({(int(row["fold"]), str(row["centre"])) for row in rows})
    folds = ", ".join(f"fold {fold} tests centre {centre}" for fold, centre in tested)
    return [f"Split: leave-one-centre-out ({folds}; each trains on the other centres and validates on the "
            "last patient of each of them), so each centre column is a model that never saw that centre.", ""]


def _visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def _run_parallel(folds: Sequence[int], out: Path, argv: Sequence[str], poll_seconds: float = 1.0) -> None:
    """One training subprocess per GPU (``CUDA_VISIBLE_DEVICES``), folds queued over them.

    The parent sleeps ``poll_seconds`` between checks of its children (no busy loop).
    """
    gpus = _visible_gpus()
    if gpus < 2:
        raise Planar3DError(f"--parallel needs several GPUs. Received: {gpus} visible")
    pending = list(folds)
    running: dict[int, tuple[int, subprocess.Popen]] = {}
    failed = []
    while pending or running:
        # start a fold on every idle GPU
        for gpu in range(gpus):
            if gpu not in running and pending:
                fold = pending.pop(0)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
                command = [sys.executable, "-m", "planar3d.train", "--fold", str(fold), "--out", str(out), *argv]
                running[gpu] = (fold, subprocess.Popen(command, env=env))
        # wait, then collect the finished ones
        time.sleep(poll_seconds)
        for gpu, (fold, process) in list(running.items()):
            if process.poll() is not None:
                if process.returncode:
                    failed.append(fold)
                del running[gpu]
    if failed:
        raise Planar3DError(f"training failed for folds {sorted(failed)}; see their output above")


def run_crossval(config: Config, out: str | Path, folds: Sequence[int] | None = None, overwrite: bool = False,
                 resume: bool | None = None, parallel_argv: Sequence[str] | None = None, launcher: str = "none",
                 launch_options=None) -> list[dict]:
    """Train and evaluate every fold (of every seed), then write results.csv, summary.md, box plots.

    Args:
        config: the run's settings; with ``config.seeds`` every seed's cross-validation runs in
            ``out/seed_<s>/`` and the outputs summarise over seeds (see :mod:`planar3d.grid`).
        out: the run folder.
        folds: the folds (default ``config.folds``; with ``config.split == "centre"`` one fold
            per centre of the data, the preset's folds being the paper's patient folds).
        overwrite, resume: as :func:`planar3d.train.train_fold`.
        parallel_argv: with ``launcher="none"``, train one fold per GPU in subprocesses given
            these command-line arguments.
        launcher: ``"none"`` (here), ``"local"`` or ``"slurm"`` (:mod:`planar3d.launch`).
        launch_options: a :class:`planar3d.launch.LaunchOptions`.

    Returns:
        The test rows of the finished runs (``[]`` after a SLURM submission: gather later).

    The run folder and the cache are checked before any work, and the run folder is locked
    for the duration (the folds lock their own folders, so ``--parallel``'s fold processes
    and the launcher's jobs do not collide with it).

    Raises:
        Planar3DError: bad input, a run folder from another configuration or in use, a failed fold.
    """
    from planar3d.data import default_cache_dir
    from planar3d.runlock import run_lock

    out = Path(out)
    check_destinations(folders=[out, config.cache_dir or default_cache_dir()])
    with run_lock(out):
        return _run_grid(config, out, folds, overwrite, resume, parallel_argv, launcher, launch_options)


def _run_grid(config: Config, out: Path, folds: Sequence[int] | None, overwrite: bool, resume: bool | None,
              parallel_argv: Sequence[str] | None, launcher: str, launch_options) -> list[dict]:
    """:func:`run_crossval` inside the run folder's lock."""
    from planar3d.grid import GRID_NAME, gather, grid_tasks, seed_dir, write_grid
    from planar3d.train import train_fold

    if folds is None and config.split == "centre":  # one fold per centre
        from planar3d.train import dataset_records, n_split_folds

        folds = list(range(n_split_folds(dataset_records(config), "centre")))
        config = dataclasses.replace(config, folds=folds)
    folds = list(config.folds if folds is None else folds)
    if config.task == "classification":
        if launcher != "none":
            raise Planar3DError(f"--launcher {launcher} runs segmentation grids; --task classification runs here only")
        from planar3d.classify import run_classification_crossval

        return run_classification_crossval(config, out, folds, overwrite, resume, parallel_argv)
    if (out / GRID_NAME).is_file() and not overwrite:
        write_grid(out, config, folds)  # refuses another configuration before any work
    tasks = grid_tasks(config, folds, out)
    if launcher == "none":
        if parallel_argv is None:
            for task in tasks:
                train_fold(task.config, task.fold, task.run_dir, overwrite=overwrite, resume=resume)
        elif config.seeds is None:
            _run_parallel(folds, out, parallel_argv)
        else:
            for seed in config.seeds:
                _run_parallel(folds, seed_dir(out, seed), [*parallel_argv, "--seed", str(seed)])
        write_grid(out, config, folds, overwrite)
        rows, _ = gather(out)
        return rows
    from planar3d.launch import submit

    write_grid(out, config, folds, overwrite)
    submit(tasks, out, launcher, launch_options, overwrite=overwrite)
    if launcher == "slurm":
        return []
    rows, _ = gather(out)
    return rows


def _report(out: Path, states) -> int:
    """Print the outputs' paths and the runs not finished; 0 when every run finished, else 1."""
    missing = [s for s in states if s.state != "finished"]
    seeds = any(s.task.seed is not None for s in states)
    runs = f"{out}/seed_<s>/fold_<k>/" if seeds else f"{out}/fold_<k>/"
    plots = f" and {out / 'boxplot_seeds.png'}" if seeds else ""
    print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}\nbox plot: {out / 'boxplot.png'}{plots}\n"
          f"per fold (model, masks, curves, overlays): {runs}")
    for state in missing:
        logs = f"; logs: {', '.join(state.logs)}" if state.logs else ""
        print(f"not finished: {state.task.describe()}: {state.state} ({state.detail}){logs}", file=sys.stderr)
    if missing:
        print(f"{len(missing)} of {len(states)} runs not finished: run the same command again to submit them",
              file=sys.stderr)
    return 1 if missing else 0


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Cross-validate the planar 3D res-u-net (paper: 5 folds, 3 test scans each), another "
                         "--backbone, or a whole-volume classifier (--task classification).",
                         "planar3d.crossval")
    parser.add_argument("--folds", type=int, nargs="+", help="folds to run (default: the preset's; paper 0 1 2 3 4)")
    add_run_flags(parser)
    parser.add_argument("--parallel", action="store_true", help="one fold per visible GPU, in subprocesses")
    parser.add_argument("--gather", metavar="RUN_DIR", help="only build results.csv, summary.md and the box plots "
                        "of RUN_DIR from the runs finished so far, naming the missing and failed ones")
    add_launcher_flags(parser)
    add_config_flags(parser)
    args = parser.parse_args(argv)
    if args.gather:
        from planar3d.grid import gather, read_grid
        from planar3d.runlock import run_lock

        out = Path(args.gather)
        read_grid(out)  # not a grid run folder: refused before the lock creates anything
        with run_lock(out):
            _, states = gather(out)
        print((out / "summary.md").read_text(encoding="utf-8"))
        return _report(out, states)
    config = config_from_args(args, folds=args.folds)
    out = Path(args.out or f"runs/{config.preset}")
    if args.parallel and args.launcher != "none":
        raise Planar3DError(f"--parallel runs folds here; it does not combine with --launcher {args.launcher}")
    options = None
    if args.launcher != "none":
        from planar3d.launch import check_launcher, launch_options

        check_launcher(args.launcher)
        options = launch_options(args)
    passthrough = None
    if args.parallel:
        raw = list(sys.argv[1:] if argv is None else argv)
        passthrough = [a for a in raw if a != "--parallel"]
        passthrough = _without_option(passthrough, ("--folds", "--out", "--seeds"))
    rows = run_crossval(config, out, folds=args.folds, overwrite=args.overwrite, resume=args.resume,
                        parallel_argv=passthrough, launcher=args.launcher, launch_options=options)
    if args.launcher == "slurm":
        print(f"submitted; job ids in {out / 'jobs.json'}, logs in {out / 'jobs'}/<job id>_0_log.out. When the jobs "
              f"have run: python -m planar3d.crossval --gather {out}")
        return 0
    from planar3d.grid import grid_tasks, read_grid, task_states

    print((out / "summary.md").read_text(encoding="utf-8"))
    if config.task == "classification":
        print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}\n"
              f"per fold (model, predictions, curves): {out}/{'' if config.seeds is None else 'seed_<s>/'}fold_<k>/")
        return 0 if rows else 1
    grid_config, folds = read_grid(out)
    return _report(out, task_states(grid_tasks(grid_config, folds, out), out))


def _without_option(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """Drop options (and their values) that the parent sets itself."""
    kept, skipping = [], False
    for item in argv:
        if item in names:
            skipping = True
            continue
        if skipping and not item.startswith("--"):
            continue
        skipping = False
        kept.append(item)
    return kept


if __name__ == "__main__":
    sys.exit(main())
