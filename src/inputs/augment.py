"""What the augmentations of both backends share, written with keras.ops: the per-image affine
transform (src.inputs.augment_tf draws its parameters inside tf.data on TensorFlow,
src.inputs.augment_jax on the device on JAX)."""
from __future__ import annotations

from keras import ops


def inverse_affine(angle, scale, tx, ty, h, w):
    """(N, 8) projective transforms for keras.ops.image.affine_transform, one per image: each maps
    an output pixel back to its input pixel, the inverse of "scale by `scale` and rotate by
    `angle` (radians) about the centre, then shift by (`tx`, `ty`) pixels"."""
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
    a2 = cx - cos * (cx + tx) - sin * (cy + ty)
    b2 = cy + sin * (cx + tx) - cos * (cy + ty)
    zeros = ops.zeros_like(angle)
    return ops.stack([cos, sin, a2, -sin, cos, b2, zeros, zeros], axis=1)
