"""Segmentation and classification heads on any registry backbone converted to 3D.

As in Baheti et al. 2023 (Fig. 3): one encoder (:func:`planar3d.nets.backbones.build_encoder`)
with either a U-Net decoder over the registry's skips (:func:`build_segmenter`, the decoder of
segmentation_models / GaNDLF: upsampling, concatenation, two convolutions with batch norm per
stage) or global average pooling, dropout and a dense layer (:func:`build_classifier`). The
output activations run in float32, so mixed precision is safe.
"""

from __future__ import annotations

import os
from typing import Sequence

import keras
from keras import layers

from planar3d.errors import Planar3DError
from planar3d.nets.backbones import BACKBONES, build_encoder

__all__ = ["DecoderBlock", "build_classifier", "build_segmenter"]

_ENCODER_FACTOR = 32  # every registry backbone downsamples 5 times by 2


def DecoderBlock(filters: int, stage: int, depth_downsampling: bool = True):  # noqa: N802 (Keras block style)
    """One U-Net decoder stage: upsample by 2, concatenate the skip, twice Conv3D 3x3x3 + BN + ReLU.

    Args:
        filters: output channels of both convolutions.
        stage: 1-based stage number, used in the layer names ``decoder_stage{stage}_...``.
        depth_downsampling: upsample the slices too (as the encoder downsampled them).

    Returns:
        A function ``(x, skip) -> y``; ``skip`` may be ``None`` (no encoder feature at that
        resolution). Shapes: `(batch, s, r, c, C)` -> `(batch, 2s or s, 2r, 2c, filters)`.
    """
    prefix = f"decoder_stage{stage}"

    def apply(x, skip=None):
        x = layers.UpSampling3D((2 if depth_downsampling else 1, 2, 2), name=f"{prefix}_upsampling")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"{prefix}_concat")([x, skip])
        for index in (1, 2):
            x = layers.Conv3D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv{index}")(x)
            x = layers.BatchNormalization(name=f"{prefix}_bn{index}")(x)
            x = layers.ReLU(name=f"{prefix}_relu{index}")(x)
        return x

    return apply


def _check_common(backbone: str, input_shape: Sequence[int], depth_downsampling: bool, segmenter: bool):
    if backbone not in BACKBONES:
        raise Planar3DError(f"backbone must be one of {sorted(BACKBONES)}. Received: backbone={backbone!r}")
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise Planar3DError(
            f"input_shape must be (slices, rows, cols, channels) of positive ints. Received: input_shape={shape}"
        )
    if min(shape[1:3]) < _ENCODER_FACTOR:
        raise Planar3DError(f"rows and cols must be at least {_ENCODER_FACTOR}. Received: input_shape={shape}")
    if segmenter:
        spatial = shape[:3] if depth_downsampling else shape[1:3]
        if any(s % _ENCODER_FACTOR for s in spatial):
            which = "slices, rows and cols" if depth_downsampling else "rows and cols"
            raise Planar3DError(
                f"{which} must be multiples of {_ENCODER_FACTOR} (five 2x downsamplings). Received: input_shape={shape}"
            )
    return shape


def _encoder(backbone, shape, mapping, encoder_weights, freeze_encoder, depth_downsampling) -> keras.Model:
    encoder = build_encoder(backbone, shape, mapping=mapping, weights=encoder_weights,
                            depth_downsampling=depth_downsampling)
    if freeze_encoder:
        for layer in encoder.layers:
            layer.trainable = False  # batch norm then also runs in inference mode
    return encoder


