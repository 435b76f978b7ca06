"""``planar3d <command> [options]``: one console command for every tool.

Each command is the tool's own main, with the same options and ``--help`` as
``python -m planar3d.<command>`` and ``planar3d-<command>``.
"""

from __future__ import annotations

import sys

from planar3d import __version__
from planar3d.cli import bids, crossval, evaluate, export, predict, train

__all__ = ["COMMANDS", "main"]


#: command -> (its main, one line of what it does)
COMMANDS = {
    "train": (train.main, "train one fold (python -m planar3d.train --fold k)"),
    "crossval": (crossval.main, "train and test every fold, reusing finished ones"),
    "predict": (predict.main, "segment raw FLAIR scans with a trained model"),
    "evaluate": (evaluate.main, "score predicted masks against references (MSSEG-2016 metrics)"),
    "bids": (bids.main, "the BIDS App: participant and group levels"),
    "export": (export.main, "export a model to SavedModel, ONNX or OpenVINO, checked against Keras"),
}


def _usage() -> str:
    lines = ["usage: planar3d <command> [options]   (planar3d <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-v", "--version"):
        print(f"planar3d {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"planar3d: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]][0](argv[1:])
