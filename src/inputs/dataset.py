"""Read and check competition CSVs (train: label + pixels, test: pixels), with a content-hash cache.

Every check happens here, at the boundary, so the rest of the pipeline can trust its arrays:
uint8 images of shape (N, H, W, C) and integer labels in [0, num_classes).
"""
from __future__ import annotations

import logging
import math
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from src.errors import UserError
from src.files import sha256
from src.inputs import idx

log = logging.getLogger(__name__)

DOWNLOAD_HINT = (
    "get the competition files with `kaggle competitions download -c digit-recognizer -p data` "
    "(then unzip), point data.train= / data.test= at your files, or try the embedded sample "
    "with `data=sample`"
)


@dataclass(frozen=True)
class Dataset:
    """A checked competition: training images and labels, test images, optional test labels."""

    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, H, W, C) uint8
    y_test: np.ndarray | None  # (M,) int64 when test labels were given
    num_classes: int
    digests: dict[str, str]  # SHA-256 of the train and test files' bytes: which data a run used


def load(cfg: DictConfig) -> Dataset:
    """Load and check `cfg.train`, `cfg.test` (and `cfg.test_labels`), using the parse cache.

    `cfg.format` is `csv` (the competition's files) or `idx` (the original MNIST files, with
    `cfg.train_labels`).
    """
    if cfg.get("format", "csv") == "idx":
        return _load_idx(cfg)
    if cfg.get("format", "csv") != "csv":
        raise UserError(f"data.format={cfg.format!r} is not one of csv, idx")
    if cfg.get("sample", False):
        from src.inputs.sample import ensure_sample

        ensure_sample(cfg.train, cfg.test, cfg.test_labels)
    shape = _shape(cfg)
    memory = joblib.Memory(cfg.cache_dir, verbose=0) if cfg.cache_dir else None
    train = _read(cfg.train, "train", shape, cfg.num_classes, memory)
    test = _read(cfg.test, "test", shape, cfg.num_classes, memory, train_path=cfg.train)
    y_test = None
    if cfg.test_labels:
        y_test = read_labels(cfg.test_labels, len(test[0]), cfg.num_classes)
    log.info("train %s: %d images; test %s: %d images", cfg.train, len(train[0]), cfg.test, len(test[0]))
    return Dataset(train[0], train[1], test[0], y_test, int(cfg.num_classes), {"train": train[2], "test": test[2]})


def read_test_format(path: str | Path, cfg: DictConfig) -> np.ndarray:
    """Images from a CSV in the competition's test format (pixel columns only), with every check
    the training data gets; uses the parse cache."""
    memory = joblib.Memory(cfg.cache_dir, verbose=0) if cfg.cache_dir else None
    return _read(path, "test", _shape(cfg), cfg.num_classes, memory)[0]


def _load_idx(cfg: DictConfig) -> Dataset:
    shape = _shape(cfg)
    x_train = idx.read_images(cfg.train, "train images", shape)
    y_train = idx.read_labels(cfg.train_labels, "train labels", len(x_train), cfg.train, cfg.num_classes)
    x_test = idx.read_images(cfg.test, "test images", shape)
    y_test = None
    if cfg.test_labels:
        y_test = idx.read_labels(cfg.test_labels, "test labels", len(x_test), cfg.test, cfg.num_classes)
    log.info("train %s: %d images; test %s: %d images", cfg.train, len(x_train), cfg.test, len(x_test))
    digests = {"train": sha256(cfg.train), "train_labels": sha256(cfg.train_labels), "test": sha256(cfg.test)}
    return Dataset(x_train, y_train, x_test, y_test, int(cfg.num_classes), digests)


def _shape(cfg: DictConfig) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in cfg.image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"data.image_shape must be [height, width, channels], got {list(cfg.image_shape)}")
    return shape


def _read(path, role, shape, num_classes, memory, train_path=None):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{role} file {path} not found: {DOWNLOAD_HINT}")
    if path.stat().st_size == 0:
        raise UserError(f"{role} file {path} is empty: replace it with the competition's {role}.csv")
    # path and train_path only word error messages, and errors are never cached: the key is the content
    parse = memory.cache(parse_csv, ignore=["path", "train_path"]) if memory else parse_csv
    digest = sha256(path)
    return (*parse(str(path), digest, role, shape, num_classes, train_path and str(train_path)), digest)


def parse_csv(path: str, digest: str, role: str, shape: tuple, num_classes: int, train_path: str | None = None):
    """Parse and check one competition CSV; returns (images uint8 (N,H,W,C), labels int64 or None).

    `digest` only keys the cache. Raises UserError naming the file, line and column of the
    first problem found; lines are the file's own 1-based line numbers (the header is line 1).
    """
    pixels = math.prod(shape)
    frame = _read_frame(path, role, f"replace it with the competition's {role}.csv")
    if len(frame) == 0:
        raise UserError(f"{role} file {path} has a header but no rows: it needs at least one image per row")

    has_label = "label" in frame.columns
    if role == "train" and not has_label:
        raise UserError(
            f"train file {path} has no 'label' column (first header names: {_names(frame.columns[:3])}): "
            "the training file needs a header `label,pixel0,...`; is it the test file?"
        )
    if role == "test" and has_label:
        frame = frame.drop(columns="label")  # a labelled file doubles as a test file
    n_pixels = frame.shape[1] - (1 if role == "train" else 0)
    if n_pixels != pixels:
        expected = f"{'label + ' if role == 'train' else ''}{pixels} pixel columns"
        hint = f"set data.image_shape to match your images (now {list(shape)})"
        if train_path:
            hint = f"train file {train_path} has {pixels}; train and test need the same image size"
        raise UserError(f"{role} file {path} has {frame.shape[1]} columns, expected {expected}: {hint}")

    frame = _check_cells(frame, path, role)
    values = frame.to_numpy()
    labels = None
    columns = list(frame.columns)
    if role == "train":
        label_col = columns.index("label")
        raw = values[:, label_col]
        _check_range(raw, path, role, "label", 0, num_classes - 1, "a class index", ["label"])
        labels = raw.astype(np.int64)
        values = np.delete(values, label_col, axis=1)
        del columns[label_col]
    _check_range(values, path, role, "pixel", 0, 255, "a gray level", columns)
    return values.astype(np.uint8).reshape((-1, *shape)), labels


