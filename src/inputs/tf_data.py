"""The TensorFlow backend's input pipelines (tf.data) from uint8 image arrays: augmented
training batches, plain evaluation batches, and prediction batches (plain or one augmented view).

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

from src.inputs.augment import mirrored, ramped
from src.inputs.augment_tf import elastic, random_affine, random_crop, random_erasing, random_flip
from src.inputs.pipeline import check_rows, pad, padded_eval, steps_per_epoch

AUTOTUNE = tf.data.AUTOTUNE
DATA, OFF = tf.data.experimental.AutoShardPolicy.DATA, tf.data.experimental.AutoShardPolicy.OFF


def train_dataset(
    x: np.ndarray, y: np.ndarray, cfg: DictConfig, batch_size: int, num_classes: int, seed: int, start_epoch: int = 0,
    fraction: float = 1.0,
) -> tf.data.Dataset:
    """Endless augmented, one-hot batches of exactly `batch_size` images, `steps_per_epoch` per epoch.

    Epoch e is a fresh permutation drawn from (seed, e), cut to whole batches, and batch i of
    it is transformed with seed (seed, e, i): the stream depends only on the epoch number, so a
    fold resumed at `start_epoch` sees exactly the batches an uninterrupted run would have.
    """
    check_rows(len(x), batch_size)
    steps = steps_per_epoch(len(x), batch_size, fraction)
    images, labels = tf.constant(x), tf.constant(y)

    def key(epoch):
        return tf.stack([tf.constant(seed, tf.int64), epoch])

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x), dtype=tf.int64), key(epoch))
        batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])
        return tf.data.Dataset.from_tensor_slices(batches).enumerate().map(lambda i, idx: (epoch, i, idx))

    # resolved here, not in the traced function: AutoGraph would try to convert OmegaConf's resolvers
    warp, flip = float(cfg.get("elastic", 0.0)), bool(cfg.get("flip", False))
    crop, erasing = int(cfg.get("crop", 0)), float(cfg.get("erasing", 0.0))
    ramp = float(cfg.get("ramp", 0.0))

    def prepare(epoch, i, idx):
        batch = tf.cast(tf.gather(images, idx), tf.float32)
        if cfg.enabled:
            batch_key = tf.random.experimental.stateless_fold_in(key(epoch), i)
            plain = batch
            batch = random_affine(batch, cfg, batch_key)
            if warp:
                batch = elastic(batch, warp, cfg.elastic_sigma, tf.random.experimental.stateless_fold_in(batch_key, 1))
            if flip:
                batch = random_flip(batch, tf.random.experimental.stateless_fold_in(batch_key, 2))
            if crop:
                batch = random_crop(batch, crop, tf.random.experimental.stateless_fold_in(batch_key, 3))
            if erasing:
                batch = random_erasing(batch, erasing, tf.random.experimental.stateless_fold_in(batch_key, 4))
            if ramp:
                u = tf.random.stateless_uniform([tf.shape(batch)[0]], tf.random.experimental.stateless_fold_in(batch_key, 5))
                batch = ramped(plain, batch, u, epoch, ramp)
        return batch, tf.one_hot(tf.gather(labels, idx), num_classes)

    ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches)
    return ds.map(prepare, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE).with_options(_shard(DATA))


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, num_classes: int) -> tf.data.Dataset:
    """Un-augmented fixed-shape batches; padded rows get sample weight 0 so metrics stay exact."""
    x, labels, weights = padded_eval(x, y, batch_size)
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(labels, num_classes), weights)).batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda a, b, c: (tf.cast(a, tf.float32), b, c), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_shard(OFF))


def view_batches(x: np.ndarray, batch_size: int, view: int = -1, cfg: DictConfig | None = None,
                 seed: int = 0, first: int = 0) -> tf.data.Dataset:
    """Fixed-shape float32 batches of `x` to predict, the last one padded with blank images (the
    caller keeps the first `len(x)` rows): the plain images (view -1), or view v, every batch i
    transformed by `cfg`'s random affine ranges seeded by (seed, v, first + i), and mirrored
    where `augment.mirrored` says."""
    padded, _ = pad(x, batch_size)
    ds = tf.data.Dataset.from_tensor_slices(padded).batch(batch_size, drop_remainder=True).enumerate()
    mirror = mirrored(cfg, view)

    def prepare(i, images):
        images = tf.cast(images, tf.float32)
        if view < 0:
            return images
        images = random_affine(images, cfg, tf.random.experimental.stateless_fold_in(tf.constant([seed, view], tf.int64), i + first))
        return tf.reverse(images, axis=[2]) if mirror else images

    return ds.map(prepare, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE).with_options(_shard(OFF))


def _shard(policy) -> tf.data.Options:
    """Under several workers: DATA gives each worker its share of every training batch; OFF lets
    every worker evaluate the whole validation set (the metrics then agree on every worker)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return options
