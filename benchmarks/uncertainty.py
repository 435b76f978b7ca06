"""Trust evidence (issue 28): one model vs an ensemble, calibration before and after temperature
scaling, and the uncertainty metrics, on the phantom and on three real MS patients.

Models: the demo preset's fold 4 on the built-in phantom, one per seed (``--seeds``, default
0-4), trained by ``python -m planar3d.crossval --preset demo --folds 4 --seeds ...`` into
``--runs`` (finished seeds are reused). Each fold fitted its temperature on its own validation
scans (``fold_4/calibration.json``).

Scans: the phantom's fold-4 test scans (held out from every model) and the three skull-stripped
Ljubljana patients with a consensus lesion mask (``../shared/realdata``, cross-sectional, MNI
variant: patient07, patient19, patient26); nothing here was tuned on either.

Conditions, each with ``--calibration none`` and ``temperature``:

* ``single``: each seed's model alone (n = seeds);
* ``ensemble of 3``: the seeds' rotations ``{s, s+1, s+2}`` (n = seeds; members overlap, so the
  draws are not independent);
* ``ensemble of N``: every seed (n = 1).

Per scan (:func:`planar3d.apps.predict.segment_scan`, native grid, the model's own threshold):
Dice, lesion-wise F1 (:func:`planar3d.evaluation.metrics.scan_metrics`); nDSC, ECE (10 equal-width
bins), Brier score, R-AUC of the entropy (lower is better) and lesion AUROC of the mean probability
under the MSSEG-2016 detection rule (:func:`planar3d.evaluation.calibration.calibration_metrics`);
for ensembles also R-AUC of the members' mutual information; predicted volume; the wall time of
``segment_scan``. A condition's figure is the mean over its scans, then mean ± sd over its draws.

Reduced precision (``--precision-seeds``, default 0): each of those models segments every
scan in float32, bfloat16 and float16 (where TensorFlow runs it on this machine); per scan the
lesion volume and count against float32's, and the Dice of the two masks. The 1 % volume bound
is the one ``--precision auto`` applies (:mod:`planar3d.inference.precision`).

Writes ``--doc`` (default ``docs/uncertainty.md``) and per-scan CSVs beside it; the hand-written
reading below :data:`READING` in an existing ``--doc`` is kept.

    python benchmarks/uncertainty.py [--seeds 0 1 2 3 4] [--runs runs/uncertainty] [--realdata ../shared/realdata]
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import machine, peak_rss_gb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FOLD = 4
METRICS = ("dice", "lesion_f1", "ndsc", "ece", "brier", "r_auc", "r_auc_mi", "lesion_auroc", "predicted_ml", "seconds")
CALIBRATIONS = ("none", "temperature")


def train(runs: Path, seeds: list[int]) -> float:
    """Train (or reuse) the demo preset's fold 4 for each seed; wall seconds (0 when all reused)."""
    if all((runs / f"seed_{s}" / f"fold_{FOLD}" / "done.json").is_file() for s in seeds):
        return 0.0
    command = [sys.executable, "-m", "planar3d.crossval", "--preset", "demo", "--folds", str(FOLD),
               "--seeds", *map(str, seeds), "--out", str(runs)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def conditions(seeds: list[int]) -> list[tuple[str, int, list[int]]]:
    """``(condition, draw, member seeds)`` of every model and ensemble."""
    rows = [("single", s, [s]) for s in seeds]
    if len(seeds) > 3:
        rows += [("ensemble of 3", i, [seeds[(i + k) % len(seeds)] for k in range(3)]) for i in range(len(seeds))]
    if len(seeds) > 1:
        rows.append((f"ensemble of {len(seeds)}", 0, list(seeds)))
    return rows


@functools.lru_cache(maxsize=None)
def test_records(runs: Path, seed: int, realdata: Path) -> dict[str, list]:
    """``{data set: records}``: the phantom fold's test scans and the Ljubljana MNI patients (worked
    out once per seed: :func:`measure` and :func:`measure_precision` share them)."""
    from planar3d.config import load_config
    from planar3d.data.splits import fold_split
    from planar3d.io.datasets import find_dataset
    from planar3d.io.sources import dataset_records

    config = load_config(runs / f"seed_{seed}" / f"fold_{FOLD}" / "config.json")
    records = dataset_records(config)
    test = set(fold_split(records, FOLD, config.split)[2])
    return {"phantom": [r for r in records if r.patient_id in test],
            "ljubljana": find_dataset(realdata / "ljubljana_ms" / "cross_sectional" / "MNI", require_masks=True)}


@functools.lru_cache(maxsize=None)
def load_model(file: Path):
    """The model of one ``best.keras``, loaded once (:func:`measure` and :func:`measure_precision` share it)."""
    from planar3d.apps.predict import load_members

    return load_members([file])  # one file: the model itself


def scan_row(result, record) -> dict:
    """The metrics of one segmented scan against its record's mask."""
    from planar3d.evaluation.calibration import calibration_metrics, retention_auc
    from planar3d.evaluation.metrics import scan_metrics
    from planar3d.io.nifti import load_mask

    truth = np.asarray(load_mask(record.mask, result.scan, record.mask_labels).dataobj) > 0
    spacing = result.scan.header.get_zooms()[:3]
    row = {k: v for k, v in scan_metrics(truth, result.mask, spacing).items() if k in ("dice", "lesion_f1")}
    calibration = calibration_metrics(truth, result.mask, result.probabilities, spacing=spacing)
    row.update({k: calibration[k] for k in ("ndsc", "ece", "brier", "r_auc", "lesion_auroc")})
    maps = result.uncertainty()
    row["r_auc_mi"] = (retention_auc(truth, result.mask, maps["mutual_information"])
                       if "mutual_information" in maps else math.nan)
    row["predicted_ml"] = float(result.mask.sum()) * float(np.prod(spacing)) / 1000
    return row


def measure(runs: Path, seeds: list[int], realdata: Path) -> list[dict]:
    from planar3d.apps.predict import inference_config, segment_scan

    files = {s: runs / f"seed_{s}" / f"fold_{FOLD}" / "best.keras" for s in seeds}
    models = {s: load_model(files[s]) for s in seeds}
    data = test_records(runs, seeds[0], realdata)
    rows = []
    for calibration in CALIBRATIONS:
        config = inference_config(files[seeds[0]], calibration=calibration)
        for condition, draw, members in conditions(seeds):
            for dataset, records in data.items():
                for record in records:
                    start = time.perf_counter()
                    result = segment_scan([models[s] for s in members], record.flair, config)
                    seconds = time.perf_counter() - start
                    rows.append({"dataset": dataset, "calibration": calibration, "condition": condition, "draw": draw,
                                 "members": " ".join(map(str, members)), "patient": record.patient_id,
                                 **scan_row(result, record), "seconds": seconds})
                    print(f"{dataset} {calibration} {condition} #{draw} {record.patient_id}: dice {rows[-1]['dice']:.3f} "
                          f"ece {rows[-1]['ece']:.4f} ({seconds:.1f} s)", flush=True)
    return rows


REDUCED = ("bfloat16", "float16")
#: Everything from this line on in ``--doc`` is written by hand and kept when the figures are regenerated.
READING = "<!-- reading (written by hand; kept by benchmarks/uncertainty.py) -->"


def measure_precision(runs: Path, seeds: list[int], realdata: Path) -> list[dict]:
    """Per seed and scan: float32 against each reduced format (volume, lesion count, Dice)."""
    from planar3d.apps.predict import inference_config, segment_scan
    from planar3d.evaluation.metrics import dice

    rows = []
    for seed in seeds:
        file = runs / f"seed_{seed}" / f"fold_{FOLD}" / "best.keras"
        model = load_model(file)
        for dataset, records in test_records(runs, seed, realdata).items():
            for record in records:
                results = {}
                for precision in ("float32", *REDUCED):
                    start = time.perf_counter()
                    try:
                        results[precision] = segment_scan([model], record.flair, inference_config(file, precision=precision))
                    except Exception as error:  # noqa: BLE001 - a format this TensorFlow cannot run here
                        results[precision] = f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"
                    seconds = time.perf_counter() - start
                    if precision == "float32":
                        reference = results["float32"]
                        continue
                    row = {"seed": seed, "dataset": dataset, "patient": record.patient_id, "precision": precision,
                           "seconds": seconds}
                    result = results[precision]
                    if isinstance(result, str):
                        rows.append({**row, "error": result})
                        continue
                    spacing = result.scan.header.get_zooms()[:3]
                    voxel_ml = float(np.prod(spacing)) / 1000
                    ml, ml_ref = result.mask.sum() * voxel_ml, reference.mask.sum() * voxel_ml
                    rows.append({**row, "dice_vs_float32": dice(reference.mask, result.mask), "ml": ml, "ml_float32": ml_ref,
                                 "volume_change_pct": 100 * (ml - ml_ref) / ml_ref if ml_ref else math.nan,
                                 "lesions": result.summary()["n_lesions"],
                                 "lesions_float32": reference.summary()["n_lesions"], "error": ""})
                    print(f"{dataset} seed {seed} {record.patient_id} {precision}: volume "
                          f"{rows[-1]['volume_change_pct']:+.2f} % ({seconds:.0f} s)", flush=True)
    return rows


def precision_lines(rows: list[dict]) -> list[str]:
    lines = ["## Reduced precision and lesion volume", "",
             "Each model of `--precision-seeds` on every scan above; the reduced format against float32 of the same "
             "model (mean ± sd over scans × seeds, n = those pairs).", "",
             "| data set | format | volume change % | abs volume change % | scans beyond 1 % | lesion count change "
             "| Dice vs float32 | seconds per scan |", "|---|---|---|---|---|---|---|---|"]
    for dataset in ("phantom", "ljubljana"):
        for precision in REDUCED:
            chosen = [r for r in rows if r["dataset"] == dataset and r["precision"] == precision]
            errors = sorted({r["error"] for r in chosen if r["error"]})
            if errors:
                lines.append(f"| {dataset} | {precision} | does not run here: {errors[0]} | | | | | |")
                continue
            if not chosen:
                continue
            change = [r["volume_change_pct"] for r in chosen]
            lines.append(f"| {dataset} | {precision} | {fmt(change, 2)} | {fmt([abs(c) for c in change], 2)} | "
                         f"{sum(abs(c) > 1 for c in change)} of {len(change)} | "
                         f"{fmt([r['lesions'] - r['lesions_float32'] for r in chosen], 1)} | "
                         f"{fmt([r['dice_vs_float32'] for r in chosen], 4)} | {fmt([r['seconds'] for r in chosen], 1)} |")
    return lines + [""]


def draw_means(rows: list[dict], dataset: str, calibration: str, condition: str, metric: str) -> list[float]:
    """The mean over scans of each draw of a condition (NaN scans left out)."""
    draws: dict[int, list[float]] = {}
    for row in rows:
        if (row["dataset"], row["calibration"], row["condition"]) == (dataset, calibration, condition):
            draws.setdefault(int(row["draw"]), []).append(float(row[metric]))
    return [float(np.nanmean(v)) for _, v in sorted(draws.items()) if not all(math.isnan(x) for x in v)]


def fmt(values: list[float], digits: int | str = 3) -> str:
    """``mean ± sd (n=...)`` (sample sd); ``digits`` decimals, or a format spec such as ``".2e"``."""
    spec = digits if isinstance(digits, str) else f".{digits}f"
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:{spec}} (n=1)"
    return f"{np.mean(values):{spec}} ± {np.std(values, ddof=1):{spec}} (n={len(values)})"


