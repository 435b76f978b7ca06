"""Loss and metric of the paper: ``BCE − Dice + 1`` (Kolarik et al. 2020, Eqs. 4-5).

The binary cross-entropy is computed from the logits behind the sigmoid output whenever
they can be recovered (Keras attaches them to the tensor a ``sigmoid`` activation returns,
and in a graph the ``Sigmoid`` op holds them). Computing it from clipped probabilities
instead loses the gradient once the probabilities fall under the clip and training
collapses to "every voxel negative" (see ``docs/deviations.md``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["bce_dice_loss", "binary_crossentropy_mean", "dice_coef", "logits_of"]


def logits_of(probabilities: tf.Tensor) -> tf.Tensor | None:
    """The logits behind a sigmoid output, or ``None`` when they cannot be recovered."""
    logits = getattr(probabilities, "_keras_logits", None)
    if logits is not None:
        return logits
    try:
        op = probabilities.op
    except (AttributeError, ValueError):  # eager tensors have no op
        return None
    if op.type == "Sigmoid":
        return op.inputs[0]
    return None


def binary_crossentropy_mean(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Mean binary cross-entropy over every voxel of the batch, from logits when possible."""
    y_true = tf.cast(y_true, tf.float32)
    logits = logits_of(y_pred)
    if logits is not None:
        per_voxel = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=tf.cast(logits, tf.float32))
    else:
        per_voxel = keras.ops.binary_crossentropy(y_true, tf.cast(y_pred, tf.float32))
    return tf.reduce_mean(per_voxel)


@keras.saving.register_keras_serializable(package="planar3d")
def dice_coef(y_true: tf.Tensor, y_pred: tf.Tensor, smooth: float = 1.0) -> tf.Tensor:
    """Soft Dice over the whole flattened batch with additive smoothing (paper Eq. 4).

    ``(2 Σ y·p + smooth) / (Σ y + Σ p + smooth)``; shapes `(batch, slices, rows, cols, 1)`.
    """
    y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
    y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
    intersection = tf.reduce_sum(y_true * y_pred)
    return (2.0 * intersection + smooth) / (tf.reduce_sum(y_true) + tf.reduce_sum(y_pred) + smooth)


@keras.saving.register_keras_serializable(package="planar3d")
def bce_dice_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """The paper's loss (Eq. 5): ``binary_crossentropy − dice + 1``, a scalar per batch.

    Under a ``tf.distribute`` strategy with ``n`` replicas each replica returns its share,
    the loss of its part of the batch divided by ``n``: Keras 3 divides a loss by ``n`` only
    when it is not already a scalar (``keras.src.losses.loss.reduce_values``), yet multiplies
    every loss by ``n`` before logging it, so without this ``--strategy mirrored`` logged ``n``
    times the loss and summed ``n`` replicas' gradients.
    """
    loss = binary_crossentropy_mean(y_true, y_pred) - dice_coef(y_true, y_pred) + 1.0
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss
