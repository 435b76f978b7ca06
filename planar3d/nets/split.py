"""The planar res-u-net as two standalone TensorFlow graphs, what ``planar3d export`` converts.

* :class:`Encoder`: encoder blocks 1-4 as a **per-slice 2D network**. The planar mapping makes
  every encoder convolution a 2D convolution of each slice (:class:`planar3d.nets.layers.PlanarConv3D`
  folds the slices into the batch); here the slices *are* the batch: input `(slices, rows, cols,
  channels)`, each convolution a ``Conv2D`` with the planar kernel's `(3, 3)` plane. Only the
  `(2, 2, 2)` poolings mix slices, in aligned pairs: a 2D `(2, 2)` max pooling and the maximum of
  slices ``2i`` and ``2i + 1``, exactly ``MaxPooling3D``. So ``slices`` must be a multiple of 8
  (:data:`planar3d.nets.stream.ENCODER_CHUNK`) and the features of a chunk of 8 slices are those it
  has inside any window (:mod:`planar3d.nets.stream`): a runtime encodes each chunk once and reuses
  it, as :func:`planar3d.inference.predict.predict_volume` does. Outputs: the four U-Net skips
  per slice, :data:`SKIP_NAMES`, `(slices / s, rows / s, cols / s, channels)` for ``s`` = 1, 2, 4, 8.
* :class:`Decoder`: the rest (``block4_pool``, bottleneck, decoder blocks 6-9, output) as a 3D
  network of one window: inputs the window's four skips in the same per-slice layout (the
  encoder's outputs of its chunks, concatenated along the first axis) and ``keep`` = `[lo, hi)`
  (int32), output ``probabilities`` `(hi - lo, rows, cols, 1)`: only the kept slices, as
  :func:`planar3d.nets.stream.decode` with ``keep`` (the last block runs on those slices and its
  halo). Rows and columns are free (multiples of 16), so a runtime can crop windows to the head.

Both hold the model's weights as variables and replay its arithmetic with TensorFlow ops: the
encoder exactly the model's (the same ``conv2d`` calls), the decoder the model's layers' ops
(``conv3d_transpose``, ``convolution``). Two forms of the decoder's dilated `(1, 2, 2)`
convolutions: ``portable=False`` is Keras' own (``tf.nn.convolution``, which TensorFlow's CPU runs
as ``SpaceToBatchND`` + ``Conv3D`` + ``BatchToSpaceND``): the SavedModel; ``portable=True`` is an
explicit zero ``Pad`` (TensorFlow's ``SAME`` amounts) and one ``VALID`` ``Conv3D`` op with its
``dilations`` attribute, which converters map onto one dilated convolution (ONNX ``Conv``,
OpenVINO ``Convolution``; ONNX Runtime refuses dilations with ``SAME`` auto-padding) but
TensorFlow's CPU kernel refuses: the ONNX and OpenVINO exports, checked by running them.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from planar3d.errors import Planar3DError
from planar3d.nets.model import BOTTLENECK_SOURCES, DECODER_SKIPS, ENCODER_LAYERS
from planar3d.nets.stream import is_planar_res_unet

__all__ = ["Decoder", "Encoder", "SKIP_NAMES", "check_exportable", "decoder_halo"]

#: the encoder's outputs and the decoder's inputs, finest first (block1_conv2 ... block4_conv3).
SKIP_NAMES: tuple[str, ...] = tuple(skip for _, _, skip in DECODER_SKIPS.values())[::-1]


def check_exportable(model: Any) -> None:
    """Refuse, in one line, a model the two graphs do not reproduce.

    Raises:
        Planar3DError: not the planar res-u-net (another mapping or a registry backbone), or a
            decoder upsampling that is not `(2, 2, 2)` at stride 2.
    """
    if not is_planar_res_unet(model):
        raise Planar3DError(
            "export takes the paper's planar res-u-net (mapping planar), whose encoder is a per-slice 2D "
            f"network; {getattr(model, 'name', 'this model')} is another network or mapping")
    for block in DECODER_SKIPS:
        up = model.get_layer(f"block{block}_up")
        if tuple(up.kernel_size) != (2, 2, 2) or tuple(up.strides) != (2, 2, 2):
            raise Planar3DError(f"export needs (2, 2, 2) upsampling at stride 2; block{block}_up has kernel "
                                f"{tuple(up.kernel_size)} and strides {tuple(up.strides)}")


def decoder_halo(model: Any) -> int:
    """Slices each side of a kept slice that the last decoder block's two convolutions read."""
    block = list(DECODER_SKIPS)[-1]
    return sum((layer.kernel_size[0] - 1) // 2 * layer.dilation_rate[0]
               for layer in (model.get_layer(f"block{block}_conv1"), model.get_layer(f"block{block}_conv2")))


