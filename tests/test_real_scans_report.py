"""The bookkeeping of ``benchmarks/real_scans.py`` (the trainings themselves are the tested crossval):
which seeds of a grid count, the fold times, and that a section keeps the command that computed it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import real_scans  # noqa: E402


def _fold(grid: Path, seed: int, fold: int, minutes: float | None, patient: str, dice: float) -> None:
    folder = grid / f"seed_{seed}" / f"fold_{fold}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "metrics.csv").write_text(f"fold,patient,dice\n{fold},{patient},{dice}\n")
    if minutes is not None:
        (folder / "done.json").write_text("{}")
        start = (folder / "config.json").stat().st_mtime
        os.utime(folder / "done.json", (start + 60 * minutes, start + 60 * minutes))


def test_only_seeds_with_every_fold_finished_are_reported_with_their_fold_times(tmp_path):
    grid = tmp_path / "planar"
    _fold(grid, 0, 0, 3.0, "a", 0.5)
    _fold(grid, 0, 2, 4.5, "b", 0.7)
    _fold(grid, 1, 0, 2.0, "a", 0.6)
    _fold(grid, 1, 2, None, "b", 0.1)  # killed before its done.json: seed 1 is half a grid
    assert real_scans.finished_seeds(grid, [0, 1, 2], [0, 2]) == [0]
    rows = real_scans.fold_rows(grid, real_scans.finished_seeds(grid, [0, 1, 2], [0, 2]))
    assert [(r["seed"], r["patient"], r["dice"], r["fold_minutes"]) for r in rows] == [(0, "a", "0.5", 3.0),
                                                                                      (0, "b", "0.7", 4.5)]
    assert real_scans.crossval(grid, [], [0, 1], [0, 2], tmp_path / "log", train=False) == 0.0
    assert not (tmp_path / "log").exists()  # nothing started


def test_a_section_keeps_the_command_that_computed_it(tmp_path, monkeypatch):
    monkeypatch.setattr(real_scans, "RUNS", tmp_path / "runs.json")
    monkeypatch.setattr(real_scans, "machine", lambda: "test machine")
    real_scans.record_runs(["phantom", "raw"], {"phantom simple: training": 60.0, "raw: segmenting": 30.0}, ["--a"])
    runs = real_scans.record_runs(["brats"], {"brats planar: training": 120.0}, ["--sections", "brats"])
    assert runs["phantom"]["command"] == "python benchmarks/real_scans.py --a"
    assert runs["phantom"]["times"] == {"phantom simple: training": 60.0}
    assert runs["raw"]["times"] == {"raw: segmenting": 30.0}
    assert runs["brats"]["command"] == "python benchmarks/real_scans.py --sections brats"
    assert json.loads((tmp_path / "runs.json").read_text()) == runs
    assert real_scans._provenance(runs, "brats")[0].startswith("Command: `python benchmarks/real_scans.py --sections brats`")
