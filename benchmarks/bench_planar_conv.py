"""Frozen planar encoder forward: planar3d's layer vs Keras Conv3D (1,3,3) vs the 2D lower bound.

(a) planar3d as shipped (PlanarConv3D: slices folded into the batch, 2D convolution);
(b) the same layers as Keras Conv3D with (1, 3, 3) kernels, as the reference code does;
(c) the 2D lower bound: each level's slices folded into the batch through Keras Conv2D
    with the same kernels, MaxPooling3D between levels.
All three use the same weights and the same batch; outputs are checked equal first.

    python benchmarks/bench_planar_conv.py [--size 128] [--batch 1] [--repeats 5]
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import tensorflow as tf

from _common import interleaved_medians, machine
from planar3d.nets.model import BOTTLENECK_SOURCES, ENCODER_LAYERS, build_model


def _conv_names() -> list[list[str]]:
    levels = [[f"block{b}_conv{c}" for c in range(1, n + 1)] for b, n, _ in ENCODER_LAYERS]
    return levels + [list(BOTTLENECK_SOURCES)]


def _encoder_shipped(model: keras.Model) -> keras.Model:
    return keras.Model(model.input, model.get_layer("conv52").output)


def _encoder_conv3d(model: keras.Model, input_shape) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = inputs
    levels = _conv_names()
    for index, names in enumerate(levels):
        for name in names:
            kernel, bias = model.get_layer(name).get_weights()
            layer = keras.layers.Conv3D(kernel.shape[-1], (1, 3, 3), padding="same", activation="relu")
            x = layer(x)
            layer.set_weights([kernel, bias])
        if index < len(levels) - 1:
            x = keras.layers.MaxPooling3D(2)(x)
    return keras.Model(inputs, x)


def _encoder_2d_bound(model: keras.Model, input_shape):
    """A callable doing only 2D convolutions (slices folded into the batch) + 3D pooling."""
    levels = _conv_names()
    weights = [[model.get_layer(n).get_weights() for n in names] for names in levels]
    convs = []
    for level in weights:
        layers = []
        for kernel, bias in level:
            layer = keras.layers.Conv2D(kernel.shape[-1], 3, padding="same", activation="relu")
            layer.build((None, None, None, kernel.shape[-2]))
            layer.set_weights([kernel[0], bias])
            layers.append(layer)
        convs.append(layers)
    pool = keras.layers.MaxPooling3D(2)

    @tf.function
    def run(x):
        for index, layers in enumerate(convs):
            batch, slices = tf.shape(x)[0], tf.shape(x)[1]
            y = tf.reshape(x, tf.concat([[batch * slices], tf.shape(x)[2:]], 0))
            for layer in layers:
                y = layer(y)
            x = tf.reshape(y, tf.concat([[batch, slices], tf.shape(y)[1:]], 0))
            if index < len(convs) - 1:
                x = pool(x)
        return x

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="in-plane size of the window (default 128)")
    parser.add_argument("--batch", type=int, default=1, help="windows per batch (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    args = parser.parse_args()
    shape = (16, args.size, args.size, 3)
    model = build_model(shape, encoder_weights=None, seed=0)
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (args.batch, *shape)).astype("float32"))

    shipped = _encoder_shipped(model)
    conv3d = _encoder_conv3d(model, shape)
    bound = _encoder_2d_bound(model, shape)
    variants = {
        "a_planar3d": tf.function(lambda v: shipped(v, training=False)),
        "b_keras_conv3d": tf.function(lambda v: conv3d(v, training=False)),
        "c_2d_bound": bound,
    }
    outputs = {name: f(x).numpy() for name, f in variants.items()}
    scale = np.abs(outputs["c_2d_bound"]).max()
    for name, out in outputs.items():
        assert np.abs(out - outputs["c_2d_bound"]).max() <= 1e-4 * scale, name

    times = interleaved_medians({n: (lambda f=f: f(x).numpy()) for n, f in variants.items()}, args.repeats)
    print(machine())
    print(f"encoder forward (blocks 1-4 + bottleneck), batch {args.batch} x {shape}, median of {args.repeats}:")
    for name, seconds in times.items():
        print(f"  {name:15s} {seconds:8.3f} s")
    print(f"ratio (a)/(c) = {times['a_planar3d'] / times['c_2d_bound']:.3f}   (goal <= 1.05)")
    print(f"ratio (a)/(b) = {times['a_planar3d'] / times['b_keras_conv3d']:.3f}   (goal well under 1)")

    first = {}
    for channels in (1, 3):
        layer = build_model((16, args.size, args.size, channels), encoder_weights=None).get_layer("block1_conv1")
        xc = tf.constant(np.ones((args.batch, 16, args.size, args.size, channels), "float32"))
        first[channels] = tf.function(lambda v, layer=layer: layer(v)), xc
    first_times = interleaved_medians({c: (lambda f=f, v=v: f(v).numpy()) for c, (f, v) in first.items()}, args.repeats)
    print(f"first layer (block1_conv1): 1 channel {first_times[1]:.4f} s, 3 channels {first_times[3]:.4f} s, "
          f"ratio 3ch/1ch = {first_times[3] / first_times[1]:.2f}")


if __name__ == "__main__":
    main()
