"""TensorFlow's thread settings for inference on this CPU: intra-op x inter-op pools, float32 and bfloat16.

TensorFlow fixes its thread pools when it starts, so each setting runs in its own child
process: the planar res-u-net's forward pass over one window (``--size`` slices x ``--rows``²,
batch 1, the streamed encoder's two halves as ``predict_volume`` calls them), ``--repeats``
timed calls after a warm-up. Rounds alternate the order of the settings, so drift of a shared
machine hits all of them alike; each child reports the median wall time and CPU time per call.
Ratios are to TensorFlow's defaults (both pools = the number of cores) measured in the same run.

    python benchmarks/bench_threads.py [--rows 128] [--repeats 5] [--rounds 2] [--out docs/bench_threads.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _child(args: argparse.Namespace) -> None:
    import numpy as np
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    from planar3d.inference import precision
    from planar3d.nets.model import build_model

    model = build_model((args.size, args.rows, args.rows, 1), encoder_weights=None, seed=0)
    net = precision.inference_model(model, args.precision)
    forward = precision.forward_functions(net, args.precision)
    window = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.rows, args.rows, 1)).astype(np.float32))
    call = lambda: np.asarray(tf.cast(forward.decode(forward.encode(window)), tf.float32))  # noqa: E731
    call()
    walls, cpus = [], []
    for _ in range(args.repeats):
        start, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    print(json.dumps({"wall": statistics.median(walls), "cpu": statistics.median(cpus)}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="window slices (default 16)")
    parser.add_argument("--rows", type=int, default=128, help="window rows = cols (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per child (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all settings, order alternating (default 2)")
    parser.add_argument("--out", type=Path, default=DOCS / "bench_threads.md", help="report (default docs/bench_threads.md)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--intra", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--inter", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine

    cores = os.cpu_count() or 1
    settings = [(0, 0), (1, 1), (cores, 1), (1, cores), (2 * cores, 1)]
    names = {(0, 0): f"defaults (intra {cores}, inter {cores})"}
    precisions = ("float32", "bfloat16")
    results: dict[tuple, list[dict]] = {}
    load = os.getloadavg()
    for round_ in range(args.rounds):
        order = [(s, p) for s in settings for p in precisions]
        for setting, precision in (order if round_ % 2 == 0 else order[::-1]):
            command = [sys.executable, __file__, "--child", "--intra", str(setting[0]), "--inter", str(setting[1]),
                       "--precision", precision, "--size", str(args.size), "--rows", str(args.rows),
                       "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.setdefault((setting, precision), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(setting, precision, results[(setting, precision)][-1], flush=True)

    def median(setting, precision, key):
        return statistics.median(r[key] for r in results[(setting, precision)])

    lines = ["# Thread settings for inference", "",
             f"Command: `python benchmarks/bench_threads.py --rows {args.rows} --repeats {args.repeats} --rounds {args.rounds}`", "",
             f"Machine: {machine()}. Load average (1/5/15 min) at the start: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; "
             f"at the end: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}.", "",
             f"One window 1×{args.size}×{args.rows}×{args.rows}×1 through the planar res-u-net (random weights), "
             f"encode + decode as `predict_volume` calls them; per child the median of {args.repeats} calls after a "
             f"warm-up, then the median over {args.rounds} rounds (order alternating). Ratios to the defaults of "
             "the same precision, from wall time (CPU time in brackets).", "",
             "| intra-op | inter-op | precision | wall s / call | CPU s / call | ratio to defaults, wall (CPU) |",
             "|---|---|---|---:|---:|---:|"]
    for setting in settings:
        for precision in precisions:
            wall, cpu = median(setting, precision, "wall"), median(setting, precision, "cpu")
            base_wall, base_cpu = median((0, 0), precision, "wall"), median((0, 0), precision, "cpu")
            label = names.get(setting)
            intra, inter = (label, "") if label else (str(setting[0]), str(setting[1]))
            lines.append(f"| {intra} | {inter} | {precision} | {wall:.3f} | {cpu:.3f} | {wall / base_wall:.3f} ({cpu / base_cpu:.3f}) |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
