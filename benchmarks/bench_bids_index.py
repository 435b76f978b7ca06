"""What pybids costs against planar3d's own BIDS reader, on a generated 100-subject tree.

The tree (``--subjects``, default 100; every second subject has two sessions) holds per
scan a FLAIR, a T1w, a resting-state BOLD and a DWI image with JSON sidecars (empty image
files: neither indexer reads voxels), a ``participants.tsv`` with a ``site`` column and a
``derivatives/manual`` pipeline with one ``label-lesion_mask`` per FLAIR: 1,354 files at 100
subjects. Timed, in this process, interleaved (median of ``--repeats``):

* planar3d: ``planar3d.io.bids.find_bids_scans(root, masks_from="manual")`` (FLAIR, mask,
  sidecar with inheritance, centre from the scanner);
* pybids (when importable here or in ``--pybids-python``'s interpreter, in fresh
  subprocesses so the import is cold for Python): ``import bids``, then
  ``BIDSLayout(root, validate=False, derivatives=True)``, then the same query (FLAIR files,
  lesion masks, every FLAIR's metadata).

Prints the ratios pybids / planar3d and the CPU's ISA flags.

Usage:
    python benchmarks/bench_bids_index.py [--subjects 100] [--repeats 3] [--pybids-python PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PYBIDS = r"""
import sys, time
t = time.perf_counter(); import bids; t_import = time.perf_counter() - t
t = time.perf_counter(); layout = bids.BIDSLayout(sys.argv[1], validate=False, derivatives=True); t_index = time.perf_counter() - t
t = time.perf_counter()
flairs = layout.get(suffix="FLAIR", extension=".nii.gz")
masks = layout.get(scope="derivatives", suffix="mask", label="lesion", extension=".nii.gz")
metadata = [f.get_metadata() for f in flairs]
t_query = time.perf_counter() - t
print(t_import, t_index, t_query, len(flairs), len(masks), bids.__version__)
"""


def make_tree(root: Path, n_subjects: int) -> int:
    """Write the benchmark tree; return its number of files."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.10.0"}))
    (root / "participants.tsv").write_text(
        "participant_id\tsite\n" + "".join(f"sub-{i:03d}\ts{i % 3}\n" for i in range(n_subjects)))
    (root / "README").write_text("benchmark tree\n")
    derivatives = root / "derivatives" / "manual"
    derivatives.mkdir(parents=True)
    (derivatives / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "Manual"}]}))
    sidecar = json.dumps({"Manufacturer": "Siemens", "MagneticFieldStrength": 3})
    for i in range(n_subjects):
        subject = f"sub-{i:03d}"
        for session in (["ses-1", "ses-2"] if i % 2 else [None]):
            prefix = subject + (f"_{session}" if session else "")
            for kind, datatype in (("FLAIR", "anat"), ("T1w", "anat"), ("task-rest_bold", "func"), ("dwi", "dwi")):
                folder = root / subject / (session or "") / datatype
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{prefix}_{kind}.nii.gz").write_bytes(b"")
                (folder / f"{prefix}_{kind}.json").write_text(sidecar)
            folder = derivatives / subject / (session or "") / "anat"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{prefix}_space-orig_label-lesion_mask.nii.gz").write_bytes(b"")
    return sum(len(files) for _, _, files in os.walk(root))


def isa_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=100, help="subjects in the tree; default: 100")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; default: 3")
    parser.add_argument("--pybids-python", default=sys.executable,
                        help="interpreter that has pybids installed; default: this one")
    args = parser.parse_args()

    from planar3d.io.bids import find_bids_scans

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bids"
        n_files = make_tree(root, args.subjects)
        ours, theirs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            scans = find_bids_scans(root, masks_from="manual", require_masks=True, require_centre=True)
            ours.append(time.perf_counter() - start)
            result = subprocess.run([args.pybids_python, "-c", _PYBIDS, str(root)], capture_output=True, text=True)
            if result.returncode:
                print(f"pybids not usable in {args.pybids_python}: {result.stderr.strip().splitlines()[-1]}")
            else:
                theirs.append([float(v) for v in result.stdout.split()[:3]] + result.stdout.split()[3:])
    print(f"tree: {args.subjects} subjects, {len(scans)} FLAIR scans, {n_files} files | "
          f"{os.cpu_count()} CPU | ISA: {isa_flags()} | Python {sys.version.split()[0]}")
    mine = statistics.median(ours)
    print(f"planar3d.io.bids.find_bids_scans: {mine:.3f} s (median of {args.repeats})")
    if theirs:
        import_s, index_s, query_s = (statistics.median(row[i] for row in theirs) for i in range(3))
        print(f"pybids {theirs[0][5]}: import {import_s:.2f} s, BIDSLayout index {index_s:.2f} s, query {query_s:.2f} s "
              f"({theirs[0][3]} FLAIR, {theirs[0][4]} masks)")
        print(f"ratio pybids / planar3d: index+query {(index_s + query_s) / mine:.0f}x, "
              f"import+index+query {(import_s + index_s + query_s) / mine:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
