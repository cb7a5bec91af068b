"""What the augmentations of both backends share, written with keras.ops: the per-image affine
transform, the padded random crop and random erasing (src.inputs.augment_tf draws their random
numbers inside tf.data on TensorFlow, src.inputs.augment_jax on the device on JAX)."""
from __future__ import annotations

import math

from keras import ops


def mirrored(cfg, view: int) -> bool:
    """Whether test-time view `view` (0, 1, ...; -1 the plain image) is mirrored left-right: every
    even view where the config trains on flips (`augment.flip`), so `tta=1` averages the plain and
    the mirrored image, the view that helps most where mirror images are the same class (clothes,
    most photographs). Test-time views take no other random draw but the affine one."""
    return view >= 0 and view % 2 == 0 and cfg is not None and bool(cfg.get("enabled", True)) and bool(cfg.get("flip", False))


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


def shift_crop(images, u_cols, u_rows, pad: int):
    """A random crop of each image padded by `pad` zero pixels on every side, at the image's own
    size: a whole-pixel shift of up to `pad` each way, zeros coming in. `u_cols`, `u_rows` (N,)
    are uniform in [0, 1), drawn by the caller's backend."""
    h, w = images.shape[1], images.shape[2]
    dx = ops.floor(u_cols * (2 * pad + 1)) - pad
    dy = ops.floor(u_rows * (2 * pad + 1)) - pad
    zero = ops.zeros_like(u_cols)
    return ops.image.affine_transform(images, inverse_affine(zero, zero + 1.0, dx, dy, float(h), float(w)),
                                      interpolation="nearest", fill_mode="constant", fill_value=0.0)


def ramped(plain, augmented, u, epoch, ramp: float):
    """Each image of `augmented` with probability min(1, epoch / ramp), else its `plain` self:
    augmentation grows in over the first `ramp` epochs, so a short run, which underfits, trains
    mostly on plain images and a long one on augmented ones. `u` (N,) uniform in [0, 1)."""
    share = ops.minimum(1.0, ops.cast(epoch, "float32") / ramp)
    return ops.where(ops.reshape(u < share, (-1, 1, 1, 1)), augmented, plain)


ERASE_AREA = (0.02, 0.4)  # the erased share of the image (Zhong et al. 2020, "Random Erasing")
ERASE_RATIO = (0.3, 1 / 0.3)  # its height / width


def random_erase(images, u, noise, probability: float):
    """Random erasing (Zhong et al. 2020): with `probability`, a rectangle of each image covering
    2-40% of it, of aspect ratio 0.3-3.3, is replaced by `noise` (the caller's uniform 0-255
    pixels, shaped like `images`). `u` (N, 5) uniform in [0, 1): apply?, area, ratio, row, column."""
    h, w = images.shape[1], images.shape[2]
    area = (ERASE_AREA[0] + u[:, 1] * (ERASE_AREA[1] - ERASE_AREA[0])) * h * w
    ratio = ops.exp(math.log(ERASE_RATIO[0]) + u[:, 2] * (math.log(ERASE_RATIO[1]) - math.log(ERASE_RATIO[0])))
    eh = ops.minimum(ops.sqrt(area * ratio), float(h))
    ew = ops.minimum(ops.sqrt(area / ratio), float(w))
    top, left = u[:, 3] * (h - eh), u[:, 4] * (w - ew)
    rows = ops.reshape(ops.arange(h, dtype="float32"), (1, h, 1))
    cols = ops.reshape(ops.arange(w, dtype="float32"), (1, 1, w))

    def column(v):
        return ops.reshape(v, (-1, 1, 1))

    inside = ((rows >= column(top)) & (rows < column(top + eh)) & (cols >= column(left)) & (cols < column(left + ew))
              & column(u[:, 0] < probability))
    return ops.where(ops.expand_dims(inside, -1), noise, images)
