"""``planar3d-predict``: segment raw FLAIR scans with a trained model (masks, lesion tables, QC), or
classify them with a classifier model. The work is :mod:`planar3d.apps.predict`'s."""

from __future__ import annotations

import sys
from pathlib import Path

from planar3d.apps.predict import (
    check_calibration,
    check_not_input,
    check_runtime,
    inference_config,
    load_members,
    member_files,
    member_settings,
    predict_classes,
    resolve_runtime,
    scan_outputs,
    scan_outputs_pairs,
    segment_scans,
    select_device,
    stem,
    write_table,
)
from planar3d.apps.report_pages import write_predict_report
from planar3d.atomic import check_destinations
from planar3d.cli.common import add_segment_flags, make_parser, run_cli
from planar3d.errors import Planar3DError
from planar3d.evaluation.html_report import command_line, model_info

__all__ = []


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Segment MS lesions in raw FLAIR scans with a trained planar3d model.", "planar3d.predict")
    parser.add_argument("--model", required=True, nargs="+",
                        help="trained model (RUN_DIR/fold_k/best.keras); several models or run folders (every "
                        "best.keras below) make an ensemble whose probabilities are averaged; or one export folder "
                        "(planar3d export --out DIR) run by --runtime")
    parser.add_argument("--input", nargs="+", required=True, help="FLAIR .nii/.nii.gz file(s), a folder, or a CSV/TSV list")
    parser.add_argument("--output", required=True, help="mask .nii.gz for one input; a folder for several; "
                        "with a classifier model a .csv of class probabilities (one row per scan)")
    parser.add_argument("--probabilities", help="also write the probability map here (single input only)")
    parser.add_argument("--uncertainty", metavar="PATH", help="also write the voxel entropy of the probability here and, "
                        "for an ensemble, the members' mutual information beside it (<PATH>_mutual_information.nii.gz; "
                        "single input only)")
    parser.add_argument("--lesion-map", action="store_true", help="also write a labelled lesion map (<name>_labels.nii.gz)")
    parser.add_argument("--no-report", action="store_true", help="skip the per-lesion CSV/JSON report")
    parser.add_argument("--no-qc", action="store_true", help="skip the QC overlay PNG")
    parser.add_argument("--neurological", action="store_true", help="QC pictures with the patient's left on the image "
                        "left (default: radiological convention, the left on the right)")
    add_segment_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar over the windows of a "
                        "single scan, on a terminal only)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them in folder mode, refuse for one scan)")
    args = parser.parse_args(argv)

    files = member_files(args.model)
    config = inference_config(files[0], **{k: getattr(args, k) for k in ("threshold", "threshold_rule", "blend", "tta", "stride",
                                                                            "crop", "precision", "calibration")})
    exported = check_runtime(files, args.runtime, config, args.device)
    if config.task == "classification" or args.output.lower().endswith(".csv"):

        if exported:
            raise Planar3DError(f"{files[0]} is an exported segmentation model: --output takes a mask or a folder")
        select_device(args.device)
        if config.calibration != "none":
            raise Planar3DError("--calibration temperature applies to segmentation models, not to a classifier")
        if len(files) > 1:
            raise Planar3DError(f"classifier ensembles are not supported: give one --model. Received: {len(files)} models")
        rows, failures = predict_classes(files[0], args.input, args.output, config, overwrite=args.overwrite)
        if failures:
            print(f"error: {len(failures)} of {len(rows) + len(failures)} scans failed: {', '.join(failures)}", file=sys.stderr)
            return 1
        print(f"class probabilities: {args.output}")
        return 0
    check_calibration(files, config)
    pairs = scan_outputs_pairs(args.input, args.output)
    if (args.probabilities or args.uncertainty) and len(pairs) > 1:
        raise Planar3DError("--probabilities and --uncertainty take one input; in folder mode these maps are not written")
    # refuse unwritable destinations before loading the model
    if len(pairs) == 1:
        flair, output = pairs[0]
        labels = output.with_name(stem(output) + "_labels.nii.gz") if args.lesion_map else None
        check_not_input(flair, output, args.probabilities)
        check_destinations(scan_outputs(output, args.probabilities, labels, not args.no_report, not args.no_qc,
                                        args.uncertainty, len(files)),
                           overwrite=args.overwrite)
    else:  # report.html, as lesion_summary.csv, is rewritten by every run over the folder
        check_destinations([Path(args.output) / "report.html"], folders=[args.output], overwrite=True)
    runtime, why = resolve_runtime(files, args.runtime, config.precision)
    if why and not args.quiet:
        print(f"runtime: {runtime} ({why})")
    select_device(args.device if runtime == "tensorflow" else "cpu")
    model = load_members(files, runtime, config.precision)
    if not exported:
        member_settings(model, config, announce=True)

    rows, failures = segment_scans(model, pairs, config, lesion_map=args.lesion_map, report=not args.no_report,
                                   overlay=not args.no_qc, radiological=not args.neurological,
                                   probabilities=args.probabilities, uncertainty=args.uncertainty,
                                   overwrite=args.overwrite, batch_size=args.batch_size,
                                   progress=not args.quiet)
    if len(pairs) > 1 and rows:
        write_table(Path(args.output) / "lesion_summary.csv", rows, overwrite=True)
        print(f"group table: {Path(args.output) / 'lesion_summary.csv'}")
    if len(pairs) > 1:
        report = write_predict_report(Path(args.output), pairs, failures, model_info(files),
                                      command_line("planar3d.predict", argv))
        print(f"report: {report}")
    if failures:
        print(f"error: {len(failures)} of {len(pairs)} scans failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0
