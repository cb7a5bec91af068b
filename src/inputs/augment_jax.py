"""Augmentation of whole image batches on the device on JAX, compiled once: random affine, padded
crop and random erasing (the transforms of src.inputs.augment), the elastic distortion and flips,
as src.inputs.augment_tf does them on TensorFlow. The randomness is drawn from a key folded from (seed, a, b): (seed,
epoch, batch) in training, (seed, view, batch) for test-time augmentation."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
from keras import ops
from omegaconf import DictConfig

from src.inputs.augment import inverse_affine, ramped, random_erase, shift_crop


@dataclass(frozen=True)
class Ranges:
    """conf/augment/'s ranges as plain numbers (what the compiled function closes over)."""

    enabled: bool = True
    rotation: float = 0.0  # degrees
    zoom: float = 0.0
    width_shift: float = 0.0  # fraction of the width
    height_shift: float = 0.0
    elastic: float = 0.0  # pixels; 0 = none
    elastic_sigma: float = 4.0
    flip: bool = False
    crop: int = 0  # pixels of zero padding to crop from; 0 = none
    erasing: float = 0.0  # probability of random erasing; 0 = none
    ramp: float = 0.0  # epochs over which augmentation grows in (src.inputs.augment.ramped); 0 = none

    @classmethod
    def of(cls, cfg: DictConfig | None, affine_only: bool = False) -> Ranges:
        """From the `augment` node; `affine_only` (test-time views) keeps only the affine ranges."""
        if cfg is None or not cfg.enabled:
            return cls(enabled=False)
        warp = 0.0 if affine_only else float(cfg.get("elastic", 0.0))
        return cls(True, float(cfg.rotation), float(cfg.zoom), float(cfg.width_shift), float(cfg.height_shift),
                   warp, float(cfg.get("elastic_sigma", 4.0)), bool(cfg.get("flip", False)) and not affine_only,
                   0 if affine_only else int(cfg.get("crop", 0)), 0.0 if affine_only else float(cfg.get("erasing", 0.0)),
                   0.0 if affine_only else float(cfg.get("ramp", 0.0)))


def augmenter(ranges: Ranges, out_sharding=None) -> Callable:
    """`run(images_uint8, seed, a, b) -> float32 images`, compiled; its output laid out as
    `out_sharding` (the data-parallel layout of a batch) when given."""

    def run(images, seed, a, b):
        x = images.astype(jnp.float32)
        if not ranges.enabled:
            return x
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), a), b)
        k_affine, k_warp, k_flip, k_crop, k_erase, k_noise = jax.random.split(key, 6)
        plain = x
        x = random_affine(x, ranges, k_affine)
        if ranges.elastic:
            x = elastic(x, ranges.elastic, ranges.elastic_sigma, k_warp)
        if ranges.flip:
            x = random_flip(x, k_flip)
        if ranges.crop:
            u = jax.random.uniform(k_crop, (2, x.shape[0]))
            x = shift_crop(x, u[0], u[1], ranges.crop)
        if ranges.erasing:
            noise = jax.random.uniform(k_noise, x.shape, minval=0.0, maxval=255.0)
            x = random_erase(x, jax.random.uniform(k_erase, (x.shape[0], 5)), noise, ranges.erasing)
        if ranges.ramp:  # its key folded in apart: the other draws stay those of runs without a ramp
            x = ramped(plain, x, jax.random.uniform(jax.random.fold_in(key, 7), (x.shape[0],)), a, ranges.ramp)
        return x

    return jax.jit(run, out_shardings=out_sharding)


def random_affine(images: jax.Array, ranges: Ranges, key: jax.Array) -> jax.Array:
    """Rotate, zoom and shift each image of a float batch (N, H, W, C) by its own random amount."""
    n, h, w = images.shape[:3]
    keys = jax.random.split(key, 4)

    def uniform(i, bound):
        return jax.random.uniform(keys[i], (n,), minval=-bound, maxval=bound)

    angle = uniform(0, ranges.rotation * math.pi / 180.0)
    scale = 1.0 + uniform(1, ranges.zoom)
    tx, ty = uniform(2, ranges.width_shift) * w, uniform(3, ranges.height_shift) * h
    return ops.image.affine_transform(images, inverse_affine(angle, scale, tx, ty, float(h), float(w)),
                                      interpolation="bilinear", fill_mode="constant", fill_value=0.0)


def elastic(images: jax.Array, alpha: float, sigma: float, key: jax.Array) -> jax.Array:
    """Elastic distortion (Simard et al. 2003): every pixel moves by uniform noise in [-1, 1]
    blurred by a Gaussian of `sigma` pixels and scaled by `alpha` pixels; bilinear, zeros outside."""
    n, h, w, c = images.shape
    radius = max(1, math.ceil(3 * sigma))
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-(taps**2) / (2.0 * sigma**2))
    kernel = kernel / kernel.sum()
    noise = jax.random.uniform(key, (n, h, w, 2), minval=-1.0, maxval=1.0)
    field = ops.depthwise_conv(noise, jnp.tile(kernel.reshape(-1, 1, 1, 1), (1, 1, 2, 1)), padding="same")
    field = ops.depthwise_conv(field, jnp.tile(kernel.reshape(1, -1, 1, 1), (1, 1, 2, 1)), padding="same")
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    coordinates = jnp.stack(jnp.broadcast_arrays(
        jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (rows + alpha * field[..., 0])[..., None],
        (cols + alpha * field[..., 1])[..., None], jnp.arange(c, dtype=jnp.float32)))
    return ops.image.map_coordinates(images, coordinates, order=1, fill_mode="constant", fill_value=0.0)


def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
    """Mirror each image of a batch (N, H, W, C) left to right with probability 1/2."""
    flip = jax.random.uniform(key, (images.shape[0], 1, 1, 1)) < 0.5
    return jnp.where(flip, images[:, :, ::-1, :], images)
