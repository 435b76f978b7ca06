"""``planar3d-evaluate`` / ``python -m planar3d.evaluate``: parse, dispatch to
:func:`planar3d.evaluation.evaluate.evaluate`, exit status.
"""

from __future__ import annotations

import sys

from planar3d.cli.common import NON_NEGATIVE_FLOAT, POSITIVE_INT, UNIT_INTERVAL, make_parser, run_cli
from planar3d.config import TARGETS
from planar3d.evaluation.calibration import N_BINS
from planar3d.evaluation.evaluate import evaluate
from planar3d.evaluation.reference import ANIMA_ALPHA, ANIMA_BETA, ANIMA_GAMMA, ANIMA_MIN_LESION_MM3

__all__ = []


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Evaluate predicted lesion masks against reference masks (MSSEG-2016 metrics).",
                         "planar3d.evaluate")
    parser.add_argument("--reference", required=True, help="reference mask file, folder (matched by patient id), or "
                        "a data set folder (MSSEG-2016, Ljubljana, BRATS layout: its masks, centres and FLAIRs)")
    parser.add_argument("--target", choices=TARGETS, default="auto",
                        help="BRATS reference folder: the region of the label maps (default auto = whole_tumour)")
    parser.add_argument("--prediction", required=True, help="predicted mask file, or folder (matched by patient id)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: evaluation/ inside the prediction folder or beside the prediction file)")
    parser.add_argument("--flair", default=None,
                        help="FLAIR file or folder for the QC overlays (default: 3DFLAIR.nii.gz found beside the references)")
    parser.add_argument("--no-qc", action="store_true", help="skip the QC overlays qc/<id>.png")
    parser.add_argument("--probabilities", metavar="PATH", default=None,
                        help="lesion probability map file, or folder matched by patient id (<id>_prob.nii.gz ...): "
                        "adds ece, brier, ndsc, r_auc, lesion_auroc and lesion_auroc_uncertainty to metrics.csv "
                        "and draws reliability.png")
    parser.add_argument("--uncertainty", metavar="PATH", default=None,
                        help="voxel uncertainty map file or folder (<id>_entropy.nii.gz ...) for r_auc and "
                        "lesion_auroc_uncertainty (default: the entropy of the probability; needs --probabilities)")
    parser.add_argument("--calibration-bins", type=POSITIVE_INT, default=N_BINS, metavar="N",
                        help=f"equal-width probability bins of the ECE and the reliability diagram (default {N_BINS})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--alpha", type=UNIT_INTERVAL, default=ANIMA_ALPHA, help="lesion detection: covered fraction (Anima -x)")
    parser.add_argument("--beta", type=UNIT_INTERVAL, default=ANIMA_BETA, help="lesion detection: outside fraction (Anima -y)")
    parser.add_argument("--gamma", type=UNIT_INTERVAL, default=ANIMA_GAMMA, help="lesion detection: overlap share checked (Anima -z)")
    parser.add_argument("--min-lesion-mm3", type=NON_NEGATIVE_FLOAT, default=ANIMA_MIN_LESION_MM3, help="smallest lesion volume kept (Anima -v)")
    args = parser.parse_args(argv)
    result = evaluate(args.reference, args.prediction, out=args.out, flair=args.flair, qc=not args.no_qc,
                      overwrite=args.overwrite, alpha=args.alpha, beta=args.beta, gamma=args.gamma,
                      min_lesion_mm3=args.min_lesion_mm3, target=args.target, probabilities=args.probabilities,
                      uncertainty=args.uncertainty, calibration_bins=args.calibration_bins)
    out = result.out
    print((out / "summary.md").read_text(encoding="utf-8"))
    print(f"metrics: {out / 'metrics.csv'}\nsummary: {out / 'summary.md'}\nbox plot: {out / 'boxplot.png'}\n"
          + (f"overlays: {out / 'qc'}/<id>.png\n" if not args.no_qc else "")
          + (f"reliability diagram: {out / 'reliability.png'}\n" if args.probabilities else "")
          + f"arguments: {out / 'evaluation.json'}\nreport: {out / 'report.html'}")
    if result.failures:
        print(f"error: {len(result.failures)} problems (see above); {len(result.rows)} scans evaluated", file=sys.stderr)
        return 1
    return 0
