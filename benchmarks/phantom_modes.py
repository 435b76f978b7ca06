"""One slice of each centre's first phantom subject, ``simple`` vs ``realistic`` mode.

Writes ``docs/phantom_modes.png`` (rows: modes; columns: centres 01, 07, 08; the axial
slice with the most lesion voxels, reoriented to RAS, lesion outline in red) and prints each
subject's lesion ratio, lesion count and, for the realistic mode, noise sigma and bias range.

    python benchmarks/phantom_modes.py [--seed 0] [--out docs/phantom_modes.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "phantom_modes.png", help="PNG to write (default docs/phantom_modes.png)")
    args = parser.parse_args(argv)

    from matplotlib.figure import Figure

    from planar3d.io.phantom import MODES, make_phantom_dataset
    from planar3d.evaluation.report_figures import save_figure

    figure = Figure(figsize=(10, 7))
    axes = figure.subplots(len(MODES), 3)
    with tempfile.TemporaryDirectory() as tmp:
        for row, mode in enumerate(MODES):
            root = Path(tmp) / mode
            records = make_phantom_dataset(root, n_per_centre=1, seed=args.seed, mode=mode)
            info = {s["patient_id"]: s for s in json.loads((root / "phantom.json").read_text())["subjects"]}
            for column, record in enumerate(records):
                scan = nib.as_closest_canonical(nib.load(record.flair))
                mask = nib.as_closest_canonical(nib.load(record.mask))
                image, lesions = scan.get_fdata(), mask.get_fdata() > 0
                x = int(np.argmax(lesions.sum(axis=(1, 2))))  # sagittal, as the paper's Fig. 1
                zooms = scan.header.get_zooms()
                ax = axes[row, column]
                ax.imshow(image[x].T, cmap="gray", origin="lower", aspect=zooms[2] / zooms[1])
                if lesions[x].any():
                    ax.contour(lesions[x].T.astype(float), levels=[0.5], colors="red", linewidths=0.6)
                facts = info[record.patient_id]
                ax.set_title(f"{mode}, centre {record.centre}\nlesions {100 * facts['lesion_ratio']:.3f} % of voxels",
                             fontsize=9)
                ax.set_axis_off()
                extra = {k: facts[k] for k in ("noise_sigma", "bias_range") if k in facts}
                print(mode, record.patient_id, scan.shape, f"lesion ratio {facts['lesion_ratio']:.5f}",
                      f"n_lesions {facts['n_lesions']}", extra)
    figure.suptitle(f"phantom seed {args.seed}: sagittal slice with most lesion voxels (anterior right), lesion outline red")
    figure.tight_layout()
    save_figure(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
