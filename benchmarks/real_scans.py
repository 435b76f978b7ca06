"""What planar3d does on real scans: ../shared/realdata (Ljubljana MS, BRATS 2013), four sections.

1. ``phantom``: models trained only on the built-in phantom (``simple`` and ``realistic``, demo
   preset, fold 4, one per seed) segment the three skull-stripped Ljubljana patients (MNI
   variant): Dice, lesion-wise F1, lesion volume error per patient and seed.
2. ``ljubljana``: leave-one-patient-out on the same three patients: ImageNet planar frozen vs
   random planar trained vs ImageNet ACS frozen (``--ms-preset`` settings).
3. ``brats``: BRATS 2013 whole tumour, leave-one-case-out folds (``--brats-folds``): the paper's
   network with ImageNet planar and ACS kernels vs a random trained encoder from the FLAIR, and
   ImageNet planar from FLAIR + T1c (``--brats-variants``; soft ACS with ``--backbone vgg16``).
4. ``raw``: the phantom models of section 1 on the raw longitudinal scanner FLAIRs (skull, 2D
   oblique, uint16): lesions and volume per visit; for patients with two visits, the agreement
   of the two visits' masks on the common grid outside the raters' new-lesion mask, and how many
   of the raters' new lesions the second visit's mask touches.

Every training is ``python -m planar3d.crossval ... --seeds S`` into ``OUT/<section>/<variant>/``
(finished seeds are reused, so the command can be re-run or continued). Writes
``docs/real_scans.md`` (mean ± sd over seeds with n, paired bootstrap intervals between
variants, times) and one per-patient CSV per section (``docs/real_scans_<section>.csv``); QC
pictures of seed 0 on raw scans go to ``docs/real_scans/``.

    python benchmarks/real_scans.py [--sections phantom raw brats ljubljana] [--seeds 0 1 2 3 4]
        [--out runs/real_scans] [--realdata ../shared/realdata]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("phantom", "ljubljana", "brats", "raw")
#: phantom mode -> crossval flags (demo preset, fold 4: the README's main job)
PHANTOM_RUNS = {"simple": ["--preset", "demo"], "realistic": ["--preset", "demo", "--phantom-mode", "realistic"]}
#: leave-one-patient-out on the Ljubljana patients: variant -> crossval flags
LJUBLJANA_VARIANTS = {
    "planar_imagenet_frozen": ["--mapping", "planar"],
    "planar_random_trained": ["--mapping", "planar", "--encoder-weights", "none", "--no-freeze-encoder"],
    "acs_imagenet_frozen": ["--mapping", "acs"],
}
#: BRATS: variant -> crossval flags, on top of --brats-preset (soft ACS needs a registry backbone:
#: ``--brats-preset ... --backbone vgg16 --window 32 --stride 16 --brats-variants ... soft_acs_imagenet``)
BRATS_VARIANTS = {
    "planar_imagenet": ["--mapping", "planar"],
    "acs_imagenet": ["--mapping", "acs"],
    "soft_acs_imagenet": ["--mapping", "soft_acs"],
    "planar_random": ["--mapping", "planar", "--encoder-weights", "none", "--no-freeze-encoder"],
    "planar_imagenet_flair_t1c": ["--mapping", "planar", "--channels", "flair", "t1c"],
}


def finished_seeds(out: Path, seeds: list[int], folds: list[int]) -> list[int]:
    """The seeds of a crossval grid whose every fold of ``folds`` has finished."""
    return [seed for seed in seeds if all((out / f"seed_{seed}" / f"fold_{fold}" / "done.json").is_file() for fold in folds)]


def crossval(out: Path, flags: list[str], seeds: list[int], folds: list[int], log: Path, train: bool = True) -> float:
    """Run (or continue) one crossval grid; return its wall time in seconds (0 when all was reused or
    ``train`` is False)."""
    if not train or finished_seeds(out, seeds, folds) == list(seeds):
        return 0.0
    command = [sys.executable, "-m", "planar3d.crossval", *flags, "--folds", *map(str, folds), "--seeds", *map(str, seeds), "--out", str(out)]
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - start


def fold_rows(out: Path, seeds: list[int]) -> list[dict]:
    """The per-patient test rows (metrics.csv) of every seed and fold of a crossval grid."""
    rows = []
    for seed in seeds:
        for metrics in sorted((out / f"seed_{seed}").glob("fold_*/metrics.csv")):
            # the fold's wall time: from its config (written first) to its done.json (written last)
            minutes = ((metrics.parent / "done.json").stat().st_mtime - (metrics.parent / "config.json").stat().st_mtime) / 60
            for row in csv.DictReader(metrics.open()):
                rows.append({"seed": seed, **row, "fold_minutes": round(minutes, 2)})
    return rows


def segment_patients(model_path: Path | list[Path], records, reference: bool = True) -> list[dict]:
    """Segment each record's FLAIR with one model (or an ensemble: a list); metrics against its mask
    when ``reference``."""
    from planar3d.apps.predict import inference_config, load_members, segment_scan
    from planar3d.evaluation.lesions import label_lesions
    from planar3d.evaluation.metrics import scan_metrics
    from planar3d.io.nifti import load_mask

    paths = model_path if isinstance(model_path, list) else [model_path]
    model = load_members(paths)
    config = inference_config(paths[0])
    rows = []
    for record in records:
        result = segment_scan(model, record.flair, config)
        spacing = result.scan.header.get_zooms()[:3]
        voxel_ml = float(np.prod(spacing)) / 1000
        row = {"patient": record.patient_id, "predicted_ml": result.mask.sum() * voxel_ml,
               "predicted_lesions": label_lesions(result.mask)[1]}
        if reference:
            truth = np.asarray(load_mask(record.mask, result.scan, record.mask_labels).dataobj) > 0
            row.update(scan_metrics(truth, result.mask, spacing))
            row["reference_ml"] = truth.sum() * voxel_ml
            row["volume_error_ml"] = row["predicted_ml"] - row["reference_ml"]
        rows.append({**row, "_result": result})
    return rows


# ----------------------------------------------------------------------------- sections

def section_phantom(args, times: dict) -> list[dict]:
    from planar3d.io.datasets import find_dataset

    records = find_dataset(args.realdata / "ljubljana_ms" / "cross_sectional" / "MNI", require_masks=True)
    rows = []
    for mode in args.phantom_modes:
        flags = PHANTOM_RUNS[mode]
        out = args.out / "phantom" / mode
        times[f"phantom {mode}: training"] = crossval(out, flags, args.seeds, [4], args.out / "phantom.log")
        start = time.perf_counter()
        models = [out / f"seed_{seed}" / "fold_4" / "best.keras" for seed in args.seeds]
        for seed, model in zip(args.seeds, models):
            for row in segment_patients(model, records):
                row.pop("_result")
                rows.append({"mode": mode, "seed": seed, **row})
        if len(models) > 1:  # the seeds' models as one ensemble (planar3d.inference.ensemble)
            for row in segment_patients(models, records):
                row.pop("_result")
                rows.append({"mode": f"{mode} (ensemble of {len(models)} seeds)", "seed": -1, **row})
        times[f"phantom {mode}: segmenting {len(records)} patients x {len(args.seeds)} seeds"] = time.perf_counter() - start
    return rows


def section_raw(args, times: dict) -> list[dict]:
    import nibabel as nib

    from planar3d.evaluation.lesions import label_lesions
    from planar3d.io.datasets import find_dataset
    from planar3d.io.ljubljana import longitudinal_patient, read_itk_affine, to_common_grid

    root = args.realdata / "ljubljana_ms" / "longitudinal" / "raw"
    records = find_dataset(root)
    pictures = ROOT / "docs" / "real_scans"
    rows = []
    start = time.perf_counter()
    for mode in args.phantom_modes:
        for seed in args.seeds:
            model = args.out / "phantom" / mode / f"seed_{seed}" / "fold_4" / "best.keras"
            if not model.is_file():
                continue
            results = {}
            for row in segment_patients(model, records, reference=False):
                result = row.pop("_result")
                results[row["patient"]] = result
                if seed == args.seeds[0] and row["patient"] in args.qc_scans:
                    pictures.mkdir(parents=True, exist_ok=True)
                    result.qc_picture(pictures / f"{mode}_{row['patient']}.png",
                                      f"phantom {mode} seed {seed} on Ljubljana longitudinal {row['patient']} (raw FLAIR)",
                                      overwrite=True)
                rows.append({"mode": mode, "seed": seed, **row})
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                patient = longitudinal_patient(folder)
                if sorted(patient.visits) != [1, 2] or patient.change_mask is None:
                    continue
                common = nib.load(patient.change_mask)
                new = np.asarray(common.dataobj) > 0
                masks = {}
                for visit in (1, 2):
                    result = results[f"{patient.patient}_study{visit}"]
                    masks[visit] = to_common_grid(result.mask, result.scan.affine, read_itk_affine(patient.transforms[visit]),
                                                  common.shape, common.affine) > 0.5
                outside = ~new
                a, b = masks[1] & outside, masks[2] & outside
                agreement = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
                labels, n_new = label_lesions(new)
                touched = len(set(np.unique(labels[masks[2] & new])) - {0})
                rows.append({"mode": mode, "seed": seed, "patient": patient.patient, "visit_agreement_dice": agreement,
                             "new_lesions": n_new, "new_lesions_in_visit2_mask": touched})
    times["raw: segmenting the raw visits with every phantom model"] = time.perf_counter() - start
    return rows


def section_grid(args, times: dict, name: str, data: Path, variants: dict, common_flags: list[str],
                 folds: list[int]) -> list[dict]:
    rows = []
    for variant, flags in variants.items():
        out = args.out / name / variant
        times[f"{name} {variant}: training"] = crossval(out, ["--data", str(data), *common_flags, *flags], args.seeds,
                                                        folds, args.out / f"{name}.log", train=not args.no_train)
        rows += [{"variant": variant, **row} for row in fold_rows(out, finished_seeds(out, args.seeds, folds))]
    return rows


# ----------------------------------------------------------------------------- report

def _write_csv(path: Path, rows: list[dict]) -> None:
    from planar3d.atomic import write_rows

    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_rows(path, [{key: row.get(key, "") for key in columns} for row in rows], columns)


def _per_seed(rows: list[dict], group: str, value: str) -> dict[str, dict[int, float]]:
    """``{group: {seed: mean over patients of value}}``."""
    table: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        if row.get(value, "") != "":
            table.setdefault(row[group], {}).setdefault(int(row["seed"]), []).append(float(row[value]))
    return {key: {seed: float(np.mean(v)) for seed, v in seeds.items()} for key, seeds in table.items()}


def _summary_table(rows: list[dict], group: str, values: list[str]) -> list[str]:
    from planar3d.evaluation.stats import format_mean_sd

    lines = [f"| {group} | " + " | ".join(values) + " |", "|---" * (len(values) + 1) + "|"]
    groups = list(dict.fromkeys(row[group] for row in rows if row.get(values[0], "") != ""))
    for key in groups:
        cells = [format_mean_sd(_per_seed(rows, group, value).get(key, {}).values()) for value in values]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def _per_patient_table(rows: list[dict], group: str, value: str) -> list[str]:
    from planar3d.evaluation.stats import format_mean_sd

    patients = sorted({row["patient"] for row in rows if row.get(value, "") != ""})
    lines = [f"| {group} | " + " | ".join(patients) + " |", "|---" * (len(patients) + 1) + "|"]
    for key in dict.fromkeys(row[group] for row in rows if row.get(value, "") != ""):
        cells = [format_mean_sd([float(r[value]) for r in rows if r[group] == key and r["patient"] == p], with_n=False)
                 for p in patients]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def _paired(rows: list[dict], group: str, reference: str, value: str = "dice") -> list[str]:
    from planar3d.evaluation.stats import paired_difference, paired_matrix

    lines = []
    base = {(int(r["seed"]), r["patient"]): float(r[value]) for r in rows if r[group] == reference}
    for key in dict.fromkeys(r[group] for r in rows):
        if key == reference:
            continue
        other = {(int(r["seed"]), r["patient"]): float(r[value]) for r in rows if r[group] == key}
        if set(other) != set(base) or len(base) < 2:
            continue
        a, b, seeds, scans = paired_matrix(base, other)
        d = paired_difference(a, b)
        lines.append(f"- {reference} − {key}: {d['difference']:+.3f} (95 % bootstrap interval {d['ci_low']:+.3f} to "
                     f"{d['ci_high']:+.3f}; {len(seeds)} seeds × {len(scans)} patients; {reference} higher in "
                     f"{d['wins']:.0%} of pairs)")
    return lines


RUNS = ROOT / "docs" / "real_scans_runs.json"


def record_runs(sections: list[str], times: dict, argv: list[str]) -> dict:
    """Update and return ``docs/real_scans_runs.json``: per section, the command, machine, date and
    step times of the call that last computed it (the other sections keep theirs)."""
    import datetime
    import json

    from planar3d.atomic import write_text_atomic

    runs = json.loads(RUNS.read_text()) if RUNS.is_file() else {}
    for section in sections:
        runs[section] = {"command": "python benchmarks/real_scans.py " + " ".join(argv), "machine": machine(),
                         "date": datetime.date.today().isoformat(),
                         "times": {step: seconds for step, seconds in times.items() if step.split()[0].rstrip(":") == section}}
    write_text_atomic(RUNS, json.dumps(runs, indent=1) + "\n", overwrite=True)
    return runs


def _provenance(runs: dict, section: str) -> list[str]:
    run = runs.get(section)
    if not run:
        return []
    return [f"Command: `{run['command']}` ({run['date']}; {run['machine']}).", ""]


def write_report(args, results: dict[str, list[dict]], runs: dict) -> None:
    from planar3d.atomic import write_text_atomic

    docs = ROOT / "docs"
    lines = ["# planar3d on real scans", "",
             "Generated by `benchmarks/real_scans.py`; each section names the command that computed it.", "",
             "Data (../shared/realdata, not in this repository): Ljubljana MS, Lesjak et al., Neuroinformatics "
             "16:51-63 (2018) and 14:403-420 (2016), CC BY; BRATS 2013 (Menze et al., IEEE TMI 34:1993-2024, 2015) "
             "as shipped with DeepMedic's examples. Figures are mean ± sd over seeds of the mean over patients "
             "(n = seeds); per-patient values are in the CSVs. No setting was tuned on these scans.", ""]
    if results.get("phantom"):
        rows = results["phantom"]
        _write_csv(docs / "real_scans_phantom.csv", rows)
        lines += ["## 1. Phantom → real", "", *_provenance(runs, "phantom"),
                  "Models trained only on the built-in phantom (demo preset: 64³, 4 epochs, fold 4; one model per "
                  "seed) segment the three skull-stripped Ljubljana patients (cross-sectional, MNI variant: "
                  "patient07, patient19, patient26; consensus lesion loads 1.3, 49.8 and 8.2 ml).", "",
                  *_summary_table(rows, "mode", ["dice", "lesion_f1", "sensitivity", "ppv", "avd_ml"]), "",
                  "avd_ml: absolute lesion-volume difference (ml); signed values (volume_error_ml) in the CSV.", "",
                  "Dice per patient (mean ± sd over seeds):", "", *_per_patient_table(rows, "mode", "dice"), "",
                  *_paired(rows, "mode", "realistic"), "", "Per-patient values: [real_scans_phantom.csv](real_scans_phantom.csv).", ""]
    if results.get("ljubljana"):
        rows = results["ljubljana"]
        _write_csv(docs / "real_scans_ljubljana.csv", rows)
        lines += ["## 2. Real → real: leave one Ljubljana patient out", "", *_provenance(runs, "ljubljana"),
                  f"Settings: `{' '.join(args.ms_preset)}`. The paper's split of three patients gives each fold one "
                  "training, one validation and one test patient (each fold's `split.json`): fold 0 trains on "
                  "patient19 (49.8 ml of lesions), folds 1 and 2 both on patient07 (1.3 ml).", "",
                  *_summary_table(rows, "variant", ["dice", "lesion_f1", "sensitivity", "ppv"]), "",
                  *_per_patient_table(rows, "variant", "dice"), "",
                  *_paired(rows, "variant", "planar_imagenet_frozen"), ""]
    if results.get("brats"):
        rows = results["brats"]
        _write_csv(docs / "real_scans_brats.csv", rows)
        lines += ["## 3. BRATS 2013 whole tumour", "", *_provenance(runs, "brats"),
                  "From the FLAIR alone, and from FLAIR + T1c stacked as two input channels (`--channels flair t1c`; "
                  "the first layer's RGB kernels averaged and scaled by 3/2).", "",
                  f"Settings: `{' '.join(args.brats_preset)}`, folds {' '.join(map(str, args.brats_folds))} "
                  "(one held-out case each).", "",
                  *_summary_table(rows, "variant", ["dice", "sensitivity", "ppv", "hd95", "fold_minutes"]), "",
                  "fold_minutes: wall time of one fold's training, calibration and test on this machine.", "",
                  *_per_patient_table(rows, "variant", "dice"), "",
                  *_paired(rows, "variant", "planar_imagenet"), ""]
    if results.get("raw"):
        rows = results["raw"]
        _write_csv(docs / "real_scans_raw.csv", rows)
        visits = [r for r in rows if "predicted_ml" in r]
        pairs = [r for r in rows if "visit_agreement_dice" in r]
        lines += ["## 4. Raw scanner FLAIRs (Ljubljana longitudinal, with skull)", "", *_provenance(runs, "raw"),
                  "The phantom models of section 1 on 11 raw visits (2D FLAIR, 3-4 mm oblique slices, uint16).", "",
                  *_summary_table(visits, "mode", ["predicted_lesions", "predicted_ml"]), "",
                  "Two visits on the common grid (patients 01, 03, 12, 19): Dice of the two visits' masks outside the "
                  "raters' new-lesion mask, and the raters' new lesions touched by the second visit's mask:", "",
                  *_summary_table(pairs, "mode", ["visit_agreement_dice", "new_lesions_in_visit2_mask", "new_lesions"]),
                  ""]
        pictures = sorted((docs / "real_scans").glob("*.png"))
        lines += [f"![{p.stem}](real_scans/{p.name})" for p in pictures] + [""]
    missing = [name for name in SECTIONS if not results.get(name)]
    if missing:
        lines += ["## Not measured yet", "",
                  f"Sections {', '.join(missing)}: `python benchmarks/real_scans.py --sections {' '.join(missing)}` "
                  "(each training of section 2 takes up to 30 min on 2 CPU cores; see the module docstring).", ""]
    lines += ["## Time", "", "Per section, the wall time of each step in the call that computed it; trainings "
              "reused from an earlier call count 0 there.", "", "| section | step | wall |", "|---|---|---|"]
    lines += [f"| {section} | {step} | {seconds / 60:.1f} min |" for section in SECTIONS
              for step, seconds in runs.get(section, {}).get("times", {}).items()] + [""]
    write_text_atomic(docs / "real_scans.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="*", choices=SECTIONS, default=list(SECTIONS),
                        help="sections to (re)compute; the others keep their saved CSVs (none: rewrite the report only)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--phantom-modes", nargs="+", choices=list(PHANTOM_RUNS), default=list(PHANTOM_RUNS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "real_scans")
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    parser.add_argument("--ms-preset", nargs="+", default=["--preset", "demo", "--size", "128", "--epochs", "6",
                                                           "--empty-window-weight", "0"],
                        help="crossval flags of section 2 (real MS lesions need 128^3 or more)")
    parser.add_argument("--ms-variants", nargs="+", choices=list(LJUBLJANA_VARIANTS), default=list(LJUBLJANA_VARIANTS),
                        help="section 2's encoders (default: all three)")
    parser.add_argument("--brats-preset", nargs="+", default=["--preset", "demo"],
                        help="crossval flags of section 3 (default: the paper's network at the demo budget)")
    parser.add_argument("--brats-variants", nargs="+", choices=list(BRATS_VARIANTS),
                        default=["planar_imagenet", "acs_imagenet", "planar_random", "planar_imagenet_flair_t1c"])
    parser.add_argument("--brats-folds", nargs="+", type=int, default=[0, 2, 4])
    parser.add_argument("--no-train", action="store_true",
                        help="sections 2 and 3: report the seeds whose every fold has finished, train nothing")
    parser.add_argument("--qc-scans", nargs="+", default=["patient01_study1", "patient12_study2"])
    args = parser.parse_args(argv)
    args.out, args.realdata = args.out.resolve(), args.realdata.resolve()
    argv = sys.argv[1:] if argv is None else argv
    times: dict[str, float] = {}
    results = {}
    if "phantom" in args.sections:
        results["phantom"] = section_phantom(args, times)
    if "ljubljana" in args.sections:
        results["ljubljana"] = section_grid(args, times, "ljubljana",
                                            args.realdata / "ljubljana_ms" / "cross_sectional" / "MNI",
                                            {name: LJUBLJANA_VARIANTS[name] for name in args.ms_variants},
                                            args.ms_preset, [0, 1, 2])
    if "brats" in args.sections:
        variants = {name: BRATS_VARIANTS[name] for name in args.brats_variants}
        results["brats"] = section_grid(args, times, "brats", args.realdata / "brats2013_deepmedic", variants,
                                        args.brats_preset, args.brats_folds)
    if "raw" in args.sections:
        results["raw"] = section_raw(args, times)
    for section in ("phantom", "raw"):  # the phantom modes not run this time keep their last figures
        saved = ROOT / "docs" / f"real_scans_{section}.csv"
        if section in results and saved.is_file():
            kept = [row for row in csv.DictReader(saved.open())
                    if not any(row["mode"].startswith(mode) for mode in args.phantom_modes)]
            results[section] = kept + results[section]
    for section in SECTIONS:  # the sections not run this time keep their last figures
        saved = ROOT / "docs" / f"real_scans_{section}.csv"
        if section not in results and saved.is_file():
            results[section] = list(csv.DictReader(saved.open()))
    write_report(args, results, record_runs(args.sections, times, argv))
    print((ROOT / "docs" / "real_scans.md").read_text())


if __name__ == "__main__":
    main()
