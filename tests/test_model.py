"""The planar 3D res-u-net: topology, weight transfer, exactness of the planar convolutions."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from planar3d.errors import InputFileError, Planar3DError
from planar3d.nets import weights as weights_module
from planar3d.nets.layers import PlanarConv3D
from planar3d.nets.mapping import grey_kernel, map_vgg16, planar_kernel
from planar3d.nets.model import BOTTLENECK_SOURCES, build_model, encoder_layer_names
from planar3d.nets.weights import VGG16_CONV_LAYERS, load_vgg16_2d

TINY = (16, 32, 32)


def _submodel(model: keras.Model, layer: str) -> keras.Model:
    return keras.Model(model.input, model.get_layer(layer).output)


def test_planar_kernel_axes(rng):
    kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    assert planar_kernel(kernel, 0).shape == (1, 3, 3, 4, 5)
    assert planar_kernel(kernel, 1).shape == (3, 1, 3, 4, 5)
    assert planar_kernel(kernel, 2).shape == (3, 3, 1, 4, 5)
    np.testing.assert_array_equal(planar_kernel(kernel, 1)[:, 0], kernel)
    with pytest.raises(Planar3DError, match="Received: axis=3"):
        planar_kernel(kernel, 3)
    with pytest.raises(Planar3DError, match=r"Received: shape=\(3, 3, 4\)"):
        planar_kernel(kernel[..., 0], 0)


@pytest.mark.slow
def test_planar_model_equals_2d_vgg16_slice_by_slice(rng):
    vgg2d = load_vgg16_2d(None, seed=3)
    model = build_model((*TINY, 3), encoder_weights=None, seed=3)
    window = rng.uniform(-1, 1, size=(2, *TINY, 3)).astype("float32")
    out_3d = np.asarray(_submodel(model, "block1_conv2")(window))
    slices = window.reshape(-1, *TINY[1:], 3)
    out_2d = np.asarray(_submodel(vgg2d, "block1_conv2")(slices)).reshape(out_3d.shape)
    scale = np.abs(out_2d).max()
    assert scale > 0
    assert np.abs(out_3d - out_2d).max() <= 1e-4 * scale


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_planar_layer_equals_conv3d_with_flat_kernel(rng, axis):
    x = rng.normal(size=(2, 16, 8, 12, 5)).astype("float32")
    layer = PlanarConv3D(7, 3, axis=axis, activation="relu")
    y = np.asarray(layer(x))
    kernel, bias = layer.get_weights()
    reference = keras.layers.Conv3D(7, kernel.shape[:3], padding="same", activation="relu")
    reference.build(x.shape)
    reference.set_weights([kernel, bias])
    np.testing.assert_allclose(y, np.asarray(reference(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_one_channel_input_equals_grey_on_three_channels(rng):
    model1 = build_model((*TINY, 1), encoder_weights=None, seed=5)
    model3 = build_model((*TINY, 3), encoder_weights=None, seed=5)
    grey = rng.uniform(-1, 1, size=(1, *TINY, 1)).astype("float32")
    out1 = np.asarray(model1(grey))
    out3 = np.asarray(model3(np.repeat(grey, 3, axis=-1)))
    np.testing.assert_allclose(out1, out3, atol=1e-6)
    k3 = model3.get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_array_equal(model1.get_layer("block1_conv1").get_weights()[0], grey_kernel(k3))


@pytest.mark.slow
def test_parameter_counts_of_reference_topology():
    model = build_model((16, 256, 256, 3), encoder_weights=None)
    assert model.count_params() == 22_870_881
    frozen = set(encoder_layer_names()) | set(BOTTLENECK_SOURCES)
    decoder_params = sum(
        layer.count_params() for layer in model.layers if layer.weights and layer.name not in frozen
    )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == decoder_params == 10_516_001
    unfrozen = build_model((16, 256, 256, 3), encoder_weights=None, freeze_encoder=False)
    assert sum(int(np.prod(w.shape)) for w in unfrozen.trainable_weights) == 22_870_881


def test_imagenet_weights_land_in_the_model(vgg16_weights_path, monkeypatch):
    monkeypatch.setenv("PLANAR3D_VGG16_WEIGHTS", str(vgg16_weights_path))
    model = build_model((*TINY, 3), encoder_weights="imagenet")
    kernel, bias = model.get_layer("block1_conv1").get_weights()
    assert bias[0] == pytest.approx(0.73429835, abs=1e-7)
    np.testing.assert_allclose(kernel[0, 0, 0, 0, :3], [0.42947057, 0.11727387, 0.03401296], atol=1e-7)
    vgg2d = load_vgg16_2d(vgg16_weights_path)
    for layer, source in BOTTLENECK_SOURCES.items():
        k2, b2 = vgg2d.get_layer(source).get_weights()
        k3, b3 = model.get_layer(layer).get_weights()
        np.testing.assert_array_equal(k3, k2[np.newaxis])
        np.testing.assert_array_equal(b3, b2)
    random_bottleneck = build_model((*TINY, 3), encoder_weights=vgg16_weights_path, bottleneck_init="random")
    assert not np.array_equal(random_bottleneck.get_layer("conv51").get_weights()[0][0],
                              vgg2d.get_layer("block5_conv1").get_weights()[0])
    assert not random_bottleneck.get_layer("conv51").trainable


def test_map_vgg16_covers_every_layer():
    vgg2d = load_vgg16_2d(None, seed=1)
    mapped = map_vgg16(vgg2d)
    assert list(mapped) == [name for name, _, _ in VGG16_CONV_LAYERS]
    for name, cin, cout in VGG16_CONV_LAYERS:
        assert mapped[name][0].shape == (1, 3, 3, cin, cout)
    with pytest.raises(Planar3DError, match="Received: mode='cubic'"):
        map_vgg16(vgg2d, mode="cubic")


@pytest.mark.slow
def test_random_weights_are_seeded():
    a = load_vgg16_2d(None, seed=7).get_layer("block3_conv2").get_weights()[0]
    b = load_vgg16_2d(None, seed=7).get_layer("block3_conv2").get_weights()[0]
    c = load_vgg16_2d(None, seed=8).get_layer("block3_conv2").get_weights()[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow
def test_keras_file_round_trip(tmp_path, rng):
    model = build_model((*TINY, 1), encoder_weights=None, seed=2)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    window = rng.uniform(-1, 1, size=(1, *TINY, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(window)), np.asarray(loaded(window)))
    assert [layer.trainable for layer in loaded.layers] == [layer.trainable for layer in model.layers]


@pytest.mark.parametrize("shape", [(15, 32, 32, 1), (16, 40, 32, 1), (16, 32, 32, 0), (16, 32, 32)])
def test_bad_input_shape_is_a_clear_error(shape):
    with pytest.raises(Planar3DError, match=r"Received: input_shape="):
        build_model(shape, encoder_weights=None)


def test_bad_bottleneck_init():
    with pytest.raises(Planar3DError, match="Received: bottleneck_init='zeros'"):
        build_model((*TINY, 1), encoder_weights=None, bottleneck_init="zeros")


@pytest.mark.slow
def test_wrong_weights_file_names_layer_and_shapes(tmp_path):
    path = tmp_path / "wrong.h5"
    with h5py.File(path, "w") as handle:
        for name, cin, cout in VGG16_CONV_LAYERS:
            group = handle.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel:0", f"{name}/bias:0"]
            shape = (3, 3, 1, cout) if name == "block1_conv1" else (3, 3, cin, cout)
            group.create_dataset(f"{name}/kernel:0", data=np.zeros(shape, "float32"))
            group.create_dataset(f"{name}/bias:0", data=np.zeros(cout, "float32"))
    with pytest.raises(InputFileError, match=r"wrong.h5: layer block1_conv1 kernel has shape \(3, 3, 1, 64\), expected \(3, 3, 3, 64\)"):
        load_vgg16_2d(path)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(InputFileError, match="notes.h5: not a readable HDF5"):
        load_vgg16_2d(text)
    with pytest.raises(InputFileError, match="missing.h5: VGG16 weights file does not exist"):
        load_vgg16_2d(tmp_path / "missing.h5")


@pytest.mark.slow
def test_keras3_weights_file_is_accepted(tmp_path):
    source = load_vgg16_2d(None, seed=4)
    path = tmp_path / "vgg.weights.h5"
    source.save_weights(path)
    loaded = load_vgg16_2d(path)
    np.testing.assert_array_equal(loaded.get_layer("block4_conv2").get_weights()[0],
                                  source.get_layer("block4_conv2").get_weights()[0])


@pytest.mark.slow
def test_unreachable_download_says_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PLANAR3D_VGG16_WEIGHTS", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(weights_module, "VGG16_NOTOP_URL", "http://127.0.0.1:9/vgg16_notop.h5")
    with pytest.raises(Planar3DError, match="could not download the VGG16 ImageNet weights.*PLANAR3D_VGG16_WEIGHTS"):
        load_vgg16_2d("imagenet")


def test_keras_cache_is_used_without_download(tmp_path, monkeypatch, vgg16_weights_path):
    monkeypatch.delenv("PLANAR3D_VGG16_WEIGHTS", raising=False)
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    (cache / weights_module.VGG16_NOTOP_FILENAME).symlink_to(vgg16_weights_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(weights_module, "VGG16_NOTOP_URL", "http://127.0.0.1:9/vgg16_notop.h5")
    model = load_vgg16_2d("imagenet")
    assert model.get_layer("block1_conv1").get_weights()[1][0] == pytest.approx(0.73429835, abs=1e-7)


def test_env_variable_naming_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANAR3D_VGG16_WEIGHTS", str(tmp_path / "nope.h5"))
    with pytest.raises(InputFileError, match="nope.h5: file named by PLANAR3D_VGG16_WEIGHTS does not exist"):
        load_vgg16_2d("imagenet")
