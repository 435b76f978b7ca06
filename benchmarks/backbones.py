"""Every registry backbone × mapping as a 3D U-Net: parameters, GFLOP, training-step time, working memory.

For each backbone of :data:`planar3d.nets.backbones.BACKBONES` one fresh process builds
``build_segmenter(backbone, window, mapping, encoder_weights=None)`` for every mapping
(planar, acs, soft_acs, inflate, none = random 3D), compiles it (Adam, ``bce_dice_loss``,
whole network trained) and measures:

- parameters (``count_params``) and forward GFLOP per window (2 × multiply-adds of every
  convolution and dense layer, counted from the kernels and output shapes; soft ACS counts
  its three planes);
- working memory of a training step: peak RSS during a warm-up and one step (high-water
  mark reset through ``/proc/self/clear_refs`` once the models are built) minus the RSS at
  that moment. The mappings run one after another in the same process, so glibc is made to
  return every large block to the system when freed (``MALLOC_MMAP_THRESHOLD_=65536``, set
  before TensorFlow starts): a block freed by one mapping cannot hide the next one's;
- training-step time: medians of ``--repeats`` ``train_on_batch`` calls after a warm-up,
  all mappings interleaved, so load from other work hits every mapping alike.

Ratios are to planar in the same process. Writes ``docs/backbones.md`` (and the raw rows to
``docs/backbones.json``); Table 1 of Baheti et al. 2023 is put beside our counts.

    python benchmarks/backbones.py [--backbones vgg16,resnet50,...] [--slices 32] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import interleaved_medians, machine  # noqa: E402

from planar3d.config import MAPPINGS  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: Baheti et al. 2023, Table 1 (BraTS 2020, 4 MRI sequences, 64^3 patches).
PAPER_TABLE1 = {"Standard ResUNet (3D, random)": 33_377_000, "ResNet50 + UNet (ACS)": 25_821_000}


def _gflop(model) -> float:
    """2 × multiply-adds of every layer with a kernel, for one window."""
    import numpy as np

    from planar3d.nets.layers import SoftACSConv3D

    flops = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        positions = int(np.prod(layer.output.shape[1:-1]))
        planes = 3 if isinstance(layer, SoftACSConv3D) else 1
        flops += 2 * planes * positions * int(np.prod(kernel.shape))
    return flops / 1e9


def _rss_gb(field: str) -> float:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.M).group(1)) / 1e6


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _child(args: argparse.Namespace) -> None:
    """One backbone, every mapping: counts, working memory, interleaved times; one JSON line."""
    import gc

    import keras
    import numpy as np

    from planar3d.nets.losses import bce_dice_loss
    from planar3d.nets.heads import build_segmenter

    window = (args.slices, args.size, args.size, 1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(1, *window)).astype("float32")
    y = (rng.random((1, *window)) < 0.05).astype("float32")
    rows, steps = {}, {}
    for mapping in MAPPINGS:
        start = time.perf_counter()
        keras.utils.set_random_seed(0)
        model = build_segmenter(args.backbone, window, mapping=mapping, encoder_weights=None)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=bce_dice_loss)
        rows[mapping] = {"params": int(model.count_params()), "gflop": _gflop(model),
                         "build_s": time.perf_counter() - start}
        steps[mapping] = (lambda m: (lambda: m.train_on_batch(x, y)))(model)
    for mapping in MAPPINGS:
        gc.collect()
        built = _rss_gb("VmRSS")
        _reset_peak_rss()
        steps[mapping]()
        steps[mapping]()
        rows[mapping]["working_gb"] = _rss_gb("VmHWM") - built
    medians = interleaved_medians(steps, repeats=args.repeats, warmup=0)  # the memory runs warmed up
    for mapping, seconds in medians.items():
        rows[mapping]["step_s"] = seconds
    print(json.dumps({"backbone": args.backbone, "rows": rows}))


def _paper_counts() -> dict[str, int]:
    """Our ResNet50 U-Net at the paper's setting: 4 sequences, 4 classes (softmax), 64^3."""
    from planar3d.nets.heads import build_segmenter

    ours = {}
    for mapping in ("acs", "none"):
        ours[mapping] = int(build_segmenter("resnet50", (64, 64, 64, 4), mapping=mapping, encoder_weights=None,
                                            n_classes=4).count_params())
    return ours


