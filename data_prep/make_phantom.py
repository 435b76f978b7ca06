"""Write the built-in MSSEG-like phantom dataset (offline, from nilearn's MNI152 templates).

Usage:
    python data_prep/make_phantom.py OUT [--n-per-centre 5] [--scale 0.25] [--seed 0] [--mode realistic]
        [--lesion-load FRACTION] [--labels labels.csv] [--overwrite]
    python data_prep/make_phantom.py --default     # the cached built-in phantom (ensure_phantom)
    python data_prep/make_phantom.py OUT --bids    # the same phantom as a BIDS dataset

``--labels`` also writes the phantom's classification target as a ``subject,label`` table:
1 when a subject's lesion load is above its centre's median (see planar3d.data.labels).

The output uses the MSSEG-2016 layout (``OUT/<id>/3DFLAIR.nii.gz`` + ``Consensus.nii.gz``)
and holds ``phantom.json`` with the options and per-subject facts. With ``--bids`` it is a
BIDS dataset instead (:func:`planar3d.io.bids.write_bids_dataset`): ``sub-<id>/anat/
sub-<id>_FLAIR.nii.gz`` with a sidecar naming the centre's MSSEG-2016 scanner, a
``participants.tsv`` with a ``site`` column, and the masks in ``derivatives/consensus/``
(``sub-<id>_space-orig_label-lesion_mask.nii.gz``); ``phantom.json`` goes to ``sourcedata/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from planar3d.atomic import check_writable
from planar3d.errors import Planar3DError
from planar3d.io.datasets import find_msseg2016
from planar3d.data.labels import lesion_load_labels, write_labels
from planar3d.io.phantom import DEFAULT_SCALE, INFO_NAME, ensure_phantom, make_phantom_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--default", action="store_true",
                        help="create (if needed) the built-in phantom under $PLANAR3D_HOME or ~/.cache/planar3d "
                             "and print its folder; default: off")
    parser.add_argument("--n-per-centre", type=int, default=5, help="subjects per centre (3 centres); default: 5")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                        help=f"native grids are the paper's times this, per axis; default: {DEFAULT_SCALE}")
    parser.add_argument("--seed", type=int, default=0, help="random seed; default: 0")
    parser.add_argument("--lesion-load", type=float, default=None,
                        help="target lesion voxel fraction per subject, e.g. 0.002; default: paper Table 1 per centre")
    parser.add_argument("--mode", choices=("simple", "realistic"), default="simple",
                        help="'simple' or 'realistic' (MS lesion types and sizes, partial volume, per-centre "
                             "contrast, bias field and SNR); default: simple")
    parser.add_argument("--bids", action="store_true",
                        help="write a BIDS dataset (raw FLAIR + derivatives/consensus masks); default: MSSEG-2016 layout")
    parser.add_argument("--labels", type=Path, default=None,
                        help="also write the classification target (lesion load above the centre's median) "
                             "as a subject,label CSV here; default: none")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder (and --labels file); default: off")
    return parser


def _make_bids_phantom(args: argparse.Namespace, options: dict) -> Path:
    """The phantom in the MSSEG-2016 layout (cached), rewritten as BIDS at OUT (or beside the cache)."""
    import shutil

    from planar3d.atomic import check_writable
    from planar3d.io.bids import write_bids_dataset
    from planar3d.io.datasets import find_msseg2016

    source = ensure_phantom(**options)
    out = args.out if args.out is not None else source.with_name(source.name + "-bids")
    if args.default and (out / "dataset_description.json").is_file():
        return out
    check_writable(out, args.overwrite)
    write_bids_dataset(find_msseg2016(source, require_masks=True), out, name="planar3d MSSEG-like phantom",
                       overwrite=args.overwrite)
    (out / "sourcedata").mkdir()
    shutil.copyfile(source / INFO_NAME, out / "sourcedata" / INFO_NAME)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.out is None) == (not args.default):
        parser.error("give either OUT or --default")
    options = dict(n_per_centre=args.n_per_centre, scale=args.scale, seed=args.seed, lesion_load=args.lesion_load,
                   mode=args.mode)
    start = time.perf_counter()
    try:
        if args.labels is not None:
            check_writable(args.labels, args.overwrite)  # before generating anything
        if args.bids:
            root = _make_bids_phantom(args, options)
        elif args.default:
            root = ensure_phantom(**options)
        else:
            make_phantom_dataset(args.out, overwrite=args.overwrite, **options)
            root = args.out
        if args.labels is not None:
            source = ensure_phantom(**options) if args.bids else root  # the same subjects, MSSEG-2016 layout
            labels = lesion_load_labels(find_msseg2016(source, require_masks=True))
            write_labels(args.labels, labels, overwrite=args.overwrite)
            print(f"labels: {args.labels} ({sum(labels.values())} of {len(labels)} subjects above their centre's median lesion load)")
    except Planar3DError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    info = json.loads((root / ("sourcedata" if args.bids else "") / INFO_NAME).read_text(encoding="utf-8"))
    print(f"phantom dataset: {root} ({time.perf_counter() - start:.1f} s)")
    by_centre = defaultdict(list)
    for subject in info["subjects"]:
        by_centre[subject["centre"]].append(subject)
    for centre, subjects in sorted(by_centre.items()):
        first = subjects[0]
        ratios = [100 * s["lesion_ratio"] for s in subjects]
        spacing = "x".join(f"{v:.2f}" for v in first["spacing_mm"])
        print(f"  centre {centre}: {len(subjects)} subjects, grid {'x'.join(map(str, first['shape']))} "
              f"({''.join(first['axcodes'])}, {spacing} mm), lesions {min(s['n_lesions'] for s in subjects)}-"
              f"{max(s['n_lesions'] for s in subjects)} per subject, lesion voxels "
              f"{sum(ratios) / len(ratios):.3f} % (range {min(ratios):.3f}-{max(ratios):.3f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
