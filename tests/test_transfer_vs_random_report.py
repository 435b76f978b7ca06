"""The report of ``benchmarks/transfer_vs_random.py``: file stem, phantom mode and the paired
table are written from finished runs (the training itself is the tested ``train_fold``)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import transfer_vs_random  # noqa: E402


def _rows(offset: float) -> list[dict]:
    return [{"patient": f"0{c}p01", "centre": f"0{c}", "dice": 0.5 + offset + 0.01 * c, "sensitivity": 0.9}
            for c in (1, 2, 3)]


def test_report_names_files_by_stem_and_states_the_phantom_mode(tmp_path):
    args = argparse.Namespace(preset="demo", fold=4, data=None, phantom_mode="realistic",
                              name="transfer_vs_random_realistic", docs=tmp_path)
    curves = {"planar_imagenet_frozen": {0: [0.2, 0.4], 1: [0.3, 0.5]},
              "planar_random_trainable": {0: [0.1, 0.2], 1: [0.1, 0.3]}}
    test = {"planar_imagenet_frozen": {0: _rows(0.1), 1: _rows(0.2)},
            "planar_random_trainable": {0: _rows(0.0), 1: _rows(0.05)}}
    transfer_vs_random._write_outputs(args, ["--phantom-mode", "realistic"], curves, test, epochs=2)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "transfer_vs_random_realistic.csv", "transfer_vs_random_realistic.md", "transfer_vs_random_realistic.png"]
    report = (tmp_path / "transfer_vs_random_realistic.md").read_text()
    assert "built-in phantom (realistic mode)" in report
    assert "Command: `python benchmarks/transfer_vs_random.py --phantom-mode realistic`" in report
    assert "![validation Dice per epoch](transfer_vs_random_realistic.png)" in report
    # ImageNet minus random: seed 0 by 0.1, seed 1 by 0.15 on every scan, so the mean is 0.125
    assert "| planar_random_trainable | +0.125 |" in report
    assert "6 of 6 pairs" in report
    with (tmp_path / "transfer_vs_random_realistic.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["variant"] for r in rows} == set(curves)


def test_unknown_phantom_mode_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        transfer_vs_random.main(["--phantom-mode", "noisy"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'noisy'" in capsys.readouterr().err
