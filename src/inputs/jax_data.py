"""The JAX backend's input batches, with no TensorFlow: numpy gathers each batch's uint8 rows on
the host (a fresh permutation per epoch), and src.inputs.augment_jax transforms them on the
device, laid out for keras.distribution's data parallelism when one is set. What a batch is:
src.inputs.pipeline."""
from __future__ import annotations

import itertools
from typing import Callable, Iterator

import keras
import numpy as np
from omegaconf import DictConfig

from src.inputs.augment import mirrored
from src.inputs.augment_jax import Ranges, augmenter
from src.inputs.pipeline import check_rows, pad, padded_eval, steps_per_epoch


def train_dataset(x: np.ndarray, y: np.ndarray, cfg: DictConfig, batch_size: int, num_classes: int, seed: int,
                  start_epoch: int = 0, fraction: float = 1.0) -> Iterator[tuple]:
    """Endless (augmented images, one-hot labels) batches from epoch `start_epoch` on."""
    check_rows(len(x), batch_size)
    steps = steps_per_epoch(len(x), batch_size, fraction)
    run = augmenter(Ranges.of(cfg), _layout((batch_size, *x.shape[1:])))
    onehot = np.eye(num_classes, dtype=np.float32)

    def stream() -> Iterator[tuple]:
        for epoch in itertools.count(start_epoch):
            order = np.random.default_rng([seed, epoch]).permutation(len(x))[: steps * batch_size]
            for i, idx in enumerate(order.reshape(steps, batch_size)):
                yield run(x[idx], seed, epoch, i), onehot[y[idx]]

    return stream()


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, num_classes: int) -> keras.utils.PyDataset:
    """(images, one-hot labels, weights) batches; the padded rows weigh 0."""
    images, labels, weights = padded_eval(x, y, batch_size)
    labels = np.eye(num_classes, dtype=np.float32)[labels]

    def batch(i: int) -> tuple:
        rows = slice(i * batch_size, (i + 1) * batch_size)
        return images[rows].astype(np.float32), labels[rows], weights[rows]

    return Batches(len(images) // batch_size, batch)


def view_batches(x: np.ndarray, batch_size: int, view: int = -1, cfg: DictConfig | None = None,
                 seed: int = 0, first: int = 0) -> keras.utils.PyDataset:
    """Float batches of `x` to predict: plain (view -1), or view v's random affine seeded by
    (seed, v, first + batch), mirrored where `augment.mirrored` says."""
    images, _ = pad(x, batch_size)
    run = augmenter(Ranges.of(cfg if view >= 0 else None, affine_only=True))
    mirror = mirrored(cfg, view)

    def batch(i: int) -> tuple:
        x = run(images[i * batch_size:(i + 1) * batch_size], seed, view, first + i)
        return (x[:, :, ::-1, :] if mirror else x,)

    return Batches(len(images) // batch_size, batch)


class Batches(keras.utils.PyDataset):
    """`count` batches, batch i from `batch(i)`."""

    def __init__(self, count: int, batch: Callable[[int], object]) -> None:
        super().__init__()
        self.count, self.batch = count, batch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        return self.batch(i)


def _layout(shape: tuple[int, ...]):
    """The sharding keras.distribution gives a batch of `shape`, or None without a distribution."""
    distribution = keras.distribution.distribution()
    return distribution.get_data_layout(shape).backend_layout if distribution else None
