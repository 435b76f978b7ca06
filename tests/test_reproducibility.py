"""What is bit-identical on one machine, and what a run records about the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from planar3d.config import make_config
from planar3d.errors import Planar3DError
from planar3d.machine import cpu_isa_flags
from planar3d.training import fit, run_folder, segment

TINY = dict(size=32, epochs=2, batch_size=2, patience=5, lr=1e-3, lr_decay=0.0, phantom_n_per_centre=3)
TINY_FLAGS = ["--preset", "demo", "--size", "32", "--epochs", "2", "--batch-size", "2", "--patience", "5",
              "--lr", "0.001", "--lr-decay", "0", "--phantom-n-per-centre", "3"]

_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512_bf16 avx512_vnni amx_tile sha_ni

processor\t: 1
flags\t\t: fpu sse avx
"""


def test_cpu_isa_flags_parses_the_first_processor():
    assert cpu_isa_flags(_CPUINFO) == ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512_vnni", "avx512f", "f16c",
                                       "fma", "sse4_1", "sse4_2"]
    assert cpu_isa_flags("Features\t: fp asimd sve\n") == []
    assert cpu_isa_flags("") == []


def test_cosine_schedule_runs_from_lr_to_zero():
    config = make_config("demo", lr=1e-3, lr_decay=0.0, lr_schedule="cosine", epochs=4)
    schedule = fit.learning_rate(config, steps_per_epoch=10)
    assert [float(schedule(step)) for step in (0, 20, 40)] == pytest.approx([1e-3, 5e-4, 0.0], rel=1e-6, abs=1e-12)
    with pytest.raises(Planar3DError, match="lr_schedule 'cosine' needs the number of steps per epoch"):
        fit.learning_rate(config)
    assert fit.learning_rate(make_config("demo", lr_schedule="constant", lr_decay=0.0, lr=2e-3)) == 2e-3
    paper = fit.learning_rate(make_config("paper"))
    assert float(paper(0)) == pytest.approx(5e-5) and float(paper(1e7)) == pytest.approx(5e-5 / (1 + 1.99))
    with pytest.raises(Planar3DError, match=r"lr_schedule 'cosine' replaces the inverse-time lr_decay; set lr_decay "
                                            r"to 0. Received: lr_schedule='cosine', lr_decay=1.99e-07"):
        make_config("paper", lr_schedule="cosine")


def _weights(path: Path) -> list[np.ndarray]:
    return keras.models.load_model(path, compile=False, safe_mode=True).get_weights()


@pytest.mark.slow
def test_rerun_in_a_new_process_is_bit_identical(home, tmp_path):
    """Same machine, same thread count, same seed, op determinism on: every logged loss,
    every weight of best.keras and every test metric are equal to the last bit."""
    first = segment.train_fold(make_config("demo", **TINY), 1, tmp_path / "first", verbose=0)
    env = {**os.environ, "PYTHONPATH": str(Path(segment.__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-m", "planar3d.train", "--fold", "1", "--out", str(tmp_path / "second"),
                             *TINY_FLAGS], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = tmp_path / "first" / "fold_1", tmp_path / "second" / "fold_1"
    assert (one / "log.csv").read_text() == (two / "log.csv").read_text()
    assert (one / "metrics.csv").read_text() == (two / "metrics.csv").read_text()
    for a, b in zip(_weights(one / "best.keras"), _weights(two / "best.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
    machine = json.loads((one / "versions.json").read_text())["machine"]
    assert machine["cpu_isa"] == cpu_isa_flags() and machine["op_determinism"] is True
    assert machine["cpu_count"] == os.cpu_count() and isinstance(machine["onednn_env"], dict)
    assert [r["dice"] for r in first] == [r["dice"] for r in run_folder.read_metrics(two / "metrics.csv")]


def test_versions_name_the_source_commit_of_a_checkout_and_none_elsewhere(tmp_path):
    from planar3d.training.run_folder import source_revision

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("the tests do not run from a git checkout")
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    assert source_revision() == head + ("-dirty" if dirty else "")
    # a planar3d folder inside another repository's subfolder is not that repository's commit
    copy = tmp_path / "other" / "lib" / "planar3d"
    copy.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "other")], check=True)
    assert source_revision(copy) is None
    assert source_revision(tmp_path) is None  # no repository at all


@pytest.mark.slow
def test_no_deterministic_rerun_on_a_cpu_is_bit_identical(home, tmp_path):
    """README "What is reproducible": on a CPU, ``--no-deterministic`` (op determinism off) still
    gives the same losses, weights and test Dice on a re-run in a new process."""
    import planar3d.nets.layers  # noqa: F401  (registers the custom layers that best.keras names)

    root = str(Path(segment.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    folds = []
    for name in ("first", "second"):
        result = subprocess.run([sys.executable, "-m", "planar3d.train", "--fold", "1", "--out", str(tmp_path / name),
                                 *TINY_FLAGS, "--no-deterministic"], capture_output=True, text=True, env=env, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        folds.append(tmp_path / name / "fold_1")
    one, two = folds
    for fold in folds:  # the flag took effect
        assert json.loads((fold / "config.json").read_text())["deterministic"] is False
        assert json.loads((fold / "versions.json").read_text())["machine"]["op_determinism"] is False
    assert (one / "log.csv").read_text() == (two / "log.csv").read_text()
    assert (one / "metrics.csv").read_text() == (two / "metrics.csv").read_text()
    for a, b in zip(_weights(one / "best.keras"), _weights(two / "best.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
