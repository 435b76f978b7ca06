"""Training cost of the decoder convolutions: keras Conv3D vs FastConv3D (``_fastconv.py``, this folder's own copy).

(1) one decoder convolution (default 96 -> 32 channels, input 2 x 16x64x64, kernel 3x3x3, the
    size of block9_conv1/conv2 at 64^3), forward + gradients w.r.t. input, kernel and bias,
    dilation (1, 2, 2) and (1, 1, 1); also its forward alone and its stock input gradient;
(2) a full training step (SGD, BCE-Dice loss from logits) of ``build_model((16, 64, 64, 1),
    encoder_weights=None)``, decoder as built vs with block{6..9}_conv{1,2} cloned into
    FastConv3D with the same config and weights.
Gradients (1) and updated weights (2) are checked equal first. Timings are interleaved medians.

    python benchmarks/bench_fastconv.py [--size 64] [--batch 2] [--repeats 5] [--no-determinism] [--no-onednn]

``--no-onednn`` sets ``TF_ENABLE_ONEDNN_OPTS=0`` before TensorFlow is imported: TensorFlow's
own (Eigen) CPU kernels instead of oneDNN's, whose input gradient is much slower.
"""

from __future__ import annotations

import argparse
import os
import sys

if "--no-onednn" in sys.argv:  # must precede the first TensorFlow import
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import interleaved_medians, machine  # noqa: E402
from _fastconv import FastConv3D  # noqa: E402
from planar3d.nets.losses import bce_dice_loss  # noqa: E402
from planar3d.nets.model import DECODER_SKIPS, build_model  # noqa: E402


def decoder_conv_names() -> list[str]:
    return [f"block{b}_conv{c}" for b in DECODER_SKIPS for c in (1, 2)]


def with_fast_decoder(model: keras.Model) -> keras.Model:
    """A copy of ``model`` whose decoder convolutions are FastConv3D (same config, same weights)."""
    names = set(decoder_conv_names())

    def clone(layer):
        if layer.name in names:
            return FastConv3D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    fast = keras.models.clone_model(model, clone_function=clone)
    fast.set_weights(model.get_weights())
    for layer, original in zip(fast.layers, model.layers):
        layer.trainable = original.trainable
    return fast


def _layer_step(layer: keras.layers.Layer, x: tf.Tensor):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * tf.cos(tf.range(layer.filters, dtype=x.dtype)))
        return tape.gradient(loss, [x, *layer.trainable_weights])

    return step


def bench_one_conv(args) -> None:
    rng = np.random.default_rng(0)
    shape = (args.batch, 16, args.size, args.size, args.cin)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    for dilation in ((1, 2, 2), (1, 1, 1)):
        stock = keras.layers.Conv3D(args.cout, 3, dilation_rate=dilation, padding="same", activation="relu")
        fast = FastConv3D.from_config(stock.get_config())
        stock.build(shape)
        fast.build(shape)
        fast.set_weights(stock.get_weights())
        steps = {"stock": _layer_step(stock, x), "fast": _layer_step(fast, x)}
        grads = {name: [g.numpy() for g in step()] for name, step in steps.items()}
        worst = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(grads["stock"], grads["fast"]))
        forward = tf.function(lambda: stock(x))
        times = interleaved_medians(
            {"forward": lambda: forward().numpy(),
             **{name: (lambda s=step: [g.numpy() for g in s()]) for name, step in steps.items()}},
            args.repeats,
        )
        print(f"one Conv3D {args.cin}->{args.cout}, 3x3x3, dilation {dilation}, input {shape}:")
        print(f"  forward only                {times['forward']:.3f} s")
        print(f"  forward+backward  Conv3D    {times['stock']:.3f} s  ({times['stock'] / times['forward']:.2f}x forward)")
        print(f"  forward+backward  FastConv  {times['fast']:.3f} s  ({times['fast'] / times['forward']:.2f}x forward)")
        print(f"  ratio fast/stock = {times['fast'] / times['stock']:.3f}   gradients max rel. diff {worst:.1e}")


def _train_step(model: keras.Model, x: tf.Tensor, y: tf.Tensor):
    optimizer = keras.optimizers.SGD(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = bce_dice_loss(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def bench_training_step(args) -> None:
    rng = np.random.default_rng(0)
    shape = (16, args.size, args.size, 1)
    x = tf.constant(rng.uniform(-1, 1, (args.batch, *shape)).astype("float32"))
    y = tf.constant((rng.uniform(size=(args.batch, *shape)) < 0.01).astype("float32"))
    stock = build_model(shape, encoder_weights=None, seed=0)
    fast = with_fast_decoder(stock)
    swapped = [layer.name for layer in fast.layers if isinstance(layer, FastConv3D)]
    assert swapped == decoder_conv_names(), swapped
    assert stock.count_params() == fast.count_params()

    # one step from equal weights must give equal weights
    steps = {"stock": _train_step(stock, x, y), "fast": _train_step(fast, x, y)}
    for step in steps.values():
        step()
    worst = max(
        float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
        for a, b in zip(stock.get_weights(), fast.get_weights())
    )
    times = interleaved_medians({name: (lambda s=step: s().numpy()) for name, step in steps.items()}, args.repeats)
    print(f"training step, build_model({shape}, encoder_weights=None), batch {args.batch}, SGD, "
          f"{len(swapped)} decoder convs swapped, median of {args.repeats}:")
    print(f"  decoder Conv3D      {times['stock']:.3f} s")
    print(f"  decoder FastConv3D  {times['fast']:.3f} s")
    print(f"  ratio fast/stock = {times['fast'] / times['stock']:.3f}   (goal ~0.5)   "
          f"weights after one step max rel. diff {worst:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="rows = cols of the window (default 64)")
    parser.add_argument("--batch", type=int, default=2, help="windows per batch (default 2)")
    parser.add_argument("--cin", type=int, default=96, help="input channels of the single conv (default 96)")
    parser.add_argument("--cout", type=int, default=32, help="output channels of the single conv (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--no-determinism", action="store_true",
                        help="do not call enable_op_determinism (default: call it, as planar3d.training.segment does)")
    parser.add_argument("--no-onednn", action="store_true",
                        help="run with TF_ENABLE_ONEDNN_OPTS=0 (default: TensorFlow's default, oneDNN on x86)")
    args = parser.parse_args()
    if not args.no_determinism:
        tf.config.experimental.enable_op_determinism()
    print(machine())
    print(f"oneDNN {'off' if args.no_onednn else 'on (default)'}, "
          f"op determinism {'off' if args.no_determinism else 'on'}")
    bench_one_conv(args)
    bench_training_step(args)


if __name__ == "__main__":
    main()
