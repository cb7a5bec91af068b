"""Model builders: plain functions `(input_shape, num_classes, **hyperparameters) -> keras.Model`.

Select one with `model=NAME` (conf/model/NAME.yaml names the function in `_target_`). Models
take raw 0-255 pixels and rescale inside, so a saved model needs no preprocessing code.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


def _batch_norm(momentum: float) -> layers.BatchNormalization:
    # Unsynchronised, each replica of a multi-replica strategy keeps its own moving statistics
    # and the saved model holds only the first replica's: its accuracy then differs from the
    # val_accuracy measured during fit.
    synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return layers.BatchNormalization(momentum=momentum, synchronized=synchronized)


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
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="kfold_cnn")
