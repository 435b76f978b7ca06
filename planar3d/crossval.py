"""Five-fold cross-validation as in the paper: ``python -m planar3d.crossval``.

Runs the folds of ``--folds`` (default: the preset's) one after another, or one per GPU
with ``--parallel``; finished folds are reused, so an interrupted cross-validation goes
on where it stopped. Writes ``results.csv`` (one row per test scan), ``summary.md`` (the
paper's Table 2 layout with the paper's figures beside ours) and ``boxplot.png``.
``--seeds 0 1 2 3 4`` repeats the whole cross-validation per seed in ``seed_<s>/`` folders
and summarises over seeds (:mod:`planar3d.grid`).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from planar3d.atomic import check_destinations, write_text_atomic
from planar3d.cli import add_config_flags, add_run_flags, config_from_args, make_parser, run_cli
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
                 resume: bool | None = None, parallel_argv: Sequence[str] | None = None) -> list[dict]:
    """Train and evaluate every fold, then write results.csv, summary.md and boxplot.png.

    With ``config.seeds`` set, every seed's cross-validation runs in ``out/seed_<s>/`` and the
    outputs summarise over seeds (see :mod:`planar3d.grid`); the rows then carry ``seed``.
    ``folds`` defaults to ``config.folds``; with ``config.split == "centre"`` it defaults to
    one fold per centre of the data (the preset's folds are the paper's patient folds).
    The run folder and the cache are checked before any work, and the run folder is locked
    for the duration (the folds lock their own folders, so ``--parallel``'s fold processes
    do not collide with it).

    Raises:
        Planar3DError: as :func:`planar3d.train.train_fold`; the run folder is in use.
    """
    from planar3d.data import default_cache_dir
    from planar3d.runlock import run_lock

    out = Path(out)
    check_destinations(folders=[out, config.cache_dir or default_cache_dir()])
    with run_lock(out):
        return _run_seeds(config, out, folds, overwrite, resume, parallel_argv)


def _run_seeds(config: Config, out: Path, folds: Sequence[int] | None, overwrite: bool, resume: bool | None,
               parallel_argv: Sequence[str] | None) -> list[dict]:
    from planar3d.grid import seed_config, seed_dir, write_seed_outputs
    from planar3d.plots import plot_metric_boxplots
    from planar3d.train import write_rows

    if folds is None and config.split == "centre":  # one fold per centre
        from planar3d.train import dataset_records, n_split_folds

        folds = list(range(n_split_folds(dataset_records(config), "centre")))
        config = dataclasses.replace(config, folds=folds)
    folds = list(config.folds if folds is None else folds)
    if config.task == "classification":
        from planar3d.classify import run_classification_crossval

        return run_classification_crossval(config, out, folds, overwrite, resume, parallel_argv)
    if config.seeds is None:
        rows = _run_folds(config, folds, out, overwrite, resume, parallel_argv)
        write_rows(out / "results.csv", rows)
        write_text_atomic(out / "summary.md", summary_markdown(rows, config))
        plot_metric_boxplots(rows, metrics=("dice", "sensitivity"), by="centre", path=out / "boxplot.png",
                             title=f"planar3d {config.preset}: per-scan test metrics", paper=paper_table2())
        return rows
    rows = []
    for seed in config.seeds:
        argv = None if parallel_argv is None else [*parallel_argv, "--seed", str(seed)]
        seed_rows = _run_folds(seed_config(config, seed), folds, seed_dir(out, seed), overwrite, resume, argv)
        rows += [{"seed": seed, **row} for row in seed_rows]
    write_seed_outputs(rows, config, out)
    return rows


def _run_folds(config: Config, folds: Sequence[int], out: Path, overwrite: bool, resume: bool | None,
               parallel_argv: Sequence[str] | None) -> list[dict]:
    """The test rows of every fold of one seed, trained in process or one per GPU."""
    from planar3d.train import read_metrics, train_fold

    if parallel_argv is not None:
        _run_parallel(folds, out, parallel_argv)
        return [row for fold in folds for row in read_metrics(out / f"fold_{fold}" / "metrics.csv")]
    return [row for fold in folds for row in train_fold(config, fold, out, overwrite=overwrite, resume=resume)]


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Cross-validate the planar 3D res-u-net (paper: 5 folds, 3 test scans each), another "
                         "--backbone, or a whole-volume classifier (--task classification).",
                         "planar3d.crossval")
    parser.add_argument("--folds", type=int, nargs="+", help="folds to run (default: the preset's; paper 0 1 2 3 4)")
    add_run_flags(parser)
    parser.add_argument("--parallel", action="store_true", help="one fold per visible GPU, in subprocesses")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args, folds=args.folds)
    out = Path(args.out or f"runs/{config.preset}")
    passthrough = None
    if args.parallel:
        raw = list(sys.argv[1:] if argv is None else argv)
        passthrough = [a for a in raw if a != "--parallel"]
        passthrough = _without_option(passthrough, ("--folds", "--out", "--seeds"))
    rows = run_crossval(config, out, folds=args.folds, overwrite=args.overwrite, resume=args.resume, parallel_argv=passthrough)
    print((out / "summary.md").read_text(encoding="utf-8"))
    if config.task == "classification":
        print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}\n"
              f"per fold (model, predictions, curves): {out}/{'' if config.seeds is None else 'seed_<s>/'}fold_<k>/")
        return 0 if rows else 1
    runs = f"{out}/fold_<k>/" if config.seeds is None else f"{out}/seed_<s>/fold_<k>/"
    plots = "" if config.seeds is None else f" and {out / 'boxplot_seeds.png'}"
    print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}\nbox plot: {out / 'boxplot.png'}{plots}\n"
          f"per fold (model, masks, curves, overlays): {runs}")
    return 0 if rows else 1


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
