"""Simple vs realistic phantom, and leave-one-centre-out vs 5-fold, from per-scan CSVs.

Tabulates runs made elsewhere (nothing is trained here); each input is a per-scan table:

- ``--demo-simple`` / ``--demo-realistic``: ``python -m planar3d.crossval --preset demo
  --seeds 0 1 2 3 4 [--phantom-mode realistic]``'s ``results.csv`` (``seed, fold, patient,
  centre, dice, sensitivity, ...``);
- ``--tvr-simple`` / ``--tvr-realistic``: ``benchmarks/transfer_vs_random.py``'s CSV
  (``variant, seed, patient, centre, dice, sensitivity``);
- ``--loco``: ``python -m planar3d.crossval --preset demo --phantom-mode realistic
  --split centre --seeds 0 1 2 3 4``'s ``results.csv``.

Writes ``DOCS/phantom_evidence.md``: the demo's test Dice on both modes (mean ± sd over seeds
of each seed's mean, and per centre); the paired gap of the ImageNet planar encoder over a
random trained one on both modes; the 5-fold split against leave-one-centre-out on the same
test scans (paired: same seed, same scan, its centre in training or not) and over every scan
of each held-out centre. Intervals and tests from :mod:`planar3d.evaluation.stats`.

    python benchmarks/phantom_evidence.py [--docs docs]   # inputs default to the CSVs in docs/
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGENET, RANDOM = "planar_imagenet_frozen", "planar_random_trainable"


class BadTable(ValueError):
    """An input CSV that is missing or not a per-scan table (the message names the file)."""


def read_scans(path: Path, variant: str | None = None) -> list[dict]:
    """Rows of a per-scan CSV (``seed``, ``patient``, ``centre``, ``dice``, ``sensitivity``; and
    ``fold``/``variant`` where present), numbers parsed; only ``variant``'s rows when given.

    Raises:
        BadTable: unreadable file, missing columns, or no rows (of ``variant``).
    """
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise BadTable(f"{path}: {error.strerror or error}") from error
    missing = [k for k in ("seed", "patient", "centre", "dice", "sensitivity") if rows and k not in rows[0]]
    if not rows or missing:
        raise BadTable(f"{path}: not a per-scan table (missing columns {missing or 'and rows'})")
    if variant is not None:
        rows = [r for r in rows if r.get("variant") == variant]
        if not rows:
            raise BadTable(f"{path}: no rows of variant {variant}")
    return [{**r, "seed": int(r["seed"]), "dice": float(r["dice"]), "sensitivity": float(r["sensitivity"])}
            for r in rows]


def per_seed_means(rows: list[dict], key: str = "dice") -> list[float]:
    """Each seed's mean of ``key`` over its scans, seeds in order."""
    seeds = sorted({r["seed"] for r in rows})
    return [statistics.fmean(r[key] for r in rows if r["seed"] == s) for s in seeds]


def spread(values: list[float]) -> str:
    """``mean ± sd (n)`` of per-seed values."""
    from planar3d.evaluation.stats import mean_sd

    mean, sd, n = mean_sd(values)
    return f"{mean:.3f} ± {sd:.3f} (n = {n})" if n > 1 else f"{mean:.3f} (n = 1)"


def paired(a_rows: list[dict], b_rows: list[dict]) -> dict:
    """:func:`planar3d.evaluation.stats.paired_difference` of Dice ``a - b`` over the (seed, scan) pairs both hold."""
    from planar3d.evaluation.stats import paired_difference, paired_matrix

    a = {(r["seed"], r["patient"]): r["dice"] for r in a_rows}
    b = {(r["seed"], r["patient"]): r["dice"] for r in b_rows}
    shared = set(a) & set(b)
    A, B, _, _ = paired_matrix({k: a[k] for k in shared}, {k: b[k] for k in shared})
    return paired_difference(A, B)


def _difference(c: dict, better: str) -> str:
    n = c["n_seeds"] * c["n_scans"]
    return (f"{c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], {better} in "
            f"{round(c['wins'] * n)} of {n} pairs, Wilcoxon p (per-seed means) {c['p_seeds']:.3g}")


