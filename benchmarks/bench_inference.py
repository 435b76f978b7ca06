"""Inference cost of one scan at the paper's size, stage by stage, and folder mode vs separate CLI calls.

Part 1 (``--size``, default 256 = the paper): one phantom subject on its native grid
(``--scale`` 1 = the paper's Table 1 grid of centre ``--centre``, default 01: 144x512x512)
through the inference path of :func:`planar3d.predict.predict_scan`, in two fresh processes:

* *staged*: the public functions ``predict_scan`` uses, called in its order and timed one by
  one, each with its peak RSS (high-water mark reset through ``/proc/self/clear_refs``):
  ``load_scan``, ``preprocess``, ``extract_windows``, the model calls alone (all windows,
  batch ``INFERENCE_BATCH_SIZE``), ``recompose``, ``to_native`` (+ clip), ``binarize``,
  ``lesion_table``, ``save_nifti``, the CSV/JSON report and the QC overlay;
* *end-to-end*: one ``predict_scan`` call (CLI defaults: report and QC overlay), its model
  wrapped so that the time spent inside the model calls of that very run is summed.
  Overhead ratio = ``predict_scan`` wall time / forward time of the same run (goal <= 1.2);
  peak RSS = ``getrusage`` of that process (TensorFlow, model and scan included; goal <= 6 GB).

Part 2: ``--scans`` phantom scans (``--folder-scale``, default 0.25 of the paper's grids) and a
model at ``--folder-size`` (default 64, not 256: five 256³ scans twice would take ~50 min on
2 cores) through ``python -m planar3d.predict --no-qc``: once in folder mode (one process, the
model loaded once) vs once per scan; ``--repeats`` rounds, the order alternating between
rounds; wall time and peak RSS (``wait4``) per process.

The model is ``build_model((16, size, size, 1), encoder_weights=None)``: weight values do not
change the time. Writes ``docs/bench_inference.md``.

Usage:
    python benchmarks/bench_inference.py [--size 256] [--scans 5] [--folder-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOCS = Path(__file__).resolve().parents[1] / "docs"
FORWARD_GOAL = 1.2
RSS_GOAL_GB = 6.0


# ----------------------------------------------------------------------------- children


def _rss_gb(field: str) -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, GB."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) / 1e6


def _reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (Linux >= 4.0), so VmHWM is the peak of one stage."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


class _TimedModel:
    """A Keras model whose calls are timed; everything else is delegated to the model."""

    def __init__(self, model) -> None:
        self._model = model
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        output = self._model(*args, **kwargs)  # eager on the CPU: computed when it returns
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return output


def _staged_child(args: argparse.Namespace) -> dict:
    """Time predict_scan's steps one by one, through the same public functions, in its order."""
    start = time.perf_counter()
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import tensorflow as tf

    from planar3d.atomic import write_text_atomic
    from planar3d.config import make_config
    from planar3d.io import load_scan, save_nifti
    from planar3d.lesions import lesion_summary, lesion_table
    from planar3d.plots import plot_overlay
    from planar3d.predict import load_segmentation_model
    from planar3d.preprocess import preprocess, to_native
    from planar3d.windows import binarize, extract_windows, recompose
    from planar3d.pipeline import INFERENCE_BATCH_SIZE

    imported = time.perf_counter() - start
    start = time.perf_counter()
    model = load_segmentation_model(args.model)
    loaded = time.perf_counter() - start
    size, window = int(model.input_shape[2]), int(model.input_shape[1])
    config = make_config("paper", size=size, window=window)
    out = Path(args.output_dir)
    stages: list[tuple[str, float, float]] = []

    def timed(name: str, function):
        _reset_peak_rss()
        begin = time.perf_counter()
        result = function()
        stages.append((name, time.perf_counter() - begin, _rss_gb("VmHWM")))
        return result

    scan = timed("load_scan (validated NIfTI read)", lambda: load_scan(args.scan))
    volume, _, meta = timed(f"preprocess (reorient, zoom to {size}³ order 2, scale)",
                            lambda: preprocess(scan, size=size, robust=config.robust_normalisation))
    windows = timed("extract_windows", lambda: extract_windows(tf.constant(volume[..., None]), window, config.stride))
    batch_times: list[float] = []

    def forward():
        outputs = []
        for first in range(0, int(windows.shape[0]), INFERENCE_BATCH_SIZE):
            begin = time.perf_counter()
            outputs.append(tf.cast(model(windows[first : first + INFERENCE_BATCH_SIZE], training=False), tf.float32))
            batch_times.append(time.perf_counter() - begin)
        return outputs

    outputs = timed(f"forward: {int(windows.shape[0])} windows, batch {INFERENCE_BATCH_SIZE} (model calls alone)", forward)
    resampled = timed("recompose (paper Eq. 1)", lambda: recompose(
        tf.concat(outputs, axis=0), size, window, config.stride, config.blend)[..., 0].numpy().astype(np.float32))
    prob = timed("to_native (order 1) + clip", lambda: np.clip(to_native(resampled, meta, order=1), 0.0, 1.0).astype(np.float32))
    mask = timed("binarize (native grid)", lambda: binarize(prob, config.threshold, config.threshold_rule))
    table = timed("lesion_table (label, volumes, centroids)", lambda: lesion_table(mask, scan.affine, probabilities=prob))
    timed("save_nifti mask (.nii.gz)", lambda: save_nifti(mask, scan, out / "staged_mask.nii.gz"))

    def report():
        summary = {"scan": str(args.scan), **lesion_summary(table)}
        with (out / "staged_lesions.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]) if table else ["id", "voxels", "volume_mm3"])
            writer.writeheader()
            writer.writerows(table)
        write_text_atomic(out / "staged_lesions.json", json.dumps({**summary, "lesions": table}, indent=2) + "\n")

    timed("lesion report (CSV + JSON)", report)
    timed("QC overlay PNG", lambda: plot_overlay(volume, prediction=binarize(resampled, config.threshold, config.threshold_rule),
                                                 path=out / "staged_qc.png", title="staged"))
    return {"import_s": imported, "model_load_s": loaded, "stages": stages, "native_shape": list(scan.shape),
            "windows": int(windows.shape[0]), "first_batch_s": batch_times[0],
            "median_batch_s": statistics.median(batch_times[1:] or batch_times)}


def _end_to_end_child(args: argparse.Namespace) -> dict:
    """One predict_scan call, its model's time summed inside the same run."""
    start = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import keras  # noqa: F401  (imported here so that the model load does not include it)
    import tensorflow  # noqa: F401

    import planar3d.io, planar3d.nets.layers, planar3d.lesions, planar3d.pipeline, planar3d.plots  # noqa: E401,F401
    from planar3d.config import make_config
    from planar3d.predict import load_segmentation_model, predict_scan

    imported = time.perf_counter() - start
    start = time.perf_counter()
    model = _TimedModel(load_segmentation_model(args.model))
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    row = predict_scan(model, args.scan, Path(args.output_dir) / "end_to_end_mask.nii.gz", make_config("paper"))
    return {"import_s": imported, "model_load_s": loaded, "predict_scan_s": time.perf_counter() - start,
            "forward_s": model.seconds, "model_calls": model.calls, "n_lesions": row["n_lesions"]}


# ----------------------------------------------------------------------------- parent


def _run(command: list[str]) -> dict:
    """Run a process; its wall time, peak RSS (``wait4``), the 1-min load average before, its output."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{' '.join(command)} failed with status {process.returncode}:\n{tail}")
    return {"wall_s": wall, "peak_rss_gb": usage.ru_maxrss / 1e6, "load_before": load, "stdout": stdout}


def _child_result(run: dict) -> dict:
    return {**json.loads(run["stdout"].strip().splitlines()[-1]), "wall_s": run["wall_s"],
            "peak_rss_gb": run["peak_rss_gb"], "load_before": run["load_before"]}


def _save_model(size: int, path: Path) -> Path:
    from planar3d.nets.model import build_model

    build_model((16, size, size, 1), encoder_weights=None).save(path)
    return path


def _part_one(args: argparse.Namespace, scratch: Path, say) -> None:
    import nibabel as nib
    import numpy as np

    from planar3d.phantom import ensure_phantom

    start = time.perf_counter()
    root = ensure_phantom(args.phantom_dir or scratch / "phantom", n_per_centre=1, scale=args.scale, seed=0)
    record = next(r for r in sorted(root.iterdir()) if r.name.startswith(args.centre))
    scan = record / "3DFLAIR.nii.gz"
    say(f"## Part 1: one scan at {args.size}³, stage by stage", "")
    say(f"Phantom subject {record.name} (centre {args.centre}), native grid "
        f"{'x'.join(map(str, nib.load(scan).shape))} (scale {args.scale:g} of the paper's Table 1 grid) "
        f"[ready in {time.perf_counter() - start:.0f} s]; model `build_model((16, {args.size}, {args.size}, 1), "
        "encoder_weights=None)`, paper config (stride 8, inference batch 1, middle recomposition, threshold 16/256).", "")
    model = _save_model(args.size, scratch / f"model{args.size}.keras")
    out = scratch / "part1"
    out.mkdir()
    common = ["--model", str(model), "--scan", str(scan), "--output-dir", str(out)]
    staged = _child_result(_run([sys.executable, __file__, "--child", "staged", *common]))
    end = _child_result(_run([sys.executable, __file__, "--child", "end-to-end", *common]))

    forward_staged = next(s for name, s, _ in staged["stages"] if name.startswith("forward"))
    say("| stage (staged process) | s | % of stages | peak RSS during the stage GB |", "|---|---:|---:|---:|")
    total = sum(s for _, s, _ in staged["stages"])
    for name, seconds, peak in staged["stages"]:
        say(f"| {name} | {seconds:.2f} | {100 * seconds / total:.1f} | {peak:.2f} |")
    say(f"| **all stages** | **{total:.2f}** | 100.0 | {max(p for _, _, p in staged['stages']):.2f} |", "")
    say(f"Staged process: import {staged['import_s']:.1f} s, model load {staged['model_load_s']:.1f} s, "
        f"{staged['windows']} windows, first batch {staged['first_batch_s']:.2f} s, median batch "
        f"{staged['median_batch_s']:.2f} s; stages / forward = {total / forward_staged:.3f}; process wall "
        f"{staged['wall_s']:.0f} s, peak RSS {max(p for _, _, p in staged['stages']):.2f} GB (max of the stage "
        "peaks: resetting the high-water mark also resets the exit `ru_maxrss`); load average (1 min) before "
        f"{staged['load_before']:.1f}.", "")
    ratio = end["predict_scan_s"] / end["forward_s"]
    whole = end["wall_s"] / end["forward_s"]
    same = np.array_equal(np.asarray(nib.load(out / "staged_mask.nii.gz").dataobj),
                          np.asarray(nib.load(out / "end_to_end_mask.nii.gz").dataobj))
    say("| end-to-end process (fresh) | figure |", "|---|---:|")
    say(f"| TensorFlow + planar3d import | {end['import_s']:.1f} s |",
        f"| model load (.keras) | {end['model_load_s']:.1f} s |",
        f"| `predict_scan` (report + QC overlay, CLI defaults) | {end['predict_scan_s']:.1f} s |",
        f"| forward alone, same run ({end['model_calls']} model calls) | {end['forward_s']:.1f} s |",
        f"| **overhead ratio: predict_scan / forward** (goal ≤ {FORWARD_GOAL}) | **{ratio:.3f}** |",
        f"| whole process wall / forward (with import + model load) | {whole:.3f} |",
        f"| **peak RSS** (goal ≤ {RSS_GOAL_GB:g} GB) | **{end['peak_rss_gb']:.2f} GB** |",
        f"| staged mask identical to predict_scan's | {same} |",
        f"| load average (1 min) before | {end['load_before']:.1f} |", "")
    say(f"pipeline overhead: predict_scan / forward alone = {ratio:.3f} (goal <= {FORWARD_GOAL}: "
        f"{'met' if ratio <= FORWARD_GOAL else 'NOT met'}); peak RSS {end['peak_rss_gb']:.2f} GB "
        f"(goal <= {RSS_GOAL_GB:g} GB: {'met' if end['peak_rss_gb'] <= RSS_GOAL_GB else 'NOT met'})", "")


def _part_two(args: argparse.Namespace, scratch: Path, say) -> None:
    import nibabel as nib

    from planar3d.phantom import ensure_phantom

    per_centre = -(-args.scans // 3)
    root = ensure_phantom(args.folder_phantom_dir or scratch / "phantom-folder", n_per_centre=per_centre,
                          scale=args.folder_scale, seed=0)
    subjects = sorted(p for p in root.iterdir() if p.is_dir())
    subjects = [subjects[i * len(subjects) // args.scans] for i in range(args.scans)]  # spread over the centres
    scans = scratch / "part2" / "scans"
    for subject in subjects:
        (scans / subject.name).mkdir(parents=True)
        shutil.copy(subject / "3DFLAIR.nii.gz", scans / subject.name / "3DFLAIR.nii.gz")
    model = _save_model(args.folder_size, scratch / "part2" / f"model{args.folder_size}.keras")
    grids = ", ".join("x".join(map(str, nib.load(scans / s.name / "3DFLAIR.nii.gz").shape)) for s in subjects)
    say(f"## Part 2: folder of {args.scans} scans vs {args.scans} separate CLI calls at {args.folder_size}³", "")
    say(f"`python -m planar3d.predict --model M --input DIR --output OUT --no-qc` once vs once per scan "
        f"(`--input <scan> --output <mask>`); phantom scans at scale {args.folder_scale:g} ({grids}); model "
        f"`build_model((16, {args.folder_size}, {args.folder_size}, 1), encoder_weights=None)`; "
        f"{args.repeats} rounds, order alternating; wall time and peak RSS per process (`wait4`).", "")
    cli = [sys.executable, "-m", "planar3d.predict", "--model", str(model), "--no-qc"]
    folder_runs, separate_runs = [], []
    for round_ in range(args.repeats):
        def folder():
            run = _run([*cli, "--input", str(scans), "--output", str(scratch / "part2" / f"folder{round_}")])
            folder_runs.append(run)
            print(f"  round {round_}: folder {run['wall_s']:.1f} s, {run['peak_rss_gb']:.2f} GB", flush=True)

        def separate():
            runs = [_run([*cli, "--input", str(scans / s.name / "3DFLAIR.nii.gz"),
                          "--output", str(scratch / "part2" / f"separate{round_}" / f"{s.name}_mask.nii.gz")])
                    for s in subjects]
            separate_runs.append(runs)
            print(f"  round {round_}: separate " + ", ".join(f"{r['wall_s']:.1f}" for r in runs) + " s", flush=True)

        for step in (folder, separate) if round_ % 2 == 0 else (separate, folder):
            step()
    folder_s = statistics.median(r["wall_s"] for r in folder_runs)
    separate_s = statistics.median(sum(r["wall_s"] for r in runs) for runs in separate_runs)
    per_call = statistics.median(r["wall_s"] for runs in separate_runs for r in runs)
    folder_rss = max(r["peak_rss_gb"] for r in folder_runs)
    separate_rss = max(r["peak_rss_gb"] for runs in separate_runs for r in runs)
    loads = [r["load_before"] for r in folder_runs] + [r["load_before"] for runs in separate_runs for r in runs]
    say(f"| mode | total wall s (median of {args.repeats}) | per scan s | peak RSS GB (max) |", "|---|---:|---:|---:|")
    say(f"| folder mode, 1 process | {folder_s:.1f} | {folder_s / args.scans:.1f} | {folder_rss:.2f} |",
        f"| {args.scans} separate CLI calls | {separate_s:.1f} | {per_call:.1f} (median call) | {separate_rss:.2f} |", "")
    say(f"folder mode vs separate calls: {separate_s / folder_s:.2f}x faster ({args.scans} scans at "
        f"{args.folder_size}³); one-off cost per process (import + model load) ≈ "
        f"{(separate_s - folder_s) / (args.scans - 1):.1f} s; load average (1 min) during part 2 "
        f"{min(loads):.1f}-{max(loads):.1f}.", "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="part 1 cube edge (default 256, the paper)")
    parser.add_argument("--scale", type=float, default=1.0, help="part 1 native grid, fraction of the paper's (default 1.0)")
    parser.add_argument("--centre", choices=("01", "07", "08"), default="01",
                        help="part 1 subject's centre (default 01: 144x512x512 at scale 1)")
    parser.add_argument("--scans", type=int, default=5, help="part 2 scans (default 5)")
    parser.add_argument("--folder-size", type=int, default=64, help="part 2 cube edge (default 64)")
    parser.add_argument("--folder-scale", type=float, default=0.25, help="part 2 native grids, fraction of the paper's (default 0.25)")
    parser.add_argument("--repeats", type=int, default=3, help="part 2 rounds (default 3)")
    parser.add_argument("--parts", default="1,2", help="parts to run (default 1,2)")
    parser.add_argument("--phantom-dir", type=Path, help="part 1 phantom folder, reused if it exists (default: a temporary one)")
    parser.add_argument("--folder-phantom-dir", type=Path, help="part 2 phantom folder, reused if it exists (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=DOCS, help=f"folder for bench_inference.md (default {DOCS})")
    parser.add_argument("--child", choices=("staged", "end-to-end"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--scan", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = (_staged_child if args.child == "staged" else _end_to_end_child)(args)
        print(json.dumps(result))
        return
    if args.scans < 2:
        parser.error(f"--scans must be at least 2. Received: --scans={args.scans}")

    from _common import machine

    from planar3d.atomic import write_text_atomic

    lines: list[str] = []

    def say(*text: str) -> None:
        print("\n".join(text), flush=True)
        lines.extend(text)

    command = "python benchmarks/bench_inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    say("# Inference: one scan at the paper's size, and folder mode", "",
        f"Command: `{command.strip()}`", "", f"Machine: {machine()}. Load average (1/5/15 min) at the start: "
        + "/".join(f"{v:.1f}" for v in os.getloadavg()) + " (2 cores shared with other processes).", "")
    parts = {p.strip() for p in args.parts.split(",")}
    with tempfile.TemporaryDirectory(prefix="bench_inference-") as scratch:
        if "1" in parts:
            _part_one(args, Path(scratch), say)
        if "2" in parts:
            _part_two(args, Path(scratch), say)
    say("Load average (1/5/15 min) at the end: " + "/".join(f"{v:.1f}" for v in os.getloadavg()) + ".", "")
    print(f"wrote {write_text_atomic(args.out / 'bench_inference.md', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
