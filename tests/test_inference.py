"""Tests for planar3d.inference and planar3d.nets.stream: cropped, streamed, reduced-precision inference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import assert_same_sums
import tensorflow as tf
from test_foreground import ball_volume

from planar3d.config import make_config
from planar3d.data.foreground import crop_boxes, head_mask, paste
from planar3d.errors import Planar3DError
from planar3d.inference import precision
from planar3d.inference import predict as inference
from planar3d.inference.pipeline import segment_volume
from planar3d.inference.predict import predict_volume as inference_predict_volume
from planar3d.inference.recompose import recompose
from planar3d.nets.model import build_model
from planar3d.nets.stream import decode, encode


def paper_path(model, volume, size=16, stride=8, **options):
    """The paper's whole-volume path of :func:`planar3d.inference.predict.predict_volume`."""
    return inference_predict_volume(model, volume, size, stride, crop="off", precision="float32", stream=False,
                                    **options)



@pytest.fixture(scope="module")
def small_model():
    """The planar res-u-net at 16x32x32, random encoder (weights do not matter for equalities)."""
    return build_model((16, 32, 32, 1), encoder_weights=None, seed=1)


def identity_model() -> keras.Model:
    """Outputs its input (any rows x cols): the prediction of every window is known."""
    return keras.Sequential([keras.Input((16, None, None, 1)), keras.layers.Identity()])


def expected_crop(volume: np.ndarray, boxes) -> np.ndarray:
    """What the identity model must give with these boxes: each window's box pasted, middle recomposition."""
    windows = []
    for k, box in enumerate(boxes):
        window = volume[8 * k : 8 * k + 16]
        windows.append(np.zeros_like(window) if box is None else paste(window[(slice(None), *box.slices)], box, window.shape))
    return recompose(np.stack(windows)[..., None], volume.shape[0])[..., 0].numpy()


@pytest.mark.parametrize("per", ["window", "scan"])
def test_crop_and_paste_back_round_trip_exactly(per):
    volume = ball_volume(shape=(40, 64, 64), centre=(12, 20, 40), radius=9)
    prob = inference.predict_volume(identity_model(), volume, crop=per, precision="float32")
    boxes = crop_boxes(head_mask(volume), per=per)
    assert boxes[-1] is None and all(b is not None for b in boxes[:3])  # the last window (slices 24-39) has no head
    assert boxes[0].shape != (64, 64)
    np.testing.assert_array_equal(prob, expected_crop(volume, boxes))
    inside = head_mask(volume)
    np.testing.assert_array_equal(prob[inside], volume[inside])  # the head itself is returned unchanged
    assert not prob[32:].any()


def test_head_touching_the_border_is_predicted_up_to_the_border():
    volume = ball_volume(shape=(32, 48, 48), centre=(16, 2, 24))
    prob = inference.predict_volume(identity_model(), volume, crop="auto", precision="float32")
    inside = head_mask(volume)
    assert inside[:, 0].any()
    np.testing.assert_array_equal(prob[inside], volume[inside])


def test_no_foreground_predicts_zero_with_a_warning(capsys):
    prob = inference.predict_volume(identity_model(), np.full((32, 32, 32), 0.5, np.float32), crop="auto", precision="float32")
    assert prob.shape == (32, 32, 32) and not prob.any()
    assert "warning: no foreground: the scan's intensities do not vary (all 0.5); nothing is segmented" in capsys.readouterr().err


def test_streamed_encoder_equals_the_whole_window(small_model, rng):
    window = tf.constant(rng.uniform(-1, 1, (1, 16, 32, 32, 1)).astype(np.float32))
    whole = encode(small_model, window)
    first, second = encode(small_model, window[:, :8]), encode(small_model, window[:, 8:])
    for name, tensor in whole.items():
        assert_same_sums(tf.concat([first[name], second[name]], axis=1).numpy(), tensor.numpy())
    assert_same_sums(decode(small_model, whole).numpy(), small_model(window, training=False).numpy())


def test_decoder_computes_only_the_kept_slices_exactly(small_model, rng):
    window = tf.constant(rng.uniform(-1, 1, (1, 16, 32, 32, 1)).astype(np.float32))
    skips = encode(small_model, window)
    whole = decode(small_model, skips).numpy()
    for lo, hi in ((0, 12), (4, 12), (4, 16), (0, 16), (3, 9)):
        part = decode(small_model, skips, keep=(lo, hi)).numpy()
        assert part.shape == (1, hi - lo, 32, 32, 1)
        assert_same_sums(part, whole[:, lo:hi])


@pytest.mark.slow
def test_blending_modes_take_every_slice_of_the_fast_path(small_model, rng):
    volume = rng.uniform(-1, 1, (32, 32, 32)).astype(np.float32)
    for mode in ("mean", "gaussian"):
        assert_same_sums(
            inference.predict_volume(small_model, volume, mode=mode, crop="off", precision="float32", stream=True),
            paper_path(small_model, volume, mode=mode, batch_size=1))


@pytest.mark.slow
def test_streamed_volume_equals_per_window_bit_for_bit(small_model, rng):
    volume = rng.uniform(-1, 1, (40, 32, 32)).astype(np.float32)
    today = paper_path(small_model, volume, batch_size=1)
    assert inference.can_stream(small_model, 16, 8) and not inference.can_stream(small_model, 16, 4)
    streamed = inference.predict_volume(small_model, volume, crop="off", precision="float32", stream=True)
    assert_same_sums(streamed, today)
    # tta: every flip streamed as well
    assert_same_sums(
        inference.predict_volume(small_model, volume[:32], crop="off", precision="float32", stream=True, tta=True),
        paper_path(small_model, volume[:32], batch_size=1, tta=True))


