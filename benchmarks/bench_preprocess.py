"""Preprocessing cost at the paper's size versus loading the cached result.

For one native grid per centre (a phantom subject at ``--scale``, default 1 = the paper's
Table 1 grids 144x512x512, 128x224x256, 261x336x336) it times, in one process:

* miss: ``load_case`` on an empty cache = validated NIfTI load + ``preprocess`` to
  ``--size``^3 + writing the cache entry;
* hit: ``load_case`` on the filled cache (content hash of the source files + memory map)
  followed by reading every voxel of the volume and mask, so lazy memory mapping cannot
  flatter it; median of ``--repeats`` runs.

It prints the ratio miss / hit per grid (goal: at least 50) and the mask round-trip Dice
(preprocess -> to_native -> threshold 0.5) at that size.

Usage:
    python benchmarks/bench_preprocess.py [--size 256] [--scale 1.0] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from planar3d.data.cache import load_case
from planar3d.io.nifti import load_mask, load_scan
from planar3d.io.phantom import make_phantom_dataset
from planar3d.data.preprocess import to_native


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="preprocessed cube edge; default: 256 (paper)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="phantom native grids = paper grids times this; default: 1.0 (paper's grids)")
    parser.add_argument("--repeats", type=int, default=5, help="timed cache hits per grid; default: 5")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder; default: a temporary folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"machine: {platform.node()} | {platform.machine()} | Python {platform.python_version()} | "
          f"numpy {np.__version__}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        scratch = Path(scratch)
        start = time.perf_counter()
        records = make_phantom_dataset(scratch / "phantom", n_per_centre=1, scale=args.scale, seed=0)
        print(f"phantom, 1 subject per centre at scale {args.scale}: generated in {time.perf_counter() - start:.1f} s")
        print(f"{'centre':<7}{'native grid':<14}{'miss s':>8}{'hit ms':>9}{'ratio':>8}{'round-trip Dice':>17}")
        ratios = []
        for record in records:
            cache = scratch / "cache"
            start = time.perf_counter()
            case = load_case(record, args.size, cache)
            miss = time.perf_counter() - start
            hits = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                hit = load_case(record, args.size, cache)
                float(np.asarray(hit.volume).sum() + np.asarray(hit.mask).sum())
                hits.append(time.perf_counter() - start)
            hit_time = statistics.median(hits)
            ratios.append(miss / hit_time)
            scan = load_scan(record.flair)
            native = load_mask(record.mask, scan).get_fdata(dtype=np.float32) > 0.5
            back = to_native(np.asarray(case.mask), case.meta) >= 0.5
            dice = 2 * (native & back).sum() / (native.sum() + back.sum())
            grid = "x".join(map(str, case.meta["native_shape"]))
            print(f"{record.centre:<7}{grid:<14}{miss:>8.2f}{1000 * hit_time:>9.1f}{miss / hit_time:>8.0f}{dice:>17.3f}")
            del case, hit
    print(f"cached load is {min(ratios):.0f}x-{max(ratios):.0f}x faster than preprocessing at {args.size}^3 "
          f"(goal >= 50x); peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
