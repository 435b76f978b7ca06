"""The paper's loss, BCE − Dice + 1, and the logits path that keeps its gradient alive."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from planar3d.nets.losses import bce_dice_loss, dice_coef


def test_loss_matches_the_formula(rng):
    y = (rng.uniform(size=(2, 4, 4, 4, 1)) > 0.8).astype("float32")
    p = rng.uniform(0.05, 0.95, size=y.shape).astype("float32")
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    dice = (2 * np.sum(y * p) + 1) / (np.sum(y) + np.sum(p) + 1)
    np.testing.assert_allclose(float(dice_coef(y, p)), dice, rtol=1e-6)
    np.testing.assert_allclose(float(bce_dice_loss(y, p)), bce - dice + 1, rtol=1e-5)


def test_gradient_survives_saturated_sigmoid():
    """With every probability far under 1e-7 the clipped BCE has no gradient; ours has."""
    inputs = keras.Input((4, 4, 4, 1))
    layer = keras.layers.Conv3D(1, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(-40.0))
    model = keras.Model(inputs, layer(inputs))
    x = np.ones((2, 4, 4, 4, 1), "float32")
    y = np.zeros_like(x)
    y[:, :2] = 1.0

    @tf.function
    def bias_gradient():
        with tf.GradientTape() as tape:
            loss = bce_dice_loss(y, model(x))
        return tape.gradient(loss, layer.bias)

    # d mean(BCE)/d logit = mean(p - y) = -0.5; the Dice term adds a small negative part.
    assert float(bias_gradient()[0]) < -0.49
