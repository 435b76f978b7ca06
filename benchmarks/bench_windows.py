"""Is the window pipeline ever the bottleneck? Three measurements in one process.

1. Windows per second delivered by ``window_dataset`` (memory-mapped ``.npy`` cache of
   256^3 float32 volumes and masks, shuffled, batch 2) against a NumPy loop that builds
   windows like the reference code: 8-slice halves joined with ``np.append`` into one
   growing array of all scans (and again for the masks).
2. Recomposition of 31 windows of 16x256x256 (paper Eq. 1) with ``recompose`` (TensorFlow)
   against the reference's per-slice NumPy loop.
3. The model's own consumption: one training step (forward + backward, Adam, Keras BCE)
   of ``build_model`` on a batch of 2 windows at a size this machine can hold (16x64x64 by
   default), as windows per second; the pipeline's rate at that size and at 256^2 is
   compared with it.

Goals: pipeline >= 20x the NumPy reference, and >= 10x the model's consumption rate.

Usage: python benchmarks/bench_windows.py [--volumes 4] [--side 256] [--model-side 64]
       [--steps 3] [--repeats 5] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from planar3d.data.windows import extract_windows, window_dataset  # noqa: E402
from planar3d.inference.recompose import recompose

SIZE, STRIDE = 16, 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=4, help="cached volumes (default: 4)")
    parser.add_argument("--side", type=int, default=256, help="volume edge in voxels (default: 256)")
    parser.add_argument("--model-side", type=int, default=64, help="in-plane size of the model step (default: 64)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (default: 3)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the recomposition timing (default: 5)")
    parser.add_argument("--cache-dir", default=None, help="where to write the .npy cache (default: a temp dir)")
    return parser.parse_args(argv)


def write_cache(folder: Path, count: int, side: int, seed: int) -> tuple[list[Path], list[Path]]:
    """``count`` float32 scans in [-1, 1] and sparse float32 masks as ``.npy`` files."""
    rng = np.random.default_rng(seed)
    scans, masks = [], []
    for index in range(count):
        scans.append(folder / f"scan{index}_{side}.npy")
        masks.append(folder / f"mask{index}_{side}.npy")
        np.save(scans[-1], rng.uniform(-1, 1, (side, side, side)).astype(np.float32))
        np.save(masks[-1], (rng.random((side, side, side)) < 0.002).astype(np.float32))
    return scans, masks


def reference_windows(scan_paths: list[Path], mask_paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Windows as the reference built them: halves joined by np.append into one array."""

    def build(paths: list[Path]) -> np.ndarray:
        first = np.load(paths[0], mmap_mode="r")
        halves = np.concatenate([np.load(path).reshape(-1, SIZE // 2, *first.shape[1:]) for path in paths])
        windows = np.ndarray((0, SIZE, *first.shape[1:]), dtype=np.float32)
        for x in range(len(halves) - 1):
            pair = np.append(halves[x], halves[x + 1], axis=0)
            windows = np.append(windows, np.expand_dims(pair, axis=0), axis=0)
        return windows

    return build(scan_paths), build(mask_paths)


def pipeline_rate(scan_paths: list[Path], mask_paths: list[Path]) -> tuple[float, int]:
    """Windows per second of one shuffled epoch of ``window_dataset`` over memmaps."""
    scans = [np.load(path, mmap_mode="r") for path in scan_paths]
    masks = [np.load(path, mmap_mode="r") for path in mask_paths]
    dataset = window_dataset(scans, masks, size=SIZE, stride=STRIDE, batch_size=2, shuffle=True, seed=0)
    next(iter(dataset))  # build the pipeline once
    start = time.perf_counter()
    count = sum(int(window.shape[0]) for window, _ in dataset)
    return count / (time.perf_counter() - start), count


def reference_recompose(windows: np.ndarray) -> np.ndarray:
    """The reference's per-slice loop: first quarter, middle halves, last quarter."""
    size = windows.shape[1]
    output = np.zeros((len(windows) * size // 2 + size // 2, *windows.shape[2:]))
    position = 0
    for y in range(size // 4):
        output[position] = windows[0][y]
        position += 1
    for window in windows:
        for y in range(size // 4, size // 4 * 3):
            output[position] = window[y]
            position += 1
    for y in range(size // 4 * 3, size):
        output[position] = windows[-1][y]
        position += 1
    return output


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_rate(side: int, steps: int) -> float:
    """Windows per second consumed by training steps of batch 2 at 16 x side x side x 1."""
    import keras

    from planar3d.nets.model import build_model

    model = build_model(input_shape=(SIZE, side, side, 1), encoder_weights=None)
    optimizer = keras.optimizers.Adam(5e-5)
    loss_fn = keras.losses.BinaryCrossentropy()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (2, SIZE, side, side, 1)).astype(np.float32))
    y = tf.constant((rng.random((2, SIZE, side, side, 1)) < 0.01).astype(np.float32))

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    train_step(x, y)  # trace
    start = time.perf_counter()
    for _ in range(steps):
        train_step(x, y).numpy()
    return 2 * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as folder:
        folder = Path(folder)
        print(f"cache: {args.volumes} volumes of {args.side}^3 float32 (+ masks) in {folder}")
        scan_paths, mask_paths = write_cache(folder, args.volumes, args.side, seed=0)

        # (1) windows: NumPy reference first (it also warms the page cache)
        start = time.perf_counter()
        ref_scans, ref_masks = reference_windows(scan_paths, mask_paths)
        reference_seconds = time.perf_counter() - start
        expected = extract_windows(np.load(scan_paths[0]), SIZE, STRIDE).numpy()[..., 0]
        if not np.array_equal(ref_scans[: len(expected)], expected):
            raise RuntimeError("reference windows differ from extract_windows")
        reference_count = len(ref_scans)
        del ref_scans, ref_masks
        reference_rate = reference_count / reference_seconds
        rate, count = pipeline_rate(scan_paths, mask_paths)
        print(
            f"[1] windows {SIZE}x{args.side}x{args.side} (+mask): NumPy np.append reference "
            f"{reference_rate:.1f} windows/s ({reference_count} windows incl. "
            f"{args.volumes - 1} across patients, {reference_seconds:.1f} s); "
            f"window_dataset {rate:.1f} windows/s ({count} windows) -> ratio {rate / reference_rate:.1f}x"
        )

        # (1b) the pipeline at the model step's size
        small_scans, small_masks = write_cache(folder, args.volumes, args.model_side, seed=1)
        small_rate, _ = pipeline_rate(small_scans, small_masks)

    # (2) recomposition of 31 windows
    depth = args.side
    n = (depth - SIZE) // STRIDE + 1
    windows_np = np.random.default_rng(0).random((n, SIZE, args.side, args.side, 1), dtype=np.float32)
    windows_tf = tf.constant(windows_np)
    numpy_seconds = median_seconds(lambda: reference_recompose(windows_np[..., 0]), args.repeats)
    # the result stays a tensor (on the device); fetching one voxel waits for it
    tf_seconds = {
        mode: median_seconds(
            lambda mode=mode: recompose(windows_tf, depth, SIZE, STRIDE, mode)[0, 0, 0, 0].numpy(), args.repeats
        )
        for mode in ("middle", "mean", "gaussian")
    }
    to_numpy_seconds = median_seconds(lambda: recompose(windows_tf, depth).numpy(), args.repeats)
    if not np.array_equal(recompose(windows_tf, depth).numpy()[..., 0], reference_recompose(windows_np[..., 0])):
        raise RuntimeError("recompose('middle') differs from the reference loop")
    print(
        f"[2] recompose {n} windows of {SIZE}x{args.side}x{args.side}: NumPy reference loop "
        f"{numpy_seconds * 1e3:.1f} ms; TF middle {tf_seconds['middle'] * 1e3:.1f} ms -> ratio "
        f"{numpy_seconds / tf_seconds['middle']:.1f}x (with the copy to NumPy {to_numpy_seconds * 1e3:.1f} ms; "
        f"TF mean {tf_seconds['mean'] * 1e3:.1f} ms, gaussian {tf_seconds['gaussian'] * 1e3:.1f} ms)"
    )

    # (3) the model's consumption
    consumed = model_rate(args.model_side, args.steps)
    print(
        f"[3] model training step, batch 2 x {SIZE}x{args.model_side}x{args.model_side}x1 "
        f"(random encoder, Keras BCE): {consumed:.3f} windows/s; window_dataset at that size "
        f"{small_rate:.1f} windows/s -> ratio {small_rate / consumed:.0f}x; at "
        f"{args.side}^2 {rate:.1f} windows/s -> ratio {rate / consumed:.0f}x "
        f"(the model is slower still at {args.side}^2)"
    )
    print(
        f"goals: pipeline/NumPy >= 20x: {rate / reference_rate:.1f}x; "
        f"recompose/NumPy >= 20x: {numpy_seconds / tf_seconds['middle']:.1f}x; "
        f"pipeline/model >= 10x: {min(small_rate, rate) / consumed:.0f}x"
    )


if __name__ == "__main__":
    main()
