"""tf.data pipelines from uint8 image arrays: augmented training batches, plain evaluation and
prediction batches.

Training batches are fixed-shape (`drop_remainder`), so the same pipeline feeds a TPU. The
training stream is endless; every epoch is a fresh permutation with fresh transforms, all drawn
from stateless seeds made of (seed, epoch, batch), so a rerun, or a fold resumed at epoch e,
sees the same batches.
Validation and test data are never augmented; their last batch is padded to full size and the
padding carries zero weight (validation) or is cut off after predicting (test).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from src.inputs.augment import elastic, random_affine, random_flip

AUTOTUNE = tf.data.AUTOTUNE
DATA, OFF = tf.data.experimental.AutoShardPolicy.DATA, tf.data.experimental.AutoShardPolicy.OFF


def train_dataset(
    x: np.ndarray, y: np.ndarray, cfg: DictConfig, batch_size: int, num_classes: int, seed: int, start_epoch: int = 0
) -> tf.data.Dataset:
    """Endless augmented, one-hot batches of exactly `batch_size` images, `steps_per_epoch` per epoch.

    Epoch e is a fresh permutation drawn from (seed, e), cut to whole batches, and batch i of
    it is transformed with seed (seed, e, i): the stream depends only on the epoch number, so a
    fold resumed at `start_epoch` sees exactly the batches an uninterrupted run would have.
    """
    if len(x) < batch_size:
        raise ValueError(f"{len(x)} training images is fewer than one batch of {batch_size}: lower batch_size")
    steps = steps_per_epoch(len(x), batch_size)
    images, labels = tf.constant(x), tf.constant(y)

    def key(epoch):
        return tf.stack([tf.constant(seed, tf.int64), epoch])

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x), dtype=tf.int64), key(epoch))
        batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])
        return tf.data.Dataset.from_tensor_slices(batches).enumerate().map(lambda i, idx: (epoch, i, idx))

    # resolved here, not in the traced function: AutoGraph would try to convert OmegaConf's resolvers
    warp, flip = float(cfg.get("elastic", 0.0)), bool(cfg.get("flip", False))

    def prepare(epoch, i, idx):
        batch = tf.cast(tf.gather(images, idx), tf.float32)
        if cfg.enabled:
            batch_key = tf.random.experimental.stateless_fold_in(key(epoch), i)
            batch = random_affine(batch, cfg, batch_key)
            if warp:
                batch = elastic(batch, warp, cfg.elastic_sigma, tf.random.experimental.stateless_fold_in(batch_key, 1))
            if flip:
                batch = random_flip(batch, tf.random.experimental.stateless_fold_in(batch_key, 2))
        return batch, tf.one_hot(tf.gather(labels, idx), num_classes)

    ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches)
    return ds.map(prepare, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE).with_options(_shard(DATA))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches in one pass over `n` training images."""
    return n // batch_size


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, num_classes: int) -> tf.data.Dataset:
    """Un-augmented fixed-shape batches; padded rows get sample weight 0 so metrics stay exact."""
    x, pad = _pad(x, batch_size)
    labels = tf.one_hot(np.concatenate([y, np.zeros(pad, y.dtype)]), num_classes)
    weights = np.concatenate([np.ones(len(y), np.float32), np.zeros(pad, np.float32)])
    ds = tf.data.Dataset.from_tensor_slices((x, labels, weights)).batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda a, b, c: (tf.cast(a, tf.float32), b, c), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_shard(OFF))


def predict_batches(x: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """(batch number, images) in fixed-shape float32 batches; the last one padded with blank images
    (cut off again by the caller: `len(x)` rows are real)."""
    padded, _ = _pad(x, batch_size)
    ds = tf.data.Dataset.from_tensor_slices(padded).batch(batch_size, drop_remainder=True).enumerate()
    return ds.map(lambda i, images: (i, tf.cast(images, tf.float32)), num_parallel_calls=AUTOTUNE).with_options(_shard(OFF))


def _shard(policy) -> tf.data.Options:
    """Under several workers: DATA gives each worker its share of every training batch; OFF lets
    every worker evaluate the whole validation set (the metrics then agree on every worker)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return options


def _pad(x: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    pad = -len(x) % batch_size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return x, pad
