"""Planar vs ACS vs I3D inflation vs random 3×3×3: parameters, time and peak memory, same network.

The planar paper (Kolarik et al. 2020) says ACS convolutions cost about 3× the memory of
planar ones; the ACS paper (Baheti et al. 2023) says ACS adds no compute, memory or
parameters. This measures all four encoder mappings of ``build_model(mapping=...)`` on one
window size: the whole res-u-net (decoder identical in every variant), 1-channel input.

Two phases per mapping:
- ``forward``: inference, ``model(x, training=False)`` in a ``tf.function``;
- ``train``: ``model.compile(Adam, bce_dice_loss)`` + ``train_on_batch`` (encoder frozen for
  the pretrained mappings, trained for ``none``, as ``build_model`` defaults).
Memory: every (mapping, phase) runs once (warm-up + one run) in a fresh subprocess (this
script with ``--child``), so its peak resident memory is its own. Two figures: the whole
process's peak RSS (``getrusage`` ``ru_maxrss``: runtime, weight loading and mapping,
model, computation), and the *working memory* of the computation: the peak RSS while the
phase runs (high-water mark reset through ``/proc/self/clear_refs`` once the model is
built) minus the RSS at that moment (activations, gradients, optimizer slots). Time: one
more subprocess builds every mapping and times all phases interleaved (medians of
``--repeats`` runs after a warm-up), so load from other work on the machine hits every
mapping alike. Writes ``docs/compare_mappings.md`` and ``docs/compare_mappings.png``
(ratios to planar).

    python benchmarks/compare_mappings.py [--size 64] [--slices 16] [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import interleaved_medians, machine, peak_rss_gb  # noqa: E402

MAPPING_NAMES = ("planar", "acs", "inflate", "none")
PHASES = ("forward", "train")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _forward_gflop(model, batch: int) -> float:
    """Multiply-adds × 2 of every convolution for one forward pass of ``batch`` windows."""
    import numpy as np

    flops = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        # a transposed convolution spreads every *input* voxel over its kernel
        shape = layer.input.shape if "Transpose" in type(layer).__name__ else layer.output.shape
        voxels = int(np.prod(shape[1:4]))
        flops += 2 * voxels * int(np.prod(kernel.shape))
    return batch * flops / 1e9


def _rss_gb(field: str) -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, GB."""
    with open("/proc/self/status") as handle:
        return int(re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.M).group(1)) / 1e6


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _variant(args: argparse.Namespace, mapping: str) -> dict:
    """Build one mapping's model and its two phases as zero-argument callables."""
    import keras
    import numpy as np
    import tensorflow as tf

    from planar3d.nets.losses import bce_dice_loss
    from planar3d.nets.model import build_model
    from planar3d.nets.weights import WEIGHTS_ENV_VAR

    weights = "imagenet" if os.environ.get(WEIGHTS_ENV_VAR) and mapping != "none" else None
    model = build_model((args.slices, args.size, args.size, 1), encoder_weights=weights, mapping=mapping, seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(args.batch, args.slices, args.size, args.size, 1)).astype("float32")
    y = (rng.random(x.shape) < 0.01).astype("float32")
    forward = tf.function(lambda window: model(window, training=False))
    model.compile(optimizer=keras.optimizers.Adam(5e-5), loss=bce_dice_loss)
    return {
        "phases": {"forward": lambda: forward(x).numpy(), "train": lambda: model.train_on_batch(x, y)},
        "params_total": int(model.count_params()),
        "params_trainable": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "gflop_forward": _forward_gflop(model, args.batch),
        "encoder_weights": weights or "random",
    }


def _child(args: argparse.Namespace) -> None:
    """Memory child: build one mapping, run one phase (warm-up + one run), print one JSON line."""
    variant = _variant(args, args.variant)
    phase = variant.pop("phases")[args.phase]
    gc.collect()
    build_peak = peak_rss_gb()
    built = _rss_gb("VmRSS")
    if not _reset_peak_rss():
        raise SystemExit("cannot reset the peak RSS (/proc/self/clear_refs): working memory unmeasurable")
    phase()
    start = time.perf_counter()
    phase()
    seconds = time.perf_counter() - start
    run_peak = _rss_gb("VmHWM")
    print(json.dumps({**variant, "variant": args.variant, "phase": args.phase, "isolated_seconds": seconds,
                      "rss_peak_gb": max(build_peak, run_peak), "rss_built_gb": built,
                      "working_gb": run_peak - built}))


def _timing_child(args: argparse.Namespace) -> None:
    """Timing child: every mapping in one process, all phases interleaved; print one JSON line."""
    mappings = args.mappings.split(",")
    functions = {}
    for mapping in mappings:
        for phase, function in _variant(args, mapping)["phases"].items():
            functions[f"{mapping}/{phase}"] = function
    print(json.dumps(interleaved_medians(functions, repeats=args.repeats, warmup=1)))


