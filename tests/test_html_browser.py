"""The HTML reports, opened in a real browser: headless Chromium driven by Selenium.

Every page kind is written from tiny inputs by the code the commands run (``predict``'s folder
page, the BIDS App's participant and group pages, ``evaluate`` run for real on two small mask
pairs, ``crossval``'s page from a fake finished grid), loaded from a ``file://`` URL, and fails
on: a browser console error (a script error, a blocked resource), an ``<img>`` that did not
decode (``naturalWidth`` 0), a sortable table whose body has another number of rows than the
rows given, and any request to a URL that is not ``file:`` or ``data:`` (the browser's network
log, its resource timing entries and the page source). Clicking a column header must sort.

Chromium and its driver come from the distribution (``apt-get install chromium chromium-driver``,
as ``.ci/run`` does) and Selenium from the ``test`` extra. Without them the test is skipped with
the reason, except under CI (``CI`` set), where it fails naming what is missing.

``PLANAR3D_REPORT_SCREENSHOTS=1`` also saves one screenshot per page kind into ``docs/``
(``report_predict.png``, ``report_bids_group.png``, ``report_evaluate.png``), taken by the
same driver: ``PLANAR3D_REPORT_SCREENSHOTS=1 python -m pytest tests/test_html_browser.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from browser import missing_tools, open_chromium, page_problems, sortable_table_rows

ROOT = Path(__file__).resolve().parents[1]

SCREENSHOTS = os.environ.get("PLANAR3D_REPORT_SCREENSHOTS", "") not in ("", "0")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = missing_tools()
    if missing:
        message = f"the browser check of the HTML reports needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser check: missing {', '.join(missing)}")
        pytest.skip(message)
    browser = open_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.quit()


# ----------------------------------------------------------------------------- checks
def check_page(browser, path: Path, tables: list[int], images: int, warnings: tuple[str, ...] = (),
               screenshot: str | None = None) -> None:
    """Load ``path`` and check it (see the module docstring): ``tables`` the body row counts of the
    sortable tables in page order, ``images`` the number of pictures, ``warnings`` texts the warning
    box must hold; ``screenshot``: the name in docs/ of the page's screenshot (when asked for)."""
    problems = page_problems(browser, path)
    assert not problems, f"{path.name}: {problems}"
    pictures = browser.execute_script("return document.images.length")
    assert pictures == images, (path.name, pictures)
    counts = sortable_table_rows(browser)
    assert counts == [[1, n] for n in tables], (path.name, counts, tables)
    assert browser.execute_script("return document.scripts.length") == 1  # the sorter; escaped text adds none
    if warnings:
        box = browser.find_element("id", "warnings").text
        for text in warnings:
            assert text in box, (text, box)
    if SCREENSHOTS and screenshot:
        browser.save_screenshot(str(ROOT / "docs" / screenshot))


def _column(browser, table: int, column: int) -> list[str]:
    return browser.execute_script(
        "const t = document.querySelectorAll('table.sortable')[arguments[0]];"
        "return Array.from(t.tBodies[0].rows, r => r.cells[arguments[1]].textContent);", table, column)


# ----------------------------------------------------------------------------- tiny inputs
def _head(lesions: list[tuple[int, int, int]], shape=(36, 44, 32), spacing=(4.5, 4.5, 5.0), flip: bool = False):
    """A synthetic FLAIR (ellipsoid head, skull, ventricles, bright lesions) and its lesion mask."""
    grid = np.indices(shape).astype(np.float32)
    centre = (np.asarray(shape, np.float32) - 1) / 2
    radius = np.sqrt(sum(((grid[a] - centre[a]) / (0.45 * shape[a])) ** 2 for a in range(3)))
    scan = np.where(radius < 1.0, 420.0, 20.0) + np.where((radius > 0.88) & (radius < 1.0), 300.0, 0.0)
    ventricles = np.sqrt(((grid[0] - centre[0]) / 5) ** 2 + ((grid[1] - centre[1]) / 9) ** 2
                         + ((grid[2] - centre[2]) / 4) ** 2) < 1
    scan[ventricles] = 120.0
    mask = np.zeros(shape, np.uint8)
    for point in lesions:
        ball = sum((grid[a] - point[a]) ** 2 for a in range(3)) <= 4.0
        mask[ball] = 1
    scan[mask == 1] = 820.0
    scan += np.random.default_rng(0).normal(0, 15, shape)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.asarray(spacing) * centre
    if flip:
        affine[0] *= -1
    return nib.Nifti1Image(scan.astype(np.float32), affine), mask


