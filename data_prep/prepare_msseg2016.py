"""Preprocess a dataset once into the cache, then summarise it (compare with paper Table 1).

Usage:
    python data_prep/prepare_msseg2016.py DATA [--size 256] [--cache-dir DIR] [--robust]
    python data_prep/prepare_msseg2016.py --phantom [--size 64]

DATA is an MSSEG-2016 unprocessed training folder (or any parent up to the archive's top
folder) or a CSV/TSV table with the columns ``subject, centre, flair, mask``. ``--phantom``
uses the built-in phantom (generated on first use). Later training runs with the same
``--size``/``--robust`` memory-map the cached volumes instead of preprocessing again.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from planar3d.atomic import check_destinations
from planar3d.cli.common import run_cli
from planar3d.data.cache import default_cache_dir, load_cases
from planar3d.io.datasets import find_dataset
from planar3d.io.nifti import load_mask, load_scan
from planar3d.io.phantom import ensure_phantom
from planar3d.data.preprocess import to_native

#: Paper Table 1: lesion voxel ratio (%) per centre and overall.
PAPER_LESION_PERCENT = {"01": 0.311, "07": 0.141, "08": 0.144, "all": 0.199}
PAPER_GRIDS = {"01": "144x512x512", "07": "128x224x256", "08": "261x336x336"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, help="dataset folder or .csv/.tsv table")
    parser.add_argument("--phantom", action="store_true", help="use the built-in phantom dataset; default: off")
    parser.add_argument("--size", type=int, default=256, help="edge of the preprocessed cube (multiple of 16); default: 256")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"cache folder; default: {default_cache_dir()} ($PLANAR3D_HOME/cache)")
    parser.add_argument("--robust", action="store_true",
                        help="percentile (0.5-99.5) instead of plain min-max intensity scaling; default: off (paper)")
    parser.add_argument("--round-trip", action="store_true",
                        help="also report the Dice of each mask after preprocess -> to_native -> threshold 0.5 "
                             "against the native mask; default: off")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar; default: shown")
    return parser


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.data is None) == (not args.phantom):
        parser.error("give either DATA or --phantom")
    start = time.perf_counter()
    check_destinations(folders=[args.cache_dir or default_cache_dir()])  # before any work
    data = ensure_phantom() if args.phantom else args.data
    records = find_dataset(data, require_masks=True)
    cases = load_cases(records, size=args.size, cache_dir=args.cache_dir, robust=args.robust,
                       progress=not args.no_progress)
    print(f"{len(cases)} scans from {data} cached at {args.size}^3 in {time.perf_counter() - start:.1f} s "
          f"(cache: {args.cache_dir or default_cache_dir()})")
    print(summary(cases))
    if args.round_trip:
        print(round_trip_report(cases))
    return 0


def summary(cases: list) -> str:
    """Per-scan and per-centre table: native grid, spacing, orientation, lesion voxel ratio."""
    lines = [f"{'patient':<12} {'centre':<6} {'native grid':<13} {'spacing mm':<17} {'axes':<4} lesion %"]
    by_centre = defaultdict(list)
    for case in cases:
        meta = case.meta
        ratio = 100 * meta["native_lesion_ratio"]
        by_centre[case.centre].append(ratio)
        lines.append(
            f"{case.patient_id:<12} {case.centre:<6} {'x'.join(map(str, meta['native_shape'])):<13} "
            f"{'x'.join(f'{v:.2f}' for v in meta['native_spacing']):<17} {''.join(meta['native_axcodes']):<4} "
            f"{ratio:.3f}"
        )
    lines.append("per centre (paper Table 1 in brackets):")
    for centre, ratios in sorted(by_centre.items()):
        paper = PAPER_LESION_PERCENT.get(centre)
        reference = f" [{paper:.3f} %, {PAPER_GRIDS[centre]}]" if paper is not None else ""
        lines.append(f"  centre {centre}: {len(ratios)} patients, mean lesion {sum(ratios) / len(ratios):.3f} %{reference}")
    everything = [r for ratios in by_centre.values() for r in ratios]
    lines.append(f"  all: {len(everything)} patients, mean lesion {sum(everything) / len(everything):.3f} % "
                 f"[{PAPER_LESION_PERCENT['all']:.3f} %]")
    return "\n".join(lines)


def round_trip_report(cases: list) -> str:
    """Dice of each cached mask mapped back to its native grid (threshold 0.5) against the native mask."""
    dices = defaultdict(list)
    for case in cases:
        native = load_mask(case.record.mask, load_scan(case.record.flair)).get_fdata(dtype=np.float32) > 0.5
        back = to_native(np.asarray(case.mask), case.meta, order=1) >= 0.5
        total = native.sum() + back.sum()
        dices[case.centre].append(2.0 * (native & back).sum() / total if total else 1.0)
    everything = [d for values in dices.values() for d in values]
    parts = [f"{centre} {np.mean(values):.3f}" for centre, values in sorted(dices.items())]
    return (f"mask round trip (preprocess -> to_native -> >= 0.5) Dice: mean {np.mean(everything):.3f}, "
            f"min {np.min(everything):.3f}; per centre: {', '.join(parts)}")


if __name__ == "__main__":
    sys.exit(main())
