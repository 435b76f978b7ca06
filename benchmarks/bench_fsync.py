"""What durable writes cost: a 256³ uint8 mask written as NIfTI with and without fsync.

The mask is written as gzip NIfTI (``.nii.gz``, what planar3d writes) and, as a worst case
for fsync (16.8 MB to flush instead of ~0.1 MB), as plain ``.nii``. Each variant writes it through :func:`planar3d.atomic.atomic_path` (temporary
file, mode from the umask, rename) with ``nib.save``; "fsync" also flushes the file to disk
before the rename and the folder after it, as every planar3d output does. Runs are
interleaved in one process and the medians compared, so machine drift hits both alike.

Usage:
    python benchmarks/bench_fsync.py [--size 256] [--repeats 9] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_medians, isa_line  # noqa: E402

from planar3d.atomic import atomic_path  # noqa: E402


def _file_system(path: Path) -> str:
    """Type and device of the mount holding ``path`` (from /proc/mounts)."""
    best = ("?", "?", "")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) >= len(best[2]):
                best = (kind, device, mount)
    except OSError:
        pass
    return f"{best[0]} on {best[1]} (mounted at {best[2]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the mask cube; default: 256")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per variant; default: 9")
    parser.add_argument("--dir", type=Path, default=None, help="folder written into; default: a temporary folder")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    mask = np.zeros((args.size,) * 3, dtype=np.uint8)  # a lesion-like mask: ~1 % of voxels in blobs
    centres = rng.integers(10, args.size - 10, size=(60, 3))
    for c in centres:
        mask[c[0] - 4 : c[0] + 4, c[1] - 5 : c[1] + 5, c[2] - 3 : c[2] + 3] = 1
    image = nib.Nifti1Image(mask, np.eye(4))
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        print(f"{isa_line()}\nfile system: {_file_system(Path(folder))}")
        for suffix in (".nii.gz", ".nii"):
            target = Path(folder) / f"mask{suffix}"

            def write(fsync: bool, target=target):
                with atomic_path(target, overwrite=True, fsync=fsync) as tmp:
                    nib.save(image, tmp)

            medians = interleaved_medians({"no fsync": lambda: write(False), "fsync": lambda: write(True)},
                                          repeats=args.repeats)
            size_mb = target.stat().st_size / 1e6
            print(f"{args.size}^3 uint8 mask as {suffix} ({size_mb:.2f} MB), median of {args.repeats}: "
                  + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in medians.items())
                  + f"; fsync / no fsync = {medians['fsync'] / medians['no fsync']:.3f} "
                  f"({(medians['fsync'] - medians['no fsync']) * 1000:+.1f} ms per output)")
        # the flush alone: fsync of a freshly written (page-cached) file of each size
        for suffix in (".nii.gz", ".nii"):
            flushes = []
            for _ in range(args.repeats):
                path = Path(folder) / f"flush{suffix}"
                nib.save(image, path)
                fd = os.open(path, os.O_RDONLY)
                start = time.perf_counter()
                os.fsync(fd)
                flushes.append(time.perf_counter() - start)
                os.close(fd)
            print(f"fsync alone of a fresh {suffix} file: median {statistics.median(flushes) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