def _mosaic(path: Path, lesions, title: str) -> Path:
    from planar3d.evaluation.qc_mosaic import plot_qc_mosaic

    image, mask = _head(lesions)
    plot_qc_mosaic(image, prediction=mask, path=path, title=title, columns=6)
    return path


def _lesion_rows(volumes, outside=()):
    return [{"id": i, "voxels": int(round(v / 1.5)), "volume_mm3": float(v), "centroid_x_mm": 10.5 * i,
             "centroid_y_mm": -3.25 * i, "centroid_z_mm": 2.0, "mean_probability": 0.6 + 0.05 * i,
             **({"outside_head": i in outside} if outside else {})} for i, v in enumerate(volumes, start=1)]


@pytest.fixture(scope="module")
def phantom_model(tmp_path_factory):
    """A model file whose run config says it learnt from the built-in phantom."""
    folder = tmp_path_factory.mktemp("model") / "fold_0"
    folder.mkdir()
    (folder / "best.keras").write_bytes(b"not a real model: the page reads its bytes for the hash only")
    (folder / "config.json").write_text(json.dumps({"preset": "demo", "data": None, "phantom_mode": "realistic"}))
    return folder / "best.keras"


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mosaics")
    return [_mosaic(folder / "a.png", [(10, 14, 16), (24, 28, 12), (18, 30, 22)], "scan A: 3 lesions"),
            _mosaic(folder / "b.png", [(20, 16, 18)], "scan B: 1 lesion")]


# ----------------------------------------------------------------------------- the pages
def test_predict_folder_page(driver, tmp_path, mosaics, phantom_model):
    from planar3d.apps.report_pages import write_predict_report
    from planar3d.evaluation.html_report import model_info

    out = tmp_path / "masks"
    out.mkdir()
    lesions = {"01A": _lesion_rows([900.0, 420.5, 64.0], outside=(3,)), "07B": _lesion_rows([130.0]), "08D": []}
    pairs = []
    for name in ("01A", "07B", "07C", "08D"):
        flair, mask = tmp_path / "in" / f"{name}.nii.gz", out / f"{name}_mask.nii.gz"
        pairs.append((flair, mask))
        if name == "07C":
            continue  # failed: no outputs
        mask.write_bytes(b"mask")
        summary = {"scan": str(flair), "mask": str(mask), "n_lesions": len(lesions[name]),
                   "total_volume_ml": sum(r["volume_mm3"] for r in lesions[name]) / 1000, "lesions": lesions[name]}
        (out / f"{name}_mask_lesions.json").write_text(json.dumps(summary))
        shutil.copyfile(mosaics[0] if name == "01A" else mosaics[1], out / f"{name}_mask_qc.png")
    page = write_predict_report(out, pairs, [str(tmp_path / "in" / "07C.nii.gz")], model_info([phantom_model]),
                                "planar3d predict --model best.keras --input in --output masks")
    check_page(driver, page, tables=[4, 3, 1], images=3, screenshot="report_predict.png",
               warnings=("07C: segmentation failed", "01A: 1 lesion outside the head mask (id 3)",
                         "model trained on the phantom only"))
    # sorting: the scans' lesion counts (n/a for the failed scan last), then reversed
    assert _column(driver, 0, 2) == ["3", "1", "n/a", "0"]
    header = driver.find_elements("css selector", "table.sortable")[0].find_elements("css selector", "th")[2]
    header.click()
    assert _column(driver, 0, 2) == ["0", "1", "3", "n/a"]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _column(driver, 0, 2) == ["n/a", "3", "1", "0"]
    # a lesion table sorts by number, not by text (900 after 64)
    volume = driver.find_elements("css selector", "table.sortable")[1].find_elements("css selector", "th")[2]
    volume.click()
    assert _column(driver, 1, 2) == ["64", "420.5", "900"]
    text = driver.find_element("tag name", "body").text
    assert "planar3d predict --model best.keras" in text and "sha256" in text and "tensorflow" in text
    assert "cpu_isa" in text and "the built-in phantom (realistic)" in text


