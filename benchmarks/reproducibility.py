"""What changes a training run's numbers: the same tiny training under different kernel settings.

Each variant is ``python -m planar3d.train`` in a fresh process with the same seed and data
(tiny phantom, 32³, 2 epochs) and one environment change; the result is compared with the
``reference`` run bit for bit (every logged loss, every weight of ``best.keras``):

- ``rerun``: nothing changed (same machine, threads, kernels);
- ``avx2``: ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN kernels of a CPU without AVX-512);
- ``one_thread``: ``TF_NUM_INTRAOP_THREADS=1`` (another core count);
- ``no_deterministic``: ``--no-deterministic`` (TensorFlow op determinism off);
- ``no_onednn``: ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow's own Eigen kernels).

Writes ``docs/reproducibility.md``.

    python benchmarks/reproducibility.py [--out runs/reproducibility] [--variants rerun,avx2,...]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "demo", "--size", "32", "--epochs", "2", "--batch-size", "2", "--patience", "5",
         "--lr", "0.001", "--lr-decay", "0", "--lr-schedule", "constant", "--phantom-n-per-centre", "3", "--fold", "1"]
#: variant -> (environment changes, extra flags)
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "reference": ({}, []),
    "rerun": ({}, []),
    "avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    "one_thread": ({"TF_NUM_INTRAOP_THREADS": "1"}, []),
    "no_deterministic": ({}, ["--no-deterministic"]),
    "no_onednn": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
}


def _log(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _compare(reference: Path, other: Path) -> dict:
    import keras
    import numpy as np

    import planar3d.nets.layers  # noqa: F401  (registers the custom layers for loading)

    a = keras.models.load_model(reference / "best.keras", compile=False).get_weights()
    b = keras.models.load_model(other / "best.keras", compile=False).get_weights()
    diffs = [float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b)]
    scale = max(float(np.max(np.abs(x))) for x in a if x.size)
    log_a, log_b = _log(reference / "log.csv"), _log(other / "log.csv")
    return {
        "log identical": (reference / "log.csv").read_text() == (other / "log.csv").read_text(),
        "weights identical": all(d == 0.0 for d in diffs),
        "max weight diff": max(diffs), "weight scale": scale,
        "val_loss": [float(r["val_loss"]) for r in log_b],
        "val_loss diff": max(abs(float(x["val_loss"]) - float(y["val_loss"])) for x, y in zip(log_a, log_b)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reproducibility", help="run folder (default runs/reproducibility)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated (default all: {','.join(VARIANTS)})")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="folder for reproducibility.md (default docs/)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if "reference" not in variants:
        variants.insert(0, "reference")
    times = {}
    for variant in variants:
        env_change, flags = VARIANTS[variant]
        run = args.out / variant
        if not (run / "fold_1" / "done.json").is_file():
            start = time.perf_counter()
            env = {**os.environ, **env_change, "PYTHONPATH": str(ROOT)}
            result = subprocess.run([sys.executable, "-m", "planar3d.train", *FLAGS, *flags, "--out", str(run)],
                                    env=env, capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"{variant} failed:\n{result.stderr[-3000:]}")
            times[variant] = time.perf_counter() - start
        print(f"{variant}: done", flush=True)
    reference = args.out / "reference" / "fold_1"
    lines = ["# Reproducibility: one tiny training under different kernel settings", "",
             "Same seed (0), data (tiny phantom, 3 per centre, 32³), fold 1, 2 epochs, each run a fresh "
             "`python -m planar3d.train` process; compared with `reference` bit for bit.", "",
             "| variant | change | log.csv identical | best.keras identical | max weight difference | "
             "largest val_loss difference |", "|---|---|---|---|---:|---:|"]
    for variant in variants[1:]:
        env_change, flags = VARIANTS[variant]
        change = " ".join([*(f"{k}={v}" for k, v in env_change.items()), *flags]) or "none"
        c = _compare(reference, args.out / variant / "fold_1")
        lines.append(f"| {variant} | `{change}` | {'yes' if c['log identical'] else 'no'} | "
                     f"{'yes' if c['weights identical'] else 'no'} | {c['max weight diff']:.3g} "
                     f"(largest weight {c['weight scale']:.3g}) | {c['val_loss diff']:.3g} |")
    command = "python benchmarks/reproducibility.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines += ["", f"Command: `{command.strip()}`", "", f"Machine: {machine()}", ""]
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "reproducibility.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
