"""The ACS, I3D-inflation and random-3D mappings beside planar: defining identities, weights, counts."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from planar3d.errors import Planar3DError
from planar3d.nets.layers import ACSConv3D, PlanarConv3D
from planar3d.nets.mapping import (
    KERNEL_MAPPINGS,
    MAPPINGS,
    acs_kernel,
    acs_split,
    grey_kernel,
    inflate_kernel,
    map_vgg16,
)
from planar3d.nets.model import BOTTLENECK_SOURCES, build_model, encoder_layer_names
from planar3d.nets.weights import VGG16_CONV_LAYERS, load_vgg16_2d

TINY = (16, 32, 32)
PLANAR_PARAMS = 22_870_881
DECODER_PARAMS = 10_516_001
ENCODER_LAYER_TYPES = {"planar": PlanarConv3D, "acs": ACSConv3D, "inflate": keras.layers.Conv3D, "none": keras.layers.Conv3D}


def _submodel(model: keras.Model, layer: str) -> keras.Model:
    return keras.Model(model.input, model.get_layer(layer).output)


def _conv3d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    layer = keras.layers.Conv3D(kernel.shape[-1], kernel.shape[:3], padding="same")
    layer.build(x.shape)
    layer.set_weights([kernel, bias])
    return np.asarray(layer(x))


@pytest.mark.parametrize("channels, expected", [(64, (22, 21, 21)), (128, (43, 43, 42)), (512, (171, 171, 170)),
                                                (3, (1, 1, 1)), (1, (1, 0, 0))])
def test_acs_split_gives_the_remainder_to_the_first_groups(channels, expected):
    split = acs_split(channels)
    assert split == expected
    assert sum(split) == channels
    assert all(size in (channels // 3, channels // 3 + 1) for size in split)


def test_acs_split_rejects_no_channels():
    with pytest.raises(Planar3DError, match="Received: channels=0"):
        acs_split(0)


@pytest.mark.parametrize("filters", [7, 9, 2])
def test_acs_groups_equal_planar_convs_along_their_axes(rng, filters):
    x = rng.normal(size=(2, 8, 10, 12, 5)).astype("float32")
    layer = ACSConv3D(filters, 3, bias_initializer="glorot_uniform")
    y = np.asarray(layer(x))
    kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 3, 5, filters)
    start = 0
    for axis, size in enumerate(acs_split(filters)):
        if size == 0:
            continue
        group = slice(start, start + size)
        reference = _conv3d(x, np.expand_dims(kernel[..., group], axis), bias[group])
        np.testing.assert_allclose(y[..., group], reference, atol=1e-5, rtol=1e-5)
        planar = PlanarConv3D(size, 3, axis=axis)
        planar.build(x.shape)
        planar.set_weights([np.expand_dims(kernel[..., group], axis), bias[group]])
        np.testing.assert_array_equal(y[..., group], np.asarray(planar(x)))
        start += size
    assert start == filters


def test_acs_gradients_equal_those_of_planar_groups(rng):
    import tensorflow as tf

    x = tf.constant(rng.normal(size=(1, 6, 8, 10, 4)).astype("float32"))
    layer = ACSConv3D(5, 3)
    layer.build(x.shape)
    kernel = tf.Variable(layer.kernel.numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        acs = tf.reduce_sum(layer(x) ** 2)
        groups, start = [], 0
        for axis, size in enumerate(acs_split(5)):
            groups.append(tf.nn.conv3d(x, tf.expand_dims(kernel[..., start:start + size], axis), [1] * 5, "SAME"))
            start += size
        reference = tf.reduce_sum((tf.concat(groups, -1) + layer.bias) ** 2)
    np.testing.assert_allclose(tape.gradient(acs, x), tape.gradient(reference, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tape.gradient(acs, layer.kernel), tape.gradient(reference, kernel), rtol=1e-4, atol=1e-4)


def test_acs_kernel_is_the_2d_kernel(rng):
    kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    stored = acs_kernel(kernel, 0)
    np.testing.assert_array_equal(stored, kernel)
    assert stored is not kernel
    with pytest.raises(Planar3DError, match="Received: axis=-1"):
        acs_kernel(kernel, -1)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_inflated_kernel_shape_and_values(rng, axis):
    kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    inflated = inflate_kernel(kernel, axis)
    expected_shape = [3, 3, 4, 5]
    expected_shape.insert(axis, 3)
    assert inflated.shape == tuple(expected_shape)
    assert inflated.dtype == np.float32
    for plane in range(3):
        np.testing.assert_array_equal(np.take(inflated, plane, axis=axis), kernel / np.float32(3))
    np.testing.assert_allclose(inflated.sum(axis=axis), kernel, rtol=1e-6)
    assert inflate_kernel(kernel, axis, depth=5).shape[axis] == 5


def test_inflate_kernel_rejects_bad_depth(rng):
    kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    with pytest.raises(Planar3DError, match="Received: depth=0"):
        inflate_kernel(kernel, 0, depth=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_inflated_conv_of_constant_volume_gives_2d_response(rng, axis):
    kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    bias = rng.normal(size=5).astype("float32")
    image = rng.normal(size=(2, 10, 12, 4)).astype("float32")
    volume = np.repeat(np.expand_dims(image, 1 + axis), 8, axis=1 + axis)  # constant along axis
    out_3d = _conv3d(volume, inflate_kernel(kernel, axis), bias)
    conv2d = keras.layers.Conv2D(5, 3, padding="same")
    conv2d.build(image.shape)
    conv2d.set_weights([kernel, bias])
    out_2d = np.asarray(conv2d(image))
    interior = np.take(out_3d, np.arange(1, 7), axis=1 + axis)  # zero padding at the two ends
    expected = np.repeat(np.expand_dims(out_2d, 1 + axis), 6, axis=1 + axis)
    np.testing.assert_allclose(interior, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", sorted(KERNEL_MAPPINGS))
def test_map_vgg16_returns_each_storage_layout(mode):
    vgg2d = load_vgg16_2d(None, seed=1)
    mapped = map_vgg16(vgg2d, mode=mode)
    layout = {"planar": lambda c, o: (1, 3, 3, c, o), "acs": lambda c, o: (3, 3, c, o),
              "inflate": lambda c, o: (3, 3, 3, c, o)}[mode]
    for name, cin, cout in VGG16_CONV_LAYERS:
        kernel_2d, bias_2d = vgg2d.get_layer(name).get_weights()
        kernel, bias = mapped[name]
        assert kernel.shape == layout(cin, cout)
        np.testing.assert_array_equal(bias, bias_2d)
        np.testing.assert_array_equal(kernel, KERNEL_MAPPINGS[mode](kernel_2d, 0))


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_encoder_layers_use_the_mapping(mapping):
    model = build_model((*TINY, 1), encoder_weights=None, mapping=mapping, seed=1)
    for name in encoder_layer_names() + list(BOTTLENECK_SOURCES):
        assert type(model.get_layer(name)) is ENCODER_LAYER_TYPES[mapping]
    kernel = model.get_layer("block2_conv1").get_weights()[0]
    assert kernel.shape == {"planar": (1, 3, 3, 64, 128), "acs": (3, 3, 64, 128),
                            "inflate": (3, 3, 3, 64, 128), "none": (3, 3, 3, 64, 128)}[mapping]


@pytest.mark.parametrize("mapping", ["acs", "inflate"])
@pytest.mark.slow
def test_pretrained_kernels_land_in_the_model(mapping):
    vgg2d = load_vgg16_2d(None, seed=6)
    mapped = map_vgg16(vgg2d, mode=mapping)
    model = build_model((*TINY, 1), encoder_weights=None, mapping=mapping, seed=6)
    for name in encoder_layer_names():
        kernel, bias = model.get_layer(name).get_weights()
        expected = grey_kernel(mapped[name][0]) if name == "block1_conv1" else mapped[name][0]
        np.testing.assert_array_equal(kernel, expected)
        np.testing.assert_array_equal(bias, mapped[name][1])
    for name, source in BOTTLENECK_SOURCES.items():
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], mapped[source][0])


def test_acs_model_groups_equal_planar_vgg16_along_each_axis(rng):
    vgg2d = load_vgg16_2d(None, seed=3)
    model = build_model((*TINY, 3), encoder_weights=None, mapping="acs", seed=3)
    window = rng.uniform(-1, 1, size=(1, *TINY, 3)).astype("float32")
    out = np.asarray(_submodel(model, "block1_conv1")(window))
    kernel, bias = vgg2d.get_layer("block1_conv1").get_weights()
    start = 0
    for axis, size in enumerate(acs_split(64)):
        group = slice(start, start + size)
        reference = np.maximum(_conv3d(window, np.expand_dims(kernel[..., group], axis), bias[group]), 0)
        np.testing.assert_allclose(out[..., group], reference, atol=1e-5, rtol=1e-5)
        start += size


@pytest.mark.slow
def test_inflate_model_on_constant_volume_equals_2d_vgg16(rng):
    vgg2d = load_vgg16_2d(None, seed=3)
    model = build_model((*TINY, 3), encoder_weights=None, mapping="inflate", seed=3)
    image = rng.uniform(-1, 1, size=(1, *TINY[1:], 3)).astype("float32")
    window = np.repeat(image[:, np.newaxis], TINY[0], axis=1)
    out_3d = np.asarray(_submodel(model, "block1_conv2")(window))
    out_2d = np.asarray(_submodel(vgg2d, "block1_conv2")(image))
    scale = np.abs(out_2d).max()
    assert scale > 0
    # two stacked 3x3x3 convolutions: the planes 2 away from either end see no padding
    interior = out_3d[0, 2:-2]
    assert np.abs(interior - out_2d).max() <= 1e-5 * scale
    assert np.abs(out_3d[0, 0] - out_2d[0]).max() > 1e-2 * scale  # the ends do see the padding


@pytest.mark.parametrize("mapping", ["acs", "inflate"])
@pytest.mark.slow
def test_one_channel_input_equals_grey_on_three_channels(rng, mapping):
    model1 = build_model((*TINY, 1), encoder_weights=None, mapping=mapping, seed=5)
    model3 = build_model((*TINY, 3), encoder_weights=None, mapping=mapping, seed=5)
    grey = rng.uniform(-1, 1, size=(1, *TINY, 1)).astype("float32")
    out1 = np.asarray(_submodel(model1, "conv52")(grey))
    out3 = np.asarray(_submodel(model3, "conv52")(np.repeat(grey, 3, axis=-1)))
    np.testing.assert_allclose(out1, out3, atol=1e-5 * np.abs(out3).max())


@pytest.mark.slow
def test_parameter_counts_at_the_reference_size():
    counts = {}
    for mapping in MAPPINGS:
        model = build_model((16, 256, 256, 3), encoder_weights=None, mapping=mapping)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        counts[mapping] = (model.count_params(), trainable)
    encoder_kernels = sum(9 * cin * cout for name, cin, cout in VGG16_CONV_LAYERS if name != "block5_conv3")
    assert counts["planar"] == (PLANAR_PARAMS, DECODER_PARAMS)
    assert counts["acs"] == counts["planar"]  # the same 2D kernels
    cubic = PLANAR_PARAMS + 2 * encoder_kernels  # every 3x3 kernel gains two more planes
    assert cubic == 47_573_217
    assert counts["inflate"] == (cubic, DECODER_PARAMS)
    assert counts["none"] == (cubic, cubic)  # trained from scratch


@pytest.mark.slow
def test_none_ignores_weights_and_trains_its_encoder(tmp_path):
    model = build_model((*TINY, 1), encoder_weights=tmp_path / "missing.h5", mapping="none", seed=4)
    assert all(model.get_layer(name).trainable for name in encoder_layer_names() + list(BOTTLENECK_SOURCES))
    again = build_model((*TINY, 1), mapping="none", seed=4)
    other = build_model((*TINY, 1), mapping="none", seed=5)
    a, b, c = (m.get_layer("block3_conv2").get_weights()[0] for m in (model, again, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, model.get_layer("block3_conv3").get_weights()[0])


@pytest.mark.parametrize("mapping", ["acs", "inflate"])
@pytest.mark.slow
def test_pretrained_mappings_freeze_their_encoder(mapping):
    frozen = build_model((*TINY, 1), encoder_weights=None, mapping=mapping)
    unfrozen = build_model((*TINY, 1), encoder_weights=None, mapping=mapping, freeze_encoder=False)
    for name in encoder_layer_names() + list(BOTTLENECK_SOURCES):
        assert not frozen.get_layer(name).trainable
        assert unfrozen.get_layer(name).trainable


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.slow
def test_keras_file_round_trip(tmp_path, rng, mapping):
    model = build_model((*TINY, 1), encoder_weights=None, mapping=mapping, seed=2)
    path = tmp_path / f"{mapping}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    window = rng.uniform(-1, 1, size=(1, *TINY, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(window)), np.asarray(loaded(window)))
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [layer.trainable for layer in loaded.layers] == [layer.trainable for layer in model.layers]


def test_unknown_mapping_is_a_clear_error():
    with pytest.raises(Planar3DError, match="Received: mapping='cubic'"):
        build_model((*TINY, 1), encoder_weights=None, mapping="cubic")
