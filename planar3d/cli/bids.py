"""``planar3d-bids`` / ``python -m planar3d.bids``: the BIDS App's command line (``participant`` and
``group`` levels of :mod:`planar3d.apps.bids`).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from planar3d import __version__
from planar3d.apps.bids import GROUP_REPORT, run_group, run_participant
from planar3d.cli.common import add_bids_flags, add_segment_flags, make_parser, run_cli
from planar3d.errors import Planar3DError

__all__ = []


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("planar3d as a BIDS App: segment MS lesions in every FLAIR scan of a BIDS dataset (every "
                         "run and acquisition; --acq/--run narrow the choice) and write one HTML report per participant "
                         "and session (participant), or gather the results into tables and group_report.html (group).",
                         "planar3d.bids")
    parser.add_argument("bids_dir", help="the BIDS dataset (holding dataset_description.json)")
    parser.add_argument("output_dir", help="the derivative dataset to write (e.g. BIDS_DIR/derivatives/planar3d)")
    parser.add_argument("analysis_level", choices=("participant", "group"), help="participant: segment; group: tables")
    parser.add_argument("--model", nargs="+", help="trained planar3d model (RUN_DIR/fold_k/best.keras), or several models "
                        "and run folders averaged as an ensemble; needed by participant")
    parser.add_argument("-v", "--version", action="version", version=f"planar3d {__version__}")
    parser.add_argument("--skip-bids-validator", "--skip_bids_validator", action="store_true",
                        help="accepted as the BIDS Apps specification asks; planar3d runs no validator (it reads the "
                        "dataset with its own checks)")
    parser.add_argument("--probseg", action="store_true", help="also write the lesion probability maps (*_probseg.nii.gz)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo finished participants / replace the group tables (default: skip / refuse)")
    add_bids_flags(parser, masks_help="group level: reference lesion masks from derivatives/PIPELINE (or a folder) "
                   "for the MSSEG-2016 metrics; default: masks beside the raw scans (*_label-lesion_roi), if any")
    add_segment_flags(parser)
    args = parser.parse_args(argv)
    command = "python -m planar3d.bids " + shlex.join(sys.argv[1:] if argv is None else argv)

    selection = dict(participant_label=args.participant_label, session_label=args.session_label, acq=args.acq, run=args.run)
    if args.analysis_level == "group":
        result = run_group(args.bids_dir, args.output_dir, masks_from=args.masks_from, centre_column=args.centre_column,
                           overwrite=args.overwrite, command=command, **selection)
        print(f"group_lesions.tsv: {len(result['lesions'])} scans"
              + (f"; group_metrics.tsv: {len(result['metrics'])} scans with references" if result["metrics"] else "")
              + f" -> {args.output_dir}\nreport: {Path(args.output_dir) / GROUP_REPORT}")
        return 0
    if not args.model:
        raise Planar3DError("the participant level needs --model (a trained best.keras, or an export folder with --runtime)")
    if args.masks_from or args.centre_column:
        raise Planar3DError("--masks-from and --centre-column belong to the group level (references, centres)")
    overrides = dict(threshold=args.threshold, threshold_rule=args.threshold_rule, blend=args.blend, tta=args.tta,
                     stride=args.stride, crop=args.crop, precision=args.precision,
                     calibration=args.calibration)
    result = run_participant(args.bids_dir, args.output_dir, args.model, probseg=args.probseg, overwrite=args.overwrite,
                             batch_size=args.batch_size, command=command, overrides=overrides, device=args.device,
                             runtime=args.runtime, **selection)
    print(f"participants: {len(result.done)} done, {len(result.skipped)} skipped (finished), {len(result.failed)} failed"
          f" -> {args.output_dir} (reports: sub-<label>[_ses-<label>].html)")
    if result.failed:
        print(f"error: {len(result.failed)} participants failed: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0
