"""Model builders: plain functions `(input_shape, num_classes, **hyperparameters) -> keras.Model`.

Select one with `model=NAME` (conf/model/NAME.yaml names the function in `_target_`). Models
take raw 0-255 pixels and rescale inside, so a saved model needs no preprocessing code.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="src")
class FusedBatchNorm(layers.BatchNormalization):
    """BatchNormalization of NHWC images by TensorFlow's fused kernel, for a single replica.

    Keras 3 normalises in separate element-wise passes; on a 2-core CPU that costs about a
    quarter of the default CNN's training step, and the fused kernel gives most of it back.
    """

    def call(self, inputs, training=None, mask=None):
        if len(inputs.shape) != 4 or self.axis not in (-1, 3) or not (self.scale and self.center):
            return super().call(inputs, training=training, mask=mask)
        if training:
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
            )
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
            return y
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, self.moving_mean, self.moving_variance,
            epsilon=self.epsilon, is_training=False,
        )
        return y


def _batch_norm(momentum: float) -> layers.BatchNormalization:
    # With several replicas each one would keep its own moving statistics and the saved model
    # only the first replica's (its accuracy then differs from the val_accuracy seen in fit),
    # so they are synchronised; the fused kernel cannot be, and serves the single-replica case.
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return layers.BatchNormalization(momentum=momentum, synchronized=True)
    return FusedBatchNorm(momentum=momentum)


def _conv_bn(x, filters: int, kernel: int, bn_momentum: float, strides: int = 1, padding: str = "valid"):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False)(x)
    x = _batch_norm(bn_momentum)(x)
    return layers.Activation("relu")(x)


def kfold_cnn(input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.4, bn_momentum: float = 0.9) -> keras.Model:
    """The Kaggle 15-fold CNN (0.99757 on the Digit Recognizer leaderboard as an ensemble).

    conv32 3x3, conv32 3x3, conv32 5x5/2 same, dropout; conv64 3x3, conv64 3x3, conv64 5x5/2 same,
    dropout; conv128 4x4, flatten, dropout, dense softmax. BatchNorm + ReLU after every conv.
    """
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64):
        x = _conv_bn(x, filters, 3, bn_momentum)
        x = _conv_bn(x, filters, 3, bn_momentum)
        x = _conv_bn(x, filters, 5, bn_momentum, strides=2, padding="same")
        x = layers.Dropout(dropout)(x)
    x = _conv_bn(x, 128, 4, bn_momentum)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)  # float32 under mixed precision
    return keras.Model(inputs, outputs, name="kfold_cnn")
