"""Does the ImageNet encoder matter? Four encoders, same budget, on the phantom (or --data).

Variants (everything else equal: preset, epochs, data, fold, seed; early stopping off so
every variant gets the same number of epochs; the best epoch by validation loss is tested):
- ``planar_imagenet_frozen``: the paper (planar mapping, ImageNet VGG16, frozen);
- ``planar_random_frozen``: planar, random VGG16 kernels, frozen (is it the weights or
  only the architecture?);
- ``planar_random_trainable``: planar, random kernels, encoder trained;
- ``acs_imagenet_frozen``: ACS mapping of the ImageNet kernels, frozen.
Every run is a :func:`planar3d.training.segment.train_fold` in ``OUT/seed_<s>/<variant>/`` (finished
runs are reused, killed ones resume). Writes ``docs/transfer_vs_random.md`` (mean ± sd over
seeds per variant; the paired difference of the ImageNet planar encoder to each other variant
with a 95 % bootstrap interval over seeds and scans and Wilcoxon signed-rank tests, see
:mod:`planar3d.evaluation.stats`; validation Dice per epoch and test Dice per scan),
``docs/transfer_vs_random.csv`` (per-scan values) and ``docs/transfer_vs_random.png``
(validation Dice curves).

    python benchmarks/transfer_vs_random.py [--preset demo] [--epochs N] [--seeds 0,1,2,3,4] [--fold 4]
        [--launcher none|local|slurm --slurm-partition P --slurm-time 6:00:00 ...]

With ``--launcher local|slurm`` each (seed, variant) run is a submitit job (see
:mod:`planar3d.runs.launch`; logs in ``OUT/jobs/``, ids in ``OUT/jobs.json``); the outputs are written
from the runs finished so far, and running the same command again submits only the others.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import machine  # noqa: E402

#: variant -> Config overrides.
VARIANTS: dict[str, dict[str, object]] = {
    "planar_imagenet_frozen": {"mapping": "planar", "encoder_weights": "imagenet", "freeze_encoder": True},
    "planar_random_frozen": {"mapping": "planar", "encoder_weights": "none", "freeze_encoder": True},
    "planar_random_trainable": {"mapping": "planar", "encoder_weights": "none", "freeze_encoder": False},
    "acs_imagenet_frozen": {"mapping": "acs", "encoder_weights": "imagenet", "freeze_encoder": True},
}
ROOT = Path(__file__).resolve().parents[1]


def _val_dice(log_path: Path) -> list[float]:
    with log_path.open(newline="") as handle:
        return [float(row["val_dice_coef"]) for row in csv.DictReader(handle)]


def _plot_curves(curves: dict[str, dict[int, list[float]]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from planar3d.evaluation.report_figures import save_figure

    figure = Figure(figsize=(7, 4.6))
    axes = figure.subplots(1, 1)
    colours = dict(zip(VARIANTS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for variant, by_seed in curves.items():
        for index, (seed, values) in enumerate(sorted(by_seed.items())):
            axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3, color=colours[variant],
                      alpha=0.9 if index == 0 else 0.5, label=variant if index == 0 else None)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("validation Dice (dice_coef, batch-wise)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)


def _write_outputs(args: argparse.Namespace, argv: list[str] | None, curves: dict, test: dict, epochs: int) -> None:
    """Write the Markdown report, the per-scan CSV and the curve PNG from the runs finished so far."""
    from planar3d.atomic import write_text_atomic
    from planar3d.evaluation.stats import mean_sd, paired_difference, paired_matrix
    from planar3d.atomic import write_rows

    variants = [v for v in curves if curves[v]]
    seeds = sorted({seed for v in variants for seed in curves[v]})
    command = "python benchmarks/transfer_vs_random.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Transfer vs random encoders at the same budget",
        "",
        f"Preset `{args.preset}`, {epochs} epochs, fold {args.fold}, seeds {seeds}, data: "
        f"{args.data or f'built-in phantom ({args.phantom_mode} mode)'}; early stopping off; the test uses the best epoch by "
        "validation loss. Test Dice per held-out scan at the preset's threshold. Per-scan values: "
        f"`{args.name}.csv`.",
        "",
        f"Command: `{command.strip()}`",
        "",
        "| variant | test Dice, mean ± sd over seeds | n seeds | per-seed means |",
        "|---|---:|---:|---|",
    ]
    csv_rows = []
    for variant in variants:
        means = [statistics.mean(r["dice"] for r in test[variant][s]) for s in sorted(test[variant])]
        mean, sd, n = mean_sd(means)
        spread = f"{mean:.3f} ± {sd:.3f}" if n > 1 else f"{mean:.3f} (one seed)"
        lines.append(f"| {variant} | {spread} | {n} | {', '.join(f'{m:.3f}' for m in means)} |")
        for seed in sorted(test[variant]):
            csv_rows += [{"variant": variant, "seed": seed, "patient": r["patient"], "centre": r["centre"],
                          "dice": r["dice"], "sensitivity": r["sensitivity"]} for r in test[variant][seed]]
    reference = "planar_imagenet_frozen"
    comparisons = []
    if reference in variants:
        for variant in variants:
            if variant == reference:
                continue
            shared = sorted(set(test[reference]) & set(test[variant]))
            if len(shared) < 2:
                continue
            table = {v: {(s, r["patient"]): r["dice"] for s in shared for r in test[v][s]} for v in (reference, variant)}
            a, b, _, scans = paired_matrix(table[reference], table[variant])
            comparisons.append((variant, paired_difference(a, b), len(shared), len(scans)))
    if comparisons:
        lines += ["", f"Paired differences, {reference} minus each variant (same seeds, same test scans):", "",
                  "| variant | difference in test Dice | 95 % bootstrap interval (seeds and scans) | "
                  f"{reference} better in | Wilcoxon p, per-seed means | Wilcoxon p, all pairs |",
                  "|---|---:|---|---:|---:|---:|"]
        for variant, c, n_seeds, n_scans in comparisons:
            lines.append(f"| {variant} | {c['difference']:+.3f} | [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | "
                         f"{round(c['wins'] * n_seeds * n_scans)} of {n_seeds * n_scans} pairs | {c['p_seeds']:.3g} | "
                         f"{c['p_pairs']:.3g} |")
        lines += ["", "The interval resamples seeds and test scans (two-way bootstrap, `planar3d.evaluation.stats`). With "
                  f"{len(seeds)} seeds the per-seed Wilcoxon test cannot go below p = {2 / 2 ** len(seeds):.3g}; the "
                  "all-pairs test treats pairs that share scans and seeds as independent and is descriptive only. "
                  "The interval covers the variation over seeds and over these test scans of one fold, not over "
                  "other data sets: a phantom result, not an MSSEG-2016 one."]
    lines += ["", "| variant | seed | validation Dice per epoch | test Dice per scan | mean test Dice |",
              "|---|---:|---|---|---:|"]
    for variant in variants:
        for seed in sorted(test[variant]):
            rows = test[variant][seed]
            val = ", ".join(f"{d:.3f}" for d in curves[variant][seed])
            per_scan = ", ".join(f"{row['patient']} {row['dice']:.3f}" for row in rows)
            lines.append(f"| {variant} | {seed} | {val} | {per_scan} | {statistics.mean(r['dice'] for r in rows):.3f} |")
    lines += ["", f"![validation Dice per epoch]({args.name}.png)", "", f"Machine: {machine()}", ""]
    markdown = write_text_atomic(args.docs / f"{args.name}.md", "\n".join(lines))
    write_rows(args.docs / f"{args.name}.csv", csv_rows)
    figure = args.docs / f"{args.name}.png"
    _plot_curves(curves, figure, f"validation Dice, preset {args.preset}, fold {args.fold}")
    print(f"wrote {markdown}, {args.docs / f'{args.name}.csv'} and {figure}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="configuration preset (default demo)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the preset's)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    parser.add_argument("--fold", type=int, default=4, help="cross-validation fold (default 4, the demo's)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated (default all: {','.join(VARIANTS)})")
    parser.add_argument("--data", default=None, help="dataset folder (default: the built-in phantom)")
    parser.add_argument("--phantom-mode", choices=("simple", "realistic"), default=None,
                        help="built-in phantom's mode (default: the preset's)")
    parser.add_argument("--empty-window-weight", type=float, default=None,
                        help="1 trains on every window, 0 only on windows with lesions (default: the preset's)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer_vs_random",
                        help="run folder (default runs/transfer_vs_random)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="folder for the .md and .png (default docs/)")
    parser.add_argument("--name", default="transfer_vs_random",
                        help="file stem of the .md, .csv and .png in --docs (default transfer_vs_random)")
    from planar3d.cli.common import add_launcher_flags

    add_launcher_flags(parser)  # --launcher local|slurm: one job per (seed, variant), see planar3d.runs.launch
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if any(v not in VARIANTS for v in variants):
        parser.error(f"--variants must be among {list(VARIANTS)}. Received: --variants={args.variants}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    from planar3d.config import make_config
    from planar3d.runs.seeds import Task
    from planar3d.training.segment import train_fold

    tasks = []
    for seed in seeds:
        for variant in variants:
            config = make_config(args.preset, seed=seed, epochs=args.epochs, data=args.data,
                                 phantom_mode=args.phantom_mode, empty_window_weight=args.empty_window_weight, **VARIANTS[variant])
            config.patience = config.epochs  # same budget for every variant: no early stopping
            config.folds = [args.fold]
            tasks.append(Task(seed, args.fold, config, args.out / f"seed_{seed}" / variant, variant))
    epochs = tasks[0].config.epochs
    args.phantom_mode = tasks[0].config.phantom_mode  # the preset's when not given, for the report
    curves: dict[str, dict[int, list[float]]] = {v: {} for v in variants}
    test: dict[str, dict[int, list[dict]]] = {v: {} for v in variants}
    if args.launcher != "none":
        _launch(args, argv, tasks, curves, test, epochs)
        return
    start = time.perf_counter()
    for task in tasks:
        seed, variant, run_dir = task.seed, task.variant, task.run_dir
        print(f"seed {seed} {variant}: training {epochs} epochs in {run_dir}", flush=True)
        rows = train_fold(task.config, args.fold, run_dir, verbose=2)
        curves[variant][seed] = _val_dice(task.fold_dir / "log.csv")
        test[variant][seed] = rows
        print(f"seed {seed} {variant}: val Dice {[round(d, 3) for d in curves[variant][seed]]}, "
              f"test Dice {[round(r['dice'], 3) for r in rows]} "
              f"[{time.perf_counter() - start:.0f} s so far]", flush=True)
        _write_outputs(args, argv, curves, test, epochs)


def _launch(args: argparse.Namespace, argv: list[str] | None, tasks: list, curves: dict, test: dict,
            epochs: int) -> None:
    """One submitit job per (seed, variant) not finished yet (``--launcher local|slurm``), then the
    outputs from the runs finished so far; running the same command again submits the rest."""
    from planar3d.errors import Planar3DError
    from planar3d.runs.grid import task_states
    from planar3d.runs.launch import check_launcher, launch_options, submit
    from planar3d.training.run_folder import read_metrics

    try:
        check_launcher(args.launcher)
        submit(tasks, args.out, args.launcher, launch_options(args))
    except Planar3DError as error:
        sys.exit(f"error: {error}")
    states = task_states(tasks, args.out)
    for state in states:
        task = state.task
        if state.state == "finished":
            curves[task.variant][task.seed] = _val_dice(task.fold_dir / "log.csv")
            test[task.variant][task.seed] = read_metrics(task.fold_dir / "metrics.csv")
        else:
            print(f"not finished: {task.describe()}: {state.state} ({state.detail}) {' '.join(state.logs)}", flush=True)
    if any(state.state == "finished" for state in states):
        _write_outputs(args, argv, curves, test, epochs)


if __name__ == "__main__":
    main()
