"""INT8 export vs the Keras model in float32 on real scans (issue 30): masks, lesions, volume, time.

Each scan is preprocessed to the model's size and segmented twice through
:func:`planar3d.inference.predict.predict_volume` (window, stride, recomposition and crop of the
run's config): by the Keras model in float32, and by the INT8 export (``planar3d export --format
onnx --quantize int8``) in ONNX Runtime. The masks (the run's threshold) are compared in the
preprocessed cube: Dice, lesion count, voxels and their relative change, and the seconds of each.

Default scans: the three skull-stripped Ljubljana MS patients (cross-sectional, MNI) and two raw
scanner visits (longitudinal patient12 and patient03, visit 1) of ../shared/realdata.

    python benchmarks/int8_agreement.py --model RUN/best.keras --export EXPORT_DIR [--scans A.nii.gz ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def default_scans(realdata: Path) -> list[Path]:
    ljubljana = realdata / "ljubljana_ms"
    return [*sorted((ljubljana / "cross_sectional" / "MNI").glob("patient*/FLAIR_*.nii.gz")),
            ljubljana / "longitudinal" / "raw" / "patient12" / "study1_FLAIR.nii.gz",
            ljubljana / "longitudinal" / "raw" / "patient03" / "study1_FLAIR.nii.gz"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="the .keras model (its config.json beside it)")
    parser.add_argument("--export", required=True, type=Path, help="its INT8 export folder")
    parser.add_argument("--scans", nargs="+", type=Path, help="raw FLAIR scans (default: five real Ljubljana scans)")
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    args = parser.parse_args(argv)

    from planar3d.config import load_config, make_config
    from planar3d.evaluation.lesions import label_lesions
    from planar3d.evaluation.metrics import dice
    from planar3d.inference.pipeline import load_preprocessed
    from planar3d.inference.predict import predict_volume
    from planar3d.inference.runtimes import load_runtime
    from planar3d.nets.load import load_segmentation_model

    saved = args.model.parent / "config.json"
    config = load_config(saved) if saved.is_file() else make_config("paper")
    model = load_segmentation_model(args.model)
    network = load_runtime(args.export, "onnxruntime", "int8")
    size = int(model.input_shape[2])
    options = dict(size=config.window, stride=config.stride, mode=config.blend, crop=config.crop)
    changes, ratios = [], []
    print("| scan | Dice | lesions float32 -> int8 | voxels float32 -> int8 (change) | seconds float32 -> int8 |\n"
          "|---|---:|---:|---:|---:|")
    for scan in args.scans or default_scans(args.realdata):
        volume = load_preprocessed(scan, config, size=size)[1]
        started = time.perf_counter()
        reference = predict_volume(model, volume, precision="float32", **options) >= config.threshold
        keras_seconds = time.perf_counter() - started
        started = time.perf_counter()
        quantized = predict_volume(network, volume, **options) >= config.threshold
        int8_seconds = time.perf_counter() - started
        change = 100 * (int(quantized.sum()) - int(reference.sum())) / max(int(reference.sum()), 1)
        changes.append(change)
        ratios.append(int8_seconds / keras_seconds)
        print(f"| {scan.parent.name}/{scan.name} | {dice(reference, quantized):.4f} | {label_lesions(reference)[1]} -> "
              f"{label_lesions(quantized)[1]} | {int(reference.sum())} -> {int(quantized.sum())} ({change:+.2f} %) | "
              f"{keras_seconds:.0f} -> {int8_seconds:.0f} |", flush=True)
    if len(changes) > 1:
        print(f"\nvolume change {statistics.mean(changes):+.2f} ± {statistics.stdev(changes):.2f} % (n = {len(changes)} scans), "
              f"{sum(abs(c) <= 1 for c in changes)} of {len(changes)} within 1 %; time ratio "
              f"{statistics.mean(ratios):.2f} ± {statistics.stdev(ratios):.2f}")


if __name__ == "__main__":
    main()
