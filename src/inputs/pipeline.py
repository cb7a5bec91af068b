"""Batches for fit, evaluate and predict from uint8 image arrays, on the backend Keras runs on:
tf.data on TensorFlow (src.inputs.tf_data), numpy batches augmented on the device on JAX
(src.inputs.jax_data). The two agree on what a batch is:

- training: an endless stream of fixed-shape augmented one-hot batches, `steps_per_epoch` per
  epoch; epoch e is a fresh permutation drawn from (seed, e) (its first `fraction` where a time
  budget plans part of a pass per epoch), batch i of it transformed with
  randomness drawn from (seed, e, i), so a fold resumed at epoch e sees what an uninterrupted run
  would have (the same bits on the same backend);
- evaluation: plain fixed-shape batches, the last padded with rows of zero weight;
- prediction: fixed-shape batches of the plain images, or of one augmented view (test-time
  augmentation), the last padded with blank images that the caller cuts off.
"""
from __future__ import annotations

import math
from types import ModuleType

import keras
import numpy as np
from omegaconf import DictConfig


def train_dataset(x: np.ndarray, y: np.ndarray, cfg: DictConfig, batch_size: int, num_classes: int, seed: int,
                  start_epoch: int = 0, fraction: float = 1.0):
    """Endless augmented one-hot training batches from epoch `start_epoch` on (see the module),
    `steps_per_epoch(len(x), batch_size, fraction)` per epoch."""
    return _backend().train_dataset(x, y, cfg, batch_size, num_classes, seed, start_epoch, fraction)


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, num_classes: int):
    """Plain (images, one-hot labels, weights) batches; padded rows weigh 0, so metrics stay exact."""
    return _backend().eval_dataset(x, y, batch_size, num_classes)


def view_batches(x: np.ndarray, batch_size: int, view: int = -1, cfg: DictConfig | None = None, seed: int = 0,
                 first: int = 0):
    """Float batches of `x` to predict: the plain images (view -1) or augmented view v, batch i
    seeded by (seed, v, first + i) (`first`: where `x` starts, in batches, in a larger set)."""
    return _backend().view_batches(x, batch_size, view, cfg, seed, first)


def steps_per_epoch(n: int, batch_size: int, fraction: float = 1.0) -> int:
    """Full batches in one pass over `n` training images, or in `fraction` of one (a time budget's
    last part of a pass, spread over its epochs: each epoch a fresh random subset of the rows)."""
    return max(1, math.floor(n // batch_size * fraction)) if fraction < 1 else n // batch_size


def pad(x: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """`x` with blank rows added up to a whole number of batches, and how many were added."""
    missing = -len(x) % batch_size
    if missing:
        x = np.concatenate([x, np.zeros((missing, *x.shape[1:]), x.dtype)])
    return x, missing


def padded_eval(x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, weights) padded to whole batches: the padded rows are blank, label 0, weight 0."""
    images, missing = pad(x, batch_size)
    labels = np.concatenate([y, np.zeros(missing, y.dtype)])
    weights = np.concatenate([np.ones(len(y), np.float32), np.zeros(missing, np.float32)])
    return images, labels, weights


def check_rows(n: int, batch_size: int) -> None:
    if n < batch_size:
        raise ValueError(f"{n} training images is fewer than one batch of {batch_size}: lower batch_size")


def _backend() -> ModuleType:
    if keras.backend.backend() == "jax":
        from src.inputs import jax_data

        return jax_data
    from src.inputs import tf_data

    return tf_data
