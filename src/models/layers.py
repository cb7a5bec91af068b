"""The custom layers that the model builders use and saved models name.

They are registered under the package name "src" (`src>FusedBatchNorm`): that name is written
into every saved `.keras` file, so it must never change, or older run dirs no longer load.
Loading a saved model needs this module imported (`import src.models` does it).
"""
from __future__ import annotations

import zipfile

import keras
from keras import layers

from src.errors import UserError
from src.runtime import current


@keras.saving.register_keras_serializable(package="src")
class BatchNormalization(layers.BatchNormalization):
    """Keras's BatchNormalization whose synchronisation over replicas comes from the runtime and is
    never saved, so a model trained under MirroredStrategy loads on every backend (Keras refuses
    `synchronized=True` outside TensorFlow). Its class name keeps Keras's weight paths
    (`batch_normalization_<n>`), so fold state saved with Keras's own layer still loads."""

    def __init__(self, *args, synchronized: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Several replicas keep one set of statistics: each replica's own would leave the saved
        # model with the first replica's only (its accuracy then differs from fit's val_accuracy).
        self.synchronized = current().batch_norm == "synchronized"

    def get_config(self) -> dict:
        return {**super().get_config(), "synchronized": False}


@keras.saving.register_keras_serializable(package="src")
class FusedBatchNorm(BatchNormalization):
    """BatchNormalization of NHWC images by TensorFlow's fused kernel where the runtime says so
    (TensorFlow, one replica); Keras's own computation elsewhere (several replicas, JAX).

    Keras 3 normalises in separate element-wise passes; on a 2-core CPU that costs about a
    quarter of the default CNN's training step, and the fused kernel gives most of it back.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fused = current().batch_norm == "fused" and keras.backend.backend() == "tensorflow"

    def call(self, inputs, training=None, mask=None):
        if (not self._fused or len(inputs.shape) != 4 or self.axis not in (-1, 3) or not (self.scale and self.center)
                or mask is not None):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # only the fused path needs it; a JAX process never gets here

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


def batch_norm(momentum: float, scale: bool = True) -> BatchNormalization:
    """The one BatchNorm of every model: TensorFlow's fused kernel on one replica, statistics
    synchronised over several, Keras's own on JAX (src.runtime decides). The class stays the same
    whatever the runtime, so a fold's weights load on other hardware: FusedBatchNorm where it can
    apply (scale and offset), else BatchNormalization (convbn's offset-only layers)."""
    if scale:
        return FusedBatchNorm(momentum=momentum)
    return BatchNormalization(momentum=momentum, scale=False)


def load_model(path, compile: bool = True) -> keras.Model:
    """A saved fold model, on whatever runtime it was trained. The one place fold models are
    loaded, always in safe mode (a Lambda layer or other code in a stranger's file is refused,
    whatever keras.config says); a file Keras cannot load is a UserError naming it."""
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, TypeError, KeyError, AttributeError, OSError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())[:200]
        raise UserError(f"{path} cannot be loaded as a Keras model ({type(e).__name__}: {reason}): the run dir is "
                        "damaged or not from this project; train the fold again (delete its folder and resume the run)") from None


@keras.saving.register_keras_serializable(package="src")
class ReconstructionLoss(layers.Layer):
    """Adds the mean squared error between an autoencoder's output and its input to the model's
    losses, and passes the reconstruction on behind a stop-gradient (what follows does not train
    the autoencoder)."""

    def call(self, inputs, reconstruction):
        self.add_loss(keras.ops.mean(keras.ops.square(reconstruction - inputs)))
        return keras.ops.stop_gradient(reconstruction)