def _table(results: dict[str, dict]) -> list[str]:
    lines = ["| backbone | mapping | params | × planar | GFLOP / window | × planar | train step s | × planar | "
             "working GB | × planar |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for backbone, rows in results.items():
        base = rows["planar"]
        for mapping in MAPPINGS:
            row = rows[mapping]
            lines.append(
                f"| {backbone} | {mapping} | {row['params']:,} | {row['params'] / base['params']:.2f} | "
                f"{row['gflop']:.1f} | {row['gflop'] / base['gflop']:.2f} | {row['step_s']:.2f} | "
                f"{row['step_s'] / base['step_s']:.2f} | {row['working_gb']:.2f} | "
                f"{row['working_gb'] / base['working_gb']:.2f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    from planar3d.nets.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES),
                        help=f"comma-separated registry names (default {','.join(BACKBONES)})")
    parser.add_argument("--slices", type=int, default=32, help="slices of the window, a multiple of 32 (default 32)")
    parser.add_argument("--size", type=int, default=64, help="rows = cols of the window, a multiple of 32 (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed training steps per mapping (default 3)")
    parser.add_argument("--out", type=Path, default=DOCS, help=f"folder for backbones.md/.json (default {DOCS})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = sorted(set(backbones) - set(BACKBONES))
    if unknown:
        parser.error(f"unknown backbones {unknown}; choose from {sorted(BACKBONES)}")
    command = "python benchmarks/backbones.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{machine()}\nwindow 1 x {args.slices}x{args.size}x{args.size}x1, {args.repeats} repeats", flush=True)
    load_before = os.getloadavg()[1]
    results: dict[str, dict] = {}
    ours = _paper_counts()
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for backbone in backbones:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--backbone", backbone, "--slices", str(args.slices),
             "--size", str(args.size), "--repeats", str(args.repeats)],
            capture_output=True, text=True, env=env,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise SystemExit(f"{backbone} failed with status {done.returncode}:\n{tail}")
        results[backbone] = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
        print(f"{backbone} [{time.perf_counter() - start:.0f} s wall]", flush=True)
        print("\n".join(_table({backbone: results[backbone]})[2:]), flush=True)
        _write(args, results, ours, command, load_before)


def _write(args, results, ours, command, load_before) -> None:
    """docs/backbones.md and .json with the backbones measured so far."""
    from planar3d.atomic import write_text_atomic

    table = _table(results)
    lines = [
        "# Registry backbones × mappings as 3D U-Nets",
        "",
        f"`build_segmenter(backbone, ({args.slices}, {args.size}, {args.size}, 1), mapping, encoder_weights=None)` "
        "(decoder filters 256-128-64-32-16, one sigmoid class, slices downsampled with the rows), batch 1, "
        "Adam, `bce_dice_loss`, whole network trained. *none* is the random 3D baseline (the inflated topology, "
        "nothing copied). GFLOP: 2 × multiply-adds of every convolution and dense layer, forward, one window. "
        f"Train step: median of {args.repeats} `train_on_batch` calls after a warm-up, the five mappings of a "
        "backbone interleaved in one process. Working: peak RSS over a warm-up and one step minus the RSS "
        "before (activations, gradients, Adam slots), large blocks returned to the system when freed "
        "(`MALLOC_MMAP_THRESHOLD_=65536`). Ratios to planar of the same backbone.",
        "",
        *table,
        "",
        "## Against the paper's Table 1 (Baheti et al. 2023)",
        "",
        "| model | paper | ours (4 sequences, 4 softmax classes, 64³) |",
        "|---|---:|---:|",
        f"| ResNet50 + UNet, ACS | {PAPER_TABLE1['ResNet50 + UNet (ACS)']:,} | {ours['acs']:,} |",
        f"| ResNet50 + UNet, random 3D (inflated 3×3×3 kernels) | — | {ours['none']:,} |",
        f"| Standard ResUNet (3D, depth 4, 32 base filters) | {PAPER_TABLE1['Standard ResUNet (3D, random)']:,} | "
        "not built here |",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {machine()}. Load average (5 min) {load_before:.1f} at the start, "
        f"{os.getloadavg()[1]:.1f} at the end (other processes share the cores).",
        "",
    ]
    write_text_atomic(args.out / "backbones.json", json.dumps({"results": results, "paper_counts": ours}, indent=1))
    write_text_atomic(args.out / "backbones.md", "\n".join(lines))


if __name__ == "__main__":
    main()
