"""Runtimes (issue 30): one scan through TensorFlow, ONNX Runtime and OpenVINO, one process, against the limit.

The phantom's first subject of ``--centre`` (native grid ``--scale`` of the paper's), preprocessed to
``--size``³ (default 256, the paper; as ``benchmarks/bench_inference.py``), runs through
:func:`planar3d.inference.predict.predict_volume` with the defaults' structure (crop auto, streamed
encoder, kept-slice decoder) on each path:

* TensorFlow on the Keras model, float32 (the reference of every ratio and agreement) and bfloat16
  where the CPU computes it natively (avx512_bf16 / amx_bf16, ``--precision auto``'s rule);
* TensorFlow on the SavedModel export, ONNX Runtime on the ONNX export, OpenVINO on the OpenVINO IR
  export and on the ONNX export, all float32; OpenVINO in bfloat16 (``INFERENCE_PRECISION_HINT``
  ``bf16``) where the CPU has avx512_bf16 or amx_bf16. ONNX Runtime's CPU provider offers no
  bfloat16 convolutions, so none is run;
* ONNX Runtime and OpenVINO on the INT8 export (``planar3d export --quantize int8``: the decoder's
  convolutions in int8, calibrated on phantom scans at ``--size``, the encoder in float32).

The exports are made by ``planar3d export`` (its agreement check at 32³) from the same weights; the
networks are fully convolutional, so they run the ``--size`` scan as they are. Paths are timed in
one process, interleaved (``benchmarks/_common.py``: ``--warmup`` untimed runs each, then the median
of ``--repeats``), wall and CPU time (user + system, all threads of the process); ratios to TensorFlow
float32 of the same process. Agreement with TensorFlow float32 in the preprocessed cube (threshold
16/256): Dice, lesion count, lesion volume.

The limit: the network's convolution MACs per scan from the layer shapes (encoder blocks 1-4 once
per slice; bottleneck and decoder once per window, the last block on the kept slices and their halo,
the output on the kept slices), the whole field of view and the head boxes the crop keeps, 2 FLOPs per
MAC, divided by the CPU's peak for the data type: cores x GHz x FLOPs/cycle/core (float32: AVX2 FMA
32, AVX-512 64; bfloat16: AVX512_BF16 128, AMX 1024), each figure printed as assumed.

The model: ``--trained`` weights (fully convolutional), else the VGG16 ImageNet encoder (random if
its weights are not found) and a random decoder whose output bias puts the 16/256 threshold at the
99th percentile of the head's probabilities (measured at 64³), so that about 1 % of the head is
'lesion' and the agreement figures mean something.

Usage:
    python benchmarks/bench_runtime.py [--size 256] [--trained RUN/fold_k/best.keras] [--out docs/bench_runtime.md]
    python benchmarks/bench_runtime.py --size 64       # a quick check
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

THRESHOLD = 16 / 256
#: the paths, in the order run: (name, runtime, export format or None for the Keras model, precision).
PATHS = (
    ("tensorflow-keras-float32", "tensorflow", None, "float32"),
    ("tensorflow-keras-bfloat16", "tensorflow", None, "bfloat16"),
    ("tensorflow-savedmodel-float32", "tensorflow", "savedmodel", "float32"),
    ("onnxruntime-onnx-float32", "onnxruntime", "onnx", "float32"),
    ("openvino-ir-float32", "openvino", "openvino", "float32"),
    ("openvino-onnx-float32", "openvino", "onnx", "float32"),
    ("openvino-ir-bfloat16", "openvino", "openvino", "bfloat16"),
    ("onnxruntime-onnx-int8", "onnxruntime", "onnx-int8", "int8"),
    ("openvino-onnx-int8", "openvino", "onnx-int8", "int8"),
)
#: export format -> the packages its export and runtime need.
_PACKAGES = {"savedmodel": (), "onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",),
             "onnx-int8": ("tf2onnx", "onnx", "onnxruntime")}


# ----------------------------------------------------------------------------- the limit
def _peak_per_cycle(flags: set[str]) -> dict[str, tuple[int, str]]:
    """FLOPs per cycle per core for each data type, and the assumption behind it."""
    if "avx512f" in flags:
        f32 = (64, "AVX-512 FMA: 2 units x 16 float32 lanes x 2")
    elif "avx2" in flags and "fma" in flags:
        f32 = (32, "AVX2 FMA: 2 units x 8 float32 lanes x 2")
    else:
        f32 = (16, "SSE/AVX without FMA: 16 (assumed)")
    if "amx_bf16" in flags:
        bf16 = (1024, "AMX-BF16: 1024 (Intel's figure per core)")
    elif "avx512_bf16" in flags:
        bf16 = (128, "AVX512_BF16 VDPBF16PS: 2 units x 32 bfloat16 pairs x 2")
    else:
        bf16 = (f32[0], "no native bfloat16: float32's peak")
    if "avx512_vnni" in flags:
        int8 = (256, "AVX512-VNNI VPDPBUSD: 2 units x 64 int8 pairs x 2")
    elif "avx_vnni" in flags:
        int8 = (128, "AVX-VNNI VPDPBUSD: 2 units x 32 int8 pairs x 2")
    elif "avx2" in flags:
        int8 = (64, "AVX2 without VNNI: VPMADDUBSW + VPMADDWD + VPADDD, about 32 int8 MACs per cycle (assumed)")
    else:
        int8 = (f32[0], "no int8 dot product: float32's peak")
    return {"float32": f32, "bfloat16": bf16, "int8": int8}


def _ghz() -> float:
    """The clock /proc/cpuinfo reports (the first core's current MHz), GHz; 0 if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("cpu mhz"):
                    return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return 0.0


def _layer_macs(model) -> dict[str, float]:
    """MACs of each convolution of one window of ``model`` (its own input shape)."""
    import numpy as np

    macs = {}
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights or weights[0].ndim != 5:
            continue
        kernel = weights[0].shape
        if type(layer).__name__ == "Conv3DTranspose":  # (d, h, w, out, in): each input voxel to prod(k) outputs
            macs[layer.name] = float(np.prod(layer.input.shape[1:4]) * np.prod(kernel[:3]) * kernel[3] * kernel[4])
        else:  # (d, h, w, in, out) per output voxel
            macs[layer.name] = float(np.prod(layer.output.shape[1:4]) * np.prod(kernel[:3]) * kernel[3] * kernel[4])
    return macs


def network_macs(size: int, volume, crop_head: bool = True) -> dict:
    """Convolution MACs of one ``size``³ scan through the streamed, kept-slice path.

    The encoder (blocks 1-4) runs once per slice, on the union of the boxes of the windows holding
    each 8-slice chunk; the bottleneck and decoder once per window with head, on its box, the last
    block on the kept slices plus the halo (:func:`planar3d.nets.stream.decode`), the output on
    the kept slices. Per-window MACs scale with the box's area (all layers are convolutions).
    """
    from planar3d.data.foreground import crop_boxes, head_mask
    from planar3d.data.geometry import kept_slices, window_starts
    from planar3d.nets.model import DECODER_SKIPS, ENCODER_LAYERS, build_model
    from planar3d.nets.split import decoder_halo

    window, stride = 16, 8
    model = build_model((window, size, size, 1), encoder_weights=None)
    macs = _layer_macs(model)
    encoder_names = {f"block{b}_conv{c}" for b, n, _ in ENCODER_LAYERS for c in range(1, n + 1)}
    last = list(DECODER_SKIPS)[-1]
    last_block = {f"block{last}_up", f"block{last}_conv1", f"block{last}_conv2"}
    encoder_window = sum(v for k, v in macs.items() if k in encoder_names)
    decoder_other = sum(v for k, v in macs.items() if k not in encoder_names | last_block | {"output"})
    decoder_last, output = sum(macs[k] for k in last_block), macs["output"]
    halo = decoder_halo(model)

    starts, keeps = window_starts(size, window, stride), kept_slices(size, window, stride)
    boxes = crop_boxes(head_mask(volume), window, stride, per="window") if crop_head else [None] * len(starts)
    area = [1.0 if not crop_head else (0.0 if b is None else b.shape[0] * b.shape[1] / size**2) for b in boxes]
    chunk_area: dict[int, float] = {}
    chunk_boxes: dict[int, object] = {}
    for k, box in enumerate(boxes):
        for c in range(k, k + window // stride):
            if not crop_head:
                chunk_area[c] = 1.0
            elif box is not None:
                chunk_boxes[c] = box if c not in chunk_boxes else chunk_boxes[c].union(box)
    for c, box in chunk_boxes.items():
        chunk_area[c] = box.shape[0] * box.shape[1] / size**2
    encoder = sum(chunk_area.values()) * encoder_window * stride / window  # per chunk of `stride` slices
    decoder = 0.0
    for (lo, hi), a in zip(keeps, area):
        start, stop = max(0, lo - halo) // 2 * 2, min(window, -(-(hi + halo) // 2) * 2)
        decoder += a * (decoder_other + decoder_last * (stop - start) / window + output * (hi - lo) / window)
    return {"encoder_per_slice": encoder_window / window, "decoder_per_window": decoder_other + decoder_last + output,
            "encoder": encoder, "decoder": decoder, "total": encoder + decoder, "windows": len(starts),
            "windows_run": sum(a > 0 for a in area), "area": sum(area) / len(area)}


# ----------------------------------------------------------------------------- the model
def _model_at(size: int, trained: str | None, scan_path: Path):
    """The res-u-net at ``size`` and what it is: trained weights, or ImageNet/random with a 1 % lesion bias."""
    import numpy as np

    from planar3d.data.foreground import head_mask
    from planar3d.data.preprocess import preprocess
    from planar3d.errors import Planar3DError
    from planar3d.inference.predict import predict_volume
    from planar3d.io.nifti import load_scan
    from planar3d.nets.model import build_model

    if trained:
        from planar3d.nets.load import load_segmentation_model

        source = load_segmentation_model(trained)
        model = build_model((16, size, size, 1), encoder_weights=None)
        model.set_weights(source.get_weights())
        return model, f"weights of {trained} (trained at {source.input_shape[2]}³)"
    try:
        model = build_model((16, size, size, 1), encoder_weights="imagenet", seed=0)
        described = "VGG16 ImageNet encoder, random decoder (seed 0)"
    except (Planar3DError, OSError) as error:
        model = build_model((16, size, size, 1), encoder_weights=None, seed=0)
        described = f"random weights (seed 0; ImageNet weights not loaded: {error})"
    small = min(size, 64)
    probe = build_model((16, small, small, 1), encoder_weights=None)
    probe.set_weights(model.get_weights())
    volume = preprocess(load_scan(scan_path), size=small)[0]
    prob = predict_volume(probe, volume, precision="float32")
    head = prob[head_mask(volume) & (prob > 0)]
    quantile = float(np.clip(np.quantile(head, 0.99), 1e-6, 1 - 1e-6))
    kernel, bias = model.get_layer("output").get_weights()
    shift = np.log(THRESHOLD / (1 - THRESHOLD)) - np.log(quantile / (1 - quantile))
    model.get_layer("output").set_weights([kernel, bias + np.float32(shift)])
    return model, described + f"; output bias shifted by {shift:+.2f} so that 16/256 is the head's 99th percentile at {small}³"


def _export(model, formats: list[str], scan_path: Path, scratch: Path) -> dict:
    """``planar3d export`` of ``model``'s weights (a 32³ copy, checked at 32³) in each format; the INT8
    export (``onnx-int8``) at the model's own size, calibrated on two of the built-in phantom's
    scans and checked on its third (export's defaults), since activation ranges depend on size."""
    from planar3d.apps.export import export_model
    from planar3d.nets.model import build_model

    small = build_model((16, 32, 32, 1), encoder_weights=None)
    small.set_weights(model.get_weights())
    path = scratch / "model" / "best.keras"
    path.parent.mkdir(parents=True)
    small.save(path)
    done = {}
    for fmt in formats:
        started = time.perf_counter()
        if fmt == "onnx-int8":  # calibrated and checked at the scan's size, on the phantom's scans
            full = scratch / "model_full" / "best.keras"
            full.parent.mkdir(exist_ok=True)
            model.save(full)
            result = export_model(full, "onnx", scratch / fmt, quantize="int8")
        else:
            result = export_model(path, fmt, scratch / fmt, check=scan_path)
        done[fmt] = (result, time.perf_counter() - started)
    return done


# ----------------------------------------------------------------------------- agreement
def _agreement(probabilities, reference, voxel_ml: float) -> dict:
    import numpy as np

    from planar3d.evaluation.lesions import label_lesions
    from planar3d.evaluation.metrics import dice

    a, b = probabilities >= THRESHOLD, reference >= THRESHOLD
    va, vb = float(a.sum()) * voxel_ml, float(b.sum()) * voxel_ml
    return {"dice": dice(b, a), "lesions": int(label_lesions(a)[1]), "lesions_ref": int(label_lesions(b)[1]),
            "volume_ml": va, "volume_ml_ref": vb, "volume_diff": (va - vb) / vb if vb else float("nan"),
            "max_diff": float(np.max(np.abs(probabilities - reference)))}


def _fresh_processes(model, scan_path: Path, scratch: Path, runs: int, base_wall: float, wall: dict) -> list[str]:
    """Wall time of ``runs`` fresh ``python -m planar3d.predict`` processes (the model saved at its
    size, default settings: crop auto, precision auto, the default runtime): what a user waits for,
    TensorFlow's start, the model's load and the scan's reading and writing included."""
    import subprocess

    path = scratch / "fresh" / "best.keras"
    path.parent.mkdir()
    model.save(path)
    command = [sys.executable, "-m", "planar3d.predict", "--model", str(path), "--input", str(scan_path),
               "--output", str(scratch / "fresh" / "mask.nii.gz"), "--overwrite", "--quiet"]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    default = min(wall, key=lambda name: wall[name] if name.startswith("tensorflow-keras") else float("inf"))
    median = statistics.median(seconds)
    return ["## A fresh `predict` process", "",
            f"`python -m planar3d.predict --model best.keras --input SCAN --output mask.nii.gz --overwrite --quiet` "
            f"(the model above saved at its size; default settings), {runs} run(s), one after the other: wall "
            + ", ".join(f"{s:.1f}" for s in seconds) + f" s, median **{median:.1f} s** = {median / base_wall:.2f}x the "
            f"in-process TensorFlow float32 path and {median / wall[default]:.2f}x its fastest in-process Keras path "
            f"({default}); the difference is TensorFlow's start, the model's load, reading the scan and "
            "writing the mask, lesion tables and QC picture."]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="cube edge the scan is resampled to (default 256, the paper)")
    parser.add_argument("--scale", type=float, default=0.5,
                        help="phantom native grid, fraction of the paper's (default 0.5: 72x256x256 for centre 01)")
    parser.add_argument("--centre", choices=("01", "07", "08"), default="01", help="phantom subject's centre (default 01)")
    parser.add_argument("--scan", type=Path, help="this FLAIR scan instead of the phantom's")
    parser.add_argument("--trained", help="a trained best.keras whose weights the network takes (default: ImageNet encoder, "
                        "random decoder biased to a 1 %% lesion load)")
    parser.add_argument("--paths", default=",".join(name for name, *_ in PATHS),
                        help="comma-separated paths to run (default: all the machine can)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each path first (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each path, interleaved; median (default 1)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime / OpenVINO threads (default: their own, the cores)")
    parser.add_argument("--ghz", type=float, help="clock assumed for the peak (default: /proc/cpuinfo's cpu MHz)")
    parser.add_argument("--phantom-dir", type=Path, help="phantom folder, reused if it exists (default: a temporary one)")
    parser.add_argument("--fresh", type=int, default=0, metavar="N",
                        help="also time N fresh `python -m planar3d.predict` processes on the scan with the same "
                             "weights at --size (the README's command, default settings; default 0: not run)")
    parser.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import interleaved_medians, isa_summary, machine, peak_rss_gb

    import nibabel as nib
    import numpy as np

    from planar3d.data.preprocess import preprocess
    from planar3d.inference.pipeline import resampled_spacing
    from planar3d.inference.precision import resolve_precision
    from planar3d.inference.predict import predict_volume
    from planar3d.inference.runtimes import load_runtime
    from planar3d.io.phantom import ensure_phantom
    from planar3d.machine import cpu_isa_flags

    lines: list[str] = []

    def say(*text: str) -> None:
        print("\n".join(text), flush=True)
        lines.extend(text)

    flags = set(cpu_isa_flags())
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(wanted) - {name for name, *_ in PATHS})
    if unknown:
        parser.error(f"unknown paths {unknown}; known: {[name for name, *_ in PATHS]}")
    command = "python benchmarks/bench_runtime.py " + " ".join(argv if argv is not None else sys.argv[1:])
    say(f"# Runtimes: one {args.size}³ scan, one process", "", f"Command: `{command.strip()}`", "",
        f"Machine: {machine()}. Load average (1/5/15 min) at the start: "
        + "/".join(f"{v:.1f}" for v in os.getloadavg()) + ".", "")

    with tempfile.TemporaryDirectory(prefix="bench_runtime-") as scratch_name:
        scratch = Path(scratch_name)
        if args.scan:
            scan_path, subject = args.scan, args.scan.name
        else:
            root = ensure_phantom(args.phantom_dir or scratch / "phantom", n_per_centre=1, scale=args.scale, seed=0)
            record = next(r for r in sorted(root.iterdir()) if r.name.startswith(args.centre))
            scan_path, subject = record / "3DFLAIR.nii.gz", f"phantom subject {record.name} (centre {args.centre})"
        volume, _, meta = preprocess(nib.load(scan_path), size=args.size)
        voxel_ml = float(np.prod(resampled_spacing(meta))) / 1000.0
        model, described = _model_at(args.size, args.trained, scan_path)

        skipped: dict[str, str] = {}
        runnable = []
        for name, runtime, fmt, precision in PATHS:
            if name not in wanted:
                continue
            missing = [p for p in _PACKAGES.get(fmt or "savedmodel", ()) + ((runtime,) if runtime != "tensorflow" else ())
                       if importlib.util.find_spec(p) is None]
            if missing:
                skipped[name] = f"{', '.join(sorted(set(missing)))} not installed"
            elif precision == "bfloat16" and not native_bf16:
                skipped[name] = "no native bfloat16 on this CPU (avx512_bf16 / amx_bf16)"
            elif name == "tensorflow-keras-bfloat16" and resolve_precision("auto") != "bfloat16":
                skipped[name] = "TensorFlow does not compute bfloat16 natively here"
            else:
                runnable.append((name, runtime, fmt, precision))
        if "tensorflow-keras-float32" not in [name for name, *_ in runnable]:
            parser.error("the reference path tensorflow-keras-float32 must be among --paths")

        exported = _export(model, sorted({fmt for _, _, fmt, _ in runnable if fmt}), scan_path, scratch)
        say(f"Scan: {subject}, native grid {'x'.join(map(str, nib.load(scan_path).shape))}, preprocessed to {args.size}³. "
            f"Model: {described}. Exports: " + ", ".join(
                f"{fmt} ({seconds:.0f} s, agreement at {result.metadata['size']}³"
                + (f" on the phantom scan {Path(result.metadata['agreement']['scan']).parent.name}" if fmt == "onnx-int8" else "")
                + f": Dice {result.metadata['agreement']['dice']:.4f}, lesion volume "
                f"{100 * result.metadata['agreement']['volume_difference']:.2f} % apart, "
                f"max probability difference {result.metadata['agreement']['max_probability_difference']:.1e})"
                for fmt, (result, seconds) in exported.items()) + ". "
            "Every path: `predict_volume` with crop auto, streamed encoder, kept-slice decoder (window 16, stride 8, "
            "middle recomposition). Threads: each engine's default"
            + (f" (ONNX Runtime / OpenVINO: {args.threads})" if args.threads else "") + f"; {os.cpu_count()} CPUs.", "")

        functions, results, cpu = {}, {}, {}
        for name, runtime, fmt, precision in runnable:
            network = model if fmt is None else load_runtime(exported[fmt][0].out, runtime, precision, args.threads)

            def run(name=name, network=network, precision=precision):
                started = time.process_time()
                results[name] = predict_volume(network, volume, crop="auto", precision=precision)
                cpu.setdefault(name, []).append(time.process_time() - started)

            functions[name] = run
        wall = interleaved_medians(functions, repeats=args.repeats, warmup=args.warmup)
        cpu_s = {name: statistics.median(values[args.warmup:]) for name, values in cpu.items()}

        reference = results["tensorflow-keras-float32"]
        base_wall, base_cpu = wall["tensorflow-keras-float32"], cpu_s["tensorflow-keras-float32"]
        macs = network_macs(args.size, volume)
        full = network_macs(args.size, volume, crop_head=False)
        per_cycle = _peak_per_cycle(flags)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ghz = args.ghz or _ghz()
        peak = {dtype: cores * ghz * value * 1e9 for dtype, (value, _) in per_cycle.items()}
        flops = 2 * macs["total"]
        limit = {dtype: flops / p if p else float("nan") for dtype, p in peak.items()}
        # the int8 export's encoder stays float32
        limit["int8"] = 2 * macs["encoder"] / peak["float32"] + 2 * macs["decoder"] / peak["int8"]

        say(f"Seconds: median of {args.repeats} timed run(s) after {args.warmup} untimed, interleaved; wall / CPU (user + "
            "system, all threads). Ratios to TensorFlow float32 on the Keras model in this process (wall; CPU in "
            "brackets). Agreement with it in the preprocessed cube, threshold 16/256. 'x limit': wall time / the "
            "data type's limit below.", "",
            "| path | wall s | CPU s | ratio to TF float32 | Dice | lesions (TF float32) | lesion volume ml (difference) "
            "| max prob diff | x limit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, runtime, fmt, precision in runnable:
            row = _agreement(results[name], reference, voxel_ml)
            say(f"| {name} | {wall[name]:.2f} | {cpu_s[name]:.2f} | {wall[name] / base_wall:.3f} "
                f"({cpu_s[name] / base_cpu:.3f}) | {row['dice']:.4f} | {row['lesions']} ({row['lesions_ref']}) | "
                f"{row['volume_ml']:.3f} ({100 * row['volume_diff']:+.2f} %) | {row['max_diff']:.1e} | "
                f"{wall[name] / limit[precision]:.1f} |")
        for name, reason in skipped.items():
            say(f"| {name} | not run: {reason} | | | | | | | |")
        say("")

        if args.fresh:
            say(*_fresh_processes(model, scan_path, scratch, args.fresh, base_wall, wall), "")

        say("## The limit", "",
            f"Convolution MACs from the layer shapes ({args.size}³, window 16, stride 8, {full['windows']} windows): "
            f"encoder {full['encoder_per_slice'] / 1e9:.3f} GMAC per slice (blocks 1-4, {args.size}x{args.size}), "
            f"decoder {full['decoder_per_window'] / 1e9:.2f} GMAC per whole window (bottleneck, blocks 6-9, output); "
            f"per scan on the whole field of view with the kept-slice decoder {full['encoder'] / 1e9:.1f} + "
            f"{full['decoder'] / 1e9:.1f} = {full['total'] / 1e9:.1f} GMAC; on the head boxes crop auto computes "
            f"({macs['windows_run']} of {macs['windows']} windows, {macs['area']:.2f} of the windows' area) "
            f"{macs['encoder'] / 1e9:.1f} + {macs['decoder'] / 1e9:.1f} = {macs['total'] / 1e9:.1f} GMAC = "
            f"**{flops / 1e9:.0f} GFLOP** (2 FLOPs per MAC).", "",
            "Peak assumed: cores x GHz x FLOPs/cycle/core, "
            f"cores = {cores} (the CPUs this process may use; hyperthreads count as cores here), "
            f"GHz = {ghz:.2f} ({'--ghz' if args.ghz else '/proc/cpuinfo cpu MHz, the current clock'}), ISA {isa_summary()}:", "")
        for dtype, (value, why) in per_cycle.items():
            say(f"- {dtype}: {cores} x {ghz:.2f} x {value} ({why}) = {peak[dtype] / 1e9:.0f} GFLOP/s: limit "
                f"**{limit[dtype]:.2f} s** per scan" + (" (the encoder's share at float32's peak: the int8 export "
                                                      "quantizes the decoder only)" if dtype == "int8" else ""))
        say("", "Distance from the limit (wall time / limit of the path's data type): "
            + "; ".join(f"{name} {wall[name] / limit[precision]:.1f}x" for name, _, _, precision in runnable) + ".",
            "", f"Peak RSS of the process: {peak_rss_gb():.2f} GB. Load average at the end: "
            + "/".join(f"{v:.1f}" for v in os.getloadavg()) + ".", "")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