def _variables(model: Any, names: list[str], planar: bool) -> dict[str, tuple[tf.Variable, tf.Variable]]:
    """``name -> (kernel, bias)`` variables (planar kernels as their `(3, 3, in, out)` plane)."""
    out = {}
    for name in names:
        kernel, bias = model.get_layer(name).get_weights()
        if planar:
            kernel = kernel[0]  # (1, 3, 3, in, out): flat along the slices (axis 0)
        out[name] = (tf.Variable(kernel, trainable=False, name=f"{name}_kernel"),
                     tf.Variable(bias, trainable=False, name=f"{name}_bias"))
    return out


def _conv2d_relu(x, weights):
    kernel, bias = weights
    return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))


def _pool(x):
    """``MaxPooling3D((2, 2, 2))`` of per-slice features `(slices, rows, cols, channels)`."""
    x = tf.nn.max_pool2d(x, 2, 2, "VALID")
    return tf.maximum(x[0::2], x[1::2])


class Encoder(tf.Module):
    """Encoder blocks 1-4 of a planar res-u-net as a per-slice 2D network (see the module docstring).

    ``encoder(slices)``: `(slices, rows, cols, channels)` float32, slices a multiple of 8, rows and
    cols multiples of 16 -> ``{name: (slices / s, rows / s, cols / s, C)}`` for :data:`SKIP_NAMES`.
    """

    def __init__(self, model: Any):
        super().__init__(name="planar3d_encoder")
        check_exportable(model)
        self.channels = int(model.input_shape[-1])
        self.layers = [[f"block{block}_conv{c}" for c in range(1, n + 1)] for block, n, _ in ENCODER_LAYERS]
        self.params = _variables(model, [name for block in self.layers for name in block], planar=True)
        self.encoder = tf.function(self._encode, input_signature=[
            tf.TensorSpec([None, None, None, self.channels], tf.float32, name="slices")])

    def _encode(self, slices):
        skips = {}
        x = slices
        for index, names in enumerate(self.layers):
            for name in names:
                x = _conv2d_relu(x, self.params[name])
            skips[names[-1]] = x
            if index < len(self.layers) - 1:
                x = _pool(x)
        return {name: tf.identity(skips[name], name=name) for name in SKIP_NAMES}


