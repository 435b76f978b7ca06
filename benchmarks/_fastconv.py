"""A Conv3D whose input gradient is a forward convolution: same results, cheaper CPU backward.

The benchmark's own copy of the idea (``bench_fastconv.py``); no planar3d model uses it, since
with oneDNN (TensorFlow's default on x86) it gains nothing (``docs/benchmarks.md``).

For stride 1, the gradient of a convolution with respect to its input is itself a
convolution: the output gradient convolved with the kernel flipped along every spatial axis
and with its input and output channels swapped, padded by ``(K - 1 - before, K - 1 - after)``
where ``K = (k - 1) * dilation + 1`` is the dilated kernel size and ``(before, after)`` the
forward padding. Forward pass, kernel gradient and bias gradient are the stock ones.

When it pays (``benchmarks/bench_fastconv.py``, 2 CPU cores, TF 2.21): with TensorFlow's
own CPU kernels (``TF_ENABLE_ONEDNN_OPTS=0``) ``Conv3DBackpropInputV2`` costs several
forward convolutions and FastConv3D halves a decoder convolution's training cost. With
oneDNN (TensorFlow's default on x86) the stock input gradient already runs as a
flipped-kernel forward convolution, bit for bit, and FastConv3D gains nothing.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["FastConv3D", "flipped_kernel_conv3d"]

_SPATIAL = 3


def _forward_paddings(kernel_size, dilation, padding: str) -> list[tuple[int, int]]:
    """Zero padding ``(before, after)`` per spatial axis that ``tf.nn.convolution`` applies."""
    if padding == "VALID":
        return [(0, 0)] * _SPATIAL
    pads = []
    for size, rate in zip(kernel_size, dilation):
        total = (size - 1) * rate
        pads.append((total // 2, total - total // 2))  # TensorFlow pads more at the end
    return pads


def _input_gradient(dy: tf.Tensor, kernel: tf.Tensor, dilation, padding: str) -> tf.Tensor:
    """Gradient of ``convolution(x, kernel)`` w.r.t. ``x`` as a forward convolution of ``dy``."""
    kernel_size = kernel.shape[:_SPATIAL]
    flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1, 2]), [0, 1, 2, 4, 3])  # (kd, kh, kw, Cout, Cin)
    forward = _forward_paddings(kernel_size, dilation, padding)
    pads = [((k - 1) * r - before, (k - 1) * r - after)
            for k, r, (before, after) in zip(kernel_size, dilation, forward)]
    if pads == _forward_paddings(kernel_size, dilation, "SAME"):
        return tf.nn.convolution(dy, flipped, padding="SAME", dilations=dilation)
    # Even dilated kernel sizes: 'same' padding is asymmetric and the gradient pads the other way.
    padded = tf.pad(dy, [(0, 0), *pads, (0, 0)])
    return tf.nn.convolution(padded, flipped, padding="VALID", dilations=dilation)


def _kernel_gradient(x: tf.Tensor, dy: tf.Tensor, kernel: tf.Tensor, dilation, padding: str) -> tf.Tensor:
    """The stock kernel gradient of ``tf.nn.convolution``, without its input-gradient half."""
    kernel_shape = tf.shape(kernel)
    if all(rate == 1 for rate in dilation):
        return tf.raw_ops.Conv3DBackpropFilterV2(
            input=x, filter_sizes=kernel_shape, out_backprop=dy, strides=[1] * 5, padding=padding
        )
    # tf.nn.convolution runs a dilated convolution as space_to_batch -> VALID conv -> batch_to_space.
    base = tf.constant(_forward_paddings(kernel.shape[:_SPATIAL], dilation, padding), tf.int32)
    paddings, crops = tf.required_space_to_batch_paddings(
        tf.shape(x)[1:1 + _SPATIAL], block_shape=dilation, base_paddings=base
    )
    x_blocks = tf.space_to_batch_nd(x, dilation, paddings)
    dy_blocks = tf.space_to_batch_nd(dy, dilation, crops)  # gradient of batch_to_space_nd
    return tf.raw_ops.Conv3DBackpropFilterV2(
        input=x_blocks, filter_sizes=kernel_shape, out_backprop=dy_blocks, strides=[1] * 5, padding="VALID"
    )


def flipped_kernel_conv3d(
    inputs: tf.Tensor, kernel: tf.Tensor, padding: str = "same", dilation_rate=(1, 1, 1)
) -> tf.Tensor:
    """``tf.nn.convolution`` (3D, stride 1, channels last) with a flipped-kernel input gradient.

    The forward result is exactly ``tf.nn.convolution(inputs, kernel, padding=padding.upper(),
    dilations=dilation_rate)``, the op ``keras.layers.Conv3D`` runs. Its gradient w.r.t.
    ``kernel`` is the stock one (``Conv3DBackpropFilterV2``); its gradient w.r.t. ``inputs``
    is a forward convolution of the output gradient with the flipped, channel-swapped kernel.

    Args:
        inputs: `(batch, slices, rows, cols, Cin)`.
        kernel: `(kd, kh, kw, Cin, Cout)`, same dtype as ``inputs``. Pass a tensor (a
            variable's value), so that the variable's gradient flows through the read.
        padding: ``"same"`` or ``"valid"`` (any case).
        dilation_rate: 3 positive ints, per spatial axis.

    Returns:
        `(batch, slices', rows', cols', Cout)`; the spatial sizes are those of ``inputs``
        for ``"same"``.

    Raises:
        ValueError: ``padding`` is neither ``"same"`` nor ``"valid"``, or ``dilation_rate``
            is not 3 positive ints.
    """
    padding = padding.upper()
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'same' or 'valid'. Received: padding={padding.lower()!r}")
    dilation = tuple(int(r) for r in dilation_rate)
    if len(dilation) != _SPATIAL or min(dilation) < 1:
        raise ValueError(f"dilation_rate must be 3 positive ints. Received: dilation_rate={dilation_rate}")

    @tf.custom_gradient
    def _conv(x, k):
        y = tf.nn.convolution(x, k, padding=padding, dilations=dilation)

        def grad(dy):
            return _input_gradient(dy, k, dilation, padding), _kernel_gradient(x, dy, k, dilation, padding)

        return y, grad

    return _conv(inputs, kernel)


class FastConv3D(keras.layers.Conv3D):
    """``keras.layers.Conv3D`` with a cheaper CPU input gradient when oneDNN is off; same results.

    Same constructor, config and weights as ``keras.layers.Conv3D`` (kernel `(kd, kh, kw,
    Cin, filters)` and bias), so replacing one by the other changes neither parameter counts
    nor the saved weights, only the class name in a ``.keras`` file. The forward pass runs
    the op ``Conv3D`` runs; the gradient w.r.t. the kernel and bias is the stock one; the
    gradient w.r.t. the input is computed by :func:`flipped_kernel_conv3d` (equal up to
    float rounding). It works in the layer's compute dtype (mixed precision).

    The stock gradient is kept (no speed-up, same results) for strides other than 1,
    ``groups > 1`` and ``data_format="channels_first"``.

    Input shape: `(batch, slices, rows, cols, Cin)`. Output shape: `(batch, slices', rows',
    cols', filters)`, as ``Conv3D``.
    """

    def _uses_flipped_gradient(self) -> bool:
        return (
            all(s == 1 for s in self.strides)
            and self.groups == 1
            and self.data_format == "channels_last"
            and self.padding in ("same", "valid")
        )

    def convolution_op(self, inputs, kernel):
        if not self._uses_flipped_gradient():
            return super().convolution_op(inputs, kernel)
        # Reading the variable here applies the autocast to the compute dtype.
        kernel = tf.convert_to_tensor(kernel)
        return flipped_kernel_conv3d(inputs, kernel, padding=self.padding, dilation_rate=self.dilation_rate)
