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
from conftest import TINY_FLAGS

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


def _train_in_a_new_process(out: Path, *flags: str) -> Path:
    env = {**os.environ, "PYTHONPATH": str(Path(segment.__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-m", "planar3d.train", "--fold", "0", "--out", str(out), *TINY_FLAGS, *flags],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "fold_0"


def _assert_bit_identical(one: Path, two: Path) -> None:
    assert (one / "log.csv").read_text() == (two / "log.csv").read_text()
    assert (one / "metrics.csv").read_text() == (two / "metrics.csv").read_text()
    for a, b in zip(_weights(one / "best.keras"), _weights(two / "best.keras"), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_rerun_in_a_new_process_is_bit_identical(tiny_fold_0, tmp_path):
    """Same machine, same thread count, same seed, op determinism on: every logged loss,
    every weight of best.keras and every test metric are equal to the last bit."""
    one, first = tiny_fold_0
    two = _train_in_a_new_process(tmp_path / "second")
    _assert_bit_identical(one, two)
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
def test_no_deterministic_rerun_on_a_cpu_is_bit_identical(tiny_fold_0, tmp_path):
    """README "What is reproducible": on a CPU, ``--no-deterministic`` (op determinism off) gives
    the same losses, weights and test Dice as the deterministic run, in a new process; so its
    re-runs are bit-identical too (each equals the same deterministic run)."""
    import planar3d.nets.layers  # noqa: F401  (registers the custom layers that best.keras names)

    one, _ = tiny_fold_0
    two = _train_in_a_new_process(tmp_path / "second", "--no-deterministic")
    # the flag took effect
    assert json.loads((two / "config.json").read_text())["deterministic"] is False
    assert json.loads((two / "versions.json").read_text())["machine"]["op_determinism"] is False
    _assert_bit_identical(one, two)
