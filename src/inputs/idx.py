"""Read the original MNIST idx files (`train-images-idx3-ubyte` etc.), plain or gzip, with checks.

An idx file is a big-endian header, magic `0x0000 08 D` (08 = unsigned bytes, D = number of
dimensions), D int32 sizes, then the bytes. Every problem is a UserError naming the file.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from src.errors import UserError

UBYTE = 0x08
FETCH_HINT = (
    "the MNIST files are train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (each may be .gz); set data.train_images= etc. to their paths"
)


def read_idx(path: str | Path, role: str, dims: int) -> np.ndarray:
    """The uint8 array stored in an idx file with `dims` dimensions (3: images, 1: labels)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{role} file {path} not found: {FETCH_HINT}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{role} file {path} is a damaged gzip file ({e}): download it again") from None
    if len(raw) < 4:
        raise UserError(f"{role} file {path} is only {len(raw)} bytes: an idx file starts with a 4-byte magic number")
    zero, kind, ndim = struct.unpack(">HBB", raw[:4])
    expected = f"0x000008{dims:02x}"
    if zero != 0 or kind != UBYTE or ndim != dims:
        raise UserError(
            f"{role} file {path} has magic number 0x{raw[:4].hex()}, expected {expected} "
            f"(unsigned bytes, {dims} dimension(s)): is it the right file (images vs labels)?"
        )
    header = 4 + 4 * dims
    if len(raw) < header:
        raise UserError(f"{role} file {path} is truncated inside its header ({len(raw)} of {header} bytes): download it again")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    size = math.prod(shape)  # Python's integers: a crafted header cannot overflow them
    if len(raw) - header != size:
        raise UserError(
            f"{role} file {path} holds {len(raw) - header:,} data bytes but its header {list(shape)} promises "
            f"{size:,}: the file is {'truncated' if len(raw) - header < size else 'longer than its header says'}; download it again"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_images(path: str | Path, role: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Images (N, H, W, C) from an idx3 file whose image size must match `shape`."""
    images = read_idx(path, role, 3)
    h, w, c = shape
    if images.shape[1:] != (h, w) or c != 1:
        raise UserError(
            f"{role} file {path} holds {images.shape[1]}x{images.shape[2]} images, but data.image_shape is "
            f"{list(shape)}: set data.image_shape=[{images.shape[1]},{images.shape[2]},1]"
        )
    if len(images) == 0:
        raise UserError(f"{role} file {path} holds no images")
    return images.reshape(-1, h, w, 1)


def read_labels(path: str | Path, role: str, count: int, images_path: str | Path, num_classes: int) -> np.ndarray:
    """Labels (N,) int64 from an idx1 file: one per image of `images_path`, each in 0..num_classes-1."""
    labels = read_idx(path, role, 1)
    if len(labels) != count:
        raise UserError(
            f"{role} file {path} has {len(labels):,} labels but {images_path} has {count:,} images: "
            "they must come in pairs (train with train, t10k with t10k)"
        )
    bad = np.flatnonzero(labels >= num_classes)
    if len(bad):
        raise UserError(
            f"{role} file {path}: label {labels[bad[0]]} of image {bad[0]} is not in 0..{num_classes - 1}: "
            "is data.num_classes right?"
        )
    return labels.astype(np.int64)
