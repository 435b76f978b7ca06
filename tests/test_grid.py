"""Runs repeated over seeds: statistics, summary, ``--seeds`` on crossval and train (tiny phantom)."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from planar3d.cli import crossval as crossval_cli
from planar3d.cli import train as train_cli
from planar3d.config import load_config, make_config
from planar3d.errors import Planar3DError
from planar3d.evaluation.reports import seed_statistics, seeds_summary_markdown
from planar3d.runs.seeds import seed_config
from planar3d.training import run_folder

TINY = dict(size=32, epochs=1, batch_size=2, patience=5, lr=1e-3, lr_decay=0.0, phantom_n_per_centre=3)
TINY_FLAGS = ["--preset", "demo", "--size", "32", "--epochs", "1", "--batch-size", "2", "--patience", "5",
              "--lr", "1e-3", "--lr-decay", "0", "--phantom-n-per-centre", "3"]

# two seeds x two folds x two scans: dice chosen so that every mean is exact in binary
ROWS = [
    {"seed": 0, "fold": 0, "patient": "a", "centre": "01", "dice": 0.5, "sensitivity": 1.0},
    {"seed": 0, "fold": 0, "patient": "b", "centre": "07", "dice": 0.25, "sensitivity": 0.5},
    {"seed": 0, "fold": 1, "patient": "c", "centre": "01", "dice": 0.75, "sensitivity": 1.0},
    {"seed": 0, "fold": 1, "patient": "d", "centre": "07", "dice": 0.5, "sensitivity": 0.5},
    {"seed": 1, "fold": 0, "patient": "a", "centre": "01", "dice": 0.25, "sensitivity": 0.5},
    {"seed": 1, "fold": 0, "patient": "b", "centre": "07", "dice": 0.25, "sensitivity": 0.5},
    {"seed": 1, "fold": 1, "patient": "c", "centre": "01", "dice": 0.5, "sensitivity": 1.0},
    {"seed": 1, "fold": 1, "patient": "d", "centre": "07", "dice": 0.0, "sensitivity": 0.0},
]


def test_seed_statistics_are_means_of_per_seed_means():
    stats = seed_statistics(ROWS)
    assert stats["seeds"] == [0, 1]
    assert stats["per_seed"] == {0: {"dice": 0.5, "sensitivity": 0.75}, 1: {"dice": 0.25, "sensitivity": 0.5}}
    over = stats["over_seeds"]["dice"]
    assert (over["mean"], over["n"], over["min"], over["max"]) == (0.375, 2, 0.25, 0.5)
    assert over["sd"] == statistics.stdev([0.5, 0.25])  # sample sd over seeds
    assert stats["scans"]["dice"]["n"] == 8 and stats["scans"]["dice"]["mean"] == 0.375
    assert stats["per_fold"][0]["dice"]["mean"] == 0.3125 and stats["per_fold"][1]["dice"]["mean"] == 0.4375
    assert stats["per_fold"][1]["dice"]["sd"] == statistics.stdev([0.625, 0.25])
    assert stats["per_centre"]["07"]["sensitivity"]["mean"] == 0.375
    assert list(stats["per_centre"]) == ["01", "07", "overall"]
    one_seed = seed_statistics(ROWS[:4])["over_seeds"]["dice"]
    assert one_seed["n"] == 1 and one_seed["sd"] != one_seed["sd"]  # NaN: no sd over one seed
    with pytest.raises(Planar3DError, match=r"row 0 lacks \['seed'\]"):
        seed_statistics([{"fold": 0, "centre": "01", "dice": 1.0, "sensitivity": 1.0}])


def test_seeds_summary_states_the_statistics_and_their_n():
    config = make_config("demo", seeds=[0, 1])
    text = seeds_summary_markdown(ROWS, config)
    assert text.startswith("# Cross-validation results (demo preset, 2 seeds)")
    sd = statistics.stdev([0.5, 0.25])
    assert f"| dice | **0.375 ± {sd:.3f} (n=2)** | 0.250 – 0.500 |" in text
    assert "| 0 | 4 | 0.500 | 0.750 |" in text and "| 1 | 4 | 0.250 | 0.500 |" in text
    assert "| dice (paper, MSSEG-2016) | 0.69 ± 0.11 | 0.50 ± 0.11 | 0.61 ± 0.05 |" in text
    single = seeds_summary_markdown(ROWS[:4], make_config("demo", seeds=[0]))
    assert "(demo preset, 1 seed)" in single and "**0.500 ± n/a (n=1)**" in single


def test_seed_and_seeds_flags_exclude_each_other(capsys):
    assert train_cli.main(["--fold", "0", "--seed", "1", "--seeds", "0", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: pass either --seed (one run) or --seeds (one run per seed), not both. "
        "Received: --seed 1 --seeds 0 1\n")
    with pytest.raises(Planar3DError, match=r"Received: seeds=\[2, 2\]"):
        make_config("demo", seeds=[2, 2])
    config = make_config("demo", seeds=[3, 4])
    assert seed_config(config, 4).seed == 4 and seed_config(config, 4).seeds is None
    assert config.training_identity() == make_config("demo", seeds=[0]).training_identity()


GRID = ["--folds", "0", "1", "--seeds", "0", "1"]


@pytest.fixture(scope="module")
def none_grid(home, tmp_path_factory):
    """A 2-fold x 2-seed cross-validation trained in this process (``--launcher none``)."""
    out = tmp_path_factory.mktemp("none") / "run"
    assert crossval_cli.main([*TINY_FLAGS, *GRID, "--out", str(out)]) == 0
    return out


def _table(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_crossval_over_two_seeds_then_train_reuses_them(none_grid, capsys):
    out = none_grid
    for seed in (0, 1):
        for fold in (0, 1):
            assert (out / f"seed_{seed}" / f"fold_{fold}" / "done.json").is_file()
        config = load_config(out / f"seed_{seed}" / "fold_0" / "config.json")
        assert config == make_config("demo", **TINY, seed=seed, folds=[0, 1])
    assert not (out / "fold_0").exists()
    logs = [(out / f"seed_{s}" / "fold_0" / "log.csv").read_text() for s in (0, 1)]
    assert logs[0] != logs[1]  # the seed reaches the training
    results = _table(out / "results.csv")
    per_run = {(s, f): run_folder.read_metrics(out / f"seed_{s}" / f"fold_{f}" / "metrics.csv") for s in (0, 1) for f in (0, 1)}
    assert [(int(r["seed"]), int(r["fold"]), r["patient"]) for r in results] == [
        (s, f, r["patient"]) for (s, f), rows in per_run.items() for r in rows]
    assert [float(r["dice"]) for r in results] == [r["dice"] for rows in per_run.values() for r in rows]
    means = [statistics.mean(r["dice"] for f in (0, 1) for r in per_run[(s, f)]) for s in (0, 1)]
    expected = f"| dice | **{statistics.mean(means):.3f} ± {statistics.stdev(means):.3f} (n=2)** |"
    summary = (out / "summary.md").read_text()
    assert expected in summary and "Not finished" not in summary
    assert (out / "boxplot_seeds.png").stat().st_size > 0 and (out / "boxplot.png").stat().st_size > 0
    assert json.loads((out / "grid.json").read_text())["folds"] == [0, 1]
    capsys.readouterr()
    # train --seeds on the same folder reuses both finished runs and prints their statistics
    assert train_cli.main(["--fold", "1", *TINY_FLAGS, "--seeds", "0", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already finished") == 2
    fold_means = [statistics.mean(r["dice"] for r in per_run[(s, 1)]) for s in (0, 1)]
    assert f"| dice | **{statistics.mean(fold_means):.3f} ± {statistics.stdev(fold_means):.3f} (n=2)** |" in printed
    # another configuration in the same run folder is refused before any work
    assert crossval_cli.main([*TINY_FLAGS, *GRID, "--lr", "1e-4", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {out}: run folder from a different config (differs in ['lr']); choose another --out or pass --overwrite\n")


@pytest.mark.slow
def test_local_jobs_failed_run_reported_resubmitted_alone_and_equal_to_in_process(none_grid, tmp_path, capsys):
    """submitit's local executor runs the grid's unfinished runs as job processes: seed 0's two
    finished runs are copied from the in-process grid (so only seed 1 is trained here); one
    fold's run folder holds bad data (an unreadable config.json), so its job fails; gather names
    it and its log; after the fix the same command submits that job alone, and the table equals
    the in-process run's."""
    out = tmp_path / "run"
    shutil.copytree(none_grid / "seed_0", out / "seed_0")
    bad = out / "seed_1" / "fold_1" / "config.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{truncated")
    command = [*TINY_FLAGS, *GRID, "--launcher", "local", "--slurm-array-parallelism", "2", "--out", str(out)]
    assert crossval_cli.main(command) == 1
    err = capsys.readouterr().err
    (first,) = json.loads((out / "jobs.json").read_text())["submissions"]
    assert [(j["seed"], j["fold"]) for j in first["jobs"]] == [(1, 0), (1, 1)]  # seed 0 is finished
    failed = first["jobs"][1]
    assert (f"not finished: seed 1 fold 1: failed (job {failed['job_id']}: planar3d.errors.InputFileError: "
            f"{bad}: not a readable configuration") in err
    assert f"logs: {failed['stdout']}, {failed['stderr']}" in err and Path(failed["stderr"]).is_file()
    summary = (out / "summary.md").read_text()
    assert "## Not finished: 1 of 4 runs (left out of every figure above)" in summary
    assert f"| seed 1 fold 1 | failed | job {failed['job_id']}: " in summary
    assert len(_table(out / "results.csv")) == 9  # the three finished runs' test scans
    assert crossval_cli.main(["--gather", str(out)]) == 1
    assert f"not finished: seed 1 fold 1: failed (job {failed['job_id']}" in capsys.readouterr().err

    finished = {p: p.stat().st_mtime_ns for p in out.glob("seed_*/fold_*/done.json")}
    assert len(finished) == 3
    bad.unlink()
    assert crossval_cli.main(command) == 0
    submissions = json.loads((out / "jobs.json").read_text())["submissions"]
    assert [(j["seed"], j["fold"]) for j in submissions[1]["jobs"]] == [(1, 1)]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert _table(out / "results.csv") == _table(none_grid / "results.csv")
    for log in sorted(none_grid.glob("seed_*/fold_*/log.csv")):  # the same trainings, epoch by epoch
        assert (out / log.relative_to(none_grid)).read_text() == log.read_text()
    assert (out / "summary.md").read_text() == (none_grid / "summary.md").read_text()
