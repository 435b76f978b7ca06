"""The FastConv3D of ``benchmarks/bench_fastconv.py`` (``benchmarks/_fastconv.py``, not part of the
package: no model uses it): Conv3D's results with an input gradient computed as a flipped-kernel
convolution, so that the benchmark compares equal computations."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _fastconv import FastConv3D, flipped_kernel_conv3d  # noqa: E402

SHAPE = (2, 5, 9, 10, 4)  # (batch, slices, rows, cols, Cin): odd and even sizes
FILTERS = 3
CASES = [
    (kernel, dilation, padding)
    for kernel in ((3, 3, 3), (2, 3, 3), (2, 2, 4))
    for dilation in ((1, 1, 1), (1, 2, 2))
    for padding in ("same", "valid")
]


def _pair(kernel, dilation, padding, rng, **kwargs):
    """A keras Conv3D and a FastConv3D with the same config and the same (random) weights."""
    stock = keras.layers.Conv3D(FILTERS, kernel, dilation_rate=dilation, padding=padding, activation="relu", **kwargs)
    fast = FastConv3D.from_config(stock.get_config())
    stock.build(SHAPE)
    fast.build(SHAPE)
    kernel_value = rng.normal(size=stock.kernel.shape).astype("float32")
    bias_value = rng.normal(scale=0.1, size=(FILTERS,)).astype("float32")
    for layer in (stock, fast):
        layer.set_weights([kernel_value, bias_value])
    return stock, fast


def _forward_and_grads(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.kernel, layer.bias])
    return [y, *grads]


def _assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("kernel,dilation,padding", CASES)
def test_forward_and_gradients_equal_conv3d(kernel, dilation, padding, graph, rng):
    stock, fast = _pair(kernel, dilation, padding, rng)
    x = tf.constant(rng.normal(size=SHAPE).astype("float32"))
    upstream = tf.constant(rng.normal(size=stock.compute_output_shape(SHAPE)).astype("float32"))
    run = tf.function(_forward_and_grads) if graph else _forward_and_grads
    y_stock, *grads_stock = run(stock, x, upstream)
    y_fast, *grads_fast = run(fast, x, upstream)
    np.testing.assert_array_equal(y_fast.numpy(), y_stock.numpy())  # the same op runs forward
    for name, got, want in zip(("input", "kernel", "bias"), grads_fast, grads_stock):
        assert got.shape == want.shape, name
        _assert_close(got.numpy(), want.numpy())


def _gradient_op_types(layer, x) -> set[str]:
    @tf.function
    def grads(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(layer(v))
        return tape.gradient(loss, [v, layer.kernel])

    return {op.type for op in grads.get_concrete_function(x).graph.get_operations()}


@pytest.mark.parametrize("dilation", [(1, 1, 1), (1, 2, 2)])
def test_input_gradient_is_a_forward_convolution(dilation, rng):
    stock, fast = _pair((3, 3, 3), dilation, "same", rng)
    x = tf.constant(rng.normal(size=SHAPE).astype("float32"))
    assert "Conv3DBackpropInputV2" in _gradient_op_types(stock, x)
    fast_ops = _gradient_op_types(fast, x)
    assert "Conv3DBackpropInputV2" not in fast_ops
    assert "Conv3DBackpropFilterV2" in fast_ops


def test_strided_layer_keeps_the_stock_gradient(rng):
    stock, fast = _pair((3, 3, 3), (1, 1, 1), "same", rng, strides=2)
    x = tf.constant(rng.normal(size=SHAPE).astype("float32"))
    assert "Conv3DBackpropInputV2" in _gradient_op_types(fast, x)
    upstream = tf.constant(rng.normal(size=stock.compute_output_shape(SHAPE)).astype("float32"))
    for got, want in zip(_forward_and_grads(fast, x, upstream), _forward_and_grads(stock, x, upstream)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_mixed_precision_uses_the_compute_dtype(rng):
    policy = keras.DTypePolicy("mixed_bfloat16")
    stock, fast = _pair((3, 3, 3), (1, 2, 2), "same", rng, dtype=policy)
    assert fast.kernel.dtype == "float32"
    x = tf.constant(rng.normal(size=SHAPE).astype("float32"))
    upstream = tf.constant(rng.normal(size=stock.compute_output_shape(SHAPE)).astype("float32"))
    y_stock, *grads_stock = _forward_and_grads(stock, x, upstream)
    y_fast, *grads_fast = _forward_and_grads(fast, x, upstream)
    assert y_fast.dtype == tf.bfloat16
    np.testing.assert_array_equal(tf.cast(y_fast, tf.float32).numpy(), tf.cast(y_stock, tf.float32).numpy())
    for got, want in zip(grads_fast, grads_stock):
        assert got.dtype == want.dtype
        _assert_close(tf.cast(got, tf.float32), tf.cast(want, tf.float32), rtol=2e-2)  # bfloat16 sums


def test_function_rejects_bad_arguments():
    x, k = tf.zeros((1, 4, 4, 4, 1)), tf.zeros((3, 3, 3, 1, 1))
    with pytest.raises(ValueError, match="Received: padding='causal'"):
        flipped_kernel_conv3d(x, k, padding="causal")
    with pytest.raises(ValueError, match=r"Received: dilation_rate=\(1, 0, 2\)"):
        flipped_kernel_conv3d(x, k, dilation_rate=(1, 0, 2))


def _tiny_model(conv_class, seed: int) -> keras.Model:
    inputs = keras.Input((4, 8, 8, 2))
    x = conv_class(3, (2, 3, 3), dilation_rate=(1, 2, 2), padding="same", activation="relu", name="c1",
                   kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    x = conv_class(2, (3, 3, 3), padding="same", activation="relu", name="c2",
                   kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    outputs = keras.layers.Conv3D(1, 1, activation="sigmoid", name="out",
                                  kernel_initializer=keras.initializers.GlorotUniform(seed + 2))(x)
    return keras.Model(inputs, outputs)


def test_fit_step_updates_weights_like_conv3d(rng):
    x = rng.normal(size=(2, 4, 8, 8, 2)).astype("float32")
    y = (rng.uniform(size=(2, 4, 8, 8, 1)) < 0.3).astype("float32")
    weights = []
    for conv_class in (keras.layers.Conv3D, FastConv3D):
        model = _tiny_model(conv_class, seed=5)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="binary_crossentropy")
        before = model.get_weights()
        model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
        weights.append((before, model.get_weights()))
    (before_stock, after_stock), (before_fast, after_fast) = weights
    for b_stock, b_fast, a_stock, a_fast in zip(before_stock, before_fast, after_stock, after_fast):
        np.testing.assert_array_equal(b_fast, b_stock)
        assert not np.array_equal(a_stock, b_stock)  # the step moved every weight
        _assert_close(a_fast - b_fast, a_stock - b_stock)
