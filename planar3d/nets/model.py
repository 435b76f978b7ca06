"""The planar 3D res-u-net of Kolarik et al., "Planar 3D Transfer Learning for End to End
Unimodal MRI Unbalanced Data Segmentation", ICPR 2020.

Encoder: VGG16 blocks 1-4 with their ImageNet kernels mapped to planar (1, 3, 3) kernels
(frozen), MaxPooling3D (2, 2, 2) between blocks. Bottleneck: two planar convolutions
``conv51``/``conv52`` (VGG16 ``block5_conv1``/``block5_conv2``) and a residual
concatenation with ``block4_pool``. Decoder: blocks 6-9, each a Conv3DTranspose (2, 2, 2)
upsampling concatenated with the U-Net skip, a dilated (1, 2, 2) convolution, a plain
convolution and a residual concatenation. No batch normalisation. Output: sigmoid 1×1×1.

The encoder and bottleneck convolutions can instead use another mapping of the 2D kernels
(:data:`planar3d.nets.mapping.MAPPINGS`): ``"acs"`` (:class:`planar3d.nets.layers.ACSConv3D`),
``"inflate"`` (I3D-inflated 3×3×3 kernels) or ``"none"`` (random 3×3×3 kernels, trained).
The decoder is the same for every mapping.
"""

from __future__ import annotations

import os
from typing import Sequence

import keras
from keras import layers

from planar3d.config import CHOICES
from planar3d.errors import Planar3DError
from planar3d.nets.layers import ACSConv3D, PlanarConv3D
from planar3d.nets.mapping import MAPPINGS, channel_kernel, map_vgg16
from planar3d.nets.weights import load_vgg16_2d

__all__ = ["BOTTLENECK_SOURCES", "DECODER_SKIPS", "ENCODER_LAYERS", "build_model", "encoder_layer_names"]

#: VGG16 blocks 1-4 as (block, number of convolutions, filters).
ENCODER_LAYERS: tuple[tuple[int, int, int], ...] = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512))
#: bottleneck layer -> the VGG16 layer whose weights it receives with bottleneck_init="vgg".
BOTTLENECK_SOURCES: dict[str, str] = {"conv51": "block5_conv1", "conv52": "block5_conv2"}
#: decoder block -> (filters, kernel of its two convolutions, encoder skip layer).
DECODER_SKIPS: dict[int, tuple[int, tuple[int, int, int], str]] = {
    6: (256, (2, 3, 3), "block4_conv3"),
    7: (128, (3, 3, 3), "block3_conv3"),
    8: (64, (3, 3, 3), "block2_conv2"),
    9: (32, (3, 3, 3), "block1_conv2"),
}
_DEPTH_MULTIPLE = 16  # four poolings by 2 along every axis


def encoder_layer_names() -> list[str]:
    """Names of the encoder's convolutions, ``block1_conv1`` ... ``block4_conv3``."""
    return [f"block{b}_conv{c}" for b, n, _ in ENCODER_LAYERS for c in range(1, n + 1)]


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise Planar3DError(
            f"input_shape must be (slices, rows, cols, channels) of positive ints. Received: input_shape={shape}"
        )
    if any(s % _DEPTH_MULTIPLE for s in shape[:3]):
        raise Planar3DError(
            f"slices, rows and cols must be multiples of {_DEPTH_MULTIPLE} (four 2x2x2 poolings). "
            f"Received: input_shape={shape}"
        )
    return shape


def _initializer(seed: int | None, index: int):
    return keras.initializers.GlorotUniform(seed=None if seed is None else seed * 1000 + index)


def _encoder_conv(mapping: str, filters: int, name: str, kernel_initializer) -> keras.layers.Layer:
    """One encoder or bottleneck convolution (3×3 in-plane, 'same', ReLU) for ``mapping``."""
    common = dict(activation="relu", name=name, kernel_initializer=kernel_initializer)
    if mapping == "planar":
        return PlanarConv3D(filters, 3, axis=0, **common)
    if mapping == "acs":
        return ACSConv3D(filters, 3, **common)
    return layers.Conv3D(filters, (3, 3, 3), padding="same", **common)


def _decoder_block(x, skip, block: int, seed: int | None):
    """Upsample, concatenate the skip, dilated conv, plain conv, residual concatenation."""
    filters, kernel, _ = DECODER_SKIPS[block]
    up = layers.Conv3DTranspose(
        filters, (2, 2, 2), strides=2, padding="same", name=f"block{block}_up",
        kernel_initializer=_initializer(seed, 10 * block),
    )(x)
    up = layers.Concatenate(name=f"block{block}_skip")([up, skip])
    c1 = layers.Conv3D(
        filters, kernel, dilation_rate=(1, 2, 2), activation="relu", padding="same",
        name=f"block{block}_conv1", kernel_initializer=_initializer(seed, 10 * block + 1),
    )(up)
    c2 = layers.Conv3D(
        filters, kernel, activation="relu", padding="same",
        name=f"block{block}_conv2", kernel_initializer=_initializer(seed, 10 * block + 2),
    )(c1)
    return layers.Concatenate(name=f"block{block}_residual")([up, c2])