def test_bids_participant_page(driver, tmp_path, mosaics, phantom_model):
    from planar3d.apps.bids import STATS_COLUMNS
    from planar3d.apps.report_pages import write_participant_report
    from planar3d.atomic import write_rows
    from planar3d.evaluation.html_report import model_info

    scans = []
    for run, volumes in ((1, [300.0, 12.0]), (2, [250.0, 40.0, 8.0])):
        name = f"sub-01_ses-1_run-{run}"
        stats = tmp_path / "sub-01" / "ses-1" / "anat" / f"{name}_desc-lesions_stats.tsv"
        stats.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"lesion_id": r["id"], **{k: r.get(k, "n/a") for k in STATS_COLUMNS if k != "lesion_id"}}
                for r in _lesion_rows(volumes)]
        write_rows(stats, rows, columns=STATS_COLUMNS, delimiter="\t")
        qc = tmp_path / "sub-01" / "figures" / f"{name}_desc-qc_FLAIR.png"
        qc.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mosaics[run - 1], qc)
        scans.append({"name": name, "flair": f"/data/{name}_FLAIR.nii.gz", "qc": qc, "stats": stats})
    page = write_participant_report(tmp_path / "sub-01_ses-1.html", "sub-01 ses-1", scans, [],
                                    model_info([phantom_model]), "planar3d bids in out participant")
    check_page(driver, page, tables=[2, 2, 3], images=2, warnings=("model trained on the phantom only",))
    assert "sub-01_ses-1_run-2" in driver.find_element("tag name", "body").text


def test_bids_group_page(driver, tmp_path, phantom_model):
    from planar3d.apps.report_pages import write_group_report
    from planar3d.evaluation.html_report import model_info
    from planar3d.evaluation.metrics import MSSEG_KEYS
    from planar3d.evaluation.report_figures import plot_metric_boxplots
    from planar3d.evaluation.reports import evaluation_summary_markdown

    rng = np.random.default_rng(1)
    names = ["sub-01_ses-1_run-1", "sub-01_ses-1_run-2", "sub-01_ses-2", "sub-02", "sub-03_acq-3d"]
    lesions = [{"participant_id": n.split("_")[0], "session_id": next((p for p in n.split("_") if p.startswith("ses-")), "n/a"),
                "scan": n, "n_lesions": int(rng.integers(0, 30)), "lesion_volume_ml": float(rng.uniform(0, 20))} for n in names]
    metrics = [{"patient": n, "centre": "Siemens 3T" if i % 2 else "Philips 3T",
                **{k: float(rng.uniform(0.2, 0.9)) for k in MSSEG_KEYS}} for i, n in enumerate(names[:4])]
    markdown = evaluation_summary_markdown(metrics, title="planar3d BIDS App: MSSEG-2016 metrics", notes=["Four scans."])
    boxplot = tmp_path / "group_metrics_boxplot.png"
    plot_metric_boxplots(metrics, metrics=("dice", "sensitivity", "ppv", "lesion_f1"), by="centre", path=boxplot)
    page = write_group_report(tmp_path / "group_report.html", lesions, metrics, ["sub-04"], markdown, boxplot,
                              model_info([phantom_model]), "planar3d bids in out group --masks-from manual")
    # sections: the lesion table; then the metrics' summary (its tables) and the per-scan metrics
    check_page(driver, page, tables=[5, *_markdown_tables(markdown), 4], images=2, screenshot="report_bids_group.png",
               warnings=("no participant outputs for sub-04",))


def _markdown_tables(text: str) -> list[int]:
    """Body rows of each pipe table of a Markdown text (header and rule lines left out)."""
    counts, run = [], 0
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            run += 1
        elif run:
            counts.append(run - 2)
            run = 0
    return counts


