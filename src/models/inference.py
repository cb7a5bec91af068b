"""A model applied to images: class probabilities in fixed-shape batches, with optional
test-time augmentation, and an autoencoder's reconstructions."""
from __future__ import annotations

import keras
import numpy as np
from omegaconf import DictConfig

from src.inputs import pipeline

CHUNK_BATCHES = 128


def predict(model: keras.Model, x: np.ndarray, batch_size: int, views: int = 0,
            cfg: DictConfig | None = None, seed: int = 0) -> np.ndarray:
    """Class probabilities for every row of `x` (N, H, W, C), in fixed-shape batches.

    With `views` > 0 (test-time augmentation), the mean over the plain images and `views` copies
    transformed with `cfg`'s random affine ranges, view v of batch i seeded by (seed, v, i).
    """
    step = batch_size * CHUNK_BATCHES  # rows per call: the input pipeline never holds a copy of all of `x`
    total = 0.0
    for v in range(-1, views):
        parts = [model.predict(pipeline.view_batches(x[i:i + step], batch_size, v, cfg, seed, i // batch_size),
                               verbose=0)[: len(x[i:i + step])] for i in range(0, len(x), step)]
        total = total + np.concatenate(parts).astype(np.float64)
    return (total / (views + 1)).astype(np.float32)


def reconstruct(model: keras.Model, images: np.ndarray) -> np.ndarray | None:
    """For a model with an autoencoder (a layer named `reconstruction`): its output for `images`,
    flat pixels scaled to 0-1. None for other models."""
    try:
        layer = model.get_layer("reconstruction")
    except ValueError:
        return None
    autoencoder = keras.Model(model.inputs, layer.output)
    return autoencoder.predict(pipeline.view_batches(images, 256), verbose=0)[: len(images)]
