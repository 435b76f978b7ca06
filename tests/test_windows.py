"""Tests of planar3d.windows: window geometry, exact recomposition, the training pipeline,
whole-volume prediction and thresholding."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from planar3d.config import BLENDS as RECOMPOSE_MODES
from planar3d.data.geometry import kept_slices, window_starts
from planar3d.data.windows import extract_windows, window_dataset
from planar3d.errors import InputFileError, Planar3DError
from planar3d.inference.postprocess import binarize
from planar3d.inference.predict import predict_volume as inference_predict_volume
from planar3d.inference.recompose import recompose


def paper_path(model, volume, size=16, stride=8, **options):
    """The paper's whole-volume path of :func:`planar3d.inference.predict.predict_volume`."""
    return inference_predict_volume(model, volume, size, stride, crop="off", precision="float32", stream=False,
                                    **options)


# (depth, size, stride) with an even overlap, valid for every mode
EVEN_GEOMETRIES = [(32, 16, 8), (40, 16, 8), (32, 16, 4), (24, 8, 2), (16, 16, 8), (32, 8, 8), (33, 9, 3)]
# an odd overlap: only the blending modes
ODD_GEOMETRIES = [(31, 16, 5), (20, 4, 1)]


def eq1_numpy(windows: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Paper Eq. 1, generalised: first window's head + middles + last window's tail."""
    margin = (size - stride) // 2
    if len(windows) == 1:
        return windows[0]
    pieces = [windows[0][: margin + stride]]
    pieces += [window[margin : margin + stride] for window in windows[1:-1]]
    pieces += [windows[-1][margin:]]
    return np.concatenate(pieces, axis=0)


def blend_numpy(windows: np.ndarray, depth: int, size: int, stride: int, weights: np.ndarray) -> np.ndarray:
    """Weighted average of all windows covering each slice, by a plain loop."""
    total = np.zeros((depth, *windows.shape[2:]))
    norm = np.zeros(depth)
    for k, window in enumerate(windows):
        for offset in range(size):
            total[k * stride + offset] += weights[offset] * window[offset]
            norm[k * stride + offset] += weights[offset]
    return total / norm[:, None, None, None]


# ----------------------------------------------------------------------------- geometry


def test_window_starts_paper_geometry():
    starts = window_starts(256, 16, 8)
    assert len(starts) == 31
    assert starts[0] == 0
    assert starts[-1] + 16 - 1 == 255
    np.testing.assert_array_equal(np.diff(starts), 8)


@pytest.mark.parametrize("depth, size, stride", EVEN_GEOMETRIES + ODD_GEOMETRIES)
def test_extract_windows_content(depth, size, stride, rng):
    volume = rng.random((depth, 3, 4), dtype=np.float32)
    windows = extract_windows(volume, size, stride).numpy()
    assert windows.shape == ((depth - size) // stride + 1, size, 3, 4, 1)
    for k, window in enumerate(windows):
        np.testing.assert_array_equal(window[..., 0], volume[k * stride : k * stride + size])


def test_extract_windows_keeps_channels_and_dtype():
    volume = np.arange(32 * 2 * 2 * 3, dtype=np.int16).reshape(32, 2, 2, 3)
    windows = extract_windows(tf.constant(volume), 16, 8)
    assert windows.dtype == tf.int16
    assert windows.shape == (3, 16, 2, 2, 3)
    np.testing.assert_array_equal(windows[2].numpy(), volume[16:32])


# ----------------------------------------------------------------------------- recompose


@pytest.mark.parametrize("mode", RECOMPOSE_MODES)
@pytest.mark.parametrize("depth, size, stride", EVEN_GEOMETRIES)
def test_recompose_round_trip_is_exact(mode, depth, size, stride, rng):
    volume = rng.normal(size=(depth, 4, 5)).astype(np.float32)
    restored = recompose(extract_windows(volume, size, stride), depth, size, stride, mode)
    np.testing.assert_array_equal(restored.numpy()[..., 0], volume)


@pytest.mark.parametrize("mode", ["mean", "gaussian"])
@pytest.mark.parametrize("depth, size, stride", ODD_GEOMETRIES)
def test_blending_round_trip_with_odd_overlap(mode, depth, size, stride, rng):
    volume = rng.normal(size=(depth, 3, 3, 2)).astype(np.float32)
    restored = recompose(extract_windows(volume, size, stride), depth, size, stride, mode)
    np.testing.assert_array_equal(restored.numpy(), volume)


@pytest.mark.parametrize("depth, size, stride", EVEN_GEOMETRIES + [(256, 16, 8)])
def test_middle_equals_eq1(depth, size, stride, rng):
    n = (depth - size) // stride + 1
    windows = rng.random((n, size, 2, 3, 1), dtype=np.float32)  # unrelated windows: selection matters
    result = recompose(windows, depth, size, stride, "middle").numpy()
    np.testing.assert_array_equal(result, eq1_numpy(windows, size, stride))


def test_middle_paper_slices():
    # each slice records (window, offset) it came from
    windows = np.zeros((31, 16, 1, 2, 1), dtype=np.int32)
    windows[:, :, 0, 0, 0] = np.arange(31)[:, None]
    windows[:, :, 0, 1, 0] = np.arange(16)[None, :]
    source = recompose(windows, 256).numpy()[:, 0, :, 0]  # (256, [window, offset])
    np.testing.assert_array_equal(source[:12], np.stack([np.zeros(12), np.arange(12)], axis=1))
    for k in range(1, 30):
        np.testing.assert_array_equal(source[8 * k + 4 : 8 * k + 12, 0], k)
        np.testing.assert_array_equal(source[8 * k + 4 : 8 * k + 12, 1], np.arange(4, 12))
    np.testing.assert_array_equal(source[244:], np.stack([np.full(12, 30), np.arange(4, 16)], axis=1))


def test_kept_slices_paper_geometry_and_nothing_else_is_read():
    assert kept_slices(256) == [(0, 12)] + [(4, 12)] * 29 + [(4, 16)]
    assert kept_slices(16) == [(0, 16)]
    for depth, size, stride in ((64, 16, 8), (40, 16, 4), (30, 16, 2)):
        n = (depth - size) // stride + 1
        windows = np.random.default_rng(depth).random((n, size, 2, 3, 1), dtype=np.float32)
        trimmed = np.zeros_like(windows)
        for k, (lo, hi) in enumerate(kept_slices(depth, size, stride)):
            trimmed[k, lo:hi] = windows[k, lo:hi]
        np.testing.assert_array_equal(recompose(trimmed, depth, size, stride).numpy(),
                                      recompose(windows, depth, size, stride).numpy())
        assert sum(hi - lo for lo, hi in kept_slices(depth, size, stride)) == depth


@pytest.mark.parametrize("depth, size, stride", [(32, 16, 8), (31, 16, 5), (32, 16, 4)])
def test_mean_and_gaussian_blend(depth, size, stride, rng):
    n = (depth - size) // stride + 1
    windows = rng.random((n, size, 2, 2, 1), dtype=np.float32)
    mean = recompose(windows, depth, size, stride, "mean").numpy()
    np.testing.assert_allclose(mean, blend_numpy(windows, depth, size, stride, np.ones(size)), rtol=1e-6)
    sigma = size / 8
    gaussian_weights = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    gaussian = recompose(windows, depth, size, stride, "gaussian").numpy()
    np.testing.assert_allclose(gaussian, blend_numpy(windows, depth, size, stride, gaussian_weights), rtol=1e-5)
    assert not np.allclose(gaussian, mean)


def test_recompose_blending_integer_windows_gives_float():
    volume = np.arange(32 * 2 * 2, dtype=np.uint8).reshape(32, 2, 2)
    restored = recompose(extract_windows(volume), 32, mode="mean")
    assert restored.dtype == tf.float32
    np.testing.assert_array_equal(restored.numpy()[..., 0], volume)


# ----------------------------------------------------------------------------- errors


def test_error_volume_thinner_than_window():
    with pytest.raises(Planar3DError, match=r"fewer slices than one window of size=16\. Received: depth=8$"):
        extract_windows(np.zeros((8, 4, 4)))


def test_error_stride_larger_than_size():
    with pytest.raises(Planar3DError, match=r"stride must not exceed size=8.*Received: stride=9$"):
        extract_windows(np.zeros((32, 4, 4)), size=8, stride=9)


@pytest.mark.parametrize("size, stride", [(0, 1), (16, 0), (16.0, 8)])
def test_error_non_positive_geometry(size, stride):
    with pytest.raises(Planar3DError, match=r"must be a positive integer number of slices\. Received:"):
        window_starts(32, size, stride)


def test_error_depth_not_tiled():
    with pytest.raises(Planar3DError, match=r"Pad the volume to 40 slices.*Received: depth=35$"):
        extract_windows(np.zeros((35, 2, 2)), 16, 8)


def test_error_odd_overlap_middle():
    windows = np.zeros((4, 16, 2, 2, 1))
    with pytest.raises(Planar3DError, match=r"overlap.*split evenly.*Received: size=16, stride=5$"):
        recompose(windows, 31, 16, 5, "middle")


def test_error_unknown_mode():
    with pytest.raises(Planar3DError, match=r"Received: mode='max'$"):
        recompose(np.zeros((3, 16, 2, 2, 1)), 32, mode="max")


@pytest.mark.parametrize("shape", [(32, 4), (1, 32, 4, 4, 1)])
def test_error_extract_wrong_rank(shape):
    with pytest.raises(Planar3DError, match=r"Received: volume\.shape="):
        extract_windows(np.zeros(shape))


def test_error_recompose_wrong_rank_and_count():
    with pytest.raises(Planar3DError, match=r"Received: windows\.shape=\(3, 16, 2, 2\)$"):
        recompose(np.zeros((3, 16, 2, 2)), 32)
    with pytest.raises(Planar3DError, match=r"needs windows of shape \(3, 16,.*Received: windows\.shape=\(4, 16"):
        recompose(np.zeros((4, 16, 2, 2, 1)), 32)


# ----------------------------------------------------------------------------- window_dataset


def coded_volumes(depths: list[int], rows: int = 4, cols: int = 5) -> list[np.ndarray]:
    """Volumes whose voxels hold 1000 * patient + slice."""
    return [
        np.broadcast_to((1000 * patient + np.arange(depth, dtype=np.float32))[:, None, None], (depth, rows, cols)).copy()
        for patient, depth in enumerate(depths)
    ]


def windows_of(dataset: tf.data.Dataset) -> list[tuple[int, int]]:
    """(patient, first slice) of every window in one epoch, checking each window on the way."""
    found = []
    for element in dataset:
        for window, mask in zip(element[0].numpy(), element[1].numpy()):
            codes = window[:, 0, 0, 0]
            patient, first = divmod(int(codes[0]), 1000)
            np.testing.assert_array_equal(codes, 1000 * patient + first + np.arange(len(codes)))
            np.testing.assert_array_equal(mask[..., 0], window[..., 0])
            found.append((patient, first))
    return found


def test_dataset_windows_per_patient_each_once():
    volumes = coded_volumes([32, 48, 16])
    dataset = window_dataset(volumes, volumes, size=16, stride=8, batch_size=2, shuffle=True, seed=3)
    found = windows_of(dataset)
    expected = [(p, s) for p, depth in enumerate([32, 48, 16]) for s in range(0, depth - 15, 8)]
    assert sorted(found) == expected  # windows_of also checked no window mixes two patients


def test_dataset_unshuffled_order():
    volumes = coded_volumes([32, 24])
    dataset = window_dataset(volumes, volumes, size=16, stride=8, batch_size=3, shuffle=False)
    assert windows_of(dataset) == [(0, 0), (0, 8), (0, 16), (1, 0), (1, 8)]


def test_dataset_shuffle_seeded_repeatable_and_reshuffled():
    volumes = coded_volumes([64, 64, 64])
    first = window_dataset(volumes, volumes, size=16, stride=8, batch_size=2, seed=7)
    again = window_dataset(volumes, volumes, size=16, stride=8, batch_size=2, seed=7)
    other = window_dataset(volumes, volumes, size=16, stride=8, batch_size=2, seed=8)
    epoch1, epoch2 = windows_of(first), windows_of(first)
    assert windows_of(again) == epoch1
    assert windows_of(again) == epoch2
    assert epoch2 != epoch1
    assert windows_of(other) != epoch1
    assert {p for p, _ in epoch1[:6]} != {epoch1[0][0]}  # mixed across patients


def test_dataset_element_spec():
    volumes = coded_volumes([32, 32])
    dataset = window_dataset(volumes, volumes, size=16, stride=8, batch_size=2, channels=3)
    window_spec, mask_spec = dataset.element_spec
    assert window_spec == tf.TensorSpec((None, 16, 4, 5, 3), tf.float32)
    assert mask_spec == tf.TensorSpec((None, 16, 4, 5, 1), tf.float32)
    window, _ = next(iter(dataset))
    np.testing.assert_array_equal(window[..., 0], window[..., 2])
    fixed = window_dataset(volumes, volumes, size=16, stride=8, batch_size=4, drop_remainder=True)
    assert fixed.element_spec[0].shape == (4, 16, 4, 5, 1)
    assert sum(1 for _ in fixed) == 1  # 6 windows, one full batch of 4


def test_dataset_reads_npy_paths_and_memmaps(tmp_path):
    volumes = coded_volumes([32, 40])
    paths = []
    for index, volume in enumerate(volumes):
        paths.append(tmp_path / f"scan{index}.npy")
        np.save(paths[-1], volume)
    memmaps = [np.load(path, mmap_mode="r") for path in paths]
    from_paths = windows_of(window_dataset(paths, memmaps, size=16, stride=8, shuffle=False))
    assert from_paths == [(0, 0), (0, 8), (0, 16), (1, 0), (1, 8), (1, 16), (1, 24)]


def empty_and_lesion_masks() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One 32-slice patient; a lesion voxel at slice 2 (only window 0 holds it)."""
    volume = coded_volumes([32])[0]
    mask = np.zeros_like(volume)
    mask[2, 1, 1] = 1
    return [volume], [mask]


def test_dataset_down_weights_empty_windows():
    volumes, masks = empty_and_lesion_masks()
    dataset = window_dataset(volumes, masks, size=16, stride=8, batch_size=3, shuffle=False, empty_window_weight=0.25)
    assert dataset.element_spec[2] == tf.TensorSpec((None,), tf.float32)
    _, _, weights = next(iter(dataset))
    np.testing.assert_array_equal(weights, [1.0, 0.25, 0.25])


def test_dataset_drops_empty_windows():
    volumes, masks = empty_and_lesion_masks()
    dataset = window_dataset(volumes, masks, size=16, stride=8, batch_size=3, shuffle=False, empty_window_weight=0)
    batches = list(dataset)
    assert len(batches) == 1
    window, mask, weight = batches[0]
    assert window.shape[0] == 1 and float(window[0, 0, 0, 0, 0]) == 0.0  # window starting at slice 0
    np.testing.assert_array_equal(weight, [1.0])


def test_dataset_errors(tmp_path):
    volumes = coded_volumes([32, 32])
    with pytest.raises(Planar3DError, match=r"Received: len\(volumes\)=2, len\(masks\)=1$"):
        window_dataset(volumes, volumes[:1])
    with pytest.raises(Planar3DError, match=r"Received: masks\[1\]\.shape=\(32, 4, 4\)$"):
        window_dataset(volumes, [volumes[0], np.zeros((32, 4, 4))])
    with pytest.raises(Planar3DError, match=r"in-plane size \(4, 5\).*Received: volumes\[1\]\.shape=\(32, 4, 4\)$"):
        window_dataset([volumes[0], np.zeros((32, 4, 4))], [volumes[0], np.zeros((32, 4, 4))])
    with pytest.raises(Planar3DError, match=r"Received: masks\[0\]\.shape=\(32, 4, 5, 1\)$"):
        window_dataset([volumes[0][..., None]], [volumes[0][..., None]])
    with pytest.raises(Planar3DError, match=r"Received: volumes\[0\]\.shape=\(32, 4, 5, 2\)$"):
        window_dataset([np.stack([volumes[0]] * 2, axis=-1)], [volumes[0]])
    with pytest.raises(Planar3DError, match=r"Received: empty_window_weight=-1$"):
        window_dataset(volumes, volumes, empty_window_weight=-1)
    with pytest.raises(Planar3DError, match=r"Received: batch_size=0$"):
        window_dataset(volumes, volumes, batch_size=0)
    with pytest.raises(Planar3DError, match=r"Received: depth=30$"):
        window_dataset([np.zeros((30, 4, 5))], [np.zeros((30, 4, 5))])
    missing = tmp_path / "missing.npy"
    with pytest.raises(InputFileError, match=r"missing\.npy: volume file not found$"):
        window_dataset([missing], [missing])


# ----------------------------------------------------------------------------- predict_volume


def identity_model(channels: int = 1, size: int = 16) -> keras.Model:
    """Outputs its (first) input channel unchanged."""
    if channels == 1:
        return keras.Sequential([keras.Input((size, None, None, 1)), keras.layers.Identity()])
    first_channel = keras.layers.Conv3D(1, 1, use_bias=False)
    model = keras.Sequential([keras.Input((size, None, None, channels)), first_channel])
    first_channel.set_weights([np.eye(channels, 1, dtype=np.float32).reshape(1, 1, 1, channels, 1)])
    return model


@pytest.mark.parametrize("mode", RECOMPOSE_MODES)
def test_predict_volume_identity_returns_input(mode, rng):
    volume = rng.random((48, 8, 6), dtype=np.float32)
    prob = paper_path(identity_model(), volume, size=16, stride=8, mode=mode, batch_size=3)
    assert prob.dtype == np.float32
    np.testing.assert_array_equal(prob, volume)


def test_predict_volume_repeats_grey_to_model_channels(rng):
    volume = rng.random((32, 8, 8), dtype=np.float32)
    prob = paper_path(identity_model(channels=3), volume, size=16, stride=8, batch_size=2)
    np.testing.assert_array_equal(prob, volume)


def test_predict_volume_tta_identity_and_equivariant(rng):
    volume = rng.normal(size=(32, 8, 6)).astype(np.float32)
    np.testing.assert_array_equal(paper_path(identity_model(), volume, 16, 8, tta=True), volume)
    pointwise = keras.Sequential([keras.Input((16, None, None, 1)), keras.layers.Activation("sigmoid")])
    np.testing.assert_array_equal(
        paper_path(pointwise, volume, 16, 8, tta=True), paper_path(pointwise, volume, 16, 8)
    )
    smoothing = keras.Sequential(
        [keras.Input((16, None, None, 1)), keras.layers.AveragePooling3D((3, 3, 3), strides=1, padding="same")]
    )
    np.testing.assert_allclose(
        paper_path(smoothing, volume, 16, 8, tta=True), paper_path(smoothing, volume, 16, 8), atol=1e-6
    )


def test_predict_volume_tta_unflips_before_averaging(rng):
    volume = rng.normal(size=(32, 6, 6)).astype(np.float32)
    shift = keras.layers.Conv3D(1, (1, 1, 2), padding="same", use_bias=False)  # not flip-equivariant
    model = keras.Sequential([keras.Input((16, None, None, 1)), shift])
    shift.set_weights([np.array([1.0, 2.0], dtype=np.float32).reshape(1, 1, 2, 1, 1)])
    expected = np.zeros(volume.shape)
    for axes in [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]:
        flipped = np.flip(volume, axes) if axes else volume
        prediction = paper_path(model, flipped.copy(), 16, 8)
        expected += np.flip(prediction, axes) if axes else prediction
    tta = paper_path(model, volume, 16, 8, tta=True)
    np.testing.assert_allclose(tta, expected / 8, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta, paper_path(model, volume, 16, 8))


def test_predict_volume_errors():
    with pytest.raises(Planar3DError, match=r"the model takes windows of 16 slices\. Received: size=8$"):
        paper_path(identity_model(), np.zeros((32, 4, 4)), size=8, stride=4)
    with pytest.raises(Planar3DError, match=r"takes 3 channels\. Received: volume\.shape=\(32, 4, 4, 2\)$"):
        paper_path(identity_model(channels=3), np.zeros((32, 4, 4, 2)))
    with pytest.raises(Planar3DError, match=r"Received: depth=12$"):
        paper_path(identity_model(), np.zeros((12, 4, 4)))


# ----------------------------------------------------------------------------- binarize


def test_binarize_fixed_paper_threshold():
    prob = np.array([0.0, 0.0624, 0.0625, 0.5, 1.0], dtype=np.float32)
    result = binarize(prob)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(binarize(prob, threshold=0.5), [0, 0, 0, 1, 1])


def test_binarize_reference_rule():
    # max 1.0 -> 255 -> t = 15: 0.06 -> 15 (== t, background), 0.07 -> 17
    np.testing.assert_array_equal(binarize(np.array([0.0, 0.06, 0.07, 1.0]), rule="reference"), [0, 0, 1, 1])
    # max 0.5 -> 127 -> t = 7: data-dependent, 0.03 -> 7 (background), 0.035 -> 8
    np.testing.assert_array_equal(binarize(np.array([0.03, 0.035, 0.5]), rule="reference"), [0, 1, 1])


def test_binarize_errors():
    with pytest.raises(Planar3DError, match=r"Received: rule='max'$"):
        binarize(np.zeros(3), rule="max")
    with pytest.raises(Planar3DError, match=r"Received: threshold=1\.5$"):
        binarize(np.zeros(3), threshold=1.5)
