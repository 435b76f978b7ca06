"""Any functional 2D Keras backbone as a 3D network: one graph replay, one table of converters.

:func:`to_3d` replays the graph of a functional 2D Keras model node by node (nested
``Sequential``/functional models inline) and puts, where each 2D layer was, its 3D twin
from :data:`CONVERTERS` (class -> converter), with the 2D weights copied in. A layer
that is not in the table is refused with an error naming it and its class: nothing is
passed through unconverted (ACSConv's converters pass unknown modules through, which is
where their "experimental" warnings come from).

:data:`BACKBONES` names Keras Applications encoders and the stage outputs a U-Net decoder
takes as skips; :func:`build_encoder` builds one in 2D with its weights and converts it.

Mappings (:data:`MAPPINGS`) of ``Conv2D`` / ``DepthwiseConv2D``:

- ``"planar"`` (Kolarik et al. 2020): :class:`~planar3d.nets.layers.PlanarConv3D`, the 2D
  kernel flat along the slice axis; kernels unchanged (a size-1 axis inserted).
- ``"acs"`` (Yang et al. 2021; Baheti et al. 2023, Eq. 1):
  :class:`~planar3d.nets.layers.ACSConv3D`; kernels unchanged.
- ``"soft_acs"`` (GaNDLF's default): :class:`~planar3d.nets.layers.SoftACSConv3D`, the
  per-plane split of each output channel learned; starts exactly at ACS.
- ``"inflate"`` (I3D, Carreira & Zisserman 2017): ``Conv3D`` with the 2D kernel repeated
  ``kh`` times along the slices and divided by ``kh``
  (:func:`~planar3d.nets.mapping.inflate_kernel`).
- ``"none"``: the ``"inflate"`` topology with nothing copied (every layer at its Keras
  initialisation): the "3D from scratch" baseline.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
from keras import layers

from planar3d.config import MAPPINGS
from planar3d.errors import InputFileError, Planar3DError
from planar3d.nets.layers import ACSConv3D, LayerScale, PlanarConv3D, SoftACSConv3D
from planar3d.nets.mapping import channel_kernel, inflate_kernel

__all__ = ["BACKBONES", "CONVERTERS", "Backbone", "build_encoder", "to_3d"]

_PLANE_LAYERS = {"planar": PlanarConv3D, "acs": ACSConv3D, "soft_acs": SoftACSConv3D}
# Layers between the input and the first convolution that act on each channel alone.
_CHANNELWISE_INPUT_LAYERS = (layers.ZeroPadding2D, layers.Rescaling, layers.Normalization, layers.InputLayer)


def _refuse(layer, problem: str) -> Planar3DError:
    return Planar3DError(f"to_3d: layer {layer.name!r} of class {type(layer).__name__} {problem}")


def _channel_axis(layer, axis) -> int:
    """The 3D channel axis for a 2D layer's ``axis`` (only the channel axis is supported)."""
    values = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if values not in ([3], [-1]):
        raise _refuse(layer, f"works along axis {axis}; only the channel axis (3 or -1) has a 3D twin")
    return -1