def read_labels(path: str | Path, n_rows: int, num_classes: int) -> np.ndarray:
    """Read an `ImageId,Label` file of test labels (same format as a submission)."""
    path = Path(path)
    role = "test labels"
    if not path.is_file():
        raise UserError(f"{role} file {path} not found: set data.test_labels=null or give its path")
    fix = "give an ImageId,Label file with one row per test image, or set data.test_labels=null"
    if path.stat().st_size == 0:
        raise UserError(f"{role} file {path} is empty: {fix}")
    frame = _read_frame(path, role, fix)
    if "Label" not in frame.columns or len(frame) != n_rows:
        raise UserError(
            f"{role} file {path} must have a 'Label' column and {n_rows} rows (one per test image), "
            f"found columns {_names(frame.columns[:3])} and {len(frame)} rows: {fix}"
        )
    labels = _check_cells(frame[["Label"]], path, role)["Label"].to_numpy()
    _check_range(labels, path, role, "label", 0, num_classes - 1, "a class index", ["Label"])
    return labels.astype(np.int64)


def _read_frame(path, role: str, fix: str) -> pd.DataFrame:
    """`pd.read_csv` with every way it can fail turned into a one-line UserError naming the file.

    Blank lines are kept (as empty rows, refused later) so that row i is always file line i + 2,
    and `index_col=False` stops pandas from silently taking column 0 as the index when a row
    has one field more than the header.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(path, low_memory=False, skip_blank_lines=False, index_col=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{role} file {path} is empty (or its first lines are blank): {fix}") from None
    except pd.errors.ParserError as e:
        text = " ".join(str(e).split())
        if m := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text):
            detail = f"line {m[2]} has {m[3]} fields where the header has {m[1]}; every row needs one value per header column"
        elif m := re.search(r"EOF inside string starting at row (\d+)", text):  # pandas counts rows from 0
            detail = f'line {int(m[1]) + 1} opens a quote (") that is never closed: remove the stray quote'
        else:
            detail = f"{text}; every row needs one value per header column"
        raise UserError(f"{role} file {path}: {detail}") from None
    except (UnicodeDecodeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise UserError(
            f"{role} file {path} is not a readable CSV ({type(e).__name__}: {reason}): "
            "give a UTF-8 .csv file, or a .csv.gz / single-file .zip of one"
        ) from None
    if frame.shape[1] == 0:
        raise UserError(f"{role} file {path}: line 1 is blank: the first line must be the header; {fix}")
    if any("Length of header" in str(w.message) for w in caught):
        raise UserError(
            f"{role} file {path}: line 2 has more fields than the {frame.shape[1]} of the header; "
            "every row needs one value per header column"
        )
    if frame.shape[1] == 1 and any(sep in str(frame.columns[0]) for sep in ";\t|"):
        raise UserError(
            f"{role} file {path} has a single column {_names(frame.columns[:1])[0]!r}: "
            "the file must be comma-separated"
        )
    return frame


def _names(columns) -> list[str]:
    """Header names for a message, each cut to 30 characters."""
    return [c if len(c) <= 30 else c[:27] + "..." for c in map(str, columns)]


def _number(v) -> str:
    """A cell value as the user would write it: 256, 12.5, -1, inf (not np.float64(256.0))."""
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def _line(row: int) -> int:
    return row + 2  # 1-based, after the header line


def _check_cells(frame: pd.DataFrame, path, role) -> pd.DataFrame:
    """Refuse non-numeric and missing cells; return the frame with every column numeric."""
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            numeric = pd.to_numeric(frame[col], errors="coerce")
            bad = numeric.isna() & frame[col].notna()
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise UserError(
                    f"{role} file {path}: non-numeric value {frame[col].iloc[row]!r} at line {_line(row)}, "
                    f"column {col!r}: every cell must be a number"
                )
            frame = frame.assign(**{col: numeric})
    missing = frame.isna().to_numpy()
    if missing.any():
        row, col = np.argwhere(missing)[0]
        filled = int((~missing[row]).sum())
        if filled == 0:
            raise UserError(f"{role} file {path}: line {_line(row)} is empty: delete the line or fill in its values")
        raise UserError(
            f"{role} file {path}: missing value at line {_line(row)}, column {frame.columns[col]!r} "
            f"(the row has {filled} of {frame.shape[1]} values): fill it in or drop the row"
        )
    return frame


def _check_range(values, path, role, what, lo, hi, meaning, columns) -> None:
    """Refuse a value that is not an integer in lo..hi; `values` is (rows,) or (rows, len(columns))."""
    v = values.astype(np.float64) if values.dtype == object else values
    bad = (v < lo) | (v > hi) | (v != np.round(v))
    if bad.any():
        idx = np.argwhere(bad)[0]
        row = int(idx[0])
        col = columns[idx[1]] if len(idx) > 1 else columns[0]
        raise UserError(
            f"{role} file {path}: {what} {_number(values[tuple(idx)])} at line {_line(row)}, column {col!r} "
            f"is not an integer in {lo}..{hi} ({meaning}): correct it or drop the row"
        )
