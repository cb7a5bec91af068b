"""Model builders: plain functions `(input_shape, num_classes, **hyperparameters) -> keras.Model`.

Select one with `model=NAME` (conf/model/NAME.yaml names the function in `_target_`). Models
take raw 0-255 pixels and rescale inside, so a saved model needs no preprocessing code.
"""
from __future__ import annotations

import keras
from keras import layers

from src.models.layers import ReconstructionLoss, batch_norm


def _conv_bn(x, filters: int, kernel: int, bn_momentum: float, strides: int = 1, padding: str = "valid"):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False)(x)
    x = batch_norm(bn_momentum)(x)
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


def resnet(input_shape: tuple[int, int, int], num_classes: int, width: int = 32, blocks: tuple[int, ...] = (2, 2, 2),
           dropout: float = 0.1, bn_momentum: float = 0.9) -> keras.Model:
    """A small pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    A 3x3 stem of `width` filters, then one stage per entry of `blocks` with that many residual
    blocks (BatchNorm-ReLU-conv3x3 twice, plus the shortcut); each stage after the first halves
    the image with a stride of 2 and doubles the width. Global average pooling, so any image size
    and channel count works; dropout, dense softmax.
    """
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    for stage, count in enumerate(blocks):
        for block in range(count):
            x = _preact_block(x, width * 2 ** stage, 2 if stage and not block else 1, bn_momentum)
    x = layers.Activation("relu")(batch_norm(bn_momentum)(x))
    x = layers.Dropout(dropout)(layers.GlobalAveragePooling2D()(x))
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="resnet")


def _preact_block(x, filters: int, strides: int, bn_momentum: float):
    h = layers.Activation("relu")(batch_norm(bn_momentum)(x))
    shortcut = x if strides == 1 and x.shape[-1] == filters else layers.Conv2D(filters, 1, strides=strides, use_bias=False)(h)
    h = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(h)
    h = layers.Activation("relu")(batch_norm(bn_momentum)(h))
    h = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
    return layers.Add()([h, shortcut])


def softmax(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Multinomial logistic regression: flatten 784 → Dense(10, softmax) (TensorFlow's first tutorial)."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Flatten()(layers.Rescaling(1.0 / 255)(inputs))
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="softmax")


def mlp(input_shape: tuple[int, int, int], num_classes: int, width: int = 256, depth: int = 5) -> keras.Model:
    """Flatten → `depth` × Dense(`width`, relu) → Dense(10, softmax)."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Flatten()(layers.Rescaling(1.0 / 255)(inputs))
    for _ in range(depth):
        x = layers.Dense(width, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mlp")


def simple_cnn(input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.5) -> keras.Model:
    """TensorFlow's CNN tutorial: conv32 → pool → conv64 → pool → conv64 → dense64 → dropout → softmax."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


def convbn(input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.3, bn_momentum: float = 0.9) -> keras.Model:
    """Martin Görner's "TensorFlow without a PhD" CNN: three convs and a dense layer, each with
    BatchNorm (offset, no scale: ReLU follows) instead of biases, inputs scaled by 1/256."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Rescaling(1.0 / 256)(inputs)
    for filters, kernel, strides in ((12, 3, 1), (24, 6, 2), (32, 6, 2)):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
        x = batch_norm(bn_momentum, scale=False)(x)
        x = layers.Activation("relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(200, use_bias=False)(x)
    x = batch_norm(bn_momentum, scale=False)(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="convbn")


def autoencoder_classifier(
    input_shape: tuple[int, int, int],
    num_classes: int,
    encoder: tuple[int, ...] = (152, 76, 38, 4),
    classifier: tuple[int, ...] = (140, 80, 40),
) -> keras.Model:
    """A tanh autoencoder 784-152-76-38-4-38-76-152-784 and a tanh classifier 784-140-80-40-10
    that reads the autoencoder's reconstructions, in one model.

    The recipe trains them one after the other; here both train together: the reconstruction
    error (mean squared, on pixels scaled to 0-1) is added to the loss, and the classifier sees
    the reconstruction through a stop-gradient, so each part learns only from its own error.
    Predicting chains both. The layer named `reconstruction` gives the autoencoder's output.
    """
    inputs = keras.Input(shape=tuple(input_shape))
    pixels = layers.Flatten()(layers.Rescaling(1.0 / 255)(inputs))
    x = pixels
    for units in (*encoder, *reversed(encoder[:-1])):
        x = layers.Dense(units, activation="tanh")(x)
    x = layers.Dense(pixels.shape[-1], activation="tanh", dtype="float32")(x)
    x = ReconstructionLoss(name="reconstruction", dtype="float32")(pixels, x)  # the loss in float32
    for units in classifier:
        x = layers.Dense(units, activation="tanh")(x)
    outputs = layers.Dense(num_classes, activation="tanh", dtype="float32", name="scores")(x)
    return keras.Model(inputs, outputs, name="autoencoder_classifier")
