"""``benchmarks/phantom_evidence.py``: the tables it writes from per-scan CSVs (nothing trained)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import phantom_evidence  # noqa: E402

CENTRES = {"01": ["01a", "01b"], "07": ["07a", "07b"], "08": ["08a", "08b"]}


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _demo(offset: float) -> list[dict]:  # fold 4 tests the first scan of each centre
    return [{"seed": s, "fold": 4, "patient": ids[0], "centre": c, "dice": offset + 0.1 * s, "sensitivity": 0.9}
            for s in (0, 1) for c, ids in CENTRES.items()]


def test_tables_from_per_scan_csvs(tmp_path):
    tvr = [{"variant": v, "seed": s, "patient": ids[0], "centre": c, "dice": d + 0.1 * s, "sensitivity": 0.8}
           for v, d in (("planar_imagenet_frozen", 0.6), ("planar_random_trainable", 0.4), ("acs_imagenet_frozen", 0.0))
           for s in (0, 1) for c, ids in CENTRES.items()]
    # leave-one-centre-out tests both scans of each centre: the 5-fold's scan at 0.3 below it, the other at 0
    loco = [{"seed": s, "fold": i, "patient": p, "centre": c, "dice": (0.2 + 0.1 * s) if p == ids[0] else 0.0,
             "sensitivity": 0.5} for s in (0, 1) for i, (c, ids) in enumerate(CENTRES.items()) for p in ids]
    files = {"--demo-simple": _write(tmp_path / "simple.csv", _demo(0.6)),
             "--demo-realistic": _write(tmp_path / "realistic.csv", _demo(0.5)),
             "--tvr-simple": _write(tmp_path / "tvr.csv", tvr), "--tvr-realistic": _write(tmp_path / "tvr_r.csv", tvr),
             "--loco": _write(tmp_path / "loco.csv", loco)}
    phantom_evidence.main([*(x for k, v in files.items() for x in (k, str(v))), "--docs", str(tmp_path)])
    report = (tmp_path / "phantom_evidence.md").read_text()
    # per-seed means 0.6 and 0.7 (simple), 0.5 and 0.6 (realistic): sd 0.0707
    assert "| simple | 0.650 ± 0.071 (n = 2) | 0.900 ± 0.000 (n = 2) | 0.650 ± 0.071 (n = 2) |" in report
    assert "| realistic | 0.550 ± 0.071 (n = 2) |" in report
    assert "| simple | 0.650 ± 0.071 (n = 2) | 0.450 ± 0.071 (n = 2) | +0.200 [+0.200, +0.200], ImageNet better in 6 of 6 pairs" in report
    assert "| 07 | 0.550 ± 0.071 (n = 2) | 0.250 ± 0.071 (n = 2) | 0.125 ± 0.035 (n = 2) |" in report
    assert "| all | 0.550 ± 0.071 (n = 2) | 0.250 ± 0.071 (n = 2) | 0.125 ± 0.035 (n = 2) |" in report
    assert "5-fold minus leave-one-centre-out on the same scans: +0.300 [+0.300, +0.300], 5-fold better in 6 of 6" in report


def test_a_table_without_the_columns_exits_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("seed,dice\n0,0.5\n")
    with pytest.raises(SystemExit) as exit_info:
        phantom_evidence.main(["--demo-simple", str(bad), "--docs", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"error: {bad}: not a per-scan table "
                                       "(missing columns ['patient', 'centre', 'sensitivity'])\n")
    assert not (tmp_path / "phantom_evidence.md").exists()
