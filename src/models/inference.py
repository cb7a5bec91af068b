"""A model applied to images: class probabilities in fixed-shape batches, with optional
test-time augmentation, and an autoencoder's reconstructions."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from src.inputs.augment import random_affine
from src.inputs.pipeline import predict_batches


def predict(model: keras.Model, x: np.ndarray, batch_size: int, views: int = 0,
            cfg: DictConfig | None = None, seed: int = 0) -> np.ndarray:
    """Class probabilities for every row of `x` (N, H, W, C), in fixed-shape batches.

    With `views` > 0 (test-time augmentation), the mean over the plain images and `views` copies
    transformed with `cfg`'s random affine ranges, view v of batch i seeded by (seed, v, i).
    """
    batches = predict_batches(x, batch_size)

    def view(v: int) -> np.ndarray:
        def prepare(i, images):
            if v < 0:
                return images
            key = tf.random.experimental.stateless_fold_in(tf.constant([seed, v], tf.int64), i)
            return random_affine(images, cfg, key)

        ds = batches.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        return model.predict(ds, verbose=0)[: len(x)].astype(np.float64)

    total = view(-1)
    for v in range(views):
        total += view(v)
    return (total / (views + 1)).astype(np.float32)


def reconstruct(model: keras.Model, images: np.ndarray) -> np.ndarray | None:
    """For a model with an autoencoder (a layer named `reconstruction`): its output for `images`,
    flat pixels scaled to 0-1. None for other models."""
    try:
        layer = model.get_layer("reconstruction")
    except ValueError:
        return None
    autoencoder = keras.Model(model.inputs, layer.output)
    return autoencoder.predict(images.astype(np.float32), batch_size=256, verbose=0)
