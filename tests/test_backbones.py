"""to_3d and the backbone registry: per-slice exactness, the mappings' identities, refusals, weights."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from planar3d.config import MAPPINGS as CONVERTER_MAPPINGS
from planar3d.errors import InputFileError, Planar3DError
from planar3d.nets.backbones import BACKBONES, build_encoder, to_3d
from planar3d.nets.layers import ACSConv3D, LayerScale, PlanarConv3D, SoftACSConv3D
from planar3d.nets.mapping import acs_split, channel_kernel

ROWS = 32  # Keras Applications' smallest input
# float32 rounding: the 3D model folds slices into the batch and may take other kernels
# (oneDNN blocking); observed relative errors are below 4e-6 on every backbone.
REL_TOL = 2e-5

_MODELS_2D: dict[str, keras.Model] = {}


def _model_2d(name: str) -> keras.Model:
    """One random-weight 2D model per backbone for the whole module (built once: slow)."""
    if name not in _MODELS_2D:
        keras.utils.set_random_seed(0)
        _MODELS_2D[name] = BACKBONES[name].constructor(include_top=False, weights=None, input_shape=(ROWS, ROWS, 3))
    return _MODELS_2D[name]


def _volume(rng, slices: int, channels: int = 3, rows: int = ROWS) -> np.ndarray:
    return rng.uniform(0, 1, size=(1, slices, rows, rows, channels)).astype("float32")


def _assert_close(actual, expected, tol: float = REL_TOL) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 0
    assert np.abs(actual - expected).max() <= tol * scale


def _layer_io(model: keras.Model, name: str) -> keras.Model:
    layer = model.get_layer(name)
    return keras.Model(model.input, [layer.input, layer.output])


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.slow
def test_planar_without_depth_downsampling_is_the_2d_model_on_every_slice(rng, name):
    model_2d = _model_2d(name)
    model_3d = to_3d(model_2d, "planar", depth_downsampling=False, input_shape=(2, ROWS, ROWS, 3))
    assert model_3d.count_params() == model_2d.count_params()
    volume = _volume(rng, 2)
    out_3d = np.asarray(model_3d(volume, training=False))
    out_2d = np.asarray(model_2d(volume[0], training=False))  # the slices as a batch of images
    _assert_close(out_3d[0], out_2d)
    for factor, layer_name in BACKBONES[name].skips:  # the registry's skips exist at their factors
        assert model_3d.get_layer(layer_name).output.shape[1:4] == (2, ROWS // factor, ROWS // factor)


def test_depth_downsampling_follows_the_rows():
    model_2d = _model_2d("mobilenetv2")
    down = to_3d(model_2d, "planar", depth_downsampling=True, input_shape=(32, ROWS, ROWS, 3))
    flat = to_3d(model_2d, "planar", depth_downsampling=False, input_shape=(4, ROWS, ROWS, 3))
    assert down.output.shape == (None, 1, 1, 1, 1280)
    assert flat.output.shape == (None, 4, 1, 1, 1280)
    assert isinstance(down.get_layer("Conv1"), PlanarConv3D) and down.get_layer("Conv1").strides == (2, 2, 2)
    assert flat.get_layer("Conv1").strides == (1, 2, 2)


def _reference_group(x, kernel, axis, strides, pads, depthwise):
    """Conv3D with the kernel flat along ``axis`` (stock Keras layers), explicit zero padding."""
    kernel_3d = np.expand_dims(kernel, axis)
    if pads is not None:
        pads = [p for p in pads]
        pads.insert(axis, (0, 0))
        x = keras.layers.ZeroPadding3D(tuple(pads))(x)
    groups = x.shape[-1] if depthwise else 1
    layer = keras.layers.Conv3D(kernel.shape[-1], kernel_3d.shape[:3], strides=strides, groups=groups,
                                padding="valid" if pads is not None else "same", use_bias=False)
    layer.build(x.shape)
    layer.set_weights([kernel_3d])
    return np.asarray(layer(x))


@pytest.mark.parametrize("layer_name, pads, depthwise", [
    ("Conv1", None, False),  # 3x3 stride 2, 'same'
    ("block_1_depthwise", [(0, 1), (0, 1)], True),  # ZeroPadding2D folded into a 'valid' stride-2 depthwise conv
])
def test_acs_groups_of_a_strided_mobilenetv2_layer_are_planar_convs_along_their_axes(rng, layer_name, pads, depthwise):
    model = to_3d(_model_2d("mobilenetv2"), "acs", input_shape=(8, ROWS, ROWS, 3))
    layer = model.get_layer(layer_name)
    assert isinstance(layer, ACSConv3D) and layer.strides == (2, 2, 2)
    x, out = (np.asarray(t) for t in _layer_io(model, layer_name)(_volume(rng, 8)))
    kernel = np.asarray(layer.kernel)
    start = 0
    for axis, size in enumerate(acs_split(kernel.shape[-1])):
        group = slice(start, start + size)
        source = x[..., group] if depthwise else x
        reference = _reference_group(source, kernel[..., group], axis, 2, pads, depthwise)
        _assert_close(out[..., group], reference, 1e-5)
        start += size


def test_soft_acs_at_its_initial_split_equals_acs(rng):
    model_2d = _model_2d("mobilenetv2")
    acs = to_3d(model_2d, "acs", input_shape=(8, ROWS, ROWS, 3))
    soft = to_3d(model_2d, "soft_acs", input_shape=(8, ROWS, ROWS, 3))
    assert isinstance(soft.get_layer("block_1_depthwise"), SoftACSConv3D)
    conv1 = soft.get_layer("Conv1")
    np.testing.assert_array_equal(np.asarray(conv1.plane_weights).sum(axis=0), acs_split(32))
    assert soft.count_params() == acs.count_params() + 3 * sum(
        l.filters for l in soft.layers if isinstance(l, SoftACSConv3D))
    volume = _volume(rng, 8)
    _assert_close(soft(volume, training=False), acs(volume, training=False), 1e-6)


def test_soft_acs_learns_its_split(rng):
    soft = to_3d(_model_2d("mobilenetv2"), "soft_acs", input_shape=(8, ROWS, ROWS, 3))
    probe = keras.Model(soft.input, soft.get_layer("Conv1").output)
    layer = soft.get_layer("Conv1")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(probe(_volume(rng, 8)) ** 2)
    gradient = np.asarray(tape.gradient(loss, layer.plane_weights))
    assert (np.abs(gradient) > 0).all()  # every plane of every channel can grow, the unused ones too


def test_inflated_mobilenetv2_on_a_volume_constant_along_slices_is_the_2d_model(rng):
    model_2d = _model_2d("mobilenetv2")
    slices = 40  # Conv1 and 17 depthwise 3x3: 18 slices at either end see the zero padding
    model = to_3d(model_2d, "inflate", depth_downsampling=False, input_shape=(slices, ROWS, ROWS, 3))
    assert model.get_layer("Conv1").kernel.shape == (3, 3, 3, 3, 32)
    image = _volume(rng, 1)[:, 0]
    out_3d = np.asarray(model(np.repeat(image[:, None], slices, axis=1), training=False))
    out_2d = np.asarray(model_2d(image, training=False))
    for s in range(18, slices - 18):
        _assert_close(out_3d[:, s], out_2d, 1e-4)
    assert np.abs(out_3d[:, 0] - out_2d).max() > 1e-2 * np.abs(out_2d).max()  # the ends do see the padding


@pytest.mark.parametrize("name, repeated", [("mobilenetv2", False), ("efficientnetb0", True)])
@pytest.mark.slow
def test_one_channel_equals_grey_copied_to_rgb(rng, name, repeated):
    model_2d = _model_2d(name)
    grey = to_3d(model_2d, "planar", depth_downsampling=False, input_shape=(2, ROWS, ROWS, 1))
    rgb = to_3d(model_2d, "planar", depth_downsampling=False, input_shape=(2, ROWS, ROWS, 3))
    # MobileNetV2 sums its first kernel over R, G, B; EfficientNet normalises each colour
    # first, so it copies the grey channel to three.
    assert ("grey_to_rgb" in [l.name for l in grey.layers]) == repeated
    if not repeated:
        assert grey.get_layer("Conv1").kernel.shape == (1, 3, 3, 1, 32)
    volume = _volume(rng, 2, channels=1)
    _assert_close(grey(volume, training=False), rgb(np.repeat(volume, 3, axis=-1), training=False))


def test_four_channels_copying_one_grey_scan_equal_grey_copied_to_rgb(rng):
    model_2d = _model_2d("mobilenetv2")
    four = to_3d(model_2d, "acs", depth_downsampling=False, input_shape=(2, ROWS, ROWS, 4))
    rgb = to_3d(model_2d, "acs", depth_downsampling=False, input_shape=(2, ROWS, ROWS, 3))
    kernel = model_2d.get_layer("Conv1").get_weights()[0]
    np.testing.assert_allclose(np.asarray(four.get_layer("Conv1").kernel), channel_kernel(kernel, 4))
    volume = _volume(rng, 2, channels=1)
    _assert_close(four(np.repeat(volume, 4, axis=-1), training=False),
                  rgb(np.repeat(volume, 3, axis=-1), training=False))


def test_channel_kernel_rules(rng):
    kernel = rng.normal(size=(3, 3, 3, 5)).astype("float32")
    np.testing.assert_array_equal(channel_kernel(kernel, 3), kernel)
    np.testing.assert_allclose(channel_kernel(kernel, 1), kernel.sum(axis=2, keepdims=True))
    four = channel_kernel(kernel, 4)
    assert four.shape == (3, 3, 4, 5)
    np.testing.assert_allclose(four.sum(axis=2), kernel.sum(axis=2), rtol=1e-6)
    with pytest.raises(Planar3DError, match=r"^channels must be at least 1\. Received: channels=0$"):
        channel_kernel(kernel, 0)


def test_none_copies_no_weights():
    model_2d = _model_2d("mobilenetv2")
    for layer in model_2d.layers:  # make the 2D weights differ from any initialisation
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(np.full(layer.gamma.shape, 0.5, "float32"))
    try:
        fresh = to_3d(model_2d, "none", input_shape=(8, ROWS, ROWS, 3))
        copied = to_3d(model_2d, "inflate", input_shape=(8, ROWS, ROWS, 3))
        assert type(fresh.get_layer("block_1_depthwise")) is type(copied.get_layer("block_1_depthwise")) is keras.layers.Conv3D
        np.testing.assert_array_equal(np.asarray(fresh.get_layer("bn_Conv1").gamma), 1.0)
        np.testing.assert_array_equal(np.asarray(copied.get_layer("bn_Conv1").gamma), 0.5)
    finally:
        for layer in model_2d.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.gamma.assign(np.ones(layer.gamma.shape, "float32"))


def test_an_unsupported_layer_is_refused_by_name_and_class():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.UpSampling2D(name="up")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(Planar3DError, match=r"^to_3d: layer 'up' of class UpSampling2D has no 3D counterpart"):
        to_3d(model)


@pytest.mark.parametrize("layer, message", [
    (keras.layers.Reshape((16, 3), name="flat"), "layer 'flat' of class Reshape reshapes to (16, 3)"),
    (keras.layers.Conv2D(6, 3, groups=3, name="grouped"), "layer 'grouped' of class Conv2D has groups=3"),
    (keras.layers.BatchNormalization(axis=1, name="rows_bn"), "layer 'rows_bn' of class BatchNormalization works along axis 1"),
])
def test_layers_that_only_partly_convert_are_refused(layer, message):
    inputs = keras.Input((4, 4, 6 if "group" in layer.name else 3))
    model = keras.Model(inputs, layer(inputs))
    with pytest.raises(Planar3DError, match=re.escape(f"to_3d: {message}")):
        to_3d(model)


def test_bad_arguments_are_clear_errors():
    model_2d = _model_2d("vgg16")
    with pytest.raises(Planar3DError, match=re.escape(f"mapping must be one of {CONVERTER_MAPPINGS}. Received: mapping='acs2'")):
        to_3d(model_2d, "acs2")
    with pytest.raises(Planar3DError, match=r"^backbone must be one of .*Received: backbone='resnet18'$"):
        build_encoder("resnet18", (32, 32, 32, 1), weights=None)
    with pytest.raises(Planar3DError, match=r"^input_shape must be \(slices, rows, cols, channels\)"):
        build_encoder("vgg16", (32, 32, 1), weights=None)


def test_build_encoder_shapes_and_skips():
    encoder = build_encoder("resnet50", (32, 32, 32, 1), mapping="acs", weights=None)
    assert encoder.output.shape == (None, 1, 1, 1, 2048)
    for factor, name in BACKBONES["resnet50"].skips:
        assert encoder.get_layer(name).output.shape[1:4] == (32 // factor,) * 3


def test_vgg16_imagenet_weights_come_from_the_planar3d_loader(vgg16_weights_path):
    from planar3d.nets.weights import load_vgg16_2d

    encoder = build_encoder("vgg16", (32, 32, 32, 3), weights="imagenet")
    reference = load_vgg16_2d(str(vgg16_weights_path)).get_layer("block3_conv2").get_weights()[0]
    np.testing.assert_array_equal(np.asarray(encoder.get_layer("block3_conv2").kernel)[0], reference)
    from_path = build_encoder("vgg16", (32, 32, 32, 3), weights=str(vgg16_weights_path), mapping="acs")
    np.testing.assert_array_equal(np.asarray(from_path.get_layer("block3_conv2").kernel), reference)


def test_imagenet_download_failure_is_one_clear_error(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/resnet50_notop.h5: None -- name resolution failed")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(Planar3DError, match=(
        r"^could not get the resnet50 ImageNet weights through Keras \(URL fetch failure on "
        r"https://example/resnet50_notop\.h5: None -- name resolution failed\); on an offline machine"
    )):
        build_encoder("resnet50", (32, 32, 32, 1), weights="imagenet")


def test_a_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(InputFileError, match=re.escape(f"{missing}: resnet50 weights file does not exist")):
        build_encoder("resnet50", (32, 32, 32, 1), weights=str(missing))


@pytest.mark.slow
def test_convnext_keras_file_round_trip_in_safe_mode(tmp_path, rng):
    model = to_3d(_model_2d("convnext_tiny"), "acs", depth_downsampling=False, input_shape=(2, ROWS, ROWS, 1))
    assert isinstance(model.get_layer("convnext_tiny_stage_0_block_0_layer_scale"), LayerScale)
    path = tmp_path / "encoder.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    volume = _volume(rng, 2, channels=1)
    np.testing.assert_array_equal(np.asarray(loaded(volume, training=False)), np.asarray(model(volume, training=False)))
