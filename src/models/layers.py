"""The custom layers that the model builders use and saved models name.

They are registered under the package name "src" (`src>FusedBatchNorm`): that name is written
into every saved `.keras` file, so it must never change, or older run dirs no longer load.
Loading a saved model needs this module imported (`import src.models` does it).
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


def batch_norm(momentum: float) -> layers.BatchNormalization:
    # With several replicas each one would keep its own moving statistics and the saved model
    # only the first replica's (its accuracy then differs from the val_accuracy seen in fit),
    # so they are synchronised; the fused kernel cannot be, and serves the single-replica case.
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return layers.BatchNormalization(momentum=momentum, synchronized=True)
    return FusedBatchNorm(momentum=momentum)


@keras.saving.register_keras_serializable(package="src")
class ReconstructionLoss(layers.Layer):
    """Adds the mean squared error between an autoencoder's output and its input to the model's
    losses, and passes the reconstruction on behind a stop-gradient (what follows does not train
    the autoencoder)."""

    def call(self, inputs, reconstruction):
        self.add_loss(keras.ops.mean(keras.ops.square(reconstruction - inputs)))
        return keras.ops.stop_gradient(reconstruction)