def _run_child(args: argparse.Namespace, *flags: str) -> dict:
    command = [sys.executable, __file__, "--child", *flags, "--size", str(args.size), "--slices", str(args.slices),
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--mappings", args.mappings]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"child {flags} failed with status {done.returncode}:\n{tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def _table(results: dict[str, dict[str, dict]], mappings: list[str]) -> list[str]:
    base = {phase: results["planar"][phase] for phase in PHASES}
    lines = [
        "| mapping | params total | params trainable | forward GFLOP | forward s | × planar | "
        "train step s | × planar | forward: peak RSS GB | working GB | × planar | "
        "training: peak RSS GB | working GB | × planar |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mapping in mappings:
        cells = [mapping, f"{results[mapping]['forward']['params_total']:,}",
                 f"{results[mapping]['train']['params_trainable']:,}",
                 f"{results[mapping]['forward']['gflop_forward']:.1f}"]
        for phase in PHASES:
            row = results[mapping][phase]
            cells += [f"{row['seconds']:.2f}", f"{row['seconds'] / base[phase]['seconds']:.2f}"]
        for phase in PHASES:
            row = results[mapping][phase]
            cells += [f"{row['rss_peak_gb']:.2f}", f"{row['working_gb']:.3f}",
                      f"{row['working_gb'] / base[phase]['working_gb']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratios(results: dict[str, dict[str, dict]], mappings: list[str]) -> dict[str, list[float]]:
    base = results["planar"]

    def ratio(phase: str, key: str) -> list[float]:
        return [results[m][phase][key] / base[phase][key] for m in mappings]

    return {
        "parameters": ratio("forward", "params_total"),
        "forward time": ratio("forward", "seconds"),
        "training step time": ratio("train", "seconds"),
        "working memory forward": ratio("forward", "working_gb"),
        "working memory training": ratio("train", "working_gb"),
        "peak RSS training": ratio("train", "rss_peak_gb"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="rows = cols of the window (default 64)")
    parser.add_argument("--slices", type=int, default=16, help="slices of the window (default 16)")
    parser.add_argument("--batch", type=int, default=2, help="windows per batch (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per phase after one warm-up (default 5)")
    parser.add_argument("--mappings", default=",".join(MAPPING_NAMES),
                        help=f"comma-separated mappings, planar first (default {','.join(MAPPING_NAMES)})")
    parser.add_argument("--out", type=Path, default=DOCS, help=f"folder for the .md and .png (default {DOCS})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=MAPPING_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _timing_child(args) if args.timing else _child(args)
        return
    mappings = [m.strip() for m in args.mappings.split(",") if m.strip()]
    if not mappings or mappings[0] != "planar" or any(m not in MAPPING_NAMES for m in mappings):
        parser.error(f"--mappings must start with planar and use {MAPPING_NAMES}. Received: --mappings={args.mappings}")

    command = "python benchmarks/compare_mappings.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.mappings = ",".join(mappings)
    print(f"window {args.batch} x {args.slices}x{args.size}x{args.size}x1; memory: one fresh process per "
          f"mapping and phase; time: all interleaved in one process, {args.repeats} repeats", flush=True)
    load_before = os.getloadavg()[1]
    results: dict[str, dict[str, dict]] = {mapping: {} for mapping in mappings}
    for mapping in mappings:
        for phase in PHASES:
            row = _run_child(args, "--variant", mapping, "--phase", phase)
            results[mapping][phase] = row
            print(f"  {mapping:8s} {phase:8s} peak RSS {row['rss_peak_gb']:.2f} GB, built {row['rss_built_gb']:.2f} GB, "
                  f"working {row['working_gb']:.3f} GB, one isolated run {row['isolated_seconds']:.2f} s  "
                  f"[{row['wall_s']:.0f} s wall]", flush=True)
    timing = _run_child(args, "--timing")
    print(f"  interleaved timing [{timing.pop('wall_s'):.0f} s wall]: "
          + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timing.items()), flush=True)
    for mapping in mappings:
        for phase in PHASES:
            results[mapping][phase]["seconds"] = timing[f"{mapping}/{phase}"]

    import matplotlib

    matplotlib.use("Agg")
    from planar3d.atomic import write_text_atomic
    from planar3d.evaluation.notebook_figures import plot_bar_chart

    table = _table(results, mappings)
    print("\n".join(table))
    weights = results["planar"]["forward"]["encoder_weights"]
    lines = [
        "# Encoder mappings compared: planar, ACS, I3D inflation, random 3×3×3",
        "",
        f"Whole res-u-net, 1-channel input, batch {args.batch} × {args.slices}×{args.size}×{args.size}; "
        f"pretrained encoders from `{weights}` VGG16 weights (timings do not depend on the values); "
        "encoder frozen for planar/acs/inflate, trained for none. Times: medians of "
        f"{args.repeats} runs after a warm-up, all mappings and phases interleaved in one process. "
        "Memory: every mapping and phase in its own process (warm-up + one run). *Peak RSS*: the "
        "whole process (`getrusage`; includes TensorFlow, loading and mapping the VGG16 weights, the "
        "model). *Working*: peak RSS while the phase runs (high-water mark reset once the model is "
        "built) minus the RSS at that moment: activations, gradients, optimizer slots; the memory "
        "ratios use it. Forward GFLOP counted analytically from the kernels.",
        "",
        *table,
        "",
        "![ratios to planar](compare_mappings.png)",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {machine()}. Load average (5 min) {load_before:.1f} at the start, "
        f"{os.getloadavg()[1]:.1f} at the end (other processes share the cores).",
        "",
    ]
    markdown = write_text_atomic(args.out / "compare_mappings.md", "\n".join(lines))
    figure = args.out / "compare_mappings.png"
    plot_bar_chart(mappings, _ratios(results, mappings), "ratio to planar", figure,
                   title=f"Encoder mappings, batch {args.batch} x {args.slices}x{args.size}x{args.size}")
    print(f"wrote {markdown} and {figure}")


if __name__ == "__main__":
    main()