def _build_graph(input_shape, seed: int | None, name: str, mapping: str) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="flair")
    x = inputs
    skips = {}
    index = 0
    for block, n_convs, filters in ENCODER_LAYERS:
        for conv in range(1, n_convs + 1):
            layer_name = f"block{block}_conv{conv}"
            x = _encoder_conv(mapping, filters, layer_name, _initializer(seed, 30 + index))(x)
            index += 1
            skips[layer_name] = x
        x = layers.MaxPooling3D((2, 2, 2), strides=2, name=f"block{block}_pool")(x)
    pooled = x
    for index, bottleneck in enumerate(BOTTLENECK_SOURCES):
        x = _encoder_conv(mapping, 512, bottleneck, _initializer(seed, 50 + index))(x)
    x = layers.Concatenate(name="block5_residual")([pooled, x])
    for block, (_, _, skip) in DECODER_SKIPS.items():
        x = _decoder_block(x, skips[skip], block, seed)
    outputs = layers.Conv3D(1, (1, 1, 1), activation="sigmoid", dtype="float32", name="output",
                            kernel_initializer=_initializer(seed, 99))(x)
    return keras.Model(inputs, outputs, name=name)


def _load_encoder(model: keras.Model, vgg2d, channels: int, bottleneck_init: str, mapping: str) -> None:
    mapped = map_vgg16(vgg2d, mode=mapping, axis=0)
    for name in encoder_layer_names():
        kernel, bias = mapped[name]
        if name == "block1_conv1":
            kernel = channel_kernel(kernel, channels)
        model.get_layer(name).set_weights([kernel, bias])
    if bottleneck_init == "vgg":
        for name, source in BOTTLENECK_SOURCES.items():
            model.get_layer(name).set_weights(list(mapped[source]))


def build_model(
    input_shape: Sequence[int] = (16, 256, 256, 1),
    encoder_weights: str | os.PathLike | None = "imagenet",
    freeze_encoder: bool = True,
    bottleneck_init: str = "vgg",
    mapping: str = "planar",
    seed: int | None = 0,
    name: str = "planar3d_res_unet",
) -> keras.Model:
    """Build the planar 3D res-u-net (or the same topology with another encoder mapping).

    Args:
        input_shape: `(slices, rows, cols, channels)`; slices, rows and cols multiples of
            16; 1 channel (grey FLAIR; ``block1_conv1``'s kernel summed over its RGB inputs,
            exactly equal to feeding the grey image on 3 channels, 3x cheaper), 3, or ``C``
            stacked MRI sequences (the RGB kernels' mean, scaled by 3 / C:
            :func:`planar3d.nets.mapping.channel_kernel`).
        encoder_weights: ``"imagenet"``, a path to a VGG16 weights ``.h5`` file, or ``None``
            for a random encoder drawn from ``seed`` (see
            :func:`planar3d.nets.weights.load_vgg16_2d`). Ignored with ``mapping="none"``.
        freeze_encoder: make the encoder and the bottleneck convolutions untrainable
            (the paper's setting). Applies to the pretrained mappings only: with
            ``mapping="none"`` the encoder and bottleneck are always trainable (the
            "3D from scratch" baseline; a random *frozen* encoder is
            ``mapping="planar", encoder_weights=None``).
        bottleneck_init: ``"vgg"`` loads VGG16 ``block5_conv1``/``block5_conv2`` into
            ``conv51``/``conv52``; ``"random"`` leaves them at their random initialisation,
            reproducing the reference code (which froze them unloaded). Ignored with
            ``mapping="none"``.
        mapping: how the 2D kernels become the encoder's and bottleneck's 3D convolutions
            (:data:`planar3d.nets.mapping.MAPPINGS`): ``"planar"`` (default, the paper: (1, 3, 3)
            kernels flat along the slice axis, :class:`planar3d.nets.layers.PlanarConv3D`);
            ``"acs"`` (output channels in three groups, each planar along its own axis,
            :class:`planar3d.nets.layers.ACSConv3D`; same parameters as planar); ``"inflate"``
            (I3D: the 2D kernel repeated 3 times along the slice axis and divided by 3, a
            3×3×3 ``Conv3D``); ``"none"`` (3×3×3 ``Conv3D`` with random kernels from
            ``seed``). In every pretrained mapping a 1-channel input gets ``block1_conv1``'s
            kernel summed over its RGB inputs.
        seed: seed of every random initialiser (``None`` for Keras' global generator).
        name: model name.

    Returns:
        An uncompiled ``keras.Model`` mapping `(batch, slices, rows, cols, channels)` to
        sigmoid probabilities `(batch, slices, rows, cols, 1)` (float32 even under a
        mixed-precision policy).

    Raises:
        Planar3DError: invalid ``input_shape``, ``bottleneck_init`` or ``mapping``; weights
            that cannot be found or are not VGG16.
    """
    input_shape = _check_input_shape(input_shape)
    if bottleneck_init not in CHOICES["bottleneck_init"]:
        raise Planar3DError(
            f"bottleneck_init must be one of {CHOICES['bottleneck_init']}. Received: bottleneck_init={bottleneck_init!r}"
        )
    if mapping not in MAPPINGS:
        raise Planar3DError(f"mapping must be one of {MAPPINGS}. Received: mapping={mapping!r}")
    if mapping == "none":
        return _build_graph(input_shape, seed, name, mapping)
    vgg2d = load_vgg16_2d(encoder_weights, seed=0 if seed is None else seed)
    model = _build_graph(input_shape, seed, name, mapping)
    _load_encoder(model, vgg2d, input_shape[-1], bottleneck_init, mapping)
    frozen = encoder_layer_names() + list(BOTTLENECK_SOURCES)
    for layer_name in frozen:
        layer = model.get_layer(layer_name)
        # The reference froze the bottleneck even when it held random weights.
        layer.trainable = not freeze_encoder
    return model
