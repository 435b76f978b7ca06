"""Runs repeated over seeds: statistics, summary, ``--seeds`` on crossval and train (tiny phantom)."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from planar3d import crossval, train
from planar3d.config import load_config, make_config
from planar3d.errors import Planar3DError
from planar3d.grid import seed_config, seed_statistics, seeds_summary_markdown

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
    assert train.main(["--fold", "0", "--seed", "1", "--seeds", "0", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: pass either --seed (one run) or --seeds (one run per seed), not both. "
        "Received: --seed 1 --seeds 0 1\n")
    with pytest.raises(Planar3DError, match=r"Received: seeds=\[2, 2\]"):
        make_config("demo", seeds=[2, 2])
    config = make_config("demo", seeds=[3, 4])
    assert seed_config(config, 4).seed == 4 and seed_config(config, 4).seeds is None
    assert config.training_identity() == make_config("demo", seeds=[0]).training_identity()


@pytest.fixture(scope="module")
def home(tmp_path_factory, vgg16_weights_path):
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLANAR3D_HOME", str(root))
        patch.setenv("PLANAR3D_VGG16_WEIGHTS", str(vgg16_weights_path))
        yield root


@pytest.mark.slow
def test_crossval_over_two_seeds_then_train_reuses_them(home, tmp_path, capsys):
    out = tmp_path / "run"
    assert crossval.main([*TINY_FLAGS, "--folds", "2", "--seeds", "0", "1", "--out", str(out)]) == 0
    for seed in (0, 1):
        fold = out / f"seed_{seed}" / "fold_2"
        assert (fold / "done.json").is_file()
        assert load_config(fold / "config.json") == make_config("demo", **TINY, seed=seed, folds=[2])
    assert not (out / "fold_2").exists()
    logs = [(out / f"seed_{s}" / "fold_2" / "log.csv").read_text() for s in (0, 1)]
    assert logs[0] != logs[1]  # the seed reaches the training
    with (out / "results.csv").open() as handle:
        results = list(csv.DictReader(handle))
    per_fold = [train.read_metrics(out / f"seed_{s}" / "fold_2" / "metrics.csv") for s in (0, 1)]
    assert [(int(r["seed"]), r["patient"]) for r in results] == [(s, r["patient"]) for s in (0, 1) for r in per_fold[s]]
    assert [float(r["dice"]) for r in results] == [r["dice"] for s in (0, 1) for r in per_fold[s]]
    means = [statistics.mean(r["dice"] for r in rows) for rows in per_fold]
    summary = (out / "summary.md").read_text()
    assert f"| dice | **{statistics.mean(means):.3f} ± {statistics.stdev(means):.3f} (n=2)** |" in summary
    assert (out / "boxplot_seeds.png").stat().st_size > 0 and (out / "boxplot.png").stat().st_size > 0
    capsys.readouterr()
    # train --seeds on the same folder reuses both finished runs and prints the same statistics
    assert train.main(["--fold", "2", *TINY_FLAGS, "--seeds", "0", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already finished") == 2
    assert f"| dice | **{statistics.mean(means):.3f} ± {statistics.stdev(means):.3f} (n=2)** |" in printed
    assert json.loads((out / "seed_1" / "fold_2" / "done.json").read_text())["epochs"] == 1
