"""Transfer vs random for the whole-volume classifier on the phantom (the seed's Table 2 question).

Variants, everything else equal (backbone, size, epochs, folds, seeds, data; early stopping off
so every variant trains the same number of epochs; each fold tests its best epoch by
validation loss): ``<mapping>_imagenet`` for every ``--mappings`` entry (the ImageNet backbone
mapped to 3D) and ``random`` (the same backbone with random weights, planar mapping). Target:
the phantom's lesion load above its centre's median (:func:`planar3d.labels.lesion_load_labels`),
or ``--labels`` with ``--data``. Each seed runs a whole cross-validation (every fold), so each
seed has one out-of-fold prediction per subject; its ROC AUC, balanced accuracy and accuracy
over all subjects are that seed's figures, reported as mean ± sd over seeds.

Every run is a :func:`planar3d.classify.run_classification_crossval` in
``OUT/<variant>/seed_<s>/`` (finished folds are reused, killed ones resume), so the script can
be stopped and restarted; it rewrites ``--doc`` after every finished (variant, seed).

    python benchmarks/classifier_transfer.py [--backbone vgg16] [--mappings planar,acs] [--seeds 0,1,2,3,4]
        [--size 32] [--epochs 4] [--out runs/classifier_transfer] [--doc docs/classifier_transfer.md]

The issue asks for ResNet50; offline, only VGG16's ImageNet weights exist here, so the default
is ``vgg16``; a connected machine runs ``--backbone resnet50`` (Keras downloads the weights).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("roc_auc", "balanced_accuracy", "accuracy")


def _variants(mappings: list[str]) -> dict[str, dict[str, object]]:
    variants = {f"{m}_imagenet": {"mapping": m, "encoder_weights": "imagenet"} for m in mappings}
    variants["random"] = {"mapping": "planar", "encoder_weights": "none"}
    return variants


def _write_doc(args, argv, results: dict, seconds: dict, folds: list[int], n_subjects: int) -> None:
    import numpy as np

    from planar3d.atomic import write_text_atomic

    lines = [
        "# Transfer vs random: the whole-volume classifier on the phantom",
        "",
        f"Backbone `{args.backbone}`, {args.size}³ volumes, {args.epochs} epochs (early stopping off), lr {args.lr}, "
        f"batch {args.batch_size}, encoder {'frozen' if args.freeze else 'trained'}, folds {folds} (every subject "
        f"tested once per seed), {n_subjects} subjects, data: {args.data or 'built-in phantom'}; target: "
        f"{args.labels or 'lesion load above the centre median (planar3d.labels.lesion_load_labels)'}.",
        "",
        "Per seed: ROC AUC / balanced accuracy / accuracy over that seed's out-of-fold predictions of all subjects; "
        "table: mean ± sd over seeds (sample sd, n = seeds). Chance: AUC 0.5, balanced accuracy 0.5.",
        "",
        "| variant | seeds | ROC AUC | balanced accuracy | accuracy | per-seed AUC | training time (s, all folds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, by_seed in results.items():
        if not by_seed:
            continue
        cells = []
        for key in KEYS:
            values = np.array([m[key] for m in by_seed.values()], dtype=float)
            sd = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.3f}{sd}")
        per_seed = ", ".join(f"{m['roc_auc']:.2f}" for _, m in sorted(by_seed.items()))
        time_cell = f"{np.mean(list(seconds[variant].values())):.0f}" if seconds[variant] else "reused"
        lines.append(f"| `{variant}` | {len(by_seed)} | " + " | ".join(cells) + f" | {per_seed} | {time_cell} |")
    lines += [
        "",
        f"Command: `python benchmarks/classifier_transfer.py {' '.join(argv)}`".rstrip() + "",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    write_text_atomic(Path(args.doc), "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vgg16", help="registry backbone (default vgg16; the issue's resnet50 needs a download)")
    parser.add_argument("--mappings", default="planar,acs", help="mappings of the ImageNet variants (default planar,acs)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds (default 0,1,2,3,4)")
    parser.add_argument("--size", type=int, default=32, help="volume edge (default 32)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fold (default 4)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=2, help="volumes per batch (default 2)")
    parser.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="freeze the encoder (default: frozen, only the head trains; --no-freeze fine-tunes)")
    parser.add_argument("--data", default=None, help="dataset (default: the built-in phantom, 5 subjects per centre)")
    parser.add_argument("--labels", default=None, help="subject,label table (default: the phantom's target)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "classifier_transfer"), help="run folder (default runs/classifier_transfer)")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "classifier_transfer.md"), help="Markdown output (default docs/classifier_transfer.md)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    from planar3d.classify import classification_records, prediction_metrics, run_classification_crossval
    from planar3d.config import make_config
    from planar3d.data import n_folds

    seeds = [int(s) for s in args.seeds.split(",")]
    variants = _variants([m for m in args.mappings.split(",") if m])
    common = dict(task="classification", backbone=args.backbone, size=args.size, epochs=args.epochs,
                  patience=args.epochs, lr=args.lr, lr_decay=0.0, batch_size=args.batch_size,
                  freeze_encoder=args.freeze, data=args.data, labels=args.labels)
    probe = make_config("demo", **common)
    records = classification_records(probe)
    folds = list(range(n_folds([r.patient_id for r in records])))
    print(machine())
    results = {variant: {} for variant in variants}
    seconds = {variant: {} for variant in variants}
    for seed in seeds:  # seeds outside: a stopped run has every variant at the same number of seeds
        for variant, overrides in variants.items():
            config = make_config("demo", **common, **overrides, seed=seed, folds=folds)
            out = Path(args.out) / variant / f"seed_{seed}"
            finished = all((out / f"fold_{k}" / "done.json").is_file() for k in folds)
            start = time.perf_counter()
            rows = run_classification_crossval(config, out, folds)
            if not finished:
                seconds[variant][seed] = time.perf_counter() - start
            results[variant][seed] = prediction_metrics(rows)
            print(f"seed {seed} {variant}: " + ", ".join(f"{k} {results[variant][seed][k]:.3f}" for k in KEYS), flush=True)
            _write_doc(args, argv, results, seconds, folds, len(records))
    baseline = seconds["random"]
    for variant in variants:
        common_seeds = sorted(set(seconds[variant]) & set(baseline))
        if common_seeds and variant != "random":
            ratio = sum(seconds[variant][s] for s in common_seeds) / sum(baseline[s] for s in common_seeds)
            print(f"time {variant} / random: {ratio:.2f}")
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