class _Converter:
    """State of one conversion: the 2D -> 3D tensor map and what the converters need."""

    def __init__(self, mapping: str, depth_downsampling: bool, channels: int):
        self.mapping = mapping
        self.depth_downsampling = depth_downsampling
        self.channels = channels  # input channels seen by the pretrained layers (3 after a grey repeat)
        self.tensors: dict[int, object] = {}  # id(2D tensor) -> 3D tensor
        self.consumers: dict[int, list] = {}  # id(2D tensor) -> operations reading it
        self.pads: dict[int, tuple] = {}  # id(2D tensor) -> folded ZeroPadding2D ((top, bottom), (left, right))
        self.before_conv: set[int] = set()  # 2D tensors reached from the input by channel-wise layers only

    # graph replay
    def replay(self, graph: keras.Model, inputs_3d: list) -> list:
        for x2, x3 in zip(graph.inputs, inputs_3d):
            self.tensors[id(x2)] = x3
        nodes = [node for depth in sorted(graph._nodes_by_depth, reverse=True)
                 for node in graph._nodes_by_depth[depth]]
        for node in nodes:
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node.operation)
        for node in nodes:
            if node.is_input or node.operation is None:
                continue
            args, _ = node.arguments.fill_in(self.tensors)
            outputs = self.convert(node.operation, node, args)
            for x2, x3 in zip(node.outputs, keras.tree.flatten(outputs)):
                self.tensors[id(x2)] = x3
            if isinstance(node.operation, _CHANNELWISE_INPUT_LAYERS) and all(
                id(t) in self.before_conv for t in node.input_tensors
            ):
                self.before_conv.update(id(t) for t in node.outputs)
        return [self.tensors[id(x)] for x in graph.outputs]

    def convert(self, operation, node, args):
        if isinstance(operation, keras.Sequential):
            inner = operation._functional  # the Sequential's own graph
            if id(node.input_tensors[0]) in self.before_conv:
                self.before_conv.add(id(inner.inputs[0]))
            return self.replay(inner, [args[0]])[0]
        if isinstance(operation, keras.Model):
            return self.replay(operation, keras.tree.flatten(args))
        for cls in type(operation).__mro__:
            if cls in CONVERTERS:
                return CONVERTERS[cls](self, operation, node, args)
        supported = ", ".join(sorted({c.__name__ for c in CONVERTERS}))
        raise _refuse(operation, f"has no 3D counterpart in to_3d (supported: {supported})")

    # helpers for the converters
    def copy_weights(self, new, old, arrays=None) -> None:
        if self.mapping != "none":
            new.set_weights(old.get_weights() if arrays is None else arrays)

    def first_layer(self, node) -> bool:
        """Whether ``node`` reads the input through channel-wise layers only."""
        return id(node.input_tensors[0]) in self.before_conv

    def depth(self, rows_value, identity):
        """The slice-axis value for a rows value: the same when slices follow rows, else ``identity``."""
        return rows_value if self.depth_downsampling else identity


# converters: (converter, 2D layer, its node, 3D arguments) -> 3D outputs

def _convert_conv(ctx: _Converter, layer, node, args):
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        raise _refuse(layer, "is channels_first; only channels_last converts")
    depthwise = isinstance(layer, layers.DepthwiseConv2D)
    x = args[0]
    cin = int(x.shape[-1])
    kernel, *bias = layer.get_weights()
    if depthwise:
        groups = cin
        filters = cin * int(config["depth_multiplier"])
        kernel = kernel.reshape(*kernel.shape[:2], 1, filters)  # (kh, kw, 1, Cin * m), output c * m + j
    else:
        groups = int(config.get("groups", 1))
        filters = int(config["filters"])
        if groups not in (1, cin):
            raise _refuse(layer, f"has groups={groups}; only 1 and depthwise ({cin}) convert")
    (kh, kw), (sh, sw), (dh, dw) = config["kernel_size"], config["strides"], config["dilation_rate"]
    strides = (ctx.depth(sh, 1), sh, sw)
    dilations = (dh, dh, dw)
    pad2d = ctx.pads.get(id(node.input_tensors[0]))
    if config["padding"] == "same" and pad2d is None:
        padding = "same"
    else:
        (top, bottom), (left, right) = pad2d or ((0, 0), (0, 0))
        padding = (_slice_padding(x.shape[1], kh, strides[0], dh, (top, bottom)), (top, bottom), (left, right))
    if ctx.first_layer(node) and not depthwise:
        kernel = channel_kernel(kernel, ctx.channels)
    common = dict(strides=strides, dilation_rate=dilations, groups=groups, activation=config["activation"],
                  use_bias=config["use_bias"], name=layer.name)
    if ctx.mapping in _PLANE_LAYERS:
        new = _PLANE_LAYERS[ctx.mapping](filters, (kh, kw), padding=padding, **common)
        out = new(x)
        new.kernel.assign(np.expand_dims(kernel, 0) if ctx.mapping == "planar" else kernel)
        if bias:
            new.bias.assign(bias[0])
    else:
        if not isinstance(padding, str):
            if any(p for pair in padding for p in pair):
                x = layers.ZeroPadding3D(padding, name=f"{layer.name}_pad3d")(x)
            padding = "valid"
        new = layers.Conv3D(filters, (kh, kh, kw), padding=padding, **common)
        out = new(x)
        ctx.copy_weights(new, layer, [inflate_kernel(kernel, axis=0, depth=kh), *bias])
    new.trainable = layer.trainable
    return out


