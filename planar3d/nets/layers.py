"""Custom Keras layers of planar3d, registered for ``.keras`` saving with ``safe_mode=True``."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from planar3d.nets.mapping import acs_split

__all__ = ["ACSConv3D", "PlanarConv3D"]


def _conv_planes(inputs, kernel_2d, axis: int):
    """``Conv3D`` ('same', stride 1, no bias) with a kernel flat along spatial ``axis``.

    The planes perpendicular to ``axis`` are folded into the batch and convolved in 2D.

    Args:
        inputs: `(batch, slices, rows, cols, Cin)`.
        kernel_2d: `(k, k, Cin, Cout)`, the 3D kernel with its size-1 axis removed.
        axis: 0 = slices, 1 = rows, 2 = cols.

    Returns:
        `(batch, slices, rows, cols, Cout)`.
    """
    filters = kernel_2d.shape[-1]
    # Move the flat axis next to the batch axis and fold it into the batch.
    perm = [0, 1 + axis] + [1 + a for a in range(3) if a != axis] + [4]
    moved = inputs if axis == 0 else ops.transpose(inputs, perm)
    shape = ops.shape(moved)
    planes = ops.reshape(moved, (-1, shape[2], shape[3], shape[4]))
    outputs = tf.nn.conv2d(planes, kernel_2d, strides=1, padding="SAME")
    outputs = ops.reshape(outputs, (shape[0], shape[1], shape[2], shape[3], filters))
    if axis != 0:
        outputs = ops.transpose(outputs, [perm.index(i) for i in range(5)])
    return outputs


class _PlaneConvolution(keras.layers.Layer):
    """What the planar and ACS layers share: arguments, weights, bias + activation, config."""

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
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
        self.kernel_size = int(kernel_size)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def _add_weights(self, kernel_shape: tuple[int, ...]) -> None:
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape, initializer=self.kernel_initializer)
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias else None
        )

    def _finish(self, outputs):
        """Add the bias and apply the activation."""
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="planar3d")
class PlanarConv3D(_PlaneConvolution):
    """A 3D convolution whose kernel is flat (size 1) along one spatial axis.

    It computes exactly ``Conv3D`` with a ``(1, k, k)`` kernel (for ``axis=0``), but as a 2D
    convolution over every plane: the planes are folded into the batch, which is the
    cheapest way to do that work (no 3D convolution machinery for a kernel that has no
    depth). The kernel is stored as a Conv3D kernel, ``(1, k, k, Cin, filters)`` for
    ``axis=0``, ``(k, 1, k, ...)`` for ``axis=1``, ``(k, k, 1, ...)`` for ``axis=2``.
    Padding is ``"same"`` and the stride 1, as in VGG16.

    Args:
        filters: number of output channels.
        kernel_size: in-plane kernel size ``k``.
        axis: spatial axis along which the kernel is flat: 0 = slices, 1 = rows, 2 = cols.
        activation: Keras activation applied after the bias.
        use_bias: add a bias per output channel.
        kernel_initializer, bias_initializer: Keras initialisers.

    Input shape: `(batch, slices, rows, cols, Cin)`. Output shape: `(batch, slices, rows,
    cols, filters)`.
    """

    def __init__(self, filters: int, kernel_size: int = 3, axis: int = 0, **kwargs):
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2. Received: axis={axis}")
        super().__init__(filters, kernel_size, **kwargs)
        self.axis = int(axis)

    def build(self, input_shape):
        spatial = [self.kernel_size] * 2
        spatial.insert(self.axis, 1)
        self._add_weights((*spatial, input_shape[-1], self.filters))

    def call(self, inputs):
        return self._finish(_conv_planes(inputs, ops.squeeze(self.kernel, axis=self.axis), self.axis))

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis)
        return config


@keras.saving.register_keras_serializable(package="planar3d")
class ACSConv3D(_PlaneConvolution):
    """Axial-coronal-sagittal (ACS) convolution: one 2D kernel, its output channels in three groups.

    Yang et al., "Reinventing 2D Convolutions for 3D Images", IEEE JBHI 2021, as used by
    Baheti et al. 2023 (Eq. 1). The layer holds a 2D kernel `(k, k, Cin, filters)` (a VGG16
    kernel maps in unchanged). Its output channels are split by
    :func:`planar3d.nets.mapping.acs_split` (``filters // 3`` each, the remainder to the first
    groups); group ``a`` computes ``Conv3D`` with its slice of the kernel flat along spatial
    axis ``a`` (0 = slices, 1 = rows, 2 = cols), exactly :class:`PlanarConv3D` with
    ``axis=a``. The groups are concatenated in channel order, so output channel ``c`` is the
    2D kernel's output channel ``c`` and a following layer's pretrained input channels line
    up. Padding is ``"same"`` and the stride 1, as in VGG16. Same parameters as the 2D layer.

    Args:
        filters: number of output channels.
        kernel_size: in-plane kernel size ``k``.
        activation: Keras activation applied after the bias.
        use_bias: add a bias per output channel.
        kernel_initializer, bias_initializer: Keras initialisers.

    Input shape: `(batch, slices, rows, cols, Cin)`. Output shape: `(batch, slices, rows,
    cols, filters)`.
    """

    def __init__(self, filters: int, kernel_size: int = 3, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.split = acs_split(self.filters)

    def build(self, input_shape):
        self._add_weights((self.kernel_size, self.kernel_size, input_shape[-1], self.filters))

    def call(self, inputs):
        groups = []
        start = 0
        for axis, size in enumerate(self.split):
            if size:
                groups.append(_conv_planes(inputs, self.kernel[..., start:start + size], axis))
            start += size
        return self._finish(groups[0] if len(groups) == 1 else ops.concatenate(groups, axis=-1))
