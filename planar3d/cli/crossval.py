"""``planar3d-crossval`` / ``python -m planar3d.crossval``: parse, dispatch to
:func:`planar3d.runs.crossval.run_crossval` (or gather a grid), report, exit status.
"""

from __future__ import annotations

import sys
from pathlib import Path

from planar3d.cli.common import (
    NON_NEGATIVE_INT,
    add_config_flags,
    add_launcher_flags,
    add_run_flags,
    config_from_args,
    make_parser,
    run_cli,
)
from planar3d.errors import Planar3DError
from planar3d.runlock import run_lock
from planar3d.runs.crossval import run_crossval
from planar3d.runs.grid import gather, read_grid, task_states
from planar3d.runs.launch import check_launcher, launch_options
from planar3d.runs.seeds import grid_tasks

__all__ = []


def _report(out: Path, states) -> int:
    """Print the outputs' paths and the runs not finished; 0 when every run finished, else 1."""
    missing = [s for s in states if s.state != "finished"]
    seeds = any(s.task.seed is not None for s in states)
    runs = f"{out}/seed_<s>/fold_<k>/" if seeds else f"{out}/fold_<k>/"
    plots = f" and {out / 'boxplot_seeds.png'}" if seeds else ""
    print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}\nbox plot: {out / 'boxplot.png'}{plots}\n"
          f"report: {out / 'report.html'}\nper fold (model, masks, curves, overlays): {runs}")
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
    parser.add_argument("--folds", type=NON_NEGATIVE_INT, nargs="+", help="folds to run (default: the preset's; paper 0 1 2 3 4)")
    add_run_flags(parser)
    parser.add_argument("--parallel", action="store_true", help="one fold per visible GPU, in subprocesses")
    parser.add_argument("--gather", metavar="RUN_DIR", help="only build results.csv, summary.md and the box plots "
                        "of RUN_DIR from the runs finished so far, naming the missing and failed ones")
    add_launcher_flags(parser)
    add_config_flags(parser)
    args = parser.parse_args(argv)
    if args.gather:

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

    print((out / "summary.md").read_text(encoding="utf-8"))
    if config.task == "classification":
        print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}\nreport: {out / 'report.html'}\n"
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
