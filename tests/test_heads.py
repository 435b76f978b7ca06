"""Segmentation and classification heads: shapes, parameter counts, freezing, .keras round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from planar3d.errors import Planar3DError
from planar3d.nets.heads import build_classifier, build_segmenter

CUBE = (32, 32, 32, 1)
RESNET50_NOTOP = 23_587_712  # keras.applications.ResNet50(include_top=False), 3 input channels
RESNET50_CONV1 = 7 * 7 * 3 * 64


def _conv_bn(cin: int, filters: int) -> int:
    return 27 * cin * filters + 4 * filters  # 3x3x3 conv without bias, batch norm's 4 vectors


def _decoder_params(stage_inputs, filters, n_classes) -> int:
    total = sum(_conv_bn(cin, f) + _conv_bn(f, f) for cin, f in zip(stage_inputs, filters))
    return total + filters[-1] * n_classes + n_classes


@pytest.mark.slow
def test_resnet50_unet_parameter_count_and_shapes():
    model = build_segmenter("resnet50", CUBE, mapping="acs", encoder_weights=None, n_classes=3)
    assert model.output.shape == (None, *CUBE[:3], 3)
    encoder = RESNET50_NOTOP - RESNET50_CONV1 // 3 * 2  # one input channel: conv1's kernel summed over RGB
    filters = (256, 128, 64, 32, 16)
    # stage inputs: upsampled features + the skips at factors 16, 8, 4, 2 (none at factor 1)
    stage_inputs = (2048 + 1024, 256 + 512, 128 + 256, 64 + 64, 32)
    assert model.count_params() == encoder + _decoder_params(stage_inputs, filters, 3)
    assert model.get_layer("output").activation.__name__ == "softmax"
    assert model.get_layer("output").dtype_policy.compute_dtype == "float32"


@pytest.mark.slow
def test_convnext_decoder_stages_without_skips_only_upsample():
    model = build_segmenter("convnext_tiny", (2, 32, 32, 4), encoder_weights=None, depth_downsampling=False,
                            decoder_filters=(32, 16, 8, 8, 4))
    names = {layer.name for layer in model.layers}
    assert {"decoder_stage1_concat", "decoder_stage2_concat", "decoder_stage3_concat"} <= names
    assert not {"decoder_stage4_concat", "decoder_stage5_concat"} & names
    assert model.output.shape == (None, 2, 32, 32, 1)


@pytest.mark.slow
def test_segmenter_round_trip_in_safe_mode(tmp_path, rng):
    model = build_segmenter("mobilenetv2", CUBE, mapping="soft_acs", encoder_weights=None,
                            decoder_filters=(16, 16, 8, 8, 4))
    volume = rng.uniform(0, 1, size=(1, *CUBE)).astype("float32")
    out = np.asarray(model(volume, training=False))
    assert out.shape == (1, *CUBE[:3], 1) and 0 <= out.min() and out.max() <= 1
    path = tmp_path / "segmenter.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(volume, training=False)), out)


def test_frozen_encoder_leaves_only_the_decoder_trainable():
    filters = (8, 8, 8, 8, 8)
    model = build_segmenter("vgg16", CUBE, encoder_weights=None, freeze_encoder=True, decoder_filters=filters)
    stage_inputs = (512 + 512, 8 + 512, 8 + 256, 8 + 128, 8 + 64)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # batch norm's moving mean and variance are never trainable: 2 of its 4 vectors per channel
    assert trainable == _decoder_params(stage_inputs, filters, 1) - sum(2 * 2 * f for f in filters)


@pytest.mark.parametrize("n_classes, units, activation", [(2, 1, "sigmoid"), (4, 4, "softmax")])
@pytest.mark.slow
def test_classifier_head(n_classes, units, activation):
    model = build_classifier("resnet50", CUBE, n_classes, encoder_weights=None, dropout=0.25)
    assert model.output.shape == (None, units)
    head = model.get_layer("classifier_output")
    assert head.activation.__name__ == activation and head.dtype_policy.compute_dtype == "float32"
    assert model.get_layer("classifier_dropout").rate == 0.25
    encoder = RESNET50_NOTOP - RESNET50_CONV1 // 3 * 2
    assert model.count_params() == encoder + 2048 * units + units


@pytest.mark.slow
def test_classifier_round_trip_in_safe_mode(tmp_path, rng):
    model = build_classifier("efficientnetb0", (4, 32, 32, 2), 3, mapping="acs", encoder_weights=None,
                             freeze_encoder=True, depth_downsampling=False)
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]
    volume = rng.uniform(0, 1, size=(2, 4, 32, 32, 2)).astype("float32")
    out = np.asarray(model(volume, training=False))
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-6)
    path = tmp_path / "classifier.keras"
    model.save(path)
    np.testing.assert_array_equal(np.asarray(keras.models.load_model(path, safe_mode=True)(volume)), out)


@pytest.mark.parametrize("call, message", [
    (lambda: build_segmenter("resnet50", (16, 32, 32, 1), encoder_weights=None),
     r"^slices, rows and cols must be multiples of 32 \(five 2x downsamplings\)\. Received: input_shape=\(16, 32, 32, 1\)$"),
    (lambda: build_segmenter("resnet50", CUBE, encoder_weights=None, decoder_filters=(8, 8)),
     r"^decoder_filters must be 5 positive ints\. Received: decoder_filters=\(8, 8\)$"),
    (lambda: build_segmenter("resnet50", CUBE, encoder_weights=None, n_classes=0),
     r"^n_classes must be a positive int\. Received: n_classes=0$"),
    (lambda: build_classifier("resnet50", CUBE, 1, encoder_weights=None),
     r"^n_classes must be an int of at least 2\. Received: n_classes=1$"),
    (lambda: build_classifier("resnet50", CUBE, 2, encoder_weights=None, dropout=1.0),
     r"^dropout must be in \[0, 1\)\. Received: dropout=1\.0$"),
    (lambda: build_classifier("resnet50", (32, 16, 32, 1), 2, encoder_weights=None),
     r"^rows and cols must be at least 32\. Received: input_shape=\(32, 16, 32, 1\)$"),
    (lambda: build_classifier("alexnet", CUBE, 2, encoder_weights=None),
     r"^backbone must be one of \[.*\]\. Received: backbone='alexnet'$"),
])
def test_bad_head_arguments_are_clear_errors(call, message):
    with pytest.raises(Planar3DError, match=message):
        call()