@pytest.mark.slow
def test_crop_off_float32_equals_today_bit_for_bit_through_the_pipeline(small_model, rng):
    import nibabel as nib

    from planar3d.data.preprocess import preprocess

    scan = nib.Nifti1Image(ball_volume(shape=(32, 32, 32), centre=(16, 16, 16), radius=12, rng=rng), np.eye(4))
    volume, _, meta = preprocess(scan, size=32)
    today = paper_path(small_model, volume, batch_size=1)
    config = make_config("paper", size=32, crop="off", precision="float32")
    _, _, resampled = segment_volume(small_model, volume, meta, config)
    np.testing.assert_array_equal(resampled, today)


@pytest.mark.slow
def test_bfloat16_is_close_to_float32(small_model, rng):
    volume = rng.uniform(-1, 1, (32, 32, 32)).astype(np.float32)
    today = paper_path(small_model, volume, batch_size=1)
    fast = inference.predict_volume(small_model, volume, crop="off", precision="bfloat16")
    assert fast.dtype == np.float32
    assert 0 < np.abs(fast - today).max() < 0.02


@pytest.mark.slow
def test_reduced_precision_runs_as_graphs_and_float32_stays_eager(small_model, rng):
    assert not precision.forward_functions(small_model, "float32").graph
    net = precision.inference_model(small_model, "bfloat16")
    graph, eager = precision.Forward(net, graph=True), precision.Forward(net, graph=False)
    assert graph.graph
    # cropped windows come in several shapes: one graph per step and shape, reused
    for cols in (32, 16, 32, 16, 32):
        window = tf.constant(rng.uniform(-1, 1, (1, 16, 32, cols, 1)).astype(np.float32))
        fast, slow = graph.decode(graph.encode(window)), eager.decode(eager.encode(window))
        assert fast.shape == slow.shape == (1, 16, 32, cols, 1)
        np.testing.assert_allclose(tf.cast(fast, tf.float32), tf.cast(slow, tf.float32), atol=0.02)
    assert graph.n_graphs == 4 and eager.n_graphs == 0


def test_resolve_precision_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(precision, "cpu_isa_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert precision.resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(precision, "cpu_isa_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    assert precision.resolve_precision("auto") == "bfloat16"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert precision.resolve_precision("auto") == "float32"
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    monkeypatch.setattr(precision, "cpu_isa_flags", lambda: {"avx2", "fma"})
    assert precision.resolve_precision("auto") == "float32"
    assert precision.resolve_precision("float16") == "float16"
    with pytest.raises(Planar3DError, match=r"Received: precision='half'$"):
        precision.resolve_precision("half")


def test_resolve_precision_on_a_gpu_follows_its_compute_capability(monkeypatch):
    """``--precision auto`` with a visible GPU: bfloat16 from compute capability 8.0 (Ampere),
    float16 from 7.0 (Volta, Turing), float32 below or when the capability is unknown; the GPU
    decides even on a CPU with native bfloat16. The device query is faked (no GPU here)."""
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    details: dict = {}
    asked = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: asked.append(device) or details)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(precision, "cpu_isa_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    chosen = {}
    for capability in [(9, 0), (8, 6), (8, 0), (7, 5), (7, 0), (6, 1), (3, 7), None]:
        details = {} if capability is None else {"device_name": "fake", "compute_capability": capability}
        chosen[capability] = precision.resolve_precision("auto")
    assert chosen == {(9, 0): "bfloat16", (8, 6): "bfloat16", (8, 0): "bfloat16", (7, 5): "float16",
                      (7, 0): "float16", (6, 1): "float32", (3, 7): "float32", None: "float32"}
    assert asked == [gpu] * 8
    assert precision.resolve_precision("float32") == "float32" and len(asked) == 8  # only "auto" asks the device


def test_bad_crop_is_refused(small_model):
    with pytest.raises(Planar3DError, match=r"Received: crop='head'$"):
        inference.predict_volume(small_model, np.zeros((32, 32, 32), np.float32), crop="head")
    with pytest.raises(Planar3DError, match=r"Received: crop='head'$"):
        make_config("paper", crop="head")


@pytest.mark.slow
def test_graphs_per_window_shape_log_no_retracing_warning(small_model):
    """Cropped windows come in several shapes; each gets its graph without TensorFlow's
    "triggered tf.function retracing" warning (the main job printed it after every test scan).
    The control traces the same shapes through one lambda per call, which does warn."""
    import logging

    from planar3d.inference.precision import Forward

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    shapes = [(1, 16, 16 * rows, 16 * cols, 1) for rows in (1, 2) for cols in (1, 2, 3)]
    try:
        forward = Forward(precision.inference_model(small_model, "bfloat16"), graph=True)
        for shape in shapes:
            forward.decode(forward.encode(tf.zeros(shape)))
        assert not [r for r in records if "retracing" in r.getMessage()]
        for shape in shapes:  # control: the warning is there to be caught
            tf.function(lambda x: x * 2)(tf.zeros(shape))
        assert [r for r in records if "retracing" in r.getMessage()]
    finally:
        logger.removeHandler(handler)