def build_segmenter(
    backbone: str,
    input_shape: Sequence[int],
    mapping: str = "planar",
    encoder_weights: str | os.PathLike | None = "imagenet",
    freeze_encoder: bool = False,
    decoder_filters: Sequence[int] = (256, 128, 64, 32, 16),
    n_classes: int = 1,
    depth_downsampling: bool = True,
    name: str | None = None,
) -> keras.Model:
    """A 3D U-Net: a registry encoder and a decoder over its skips.

    Five :func:`DecoderBlock` stages bring the encoder's deepest feature (factor 32) back to
    the input resolution, each concatenating the registry skip at its resolution
    (``BACKBONES[backbone].skips``; a stage without one, e.g. factor 1, or factors 1 and 2 for
    ConvNeXt, only upsamples). A 1x1x1 convolution gives the output.

    Args:
        backbone: a key of :data:`planar3d.nets.backbones.BACKBONES`.
        input_shape: `(slices, rows, cols, channels)`; rows and cols multiples of 32, and the
            slices too with ``depth_downsampling``; any channel count (see
            :func:`planar3d.nets.backbones.to_3d`).
        mapping: 2D -> 3D mapping of the encoder
            (:data:`planar3d.nets.backbones.CONVERTER_MAPPINGS`).
        encoder_weights: ``"imagenet"``, a weights file of the 2D backbone, or ``None``.
        freeze_encoder: make every encoder layer untrainable.
        decoder_filters: filters of the five decoder stages, deepest first.
        n_classes: 1 gives one sigmoid channel; more give ``n_classes`` softmax channels.
        depth_downsampling: see :func:`planar3d.nets.backbones.to_3d`.
        name: model name; default ``f"{backbone}_{mapping}_unet"``.

    Returns:
        An uncompiled ``keras.Model``: `(batch, slices, rows, cols, channels)` ->
        `(batch, slices, rows, cols, n_classes)` probabilities in float32.

    Raises:
        Planar3DError: bad backbone, mapping, shape, ``decoder_filters`` or ``n_classes``;
            weights that cannot be obtained.
        InputFileError: a weights file that is missing or does not fit.
    """
    shape = _check_common(backbone, input_shape, depth_downsampling, segmenter=True)
    filters = tuple(decoder_filters)
    if len(filters) != 5 or not all(isinstance(f, int) and f > 0 for f in filters):
        raise Planar3DError(f"decoder_filters must be 5 positive ints. Received: decoder_filters={filters}")
    if not isinstance(n_classes, int) or n_classes < 1:
        raise Planar3DError(f"n_classes must be a positive int. Received: n_classes={n_classes}")
    encoder = _encoder(backbone, shape, mapping, encoder_weights, freeze_encoder, depth_downsampling)
    skips = {factor: encoder.get_layer(layer).output for factor, layer in BACKBONES[backbone].skips}
    x = encoder.output
    factor = _ENCODER_FACTOR
    for stage, stage_filters in enumerate(filters, start=1):
        factor //= 2
        x = DecoderBlock(stage_filters, stage, depth_downsampling)(x, skips.get(factor))
    activation = "sigmoid" if n_classes == 1 else "softmax"
    outputs = layers.Conv3D(n_classes, 1, activation=activation, dtype="float32", name="output")(x)
    return keras.Model(encoder.input, outputs, name=name or f"{backbone}_{mapping}_unet")


def build_classifier(
    backbone: str,
    input_shape: Sequence[int],
    n_classes: int,
    mapping: str = "planar",
    encoder_weights: str | os.PathLike | None = "imagenet",
    freeze_encoder: bool = False,
    dropout: float = 0.5,
    depth_downsampling: bool = True,
    name: str | None = None,
) -> keras.Model:
    """A 3D classifier: a registry encoder, global average pooling, dropout, dense.

    Args:
        backbone: a key of :data:`planar3d.nets.backbones.BACKBONES`.
        input_shape: `(slices, rows, cols, channels)`; rows and cols at least 32.
        n_classes: at least 2; 2 gives one sigmoid unit (the probability of class 1), more
            give ``n_classes`` softmax units.
        mapping: 2D -> 3D mapping of the encoder.
        encoder_weights: ``"imagenet"``, a weights file of the 2D backbone, or ``None``.
        freeze_encoder: make every encoder layer untrainable.
        dropout: rate of the dropout before the dense layer, in [0, 1).
        depth_downsampling: see :func:`planar3d.nets.backbones.to_3d`.
        name: model name; default ``f"{backbone}_{mapping}_classifier"``.

    Returns:
        An uncompiled ``keras.Model``: `(batch, slices, rows, cols, channels)` ->
        `(batch, 1)` (2 classes) or `(batch, n_classes)` probabilities in float32.

    Raises:
        Planar3DError: bad backbone, mapping, shape, ``n_classes`` or ``dropout``; weights
            that cannot be obtained.
        InputFileError: a weights file that is missing or does not fit.
    """
    shape = _check_common(backbone, input_shape, depth_downsampling, segmenter=False)
    if not isinstance(n_classes, int) or n_classes < 2:
        raise Planar3DError(f"n_classes must be an int of at least 2. Received: n_classes={n_classes}")
    if not 0 <= dropout < 1:
        raise Planar3DError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    encoder = _encoder(backbone, shape, mapping, encoder_weights, freeze_encoder, depth_downsampling)
    x = layers.GlobalAveragePooling3D(name="classifier_pool")(encoder.output)
    x = layers.Dropout(dropout, name="classifier_dropout")(x)
    units, activation = (1, "sigmoid") if n_classes == 2 else (n_classes, "softmax")
    outputs = layers.Dense(units, activation=activation, dtype="float32", name="classifier_output")(x)
    return keras.Model(encoder.input, outputs, name=name or f"{backbone}_{mapping}_classifier")
