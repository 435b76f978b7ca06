"""Custom Keras layers of planar3d, registered for ``.keras`` saving with ``safe_mode=True``.

The plane convolutions (:class:`PlanarConv3D`, :class:`ACSConv3D`, :class:`SoftACSConv3D`)
hold a 2D kernel and apply it to the planes of a volume. Beside the paper's 'same', stride-1
case they take what a converted 2D network needs (:func:`planar3d.nets.backbones.to_3d`):
3D strides, dilations, explicit zero padding (a folded ``ZeroPadding2D``) and depthwise
convolution (``groups`` equal to the input channels, as ``DepthwiseConv2D`` or a ConvNeXt
``Conv2D(groups=C)``).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from planar3d.nets.mapping import acs_split

__all__ = ["ACSConv3D", "LayerScale", "PlanarConv3D", "SoftACSConv3D"]

_AXES = (0, 1, 2)


def _triple(value, name: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"{name} must be a positive int or 3 positive ints. Received: {name}={value}")
    return values


def _pair(value, name: str) -> tuple[int, int]:
    values = (value,) * 2 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"{name} must be a positive int or 2 positive ints. Received: {name}={value}")
    return values


def _padding(value):
    """'same', 'valid' or ((before, after),) * 3 explicit zero padding per spatial axis."""
    if isinstance(value, str):
        if value.lower() not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or 3 (before, after) pairs. Received: padding={value!r}")
        return value.lower()
    pads = tuple(tuple(int(p) for p in pair) for pair in value)
    if len(pads) != 3 or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise ValueError(f"padding must be 'same', 'valid' or 3 (before, after) pairs. Received: padding={value}")
    return pads


def _out_size(size, kernel: int, stride: int, dilation: int, pad):
    """Output length along one axis (``None`` stays ``None``)."""
    if size is None:
        return None
    if pad == "same":
        return -(-size // stride)
    before, after = (0, 0) if pad == "valid" else pad
    return (size + before + after - (kernel - 1) * dilation - 1) // stride + 1


def _same_pads(sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """TensorFlow's ``"SAME"`` padding ``(before, after)`` of two axes: ``ceil(n / s)`` outputs."""
    pads = []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((-(-int(n) // s) - 1) * s + (int(k) - 1) * d + 1 - int(n), 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _conv_planes(inputs, kernel_2d, axis: int, strides=(1, 1, 1), dilations=(1, 1, 1), padding="same",
                 depthwise: bool = False):
    """``Conv3D`` with a kernel flat (size 1) along spatial ``axis``, as 2D convolutions of planes.

    The planes perpendicular to ``axis`` are folded into the batch and convolved in 2D; the
    flat axis is first subsampled by its stride (a size-1 kernel needs no padding along it).

    Args:
        inputs: `(batch, slices, rows, cols, Cin)`.
        kernel_2d: `(k_i, k_j, Cin, Cout)` (or `(k_i, k_j, 1, Cin * m)` if ``depthwise``), the
            kernel over the two in-plane axes ``i < j`` (the other two of slices, rows, cols).
        axis: 0 = slices, 1 = rows, 2 = cols.
        strides, dilations: per spatial axis; the flat axis' dilation is unused.
        padding: ``"same"``, ``"valid"`` or explicit ``(before, after)`` per spatial axis (the
            flat axis' pair is unused).
        depthwise: one group per input channel (``Cout = m * Cin``, output ``c * m + j`` from
            input ``c``, as ``DepthwiseConv2D``).

    Returns:
        `(batch, slices', rows', cols', Cout)`.
    """
    plane = [a for a in _AXES if a != axis]
    if strides[axis] > 1:
        index = [slice(None)] * 5
        index[1 + axis] = slice(None, None, strides[axis])
        inputs = inputs[tuple(index)]
    # Move the flat axis next to the batch axis and fold it into the batch.
    perm = [0, 1 + axis] + [1 + a for a in plane] + [4]
    moved = inputs if axis == 0 else ops.transpose(inputs, perm)
    shape = ops.shape(moved)
    planes = ops.reshape(moved, (-1, shape[2], shape[3], shape[4]))
    if isinstance(padding, str):
        mode = padding.upper()
    else:
        pads = [padding[a] for a in plane]
        if any(p for pair in pads for p in pair):
            planes = tf.pad(planes, [(0, 0), *pads, (0, 0)])
        mode = "VALID"
    plane_strides = [strides[a] for a in plane]
    plane_dilations = [dilations[a] for a in plane]
    if depthwise:
        channels = planes.shape[-1]
        kernel = ops.reshape(kernel_2d, (kernel_2d.shape[0], kernel_2d.shape[1], channels, -1))
        if plane_strides[0] != plane_strides[1]:
            # TensorFlow's CPU depthwise kernel takes equal row and column strides only (oneDNN's
            # AVX-512 path aside): pad as the strided convolution would, convolve at stride 1 and
            # keep every stride-th output, the same sums.
            if mode == "SAME":
                planes = tf.pad(planes, [(0, 0), *_same_pads(planes.shape[1:3], kernel.shape[:2], plane_strides,
                                                             plane_dilations), (0, 0)])
            outputs = tf.nn.depthwise_conv2d(planes, kernel, strides=[1, 1, 1, 1], padding="VALID",
                                             dilations=plane_dilations)
            outputs = outputs[:, :: plane_strides[0], :: plane_strides[1]]
        else:
            outputs = tf.nn.depthwise_conv2d(planes, kernel, strides=[1, *plane_strides, 1], padding=mode,
                                             dilations=plane_dilations)
    else:
        outputs = tf.nn.conv2d(planes, kernel_2d, strides=plane_strides, padding=mode, dilations=plane_dilations)
    out_shape = ops.shape(outputs)
    outputs = ops.reshape(outputs, (shape[0], shape[1], out_shape[1], out_shape[2], out_shape[3]))
    if axis != 0:
        outputs = ops.transpose(outputs, [perm.index(i) for i in range(5)])
    return outputs


class _PlaneConvolution(keras.layers.Layer):
    """What the plane convolutions share: arguments, weights, bias + activation, shapes, config."""

    def __init__(
        self,
        filters: int,
        kernel_size=3,
        strides=1,
        padding="same",
        dilation_rate=1,
        groups: int = 1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        if self.filters < 1:
            raise ValueError(f"filters must be at least 1. Received: filters={filters}")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _triple(strides, "strides")
        self.padding = _padding(padding)
        self.dilation_rate = _triple(dilation_rate, "dilation_rate")
        self.groups = int(groups)
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(f"groups must divide filters. Received: groups={groups}, filters={filters}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def _check_groups(self, input_shape) -> int:
        channels = int(input_shape[-1])
        if self.groups not in (1, channels):
            raise ValueError(
                f"{self.name}: groups must be 1 or the input channels ({channels}). Received: groups={self.groups}"
            )
        return channels // self.groups

    @property
    def _depthwise(self) -> bool:
        return self.groups > 1

    def _add_weights(self, kernel_shape: tuple[int, ...]) -> None:
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape, initializer=self.kernel_initializer)
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias else None
        )

    def _plane(self, inputs, kernel_2d, axis: int):
        return _conv_planes(inputs, kernel_2d, axis, self.strides, self.dilation_rate, self.padding, self._depthwise)

    def _plane_shape(self, input_shape, axis: int) -> tuple:
        """Output shape of the plane convolution flat along ``axis``."""
        plane = [a for a in _AXES if a != axis]
        spatial = []
        for a in _AXES:
            if a == axis:
                size = input_shape[1 + a]
                spatial.append(None if size is None else -(-size // self.strides[a]))
            else:
                kernel = self.kernel_size[plane.index(a)]
                pad = self.padding if isinstance(self.padding, str) else self.padding[a]
                spatial.append(_out_size(input_shape[1 + a], kernel, self.strides[a], self.dilation_rate[a], pad))
        return (input_shape[0], *spatial, self.filters)

    def _axes_used(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _check_planes_agree(self, input_shape) -> None:
        shapes = {self._plane_shape(input_shape, axis) for axis in self._axes_used()}
        if len(shapes) > 1:
            raise ValueError(
                f"{self.name}: the planes give different output shapes {sorted(map(str, shapes))} for input "
                f"{tuple(input_shape)}; make slices, rows and cols multiples of the strides"
            )

    def _finish(self, outputs):
        """Add the bias and apply the activation."""
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return self._plane_shape(input_shape, self._axes_used()[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="planar3d")
class PlanarConv3D(_PlaneConvolution):
    """A 3D convolution whose kernel is flat (size 1) along one spatial axis.

    It computes exactly ``Conv3D`` with a ``(1, kh, kw)`` kernel (for ``axis=0``), but as a 2D
    convolution over every plane: the planes are folded into the batch, which is the
    cheapest way to do that work (no 3D convolution machinery for a kernel that has no
    depth). The kernel is stored as a Conv3D kernel, ``(1, kh, kw, Cin / groups, filters)``
    for ``axis=0``, ``(kh, 1, kw, ...)`` for ``axis=1``, ``(kh, kw, 1, ...)`` for ``axis=2``.

    Args:
        filters: number of output channels.
        kernel_size: in-plane kernel size ``k`` or ``(kh, kw)`` over the two in-plane axes.
        axis: spatial axis along which the kernel is flat: 0 = slices, 1 = rows, 2 = cols.
        strides: per spatial axis `(slices, rows, cols)`; along the flat axis every
            ``stride``-th plane is kept.
        padding: ``"same"`` (default, as VGG16), ``"valid"``, or explicit zero padding
            ``((before, after),) * 3`` per spatial axis; the flat axis needs none and its
            pair is ignored.
        dilation_rate: per spatial axis.
        groups: 1, or the input channels (depthwise: ``filters = m * Cin``, output channel
            ``c * m + j`` from input ``c``, as ``DepthwiseConv2D``).
        activation: Keras activation applied after the bias.
        use_bias: add a bias per output channel.
        kernel_initializer, bias_initializer: Keras initialisers.

    Input shape: `(batch, slices, rows, cols, Cin)`. Output shape: `(batch, slices', rows',
    cols', filters)`.
    """

    def __init__(self, filters: int, kernel_size=3, axis: int = 0, **kwargs):
        if axis not in _AXES:
            raise ValueError(f"axis must be 0, 1 or 2. Received: axis={axis}")
        super().__init__(filters, kernel_size, **kwargs)
        self.axis = int(axis)

    def _axes_used(self):
        return (self.axis,)

    def build(self, input_shape):
        spatial = list(self.kernel_size)
        spatial.insert(self.axis, 1)
        self._add_weights((*spatial, self._check_groups(input_shape), self.filters))

    def call(self, inputs):
        return self._finish(self._plane(inputs, ops.squeeze(self.kernel, axis=self.axis), self.axis))

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis)
        return config


def _group_split(filters: int, groups: int) -> tuple[int, int, int]:
    """ACS output channels per plane; a depthwise layer keeps each input channel's outputs together."""
    if groups == 1:
        return acs_split(filters)
    per_group = filters // groups
    return tuple(n * per_group for n in acs_split(groups))


@keras.saving.register_keras_serializable(package="planar3d")
class ACSConv3D(_PlaneConvolution):
    """Axial-coronal-sagittal (ACS) convolution: one 2D kernel, its output channels in three groups.

    Yang et al., "Reinventing 2D Convolutions for 3D Images", IEEE JBHI 2021, as used by
    Baheti et al. 2023 (Eq. 1). The layer holds a 2D kernel `(kh, kw, Cin / groups, filters)`
    (a 2D Keras kernel maps in unchanged). Its output channels are split by
    :func:`planar3d.nets.mapping.acs_split` (``filters // 3`` each, the remainder to the first
    groups; a depthwise layer splits its input channels so that each keeps its outputs);
    group ``a`` computes ``Conv3D`` with its slice of the kernel flat along spatial
    axis ``a`` (0 = slices, 1 = rows, 2 = cols), exactly :class:`PlanarConv3D` with
    ``axis=a``. The groups are concatenated in channel order, so output channel ``c`` is the
    2D kernel's output channel ``c`` and a following layer's pretrained input channels line
    up. Same parameters as the 2D layer.

    Args:
        filters: number of output channels.
        kernel_size: in-plane kernel size ``k`` or ``(kh, kw)``.
        strides, padding, dilation_rate, groups: as :class:`PlanarConv3D`, per spatial axis;
            every group takes the strides, padding and dilation of its two in-plane axes.
        activation: Keras activation applied after the bias.
        use_bias: add a bias per output channel.
        kernel_initializer, bias_initializer: Keras initialisers.

    Input shape: `(batch, slices, rows, cols, Cin)`. Output shape: `(batch, slices', rows',
    cols', filters)`.
    """

    def __init__(self, filters: int, kernel_size=3, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.split = _group_split(self.filters, self.groups)

    def _axes_used(self):
        return tuple(axis for axis, size in enumerate(self.split) if size)

    def build(self, input_shape):
        self._check_planes_agree(input_shape)
        self._add_weights((*self.kernel_size, self._check_groups(input_shape), self.filters))

    def call(self, inputs):
        groups = []
        start = 0
        per_input = self.filters // self.groups if self._depthwise else 0
        for axis, size in enumerate(self.split):
            if size:
                kernel = self.kernel[..., start:start + size]
                x = inputs[..., start // per_input:(start + size) // per_input] if per_input else inputs
                groups.append(self._plane(x, kernel, axis))
            start += size
        return self._finish(groups[0] if len(groups) == 1 else ops.concatenate(groups, axis=-1))


@keras.saving.register_keras_serializable(package="planar3d")
class SoftACSConv3D(_PlaneConvolution):
    """Soft ACS convolution: every output channel on all three planes, mixed by learned weights.

    The Baheti et al. 2023 paper describes only the hard split of Eq. 1 (:class:`ACSConv3D`);
    the soft variant is ``SoftACSConv`` of the ACS authors' code (Yang et al., "Reinventing
    2D Convolutions for 3D Images", IEEE JBHI 2021, github.com/M3DV/ACSConv), which GaNDLF
    uses as its default 2D->3D converter (``converter_type: soft``). There each output
    channel ``c`` is ``sum_a w[c, a] * conv_a(x)[c]``: the 2D kernel applied flat along each
    spatial axis ``a`` and the three responses mixed by a learnable ``(filters, 3)`` weight,
    so the network learns how much of each channel to give each plane instead of fixing one
    plane per channel.

    This layer does the same with one difference, so that a converted network starts from
    the pretrained ACS function: ACSConv draws the mixing logits at random and takes their
    softmax; here ``plane_weights`` are used as they are (no softmax, which can never give an
    exact 0 or 1) and start at the ACS split, ``w[c, a] = 1`` if :class:`ACSConv3D` puts
    channel ``c`` on plane ``a`` and 0 otherwise. With that initial split the layer equals
    :class:`ACSConv3D` exactly (``y * 1 + z * 0``), and the gradient reaches the weights of
    all three planes. It costs three plane convolutions (3x the ACS FLOPs) and ``3 * filters``
    parameters more.

    Args:
        filters, kernel_size, strides, padding, dilation_rate, groups, activation, use_bias,
        kernel_initializer, bias_initializer: as :class:`ACSConv3D`.

    Input shape: `(batch, slices, rows, cols, Cin)`. Output shape: `(batch, slices', rows',
    cols', filters)`.
    """

    def _axes_used(self):
        return _AXES

    def build(self, input_shape):
        self._check_planes_agree(input_shape)
        self._add_weights((*self.kernel_size, self._check_groups(input_shape), self.filters))
        split = _group_split(self.filters, self.groups)
        initial = [[1.0 if sum(split[:a]) <= c < sum(split[:a + 1]) else 0.0 for a in _AXES]
                   for c in range(self.filters)]
        self.plane_weights = self.add_weight(
            name="plane_weights", shape=(self.filters, 3), initializer=keras.initializers.Constant(initial)
        )

    def call(self, inputs):
        outputs = None
        for axis in _AXES:
            term = self._plane(inputs, self.kernel, axis) * self.plane_weights[:, axis]
            outputs = term if outputs is None else outputs + term
        return self._finish(outputs)


@keras.saving.register_keras_serializable(package="planar3d")
class LayerScale(keras.layers.Layer):
    """Multiply the channels by learned scales (ConvNeXt's layer scale, Touvron et al. 2021).

    The 3D twin of Keras' ``keras.src.applications.convnext.LayerScale`` (not exported, so
    not loadable with ``safe_mode=True``); rank-agnostic.

    Args:
        init_values: initial value of every scale.
        projection_dim: number of channels.

    Input shape: `(..., projection_dim)`. Output shape: the same.
    """

    def __init__(self, init_values: float, projection_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.init_values = float(init_values)
        self.projection_dim = int(projection_dim)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(self.projection_dim,), initializer=keras.initializers.Constant(self.init_values)
        )

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(init_values=self.init_values, projection_dim=self.projection_dim)
        return config