def _slice_padding(slices: int | None, kernel: int, stride: int, dilation: int, rows_pads: tuple[int, int]):
    """Zero padding of the slice axis for a 'valid' (or explicitly padded) convolution.

    The slices get the rows' padding when it gives what 'same' would (``ceil(slices /
    stride)`` slices: the 2D model pads its rows that way), otherwise TensorFlow's 'same'
    padding for this slice count (a volume may have fewer slices than the 2D model rows).
    """
    total = (kernel - 1) * dilation
    if slices is None:
        return rows_pads if stride > 1 else (total // 2, total - total // 2)
    out = -(-slices // stride)
    needed = max((out - 1) * stride + total + 1 - slices, 0)
    if sum(rows_pads) == needed:
        return rows_pads
    return (needed // 2, needed - needed // 2)


def _convert_zero_padding(ctx: _Converter, layer, node, args):
    (top, bottom), (left, right) = layer.get_config()["padding"]
    consumers = ctx.consumers.get(id(node.outputs[0]), [])
    convs = [c for c in consumers if isinstance(c, (layers.Conv2D, layers.DepthwiseConv2D))]
    if convs and (len(convs) < len(consumers) or any(c.padding != "valid" for c in convs)):
        raise _refuse(layer, "feeds convolutions with 'same' padding or other layers too; cannot fold it")
    if convs:
        # The convolution pads its own in-plane axes (a kernel flat along an axis needs none).
        ctx.pads[id(node.outputs[0])] = ((top, bottom), (left, right))
        return args[0]
    return layers.ZeroPadding3D((ctx.depth((top, bottom), (0, 0)), (top, bottom), (left, right)),
                                name=layer.name)(args[0])


def _convert_pooling(ctx: _Converter, layer, node, args):
    config = layer.get_config()
    (ph, pw), (sh, sw) = config["pool_size"], config["strides"]
    cls = layers.MaxPooling3D if isinstance(layer, layers.MaxPooling2D) else layers.AveragePooling3D
    return cls((ctx.depth(ph, 1), ph, pw), strides=(ctx.depth(sh, 1), sh, sw), padding=config["padding"],
               name=layer.name)(args[0])


def _convert_global_pooling(ctx: _Converter, layer, node, args):
    cls = layers.GlobalAveragePooling3D if isinstance(layer, layers.GlobalAveragePooling2D) else layers.GlobalMaxPooling3D
    return cls(keepdims=layer.get_config().get("keepdims", False), name=layer.name)(args[0])


def _convert_reshape(ctx: _Converter, layer, node, args):
    target = tuple(layer.get_config()["target_shape"])
    if len(target) != 3 or target[:2] != (1, 1):
        raise _refuse(layer, f"reshapes to {target}; only the squeeze-and-excitation (1, 1, C) converts")
    return layers.Reshape((1, 1, 1, target[2]), name=layer.name)(args[0])


def _convert_dropout(ctx: _Converter, layer, node, args):
    config = layer.get_config()
    noise = config.get("noise_shape")
    if noise is not None:
        noise = (noise[0], noise[1], *noise[1:])  # the slices drop like the rows
    return layers.Dropout(config["rate"], noise_shape=noise, seed=config.get("seed"), name=layer.name)(args[0])


def _same_class(ctx: _Converter, layer, node, args, **changes):
    """Rank-agnostic layers: same class and config (``changes`` applied), weights copied."""
    config = layer.get_config()
    config.update(changes)
    new = type(layer).from_config(config)
    out = new(*args)
    ctx.copy_weights(new, layer)
    new.trainable = layer.trainable
    return out


def _convert_channel_axis_layer(ctx: _Converter, layer, node, args):
    return _same_class(ctx, layer, node, args, axis=_channel_axis(layer, layer.get_config()["axis"]))


def _convert_preprocessing(ctx: _Converter, layer, node, args):
    """Rescaling / Normalization; per-channel constants averaged over R, G, B for C != 3."""
    config = layer.get_config()
    if isinstance(layer, layers.Normalization):
        config["axis"] = _channel_axis(layer, config["axis"])
    per_channel = ctx.first_layer(node) and ctx.channels != 3
    for key in ("scale", "offset", "mean", "variance"):
        value = config.get(key)
        if per_channel and isinstance(value, (list, tuple)) and len(value) == 3:
            config[key] = [float(np.mean(value))] * ctx.channels
    new = type(layer).from_config(config)
    out = new(args[0])
    if new.weights and ctx.mapping != "none":
        arrays = layer.get_weights()
        if per_channel:
            arrays = [np.full((ctx.channels,), a.mean(), a.dtype) if a.shape == (3,) else a for a in arrays]
        new.set_weights(arrays)
    return out


def _convert_layer_scale(ctx: _Converter, layer, node, args):
    new = LayerScale(float(layer.init_values), int(layer.projection_dim), name=layer.name)
    out = new(args[0])
    ctx.copy_weights(new, layer)
    return out


def _convert_op(layer_class):
    """A symbolic ``keras.ops`` call (``x + y`` in ConvNeXt) as the merge layer it is."""
    def convert(ctx: _Converter, operation, node, args):
        return layer_class(name=operation.name)(list(args))
    return convert


def _convexnext_layer_scale_class():
    from keras.src.applications.convnext import LayerScale as KerasLayerScale

    return KerasLayerScale


def _ops_classes():
    from keras.src.ops import numpy as knp

    return {knp.Add: _convert_op(layers.Add), knp.Multiply: _convert_op(layers.Multiply),
            knp.Subtract: _convert_op(layers.Subtract)}


#: 2D class -> converter ``(state, 2D layer, node, 3D args) -> 3D outputs``; looked up along the MRO.
CONVERTERS: dict[type, Callable] = {
    layers.Conv2D: _convert_conv,
    layers.DepthwiseConv2D: _convert_conv,
    layers.ZeroPadding2D: _convert_zero_padding,
    layers.MaxPooling2D: _convert_pooling,
    layers.AveragePooling2D: _convert_pooling,
    layers.GlobalAveragePooling2D: _convert_global_pooling,
    layers.GlobalMaxPooling2D: _convert_global_pooling,
    layers.Reshape: _convert_reshape,
    layers.Dropout: _convert_dropout,
    layers.BatchNormalization: _convert_channel_axis_layer,
    layers.LayerNormalization: _convert_channel_axis_layer,
    layers.Concatenate: _convert_channel_axis_layer,
    layers.Rescaling: _convert_preprocessing,
    layers.Normalization: _convert_preprocessing,
    layers.Dense: _same_class,
    layers.Activation: _same_class,
    layers.ReLU: _same_class,
    layers.LeakyReLU: _same_class,
    layers.ELU: _same_class,
    layers.Identity: _same_class,
    layers.Add: _same_class,
    layers.Multiply: _same_class,
    layers.Subtract: _same_class,
    layers.Average: _same_class,
    layers.Maximum: _same_class,
    layers.Minimum: _same_class,
    _convexnext_layer_scale_class(): _convert_layer_scale,
    **_ops_classes(),
}


def _needs_grey_repeat(model_2d: keras.Model) -> bool:
    """Whether a per-channel layer (Normalization, per-channel Rescaling) precedes the first conv."""
    frontier = [model_2d.layers[0]] if isinstance(model_2d.layers[0], layers.InputLayer) else []
    seen = set()
    while frontier:
        layer = frontier.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, layers.Normalization):
            return True
        if isinstance(layer, layers.Rescaling) and any(
            isinstance(v, (list, tuple)) for v in (layer.get_config()["scale"], layer.get_config()["offset"])
        ):
            return True
        if isinstance(layer, _CHANNELWISE_INPUT_LAYERS):
            frontier.extend(n.operation for n in layer._outbound_nodes)
    return False


def to_3d(
    model_2d: keras.Model,
    mapping: str = "planar",
    depth_downsampling: bool = True,
    input_shape: Sequence[int | None] | None = None,
) -> keras.Model:
    """Rebuild a functional 2D Keras model layer by layer as a 3D model.

    Every layer becomes its 3D twin (:data:`CONVERTERS`) with the same name and the 2D
    weights: ``Conv2D``/``DepthwiseConv2D`` by ``mapping`` (strides, dilations, depthwise
    groups carried over; a ``ZeroPadding2D`` before a 'valid' convolution is folded into it,
    so that each plane pads only the axes its kernel spans); ``MaxPooling2D``,
    ``AveragePooling2D``, ``ZeroPadding2D`` (others) to their 3D forms;
    ``GlobalAveragePooling2D``/``GlobalMaxPooling2D`` (``keepdims`` kept); the
    squeeze-and-excitation ``Reshape`` to ``(1, 1, 1, C)``; ``Dropout`` (a noise shape's
    slices drop like its rows); ``BatchNormalization``, ``LayerNormalization``,
    ``Concatenate`` on the channel axis; rank-agnostic layers (``Dense`` on the channel axis,
    activations, ``Add``, ``Multiply``, ``Rescaling``, ``Normalization``, ConvNeXt's
    ``LayerScale`` as :class:`~planar3d.nets.layers.LayerScale`) unchanged; ``keras.ops``
    additions as ``Add`` layers; nested models inline.

    Args:
        model_2d: a functional (or Sequential) channels-last 2D Keras model with one input,
            e.g. a Keras Applications model with ``include_top=False``.
        mapping: one of :data:`MAPPINGS` (see the module docstring).
        depth_downsampling: ``True``: the slice axis is downsampled wherever the rows are
            (strides, pool sizes and padding of the rows applied to the slices, like the
            paper's MaxPooling3D (2, 2, 2)); ``False``: the slice axis is never touched
            (stride 1, pool 1, 'same' along it), so the planar model is the 2D model applied
            to every slice.
        input_shape: `(slices, rows, cols, channels)`; default ``(None, rows, cols, C)`` of the
            2D model. Channels: 3 as trained; 1 gives the first convolution the kernel summed
            over R, G, B (exactly the grey scan copied to RGB; if a per-channel Normalization
            or Rescaling precedes that convolution the grey channel is copied to three by a
            ``Concatenate`` instead, which is the same exactly); any other ``C`` uses the
            mean RGB kernel repeated ``C`` times and scaled by ``3 / C``
            (:func:`~planar3d.nets.mapping.channel_kernel`: ``C`` copies of a grey scan give
            the grey-to-RGB response) and the channel means of per-channel preprocessing
            constants.

    Returns:
        A ``keras.Model`` on `(batch, slices, rows, cols, channels)` named like ``model_2d``.

    Raises:
        Planar3DError: unknown ``mapping``; a layer without a 3D twin (the message names it
            and its class); a model with several inputs; a bad ``input_shape``.
    """
    if mapping not in MAPPINGS:
        raise Planar3DError(f"mapping must be one of {MAPPINGS}. Received: mapping={mapping!r}")
    if len(model_2d.inputs) != 1:
        raise Planar3DError(f"to_3d converts models with one input. Received: {len(model_2d.inputs)} inputs")
    shape_2d = tuple(model_2d.inputs[0].shape[1:])
    if len(shape_2d) != 3:
        raise Planar3DError(f"to_3d needs a 2D model on (rows, cols, channels). Received: input shape {shape_2d}")
    shape = (None, *shape_2d) if input_shape is None else tuple(input_shape)
    if len(shape) != 4 or not isinstance(shape[-1], int) or shape[-1] < 1:
        raise Planar3DError(
            f"input_shape must be (slices, rows, cols, channels) with a channel count. Received: input_shape={shape}"
        )
    channels = shape[-1]
    if shape_2d[-1] != 3 and channels != shape_2d[-1]:
        raise Planar3DError(
            f"only a 3-channel (RGB) 2D model can change its channels. Received: {shape_2d[-1]} -> {channels}"
        )
    inputs = keras.Input(shape=shape, name=model_2d.inputs[0].name)
    x = inputs
    if channels == 1 and _needs_grey_repeat(model_2d):
        x = layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
        channels = 3
    ctx = _Converter(mapping, bool(depth_downsampling), channels)
    ctx.before_conv.add(id(model_2d.inputs[0]))
    outputs = ctx.replay(model_2d, [x])
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model_2d.name)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A Keras Applications encoder and the stage outputs a U-Net decoder takes as skips.

    Attributes:
        constructor: the ``keras.applications`` builder (called with ``include_top=False``).
        skips: ``(downsampling factor, layer name)`` shallow to deep, the layer names as in
            the converted 3D model (a nested model's layers are inlined); the encoder's
            output is the deepest feature, at factor 32.
        needs: layers the converter adds for this backbone beyond convolutions, pooling,
            batch norm and activations (documentation).
    """

    constructor: Callable[..., keras.Model]
    skips: tuple[tuple[int, str], ...]
    needs: str = ""


def _vgg_skips(convs_per_block: Sequence[int]) -> tuple[tuple[int, str], ...]:
    return tuple((2 ** b, f"block{b + 1}_conv{n}") for b, n in enumerate(convs_per_block))


_APPS = keras.applications
#: registry name -> :class:`Backbone`.
BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone(_APPS.VGG16, _vgg_skips((2, 2, 3, 3, 3))),
    "vgg19": Backbone(_APPS.VGG19, _vgg_skips((2, 2, 4, 4, 4))),
    "resnet50": Backbone(_APPS.ResNet50, (
        (2, "conv1_relu"), (4, "conv2_block3_out"), (8, "conv3_block4_out"), (16, "conv4_block6_out"),
    ), "ZeroPadding2D (folded), Add"),
    "resnet101": Backbone(_APPS.ResNet101, (
        (2, "conv1_relu"), (4, "conv2_block3_out"), (8, "conv3_block4_out"), (16, "conv4_block23_out"),
    ), "ZeroPadding2D (folded), Add"),
    "densenet121": Backbone(_APPS.DenseNet121, (
        (2, "conv1_relu"), (4, "pool2_relu"), (8, "pool3_relu"), (16, "pool4_relu"),
    ), "ZeroPadding2D, AveragePooling2D, Concatenate"),
    "efficientnetb0": Backbone(_APPS.EfficientNetB0, (
        (2, "block2a_expand_activation"), (4, "block3a_expand_activation"),
        (8, "block4a_expand_activation"), (16, "block6a_expand_activation"),
    ), "Rescaling, Normalization, DepthwiseConv2D, squeeze-and-excitation (GlobalAveragePooling2D "
       "keepdims, Reshape, Multiply), Dropout with a noise shape"),
    "mobilenetv2": Backbone(_APPS.MobileNetV2, (
        (2, "block_1_expand_relu"), (4, "block_3_expand_relu"), (8, "block_6_expand_relu"),
        (16, "block_13_expand_relu"),
    ), "DepthwiseConv2D, ReLU(6), ZeroPadding2D (folded)"),
    "convnext_tiny": Backbone(_APPS.ConvNeXtTiny, (
        (4, "convnext_tiny_downsampling_layernorm_0"), (8, "convnext_tiny_downsampling_layernorm_1"),
        (16, "convnext_tiny_downsampling_layernorm_2"),
    ), "nested Sequential, Normalization, LayerNormalization, depthwise Conv2D(groups=C), Dense on "
       "the channel axis, LayerScale, keras.ops addition"),
}


def _check_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise Planar3DError(f"backbone must be one of {sorted(BACKBONES)}. Received: backbone={name!r}")
    return BACKBONES[name]


def _load_2d(name: str, rows: int, cols: int, weights) -> keras.Model:
    """Build the 2D backbone with its weights the Keras Applications way; never silently random."""
    backbone = _check_backbone(name)
    shape = (rows, cols, 3)
    if weights is not None and weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise InputFileError(path, f"{name} weights file does not exist")
    if name == "vgg16" and weights is not None:
        # planar3d's own loader: $PLANAR3D_VGG16_WEIGHTS, the Keras cache, Keras 2 and 3 files.
        from planar3d.nets.weights import VGG16_CONV_LAYERS, load_vgg16_2d

        source = load_vgg16_2d(weights)
        model = backbone.constructor(include_top=False, weights=None, input_shape=shape)
        for layer_name, _, _ in VGG16_CONV_LAYERS:
            model.get_layer(layer_name).set_weights(source.get_layer(layer_name).get_weights())
        return model
    try:
        return backbone.constructor(include_top=False, weights=None if weights is None else str(weights),
                                    input_shape=shape)
    except Exception as error:
        if weights is None:
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if weights == "imagenet":
            raise Planar3DError(
                f"could not get the {name} ImageNet weights through Keras ({reason}); on an offline machine "
                "copy the Keras Applications file into $KERAS_HOME/models/ (default ~/.keras/models/) or pass "
                "its path as the weights"
            ) from error
        raise InputFileError(weights, f"not {name} weights Keras can load ({reason})") from error


def build_encoder(
    name: str,
    input_shape: Sequence[int],
    mapping: str = "planar",
    weights: str | os.PathLike | None = "imagenet",
    depth_downsampling: bool = True,
) -> keras.Model:
    """Build a registry backbone in 2D with its weights and convert it to 3D.

    Args:
        name: a key of :data:`BACKBONES`.
        input_shape: `(slices, rows, cols, channels)`; rows and cols at least 32 (Keras
            Applications' minimum), and with ``depth_downsampling`` the slices should be a
            multiple of 32 as rows and cols are for a U-Net (see :func:`to_3d` for channels).
        mapping: one of :data:`MAPPINGS`.
        weights: ``"imagenet"`` (Keras' own loader and cache, ``~/.keras/models``: a connected
            machine downloads them once; for ``vgg16`` also ``$PLANAR3D_VGG16_WEIGHTS``, see
            :func:`planar3d.nets.weights.resolve_imagenet_weights`), a path to a weights file
            of that 2D model, or ``None`` (Keras' random initialisation). Ignored with
            ``mapping="none"`` (nothing is copied). Never a silent fallback to random.
        depth_downsampling: see :func:`to_3d`.

    Returns:
        The 3D encoder, `(batch, slices, rows, cols, channels)` -> its deepest feature map;
        the layers named in ``BACKBONES[name].skips`` give the skips.

    Raises:
        Planar3DError: unknown name or mapping, bad shape, ImageNet weights that cannot be
            obtained (one line saying how to provide them).
        InputFileError: a weights file that is missing or does not fit the model.
    """
    _check_backbone(name)
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise Planar3DError(
            f"input_shape must be (slices, rows, cols, channels) of positive ints. Received: input_shape={shape}"
        )
    if mapping not in MAPPINGS:
        raise Planar3DError(f"mapping must be one of {MAPPINGS}. Received: mapping={mapping!r}")
    model_2d = _load_2d(name, shape[1], shape[2], None if mapping == "none" else weights)
    return to_3d(model_2d, mapping=mapping, depth_downsampling=depth_downsampling, input_shape=shape)