class Decoder(tf.Module):
    """``block4_pool`` to the output of a planar res-u-net for one window (see the module docstring).

    ``decoder(block1_conv2, block2_conv2, block3_conv3, block4_conv3, keep)`` -> ``{"probabilities":
    (hi - lo, rows, cols, 1)}`` for ``keep = [lo, hi)``.

    Args:
        model: the planar res-u-net.
        portable: one ``Conv3D`` op with dilations for the dilated convolutions (for converters;
            TensorFlow's CPU cannot run it), else Keras' ``tf.nn.convolution``.
    """

    def __init__(self, model: Any, portable: bool = False):
        super().__init__(name="planar3d_decoder")
        check_exportable(model)
        self.portable = bool(portable)
        self.halo = decoder_halo(model)
        self.bottleneck = _variables(model, list(BOTTLENECK_SOURCES), planar=True)
        names = [f"block{block}_{part}" for block in DECODER_SKIPS for part in ("up", "conv1", "conv2")]
        self.params = _variables(model, [*names, "output"], planar=False)
        self.dilations = {name: tuple(int(d) for d in model.get_layer(name).dilation_rate)
                          for name in names if not name.endswith("_up")}
        channels = {name: int(model.get_layer(name).filters) for name in SKIP_NAMES}
        self.decoder = tf.function(self._decode, input_signature=[
            *[tf.TensorSpec([None, None, None, channels[name]], tf.float32, name=name) for name in SKIP_NAMES],
            tf.TensorSpec([2], tf.int32, name="keep")])

    def _conv3d_relu(self, x, name: str):
        kernel, bias = self.params[name]
        dilations = self.dilations[name]
        if dilations == (1, 1, 1):
            y = tf.nn.conv3d(x, kernel, [1] * 5, "SAME")
        elif self.portable:  # TensorFlow's "SAME" zeros, explicit: ONNX Runtime refuses dilations with auto_pad
            total = [(int(k) - 1) * d for k, d in zip(kernel.shape[:3], dilations)]
            x = tf.pad(x, [(0, 0), *[(t // 2, t - t // 2) for t in total], (0, 0)])
            y = tf.nn.conv3d(x, kernel, [1] * 5, "VALID", dilations=[1, *dilations, 1])
        else:
            y = tf.nn.convolution(x, kernel, 1, "SAME", dilations=list(dilations))
        return tf.nn.relu(tf.nn.bias_add(y, bias))

    def _up(self, x, name: str):
        """``Conv3DTranspose((2, 2, 2), strides=2)``: each voxel to a 2x2x2 block (``VALID`` and
        ``SAME`` are the same here; ``VALID`` needs no output cropping in a converter)."""
        kernel, bias = self.params[name]
        shape = tf.shape(x)
        output_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], 2 * shape[3], tf.shape(kernel)[3]])
        return tf.nn.bias_add(tf.nn.conv3d_transpose(x, kernel, output_shape, 2, "VALID"), bias)

    def _decode(self, block1_conv2, block2_conv2, block3_conv3, block4_conv3, keep):
        skips = dict(zip(SKIP_NAMES, (block1_conv2, block2_conv2, block3_conv3, block4_conv3)))
        pooled = x = _pool(block4_conv3)
        for name in BOTTLENECK_SOURCES:
            x = _conv2d_relu(x, self.bottleneck[name])
        x = tf.concat([pooled, x], axis=-1)[None]  # one window: (1, slices, rows, cols, channels)
        last = list(DECODER_SKIPS)[-1]
        lo, hi = keep[0], keep[1]
        for block, (_, _, skip_name) in DECODER_SKIPS.items():
            skip = skips[skip_name][None]
            if block == last:  # only the kept slices and their halo (planar3d.nets.stream.decode)
                slices = tf.shape(skip)[1]
                start = tf.maximum(0, lo - self.halo) // 2 * 2
                stop = tf.minimum(slices, (hi + self.halo + 1) // 2 * 2)
                x = tf.slice(x, tf.stack([0, start // 2, 0, 0, 0]), tf.stack([-1, (stop - start) // 2, -1, -1, -1]))
                skip = tf.slice(skip, tf.stack([0, start, 0, 0, 0]), tf.stack([-1, stop - start, -1, -1, -1]))
            up = tf.concat([self._up(x, f"block{block}_up"), skip], axis=-1)
            c2 = self._conv3d_relu(self._conv3d_relu(up, f"block{block}_conv1"), f"block{block}_conv2")
            x = tf.concat([up, c2], axis=-1)
            if block == last:
                x = tf.slice(x, tf.stack([0, lo - start, 0, 0, 0]), tf.stack([-1, hi - lo, -1, -1, -1]))
        kernel, bias = self.params["output"]
        probabilities = tf.sigmoid(tf.nn.bias_add(tf.nn.conv3d(x, kernel, [1] * 5, "SAME"), bias))[0]
        return {"probabilities": tf.identity(probabilities, name="probabilities")}

