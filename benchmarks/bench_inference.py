"""Inference cost of one scan at the paper's size: the fast path's levers, stages, folder mode.

Part "agreement" (``--trained RUN/fold_k/best.keras``): that model on its fold's test scans (the
phantom's, from ``split.json``) at its own size: each lever alone and the defaults against
today's path (``predict_volume(crop="off", precision="float32", stream=False)``: whole field of view, per window, float32):
Dice of the binary masks, lesion counts, the largest probability difference inside the head
(:func:`planar3d.data.foreground.head_mask`), the crop's share of the window area; and the ``--tta``
cost as a ratio to one plain pass.

Part "levers" (``--size``, default 256): one phantom scan through ``predict_scan`` with today's
path (``--crop off --precision float32``, streaming off) and with the defaults, one process,
the forward step timed inside the same call, peak RSS per call (high-water mark reset); then
each lever's own forward (streamed encoder, crop per window, bfloat16) and combinations. The
model is the res-u-net at ``--size`` with the ``--trained`` model's weights (fully
convolutional) or an ImageNet encoder.

Part 1 (``--size``, default 256 = the paper): one phantom subject on its native grid
(``--scale`` 1 = the paper's Table 1 grid of centre ``--centre``, default 01: 144x512x512)
through the inference path of :func:`planar3d.apps.predict.predict_scan`, in two fresh processes:

* *staged*: the public functions ``predict_scan`` uses, called in its order and timed one by
  one, each with its peak RSS (high-water mark reset through ``/proc/self/clear_refs``):
  ``load_scan``, ``preprocess``, ``extract_windows``, the model calls alone (all windows,
  batch ``INFERENCE_BATCH_SIZE``), ``recompose``, ``to_native`` (+ clip), ``binarize``,
  ``lesion_table``, ``save_nifti``, the CSV/JSON report and the QC overlay;
* *end-to-end*: one ``predict_scan`` call on today's path (whole field of view, per window, float32;
  report and QC overlay), its model wrapped so that the time spent inside the model calls of
  that very run is summed.
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
    python benchmarks/bench_inference.py --trained RUN/fold_4/best.keras [--size 256] [--parts agreement,levers,1,2]
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


#: today's path, the paper's: whole windows, whole field of view, float32, batch 1.
TODAY = dict(crop="off", precision="float32", stream=False, batch_size=1)

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
    from planar3d.io.nifti import load_scan, save_nifti
    from planar3d.evaluation.lesions import lesion_summary, lesion_table
    from planar3d.evaluation.report_figures import plot_overlay
    from planar3d.nets.load import load_segmentation_model
    from planar3d.data.preprocess import preprocess, to_native
    from planar3d.inference.postprocess import binarize
    from planar3d.data.windows import extract_windows
    from planar3d.inference.recompose import recompose
    from planar3d.inference.pipeline import INFERENCE_BATCH_SIZE

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

    import planar3d.io.nifti, planar3d.nets.layers, planar3d.evaluation.lesions, planar3d.inference.pipeline, planar3d.evaluation.report_figures  # noqa: E401,F401
    from planar3d.config import make_config
    from planar3d.nets.load import load_segmentation_model
    from planar3d.apps.predict import predict_scan

    imported = time.perf_counter() - start
    start = time.perf_counter()
    model = load_segmentation_model(args.model)
    if args.variant == "today":  # the fast path replays layers and clones the model: no call to time
        model = _TimedModel(model)
    loaded = time.perf_counter() - start
    config = make_config("paper")
    if args.variant == "today":
        import planar3d.inference.predict

        config = make_config("paper", crop="off", precision="float32")
        planar3d.inference.predict.can_stream = lambda *a, **k: False
    start = time.perf_counter()
    row = predict_scan(model, args.scan, Path(args.output_dir) / f"end_to_end_{args.variant}_mask.nii.gz", config)
    return {"import_s": imported, "model_load_s": loaded, "predict_scan_s": time.perf_counter() - start,
            "forward_s": getattr(model, "seconds", None), "model_calls": getattr(model, "calls", None),
            "n_lesions": row["n_lesions"]}


# ----------------------------------------------------------------------------- issue 15: the levers


def _compare(fast, today, head, threshold: float = 16 / 256) -> dict:
    """Dice of the binary masks, lesion counts and the largest probability difference inside the head."""
    import numpy as np

    from planar3d.evaluation.lesions import label_lesions

    a, b = fast >= threshold, today >= threshold
    total = int(a.sum() + b.sum())
    dice = 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
    inside = np.abs(fast - today)[head] if head.any() else np.zeros(1)
    return {"dice": dice, "lesions_fast": label_lesions(a)[1], "lesions_today": label_lesions(b)[1],
            "max_diff_head": float(inside.max()), "max_diff_all": float(np.abs(fast - today).max())}


def _timed_variant(function) -> tuple[object, float, float, float]:
    """Result, wall seconds, CPU seconds of this process and peak RSS (GB, high-water mark reset) of one call.

    On a machine shared with other jobs the wall time follows the load; the process's CPU time
    (user + system, all threads) follows the work done, so ratios are read from it.
    """
    _reset_peak_rss()
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - cpu, _rss_gb("VmHWM")


def _trained_at(size: int, trained: str | None):
    """The res-u-net at ``size``: ImageNet encoder, or every weight copied from a trained ``.keras`` model."""
    from planar3d.nets.model import build_model

    if not trained:
        return build_model((16, size, size, 1), encoder_weights="imagenet"), "ImageNet encoder, random decoder"
    from planar3d.nets.load import load_segmentation_model

    source = load_segmentation_model(trained)
    model = build_model((16, size, size, 1), encoder_weights=None)
    model.set_weights(source.get_weights())  # fully convolutional: no weight depends on rows x cols
    return model, f"weights of {trained} (trained at {source.input_shape[2]}³)"


def _agreement(args: argparse.Namespace, say) -> None:
    """The demo's trained model on its phantom test scans: fast vs today's path, per lever, and --tta cost."""
    import nibabel as nib

    from planar3d.config import load_config
    from planar3d.inference import precision
    from planar3d.inference import predict as inference
    from planar3d.data.foreground import crop_boxes, head_mask
    from planar3d.io.phantom import default_phantom_root
    from planar3d.nets.load import load_segmentation_model
    from planar3d.data.preprocess import preprocess

    fold = Path(args.trained).parent
    config = load_config(fold / "config.json")
    tests = json.loads((fold / "split.json").read_text())["test"]
    root = next(p for p in sorted(default_phantom_root().glob("*")) if (p / tests[0] / "3DFLAIR.nii.gz").is_file())
    model = load_segmentation_model(args.trained)
    size = int(model.input_shape[2])
    auto = precision.resolve_precision("auto")
    say(f"## Agreement: the demo's trained model on the phantom's test scans ({size}³)", "",
        f"Model `{args.trained}` (demo preset, fold {fold.name}); test scans {', '.join(tests)} of `{root}`; "
        f"paper inference (stride 8, middle recomposition, threshold 16/256) in the resampled {size}³ cube. "
        f"'today' = `predict_volume(crop='off', precision='float32', stream=False)` (batch 1, whole field of view, float32). Precision 'auto' "
        f"resolves to **{auto}** here.", "")
    variants = {
        "streamed encoder alone (float32)": dict(crop="off", precision="float32", stream=True),
        "crop per window alone (float32)": dict(crop="window", precision="float32", stream=False),
        "crop per scan alone (float32)": dict(crop="scan", precision="float32", stream=False),
        "bfloat16 alone": dict(crop="off", precision="bfloat16", stream=False),
        "defaults: crop auto + stream + precision auto": dict(crop="auto", precision="auto", stream=True),
    }
    say("| scan | variant | Dice vs today | lesions (fast / today) | max prob diff inside head | max diff anywhere | window area cropped |",
        "|---|---|---:|---:|---:|---:|---:|")
    tta_ratios, worst = [], {}
    for pid in tests:
        scan = nib.load(root / pid / "3DFLAIR.nii.gz")
        volume = preprocess(scan, size=size, robust=config.robust_normalisation)[0]
        head = head_mask(volume)
        today, _, today_s, _ = _timed_variant(lambda: inference.predict_volume(model, volume, 16, 8, **TODAY))
        for name, options in variants.items():
            fast = inference.predict_volume(model, volume, 16, 8, **options)
            row = _compare(fast, today, head)
            crop = options["crop"] if options["crop"] != "auto" else "window"
            area = "-" if options["crop"] == "off" else f"{_area(crop_boxes(head, per=crop), size):.2f}"
            worst[name] = min(worst.get(name, (1.0,))[0], row["dice"]), max(worst.get(name, (0, 0.0))[1], row["max_diff_head"])
            say(f"| {pid} | {name} | {row['dice']:.4f} | {row['lesions_fast']} / {row['lesions_today']} | "
                f"{row['max_diff_head']:.2e} | {row['max_diff_all']:.2e} | {area} |")
        if tta_ratios:  # --tta cost on the first scan only: 16 passes more
            continue
        # --tta cost, interleaved: plain then 8 flips, both paths
        _, _, fast_s, _ = _timed_variant(lambda: inference.predict_volume(model, volume, 16, 8))
        _, _, fast_tta_s, _ = _timed_variant(lambda: inference.predict_volume(model, volume, 16, 8, tta=True))
        _, _, today_tta_s, _ = _timed_variant(lambda: inference.predict_volume(model, volume, 16, 8, tta=True, **TODAY))
        tta_ratios.append((today_tta_s / today_s, fast_tta_s / fast_s))
    say("")
    for name, (dice, diff) in worst.items():
        say(f"- {name}: lowest Dice {dice:.4f}, largest probability difference inside the head {diff:.2e}")
    say("", f"`--tta` cost (8 flips) / one plain pass (CPU time), first test scan at {size}³: today's path "
        + ", ".join(f"{a:.2f}" for a, _ in tta_ratios) + "; defaults " + ", ".join(f"{b:.2f}" for _, b in tta_ratios) + ".", "")


def _area(boxes, size: int) -> float:
    """Mean fraction of the window area the boxes cover (skipped windows count 0)."""
    return sum(b.shape[0] * b.shape[1] for b in boxes if b is not None) / (size * size * len(boxes))


def _levers(args: argparse.Namespace, scratch: Path, say, flush) -> None:
    """Whole predict_scan today vs fast at --size, and each lever's own forward ratio, one process."""
    import nibabel as nib

    from planar3d.config import make_config
    from planar3d.data.foreground import crop_boxes, head_mask
    from planar3d.inference import pipeline, precision
    from planar3d.inference import predict as inference
    from planar3d.io.phantom import ensure_phantom
    from planar3d.apps.predict import predict_scan
    from planar3d.data.preprocess import preprocess

    if args.scan:  # a given scan (e.g. a test scan of the --trained run)
        scan_path = Path(args.scan)
        record = scan_path.parent
    else:
        root = ensure_phantom(args.phantom_dir or scratch / "phantom", n_per_centre=1, scale=args.scale, seed=0)
        record = next(r for r in sorted(root.iterdir()) if r.name.startswith(args.centre))
        scan_path = record / "3DFLAIR.nii.gz"
    model, described = _trained_at(args.size, args.trained)
    size = args.size
    volume = preprocess(nib.load(scan_path), size=size)[0]
    head = head_mask(volume)
    auto = precision.resolve_precision("auto")
    say(f"## Whole predict at {size}³ and each lever", "",
        f"Phantom subject {record.name} (centre {args.centre}), native grid "
        f"{'x'.join(map(str, nib.load(scan_path).shape))}; model: {described}. One process; variants run once each, "
        "in the order of the table (the machine is shared, so a ratio is the figure to read, not the seconds). "
        f"'auto' precision resolves to **{auto}**. Head mask: {head.mean():.2f} of the volume; crop boxes cover "
        f"{_area(crop_boxes(head, per='window'), size):.2f} (per window) / {_area(crop_boxes(head, per='scan'), size):.2f} "
        "(per scan) of the windows' area.", "")

    # whole predict_scan: the forward step timed inside the same call, its probabilities kept
    captured: dict[str, object] = {}
    original = pipeline.segment_volume

    def segment(*a, **k):
        start, cpu = time.perf_counter(), time.process_time()
        result = original(*a, **k)
        captured["forward_s"], captured["forward_cpu"] = time.perf_counter() - start, time.process_time() - cpu
        captured["resampled"] = result[2]
        return result

    pipeline.segment_volume = segment
    stream_on = inference.can_stream

    def whole(config, stream: bool, name: str):
        inference.can_stream = stream_on if stream else (lambda *a, **k: False)
        try:
            row, seconds, cpu, peak = _timed_variant(lambda: predict_scan(model, scan_path, scratch / f"{name}_mask.nii.gz", config))
        finally:
            inference.can_stream = stream_on
        return {"s": seconds, "cpu": cpu, "forward_s": captured["forward_s"], "forward_cpu": captured["forward_cpu"],
                "peak": peak, "prob": captured["resampled"], "n_lesions": row["n_lesions"]}

    paper = make_config("paper", size=size, crop="off", precision="float32")
    defaults = make_config("paper", size=size)
    say("Seconds as wall / CPU (user + system of this process, 2 threads); ratios from CPU time, wall-time ratio in brackets.", "",
        "| run | whole predict_scan s | forward s | **ratio, whole** | ratio, forward | peak RSS GB | Dice vs today | lesions (in the cube) | max prob diff in head |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    today = whole(paper, False, "today")
    say(f"| today: whole FOV, per window, float32 | {today['s']:.0f} / {today['cpu']:.0f} | {today['forward_s']:.0f} / {today['forward_cpu']:.0f} "
        f"| 1 | 1 | {today['peak']:.2f} | 1 | {_compare(today['prob'], today['prob'], head)['lesions_today']} | 0 |")
    flush()
    for label, config, name in ((f"defaults: crop auto + stream + {auto}", defaults, "fast"),
                                ("crop auto + stream, float32", make_config("paper", size=size, precision="float32"), "fast32")):
        fast = whole(config, True, name)
        row = _compare(fast["prob"], today["prob"], head)
        say(f"| **{label}** | {fast['s']:.0f} / {fast['cpu']:.0f} | {fast['forward_s']:.0f} / {fast['forward_cpu']:.0f} | "
            f"**{fast['cpu'] / today['cpu']:.3f}** ({fast['s'] / today['s']:.3f}) | {fast['forward_cpu'] / today['forward_cpu']:.3f} "
            f"({fast['forward_s'] / today['forward_s']:.3f}) | {fast['peak']:.2f} | {row['dice']:.4f} | {row['lesions_fast']} | {row['max_diff_head']:.2e} |")
        flush()
    if args.quick:
        say("")
        return
    levers = {
        "crop per window + stream (float32)": dict(crop="window", precision="float32", stream=True),
        "bfloat16 alone": dict(crop="off", precision="bfloat16", stream=False),
        "streamed encoder alone": dict(crop="off", precision="float32", stream=True),
        "crop per window alone": dict(crop="window", precision="float32", stream=False),
        "crop per scan + stream + bfloat16": dict(crop="scan", precision="bfloat16", stream=True),
        "defaults with bfloat16 run eagerly (no tf.function)": dict(crop="auto", precision="bfloat16", stream=True, graph=False),
        "defaults (forward only, for the row above)": dict(crop="auto", precision="bfloat16", stream=True),
    }
    graphs_on = precision.forward_functions
    for name, options in levers.items():
        options = dict(options)
        if not options.pop("graph", True):
            precision.forward_functions = lambda net, precision: precision.Forward(net, graph=False)
        try:
            prob, seconds, cpu, peak = _timed_variant(lambda: inference.predict_volume(model, volume, 16, 8, **options))
        finally:
            precision.forward_functions = graphs_on
        row = _compare(prob, today["prob"], head)
        say(f"| {name} (forward only) | - | {seconds:.0f} / {cpu:.0f} | - | {cpu / today['forward_cpu']:.3f} ({seconds / today['forward_s']:.3f}) "
            f"| {peak:.2f} | {row['dice']:.4f} | {row['lesions_fast']} | {row['max_diff_head']:.2e} |")
        flush()
    say("")


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

    from planar3d.io.phantom import ensure_phantom

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
    end = _child_result(_run([sys.executable, __file__, "--child", "end-to-end", "--variant", "today", *common]))

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


def _part_rss(args: argparse.Namespace, scratch: Path, say) -> None:
    """Peak RSS of a whole predict_scan at --size, today's path vs the defaults, each in a fresh process."""
    import nibabel as nib

    from planar3d.io.phantom import ensure_phantom

    root = ensure_phantom(args.phantom_dir or scratch / "phantom", n_per_centre=1, scale=args.scale, seed=0)
    record = next(r for r in sorted(root.iterdir()) if r.name.startswith(args.centre))
    scan = record / "3DFLAIR.nii.gz"
    model = _save_model(args.size, scratch / f"model{args.size}.keras")
    out = scratch / "rss"
    out.mkdir(exist_ok=True)
    say(f"## Peak memory of one predict_scan at {args.size}³ (fresh processes)", "",
        f"Phantom subject {record.name}, native grid {'x'.join(map(str, nib.load(scan).shape))}; "
        f"`build_model((16, {args.size}, {args.size}, 1), encoder_weights=None)`; each variant in its own process "
        "(TensorFlow, model, scan, report and QC overlay included); peak RSS = `ru_maxrss` from `wait4`.", "",
        "| variant | process wall s | predict_scan s | peak RSS GB (goal ≤ 4) |", "|---|---:|---:|---:|")
    for variant, label in (("today", "today: whole FOV, per window, float32"), ("defaults", "defaults: crop auto + stream + precision auto")):
        run = _child_result(_run([sys.executable, __file__, "--child", "end-to-end", "--variant", variant,
                                  "--model", str(model), "--scan", str(scan), "--output-dir", str(out)]))
        say(f"| {label} | {run['wall_s']:.0f} | {run['predict_scan_s']:.0f} | {run['peak_rss_gb']:.2f} |")
    say("")


def _part_two(args: argparse.Namespace, scratch: Path, say) -> None:
    import nibabel as nib

    from planar3d.io.phantom import ensure_phantom

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
    parser.add_argument("--parts", default="agreement,levers",
                        help="parts to run: agreement (trained model, test scans), levers (whole predict at --size, each "
                        "lever), rss (peak memory of today vs the defaults, fresh processes), 1 (stages), 2 (folder mode) "
                        "(default agreement,levers)")
    parser.add_argument("--trained", help="a trained model (RUN/fold_k/best.keras; its split.json and config.json beside it): "
                        "agreement part, and its weights for the levers part (default: ImageNet encoder, random decoder)")
    parser.add_argument("--phantom-dir", type=Path, help="part 1 phantom folder, reused if it exists (default: a temporary one)")
    parser.add_argument("--folder-phantom-dir", type=Path, help="part 2 phantom folder, reused if it exists (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=DOCS, help=f"folder for bench_inference.md (default {DOCS})")
    parser.add_argument("--child", choices=("staged", "end-to-end"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="levers part: only the whole-predict rows (today, defaults, float32)")
    parser.add_argument("--variant", choices=("today", "defaults"), default="defaults", help=argparse.SUPPRESS)
    parser.add_argument("--scan", help="levers part: this FLAIR scan instead of a generated phantom subject")
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

    from planar3d.machine import cpu_isa_flags

    previous = ""
    target = args.out / "bench_inference.md"
    if target.is_file():  # earlier parts' results stay below the new ones
        text = target.read_text(encoding="utf-8")
        previous = text[text.index("\n## ") + 1:] if "\n## " in text else ""
        previous = previous.split("\n# Earlier runs\n")[-1] if "\n# Earlier runs\n" in previous else previous

    def flush() -> None:
        write_text_atomic(target, "\n".join(lines) + ("\n\n# Earlier runs\n\n" + previous if previous else ""))

    command = "python benchmarks/bench_inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    say("# Inference: one scan at the paper's size", "",
        f"Command: `{command.strip()}`", "", f"Machine: {machine()}. CPU ISA: {' '.join(cpu_isa_flags()) or 'unknown'}. "
        f"Threads: TensorFlow defaults (intra-op {os.cpu_count()}). Load average (1/5/15 min) at the start: "
        + "/".join(f"{v:.1f}" for v in os.getloadavg()) + " (cores shared with other processes).", "")
    parts = {p.strip() for p in args.parts.split(",")}
    with tempfile.TemporaryDirectory(prefix="bench_inference-") as scratch:
        if "agreement" in parts:
            if not args.trained:
                parser.error("the agreement part needs --trained RUN/fold_k/best.keras")
            _agreement(args, say)
            flush()
        if "levers" in parts:
            _levers(args, Path(scratch), say, flush)
            flush()
        if "rss" in parts:
            _part_rss(args, Path(scratch), say)
            flush()
        if "1" in parts:
            _part_one(args, Path(scratch), say)
        if "2" in parts:
            _part_two(args, Path(scratch), say)
    say("Load average (1/5/15 min) at the end: " + "/".join(f"{v:.1f}" for v in os.getloadavg()) + ".", "")
    flush()
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