def paired_change(rows: list[dict], dataset: str, condition: str, metric: str) -> tuple[list[float], int]:
    """Per draw, temperature minus none of ``metric``; and how many draws it lowered."""
    before = draw_means(rows, dataset, "none", condition, metric)
    after = draw_means(rows, dataset, "temperature", condition, metric)
    changes = [a - b for a, b in zip(after, before)]
    return changes, sum(c < 0 for c in changes)


def report(rows: list[dict], precision_rows: list[dict], seeds: list[int], train_seconds: float, command: str,
           out: Path) -> None:
    names = [c for c, _, _ in conditions(seeds)]
    names = list(dict.fromkeys(names))
    digits = {"predicted_ml": 2, "seconds": 1, "ece": ".2e", "brier": ".2e"}
    shown = [m for m in METRICS]
    lines = ["# Trust: ensembles, uncertainty and calibration", "",
             f"Generated by `{command}` ({time.strftime('%Y-%m-%d')}; {machine()}).", "",
             __doc__.split("\n\n", 1)[1].split("\n\n    python")[0], "",
             f"Per-scan values: [{out.with_suffix('.csv').name}]({out.with_suffix('.csv').name}).", ""]
    for dataset, title in (("phantom", "Phantom, fold 4's test scans (simple mode)"),
                           ("ljubljana", "Real MS: Ljubljana patients 07, 19, 26 (MNI, skull-stripped)")):
        patients = sorted({r["patient"] for r in rows if r["dataset"] == dataset})
        lines += [f"## {title}", "", f"Scans: {', '.join(patients)}.", "",
                  "| condition | calibration | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
        for calibration in CALIBRATIONS:
            for name in names:
                cells = [fmt(draw_means(rows, dataset, calibration, name, m), digits.get(m, 3)) for m in shown]
                lines.append(f"| {name} | {calibration} | " + " | ".join(cells) + " |")
        lines += [""]
        for name in names:
            for metric in ("ece", "brier", "dice"):
                changes, lowered = paired_change(rows, dataset, name, metric)
                if changes:
                    lines.append(f"- {name}, temperature − none, {metric}: {fmt(changes, digits.get(metric, 3))}; "
                                 f"lower in {lowered} of {len(changes)} draws")
        single = {m: draw_means(rows, dataset, "none", "single", m) for m in ("dice", "lesion_f1", "ndsc", "ece", "r_auc")}
        for name in names[1:]:
            ensemble = {m: draw_means(rows, dataset, "none", name, m) for m in single}
            parts = [f"{m} {np.mean(ensemble[m]) - np.mean(single[m]):+.3f}" for m in single if ensemble[m] and single[m]]
            lines.append(f"- {name} − single (means, calibration none): " + ", ".join(parts))
        lines += [""]
    if precision_rows:
        lines += precision_lines(precision_rows)
    lines += ["## Cost", "",
              f"Training the {len(seeds)} demo models: {train_seconds / 60:.1f} min in this call (0 when reused). "
              f"`seconds` above is one scan's `segment_scan` (load, preprocess, predict, native grid); "
              f"peak memory of this process {peak_rss_gb():.1f} GB.", ""]
    kept = out.read_text().split(READING, 1) if out.is_file() else []
    if len(kept) == 2:  # the hand-written reading of the figures stays below the generated part
        lines += [READING + kept[1].rstrip("\n")]
    out.write_text("\n".join(lines) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if precision_rows:
        path = out.with_name(out.stem + "_precision.csv")
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in precision_rows for k in r)))
            writer.writeheader()
            writer.writerows(precision_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "uncertainty")
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    parser.add_argument("--precision-seeds", type=int, nargs="*", default=[0],
                        help="models measured in float32 vs bfloat16/float16 (default 0; none: skip). Where the CPU "
                             "has no native bfloat16, TensorFlow emulates it: ~10x float32's time")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "uncertainty.md")
    args = parser.parse_args()
    train_seconds = train(args.runs, args.seeds)
    rows = measure(args.runs, args.seeds, args.realdata)
    precision_rows = measure_precision(args.runs, args.precision_seeds, args.realdata)
    command = ("python benchmarks/uncertainty.py --seeds " + " ".join(map(str, args.seeds))
               + " --precision-seeds " + " ".join(map(str, args.precision_seeds)))
    report(rows, precision_rows, args.seeds, train_seconds, command, args.doc)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
