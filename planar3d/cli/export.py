"""``planar3d-export`` / ``python -m planar3d.export``: parse, dispatch to
:func:`planar3d.apps.export.export_model`, exit status.
"""

from __future__ import annotations

from planar3d.apps.export import BOUNDS, DICE_BOUND, VOLUME_BOUND, export_model
from planar3d.cli.common import make_parser, run_cli
from planar3d.config import EXPORT_FORMATS, EXPORT_QUANTIZATIONS

__all__ = []


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "Export a trained planar res-u-net for other engines: the encoder as a per-slice 2D network, the decoder as "
        "a 3D window network, and export.json (window, stride, size, threshold, preprocessing, versions). The export "
        f"is run against the Keras model on a check scan and refused unless the masks agree (Dice >= {DICE_BOUND}, "
        f"lesion volume within {100 * VOLUME_BOUND:g} %).", "planar3d.export")
    parser.add_argument("--model", required=True, metavar="FILE", help="the trained segmentation model (best.keras)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help="savedmodel (TensorFlow), onnx (pip install planar3d[onnx]) or openvino "
                        "(pip install planar3d[openvino])")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (written beside it, then renamed onto it)")
    parser.add_argument("--check", metavar="SCAN", default=None,
                        help="raw FLAIR scan the agreement is measured on (default: the built-in phantom's first scan)")
    parser.add_argument("--quantize", choices=EXPORT_QUANTIZATIONS, default="none",
                        help="int8: the decoder's convolutions in int8 (ONNX Runtime's post-training quantization, "
                        "--format onnx only), calibrated on --calibrate scans; checked to Dice >= "
                        f"{BOUNDS['int8'][0]} and lesion volume within {100 * BOUNDS['int8'][1]:g} %% (default: none, "
                        "float32)")
    parser.add_argument("--calibrate", nargs="+", metavar="SCAN", default=None,
                        help="raw FLAIR scans the int8 ranges are calibrated on (default: the built-in phantom's scans "
                        "other than the check scan)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    result = export_model(args.model, args.format, args.out, check=args.check, overwrite=args.overwrite,
                          quantize=args.quantize, calibrate=args.calibrate)
    measured = result.metadata["agreement"]
    print(f"{args.format} export: {result.out} ({', '.join(result.metadata['files'].values())}, export.json)\n"
          f"agreement with Keras on {measured['scan']} ({measured['runtime']}, {measured['precision']}): Dice {measured['dice']:.5f}, "
          f"lesion volume {measured['volume_ml_exported']:.3f} vs {measured['volume_ml_keras']:.3f} ml "
          f"({100 * measured['volume_difference']:.3f} %), max probability difference "
          f"{measured['max_probability_difference']:.2e}; {measured['seconds_exported']:.1f} s vs Keras "
          f"{measured['seconds_keras']:.1f} s")
    return 0
