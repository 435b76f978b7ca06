"""The HTML pages of ``evaluate`` and of the BIDS App's group level, written from real scans and
opened in headless Chromium, with a screenshot of each for docs/ (issue 29: what a reader sees).

- ``evaluate``: the predicted whole-tumour masks of a BRATS section run of ``real_scans.py``
  (one seed of one variant: the test case of each fold) against the BRATS 2013 expert labels.
- BIDS App: the three skull-stripped Ljubljana MNI patients (FLAIR, consensus mask), laid out as a
  BIDS dataset of links (``sub-07``, ``sub-19``, ``sub-26``; masks in ``derivatives/consensus``),
  segmented by a model (``participant``) and summed up with their Dice (``group``).

Each page must load with no console error, every picture decoded and nothing fetched from outside
(tests/browser.py: the checks tests/test_html_browser.py runs on tiny inputs). Nothing is written into the data;
every output goes under ``--out``; the screenshots into ``--docs``.

    python benchmarks/report_pages_real.py --brats-run /work/real_runs/bench/brats/planar_imagenet/seed_0 \\
        --model runs/demo/fold_4/best.keras --out /tmp/report_pages
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
MNI = Path("ljubljana_ms") / "cross_sectional" / "MNI"


def run(*command: str) -> float:
    """Run a planar3d command; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *command], check=True)
    return time.perf_counter() - start


def bids_view(realdata: Path, root: Path) -> list[str]:
    """A BIDS dataset of links to the Ljubljana MNI patients' FLAIRs and consensus masks."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "Ljubljana MS (MNI), links", "BIDSVersion": "1.8.0"}))
    masks = root / "derivatives" / "consensus"
    masks.mkdir(parents=True)
    (masks / "dataset_description.json").write_text(json.dumps({
        "Name": "consensus", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "three raters' consensus (Lesjak et al. 2018)"}]}))
    labels = []
    for patient in sorted((realdata / MNI).glob("patient*")):
        label = patient.name.removeprefix("patient")
        anat = root / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{label}_FLAIR.nii.gz").symlink_to(next(patient.glob("FLAIR_*.nii.gz")))
        (masks / f"sub-{label}" / "anat").mkdir(parents=True)
        (masks / f"sub-{label}" / "anat" / f"sub-{label}_FLAIR_label-lesion_mask.nii.gz").symlink_to(
            next(patient.glob("GOLD_STANDARD_*.nii.gz")))
        labels.append(label)
    return labels


def check_and_shoot(pages: dict[str, Path], docs: Path, profile: Path) -> None:
    """Open each page with the browser check of tests/test_html_browser.py (tests/browser.py);
    fail on anything it finds broken; save a screenshot."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import open_chromium, page_problems, sortable_table_rows

    browser = open_chromium(profile)
    try:
        for name, page in pages.items():
            problems = page_problems(browser, page)
            if problems:
                raise SystemExit(f"{page}: {'; '.join(problems)}")
            pictures = browser.execute_script("return document.images.length")
            rows = [body for _, body in sortable_table_rows(browser)]
            browser.save_screenshot(str(docs / name))
            print(f"{page}: {pictures} pictures decoded, sortable tables of {rows} rows, no console error, nothing "
                  f"from outside -> docs/{name}")
    finally:
        browser.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brats-run", type=Path, required=True, help="a seed folder of real_scans.py's BRATS section")
    parser.add_argument("--model", type=Path, required=True, help="the model the BIDS App segments with")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists: choose a new --out")

    predictions = args.out / "brats_predictions"
    predictions.mkdir(parents=True)
    for mask in sorted(args.brats_run.glob("fold_*/predictions/*_mask.nii.gz")):
        (predictions / mask.name).symlink_to(mask.resolve())
    evaluation = args.out / "evaluation"
    seconds = run("planar3d.evaluate", "--reference", str(args.realdata / "brats2013_deepmedic"),
                  "--prediction", str(predictions), "--out", str(evaluation))
    print(f"evaluate: {len(list(predictions.iterdir()))} BRATS cases in {seconds:.0f} s")

    bids = args.out / "ljubljana_bids"
    labels = bids_view(args.realdata, bids)
    derivatives = args.out / "derivatives"
    seconds = run("planar3d.bids", str(bids), str(derivatives), "participant", "--model", str(args.model))
    seconds += run("planar3d.bids", str(bids), str(derivatives), "group", "--masks-from", "consensus")
    print(f"BIDS App: participants {' '.join(labels)}, both levels in {seconds:.0f} s")

    check_and_shoot({"report_evaluate_real.png": evaluation / "report.html",
                     "report_bids_group_real.png": derivatives / "group_report.html"}, args.docs,
                    args.out / "chromium-profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
