"""``planar3d-train`` / ``python -m planar3d.train --fold k``: parse, train one fold (per seed with
``--seeds``), print its Dice, exit status.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from planar3d.cli.common import (
    NON_NEGATIVE_INT,
    add_config_flags,
    add_run_flags,
    config_from_args,
    make_parser,
    run_cli,
)
from planar3d.evaluation.reports import seeds_summary_markdown
from planar3d.runs.seeds import grid_tasks, run_tasks

__all__ = []


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Train one fold of the planar 3D res-u-net (Kolarik et al. 2020), of a segmenter with "
                         "another --backbone, or of a whole-volume classifier (--task classification).", "planar3d.train")
    parser.add_argument("--fold", type=NON_NEGATIVE_INT, required=True, help="fold index 0..4 (paper rule, see cv_split)")
    add_run_flags(parser)
    add_config_flags(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    out = Path(args.out or f"runs/{config.preset}")
    rows = run_tasks(grid_tasks(config, [args.fold], out), overwrite=args.overwrite, resume=args.resume)
    if config.task == "classification":
        return 0
    if config.seeds is None:
        print(f"fold {args.fold}: mean Dice {np.mean([r['dice'] for r in rows]):.3f} over {len(rows)} test scans; "
              f"outputs in {out / f'fold_{args.fold}'}")
        return 0
    print(seeds_summary_markdown(rows, config, title=f"Fold {args.fold} over seeds"))
    print(f"outputs in {out}/seed_<s>/fold_{args.fold}/ for seeds {config.seeds}")
    return 0