def report(demo: dict[str, list[dict]], tvr: dict[str, dict[str, list[dict]]], loco: list[dict],
           command: str) -> str:
    """The Markdown report (see the module docstring)."""
    centres = sorted({r["centre"] for rows in demo.values() for r in rows})
    lines = ["# The phantom's two modes, and leave-one-centre-out", "",
             f"Tables from per-scan CSVs; command: `{command}`. Means ± sample sd over seeds of each "
             "seed's mean test Dice (n = seeds); intervals: 95 % two-way bootstrap over seeds and scans "
             "(`planar3d.evaluation.stats`); with n seeds the per-seed Wilcoxon test cannot go below p = 2 / 2^n "
             "(0.0625 for 5). Phantom figures, not MSSEG-2016 ones.", "",
             "## The demo on both modes", "",
             "`python -m planar3d.crossval --preset demo --seeds 0 1 2 3 4 [--phantom-mode realistic]` "
             "(fold 4: one test scan per centre).", "",
             f"| mode | test Dice | sensitivity | {' | '.join(f'centre {c}' for c in centres)} |",
             f"|---|---|---|{'---|' * len(centres)}"]
    for mode, rows in demo.items():
        by_centre = [spread(per_seed_means([r for r in rows if r["centre"] == c])) for c in centres]
        lines.append(f"| {mode} | {spread(per_seed_means(rows))} | {spread(per_seed_means(rows, 'sensitivity'))} | "
                     f"{' | '.join(by_centre)} |")
    from planar3d.evaluation.reference import PAPER_TABLE2

    lines += ["", "For scale, the paper's MSSEG-2016 test Dice: %.2f ± %.2f (Table 2)." % PAPER_TABLE2["dice"]["overall"], "",
              "## Transfer vs random on both modes", "",
              f"`python benchmarks/transfer_vs_random.py --seeds 0,1,2,3,4 [--phantom-mode realistic "
              f"--variants {IMAGENET},{RANDOM} --name transfer_vs_random_realistic]`: the paper's encoder "
              "(ImageNet VGG16, planar, frozen) against random planar kernels trained with the decoder, "
              "same budget.", "",
              "| mode | ImageNet planar, frozen | random planar, trained | ImageNet minus random (paired, same seeds and scans) |",
              "|---|---|---|---|"]
    for mode, variants in tvr.items():
        lines.append(f"| {mode} | {spread(per_seed_means(variants[IMAGENET]))} | "
                     f"{spread(per_seed_means(variants[RANDOM]))} | "
                     f"{_difference(paired(variants[IMAGENET], variants[RANDOM]), 'ImageNet better')} |")
    realistic = demo["realistic"]
    tested = {r["patient"] for r in realistic}
    lines += ["", "## Leave-one-centre-out vs 5-fold (realistic mode)", "",
              "`python -m planar3d.crossval --preset demo --phantom-mode realistic --split centre --seeds 0 1 2 3 4`: "
              "fold k trains on the other two centres (8 scans; the last of each validates) and tests all 5 "
              "scans of centre k. The 5-fold runs are the demo's fold 4 (11 training scans from every centre, "
              "one test scan per centre). *Same scans* compares the two on the 5-fold's test scans, which "
              "leave-one-centre-out also tests: same seed, same scan, its centre in training or not.", "",
              "| centre | 5-fold | leave-one-centre-out, same scans | leave-one-centre-out, all scans of the centre |",
              "|---|---|---|---|"]
    for centre in centres:
        five = [r for r in realistic if r["centre"] == centre]
        held = [r for r in loco if r["centre"] == centre]
        same = [r for r in held if r["patient"] in tested]
        lines.append(f"| {centre} | {spread(per_seed_means(five))} | {spread(per_seed_means(same))} | "
                     f"{spread(per_seed_means(held))} |")
    same = [r for r in loco if r["patient"] in tested]
    lines += [f"| all | {spread(per_seed_means(realistic))} | {spread(per_seed_means(same))} | "
              f"{spread(per_seed_means(loco))} |", "",
              f"5-fold minus leave-one-centre-out on the same scans: {_difference(paired(realistic, same), '5-fold better')}.",
              "", "Leave-one-centre-out trains on 8 scans instead of 11, so its gap mixes the unseen centre with "
              "fewer training scans; the phantom's centres differ in grid, orientation, contrast, noise, bias "
              "field and lesion load (`planar3d.io.phantom_realistic`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    docs = ROOT / "docs"
    parser.add_argument("--demo-simple", type=Path, default=docs / "demo_seeds.csv", help="(default docs/demo_seeds.csv)")
    parser.add_argument("--demo-realistic", type=Path, default=docs / "realistic_seeds.csv",
                        help="(default docs/realistic_seeds.csv)")
    parser.add_argument("--tvr-simple", type=Path, default=docs / "transfer_vs_random.csv",
                        help="(default docs/transfer_vs_random.csv)")
    parser.add_argument("--tvr-realistic", type=Path, default=docs / "transfer_vs_random_realistic.csv",
                        help="(default docs/transfer_vs_random_realistic.csv)")
    parser.add_argument("--loco", type=Path, default=docs / "realistic_loco.csv", help="(default docs/realistic_loco.csv)")
    parser.add_argument("--docs", type=Path, default=docs, help="folder for phantom_evidence.md (default docs/)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from planar3d.atomic import write_text_atomic

    try:
        demo = {"simple": read_scans(args.demo_simple), "realistic": read_scans(args.demo_realistic)}
        tvr = {mode: {v: read_scans(path, v) for v in (IMAGENET, RANDOM)}
               for mode, path in (("simple", args.tvr_simple), ("realistic", args.tvr_realistic))}
        loco = read_scans(args.loco)
    except BadTable as error:
        parser.exit(2, f"error: {error}\n")
    command = "python benchmarks/phantom_evidence.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_text_atomic(args.docs / "phantom_evidence.md", report(demo, tvr, loco, command.strip()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