@pytest.mark.slow
def test_evaluate_page_from_the_real_command(driver, tmp_path, capsys):
    """``evaluate`` on two folders of small masks (with FLAIRs for the overlays) writes report.html."""
    from planar3d.cli import evaluate as evaluate_cli

    for folder in ("ref", "pred", "flair"):
        (tmp_path / folder).mkdir()
    for name, lesions in (("01A", [(10, 14, 16), (24, 28, 12)]), ("07B", [(20, 16, 18)])):
        image, mask = _head(lesions, flip=name == "07B")
        nib.save(nib.Nifti1Image(mask, image.affine), tmp_path / "ref" / f"{name}_mask.nii.gz")
        predicted = mask.copy()
        predicted[12:16, 30:33, 20:23] = 1  # a false positive
        nib.save(nib.Nifti1Image(predicted, image.affine), tmp_path / "pred" / f"{name}_pred.nii.gz")
        nib.save(image, tmp_path / "flair" / f"{name}_flair.nii.gz")
    out = tmp_path / "evaluation"
    assert evaluate_cli.main(["--reference", str(tmp_path / "ref"), "--prediction", str(tmp_path / "pred"),
                              "--flair", str(tmp_path / "flair"), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text(encoding="utf-8")
    check_page(driver, out / "report.html", tables=[*_markdown_tables(summary), 2], images=3,
               screenshot="report_evaluate.png")
    body = driver.find_element("tag name", "body").text
    assert "01A" in body and "07B" in body and "mean Dice" in body
    # report.html is an output like the others: alone, it refuses a second run without --overwrite
    for path in sorted(out.rglob("*"), reverse=True):
        if path.name != "report.html":
            path.rmdir() if path.is_dir() else path.unlink()
    capsys.readouterr()
    assert evaluate_cli.main(["--reference", str(tmp_path / "ref"), "--prediction", str(tmp_path / "pred"),
                              "--out", str(out), "--no-qc"]) == 2
    assert f"{out / 'report.html'}: output exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


def test_crossval_page(driver, tmp_path, mosaics):
    """``crossval``'s report.html from a grid with one finished and one unfinished fold."""
    from planar3d.config import make_config
    from planar3d.evaluation.reports import crossval_summary_markdown
    from planar3d.runs.grid import TaskState, write_grid_report
    from planar3d.runs.seeds import Task

    config = make_config("demo", folds=[0, 1])
    out = tmp_path / "run"
    done, left = Task(None, 0, config, out), Task(None, 1, config, out)
    (done.fold_dir / "overlays").mkdir(parents=True)
    shutil.copyfile(mosaics[0], done.fold_dir / "overlays" / "01A.png")
    shutil.copyfile(mosaics[1], done.fold_dir / "curves.png")
    (done.fold_dir / "best.keras").write_bytes(b"model")
    (done.fold_dir / "config.json").write_text(config.to_json())
    rows = [{"fold": 0, "patient": p, "centre": p[:2], "dice": d, "sensitivity": s, "ppv": 0.5, "lesion_f1": 0.4}
            for p, d, s in (("01A", 0.61, 0.7), ("07B", 0.42, 0.5), ("08C", 0.55, 0.66))]
    summary = crossval_summary_markdown(rows, config)
    (out / "summary.md").write_text(summary)
    shutil.copyfile(mosaics[1], out / "boxplot.png")
    page = write_grid_report(out, rows, [TaskState(done, "finished"), TaskState(left, "not run", "no job submitted")])
    check_page(driver, page, tables=[*_markdown_tables(summary), 3], images=3,
               warnings=("fold 1: not run (no job submitted)", "model trained on the phantom only"))


def test_text_is_escaped_and_nothing_leaves_the_page(driver, tmp_path):
    from planar3d.evaluation.html_report import write_report

    hostile = '<script>alert(1)</script><img src="https://example.org/x.png">'
    page = write_report(tmp_path / "x.html", hostile, sections=[{
        "title": hostile, "text": [hostile], "tables": [{"rows": [{"a <b>": hostile, "n": 2}, {"a <b>": "x", "n": 1}]}],
        "markdown": f"# {hostile}\n\n| `{hostile}` | n |\n|---|---|\n| {hostile} | 3 |\n"}],
        warnings=[hostile], totals={hostile: hostile}, command=hostile)
    check_page(driver, page, tables=[1, 2], images=0, warnings=(hostile,))
    assert driver.title == hostile
