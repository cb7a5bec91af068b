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
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.files import sha256
from src.inputs import idx

log = logging.getLogger(__name__)


KAGGLE_INPUT = Path("/kaggle/input")  # where a Kaggle notebook mounts competitions and data sets


def download_hint(cfg: DictConfig) -> str:
    """How to get a preset's missing files: its Kaggle source, data.dir, or the embedded sample."""
    kaggle = cfg.get("kaggle") or {}
    source = (f"the Kaggle competition {kaggle['competition']}" if kaggle.get("competition") else
              f"the Kaggle data set {kaggle['dataset']}" if kaggle.get("dataset") else None)
    fetch = (f"download them from {source} with `python -m src.download` and the same data= choice "
             "(pip install -e '.[kaggle]'), " if source else "")
    return f"{fetch}point data.dir= (or data.train= / data.test=) at your files, or try the embedded sample with `data=sample`"


def data_dir(kaggle_name: str, *local: str) -> str:
    """A data preset's folder (the `data_dir` resolver of conf/data/*.yaml): the Kaggle notebook's
    /kaggle/input/<kaggle_name> when there is one, else the first of `local` that exists, else the first."""
    on_kaggle = KAGGLE_INPUT / kaggle_name
    if on_kaggle.is_dir():
        return str(on_kaggle)
    return next((d for d in local if Path(d).is_dir()), local[0])


OmegaConf.register_new_resolver("data_dir", data_dir, replace=True)


@dataclass(frozen=True)
class Dataset:
    """A checked competition: training images and labels, test images and ids, optional test labels.

    Labels are class indices 0..K-1 into `classes`, the competition's own label values (integers,
    not necessarily contiguous, or strings) in sorted order.
    """

    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int64 class indices
    x_test: np.ndarray  # (M, H, W, C) uint8
    y_test: np.ndarray | None  # (M,) int64 class indices, when test labels were given
    num_classes: int
    digests: dict[str, str]  # SHA-256 of the train and test files' bytes: which data a run used
    classes: np.ndarray | None = None  # (K,) the label values; None: 0..K-1
    test_ids: np.ndarray | None = None  # (M,) the test file's id column, when it has one
    id_column: str | None = None

    @property
    def label_values(self) -> np.ndarray:
        """The competition's label value of each class index."""
        return self.classes if self.classes is not None else np.arange(self.num_classes)


@dataclass(frozen=True)
class Table:
    """One parsed CSV: images, the label column's raw values and the id column, when present."""

    images: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray | None
    id_column: str | None
    digest: str


def load(cfg: DictConfig) -> Dataset:
    """Load and check `cfg.train`, `cfg.test` (and `cfg.test_labels`), using the parse cache.

    `cfg.format` is `csv` (the competition's files) or `idx` (the original MNIST files, with
    `cfg.train_labels`). The image shape comes from the pixel count unless `cfg.image_shape` is
    set; the classes are the training labels' distinct values unless `cfg.num_classes` is set.
    """
    if cfg.get("format", "csv") == "idx":
        return _load_idx(cfg)
    if cfg.get("format", "csv") != "csv":
        raise UserError(f"data.format={cfg.format!r} is not one of csv, idx")
    if cfg.get("sample", False):
        from src.inputs.sample import ensure_sample

        ensure_sample(cfg.train, cfg.test, cfg.test_labels)
    for role in ("train", "test"):
        if not Path(cfg[role]).is_file():
            raise UserError(f"{role} file {cfg[role]} not found: {download_hint(cfg)}")
    memory = joblib.Memory(cfg.cache_dir, verbose=0) if cfg.cache_dir else None
    train = _read(cfg.train, "train", _configured_shape(cfg), memory)
    test = _read(cfg.test, "test", train.images.shape[1:], memory, train_path=cfg.train)
    classes, y_train = _classes(train.labels, cfg.get("num_classes"), cfg.train)
    y_test = None
    if test.labels is not None:
        y_test = _encode(test.labels, classes, cfg.test, "test", "label")
    if cfg.test_labels:
        y_test = read_labels(cfg.test_labels, len(test.images), classes)
    log.info("train %s: %d images; test %s: %d images", cfg.train, len(train.images), cfg.test, len(test.images))
    return Dataset(train.images, y_train, test.images, y_test, len(classes), {"train": train.digest, "test": test.digest},
                   classes, test.ids, test.id_column)


def read_test_format(path: str | Path, cfg: DictConfig) -> Table:
    """A CSV in the competition's test layout (pixel columns, optionally an id or a label column),
    with every check the training data gets; uses the parse cache."""
    memory = joblib.Memory(cfg.cache_dir, verbose=0) if cfg.cache_dir else None
    return _read(path, "test", _configured_shape(cfg), memory)


def _load_idx(cfg: DictConfig) -> Dataset:
    shape = _configured_shape(cfg) or (28, 28, 1)
    classes = 10 if cfg.get("num_classes") is None else int(cfg.num_classes)
    x_train = idx.read_images(cfg.train, "train images", shape)
    y_train = idx.read_labels(cfg.train_labels, "train labels", len(x_train), cfg.train, classes)
    x_test = idx.read_images(cfg.test, "test images", shape)
    y_test = None
    if cfg.test_labels:
        y_test = idx.read_labels(cfg.test_labels, "test labels", len(x_test), cfg.test, classes)
    log.info("train %s: %d images; test %s: %d images", cfg.train, len(x_train), cfg.test, len(x_test))
    digests = {"train": sha256(cfg.train), "train_labels": sha256(cfg.train_labels), "test": sha256(cfg.test)}
    return Dataset(x_train, y_train, x_test, y_test, classes, digests)


def _configured_shape(cfg: DictConfig) -> tuple[int, int, int] | None:
    """`data.image_shape` as (height, width, channels), or None to take it from the pixel count."""
    if cfg.get("image_shape") is None:
        return None
    shape = tuple(int(s) for s in cfg.image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"data.image_shape must be [height, width, channels] or null, got {list(cfg.image_shape)}")
    return shape


def _read(path, role, shape, memory, train_path=None) -> Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{role} file {path} not found: give the path of a CSV file")
    if path.stat().st_size == 0:
        raise UserError(f"{role} file {path} is empty: replace it with the competition's {role}.csv")
    # path and train_path only word error messages, and errors are never cached: the key is the content
    parse = memory.cache(parse_csv, ignore=["path", "train_path"]) if memory else parse_csv
    digest = sha256(path)
    return Table(*parse(str(path), digest, role, shape, train_path and str(train_path)), digest)


PIXEL = re.compile(r"pixel(\d+)", re.IGNORECASE)
ID_NAMES = ("id", "imageid", "image_id")


def parse_csv(path: str, digest: str, role: str, shape: tuple | None, train_path: str | None = None):
    """Parse and check one competition CSV; returns (images uint8 (N,H,W,C), the label column's
    values or None, the id column's values or None, the id column's name or None).

    The label column is the one named `label` (any case), wherever it stands; pixel columns are
    `pixel0..` or `pixel1..`; a test file may have one more column, its ids. `shape` is the image
    shape to expect, or None to take it from the pixel count. `digest` only keys the cache.
    Raises UserError naming the file, line and column of the first problem found; lines are the
    file's own 1-based line numbers (the header is line 1).
    """
    frame = read_frame(path, role, f"replace it with the competition's {role}.csv")
    if len(frame) == 0:
        raise UserError(f"{role} file {path} has a header but no rows: it needs at least one image per row")
    label, id_column, pixels = _layout(frame, path, role)
    shape = image_shape(len(pixels), shape, path, role, train_path)
    values = _check_cells(frame[pixels], path, role).to_numpy()
    _check_range(values, path, role, "pixel", 0, 255, "a gray level", pixels)
    labels = _label_values(frame[label], path, role, label) if label else None
    ids = frame[id_column].to_numpy() if id_column else None
    if ids is not None and pd.isna(ids).any():
        row = int(np.argmax(pd.isna(ids)))
        raise UserError(f"{role} file {path}: missing id at line {_line(row)}, column {id_column!r}: every image needs its id")
    return values.astype(np.uint8).reshape((-1, *shape)), labels, ids, id_column


def _layout(frame: pd.DataFrame, path, role: str) -> tuple[str | None, str | None, list[str]]:
    """(the label column, the id column, the pixel columns in order) of a CSV's header."""
    names = [str(c) for c in frame.columns]
    labels = [c for c in names if c.lower() == "label"]
    if len(labels) > 1:
        raise UserError(f"{role} file {path} has {len(labels)} label columns {labels}: keep one")
    label = labels[0] if labels else None
    if role == "train" and label is None:
        raise UserError(
            f"train file {path} has no 'label' column (first header names: {_names(frame.columns[:3])}): "
            "the training file needs a header `label,pixel0,...`; is it the test file?"
        )
    pixels = [c for c in names if PIXEL.fullmatch(c)]
    if not pixels:  # headers without pixel names: every column but the label is a pixel
        return label, None, [c for c in names if c != label]
    numbers = [int(PIXEL.fullmatch(c)[1]) for c in pixels]
    start = numbers[0]
    for i, (name, number) in enumerate(zip(pixels, numbers)):
        if start not in (0, 1) or number != start + i:
            raise UserError(f"{role} file {path}: pixel column {name!r} is out of order (column {names.index(name) + 1}): "
                            f"pixel columns must run pixel0, pixel1, ... or pixel1, pixel2, ... in order")
    others = [c for c in names if c != label and not PIXEL.fullmatch(c)]
    if role == "train" and others:
        if others[0].lower() in ID_NAMES:
            raise UserError(f"train file {path} has an id column {others[0]!r}: training rows take no ids, "
                            "only the label and the pixels: drop the column")
        raise UserError(f"train file {path}: column {others[0]!r} is neither the label nor a pixel "
                        "(pixel0.. or pixel1..): drop it, or rename it to `label` if it holds the labels")
    if len(others) > 1:
        raise UserError(f"test file {path} has {len(others)} columns that are neither pixels nor the label "
                        f"({_names(others[:4])}): a test file may have one, its ids")
    return label, others[0] if others else None, pixels


def image_shape(pixels: int, shape: tuple | None, path, role: str, train_path: str | None = None) -> tuple[int, int, int]:
    """The image shape of rows of `pixels` values: `shape` when given (and it fits), else a square
    gray image when `pixels` is a square number."""
    if shape is not None:
        if math.prod(shape) == pixels:
            return tuple(shape)
        if train_path:
            raise UserError(f"{role} file {path} has {pixels} pixel columns, but train file {train_path} has "
                            f"{math.prod(shape)} ({list(shape)}): train and test need the same image size")
        raise UserError(f"{role} file {path} has {pixels} pixel columns, but data.image_shape={list(shape)} holds "
                        f"{math.prod(shape)}: set data.image_shape to match your images{_choices(pixels)}, or null to infer it")
    side = math.isqrt(pixels)
    if side * side == pixels:
        return side, side, 1
    raise UserError(f"{role} file {path} has {pixels} pixel columns, which is not a square gray image: "
                    f"set data.image_shape=[height,width,channels]{_choices(pixels)}")


def _choices(pixels: int) -> str:
    """Shapes that `pixels` values fit, for a message: square gray and square RGB first."""
    found = []
    for channels in (1, 3, 4):
        side = math.isqrt(pixels // channels)
        if pixels % channels == 0 and side * side * channels == pixels:
            found.append(f"[{side},{side},{channels}]")
    return f" (it fits {' or '.join(found)})" if found else ""


def _label_values(column: pd.Series, path, role: str, name: str) -> np.ndarray:
    """A label column's values: integers when every value is one, else strings; none missing."""
    missing = column.isna().to_numpy() | (column.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise UserError(f"{role} file {path}: missing label at line {_line(row)}, column {name!r}: fill it in or drop the row")
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().any() and numeric.isna().any():  # a typo among numbers, not a text class
        row = int(np.argmax(numeric.isna().to_numpy()))
        raise UserError(f"{role} file {path}: non-numeric value {str(column.iloc[row]).strip()!r} at line {_line(row)}, "
                        f"column {name!r} among numeric labels: correct it or drop the row (labels are all numbers or all text)")
    if numeric.notna().all():
        values = numeric.to_numpy(np.float64)
        whole = values == np.round(values)
        if not whole.all():
            row = int(np.argmax(~whole))
            raise UserError(f"{role} file {path}: label {_number(values[row])} at line {_line(row)}, column {name!r} "
                            "is not an integer (a class): correct it or drop the row")
        return values.astype(np.int64)
    return column.astype(str).str.strip().to_numpy(dtype=object)


def _classes(labels: np.ndarray, num_classes: int | None, path) -> tuple[np.ndarray, np.ndarray]:
    """(the classes, the labels as indices into them). With `num_classes` set, integer labels must be
    0..num_classes-1 (the classes, whether all occur or not); otherwise the classes are the labels'
    distinct values."""
    if num_classes is not None and labels.dtype != object:
        _check_range(labels, path, "train", "label", 0, int(num_classes) - 1, "a class index", ["label"])
        return np.arange(int(num_classes)), labels
    classes = np.unique(labels)
    if num_classes is not None and len(classes) != int(num_classes):
        raise UserError(f"train file {path} has {len(classes)} distinct labels, but data.num_classes={num_classes}: "
                        "set data.num_classes=null to take the classes from the labels")
    return classes, np.searchsorted(classes, labels).astype(np.int64)


def _encode(labels: np.ndarray, classes: np.ndarray, path, role: str, column: str) -> np.ndarray:
    """Labels as indices into `classes`; UserError naming the line of one not among them."""
    if (labels.dtype == object) != (classes.dtype == object):
        kind = "text" if labels.dtype == object else "numbers"
        raise UserError(f"{role} file {path}: its labels are {kind}, the training labels are not: give labels of the same kind")
    index = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    unseen = classes[index] != labels
    if unseen.any():
        row = int(np.argmax(unseen))
        shown = ", ".join(_shown(c) for c in classes[:10]) + (", …" if len(classes) > 10 else "")
        raise UserError(f"{role} file {path}: label {_shown(labels[row])} at line {_line(row)}, column {column!r} is not among "
                        f"the training labels ({shown})")
    return index.astype(np.int64)


def read_labels(path: str | Path, n_rows: int, classes: np.ndarray) -> np.ndarray:
    """Read an `ImageId,Label` file of test labels (same format as a submission) as indices into
    `classes`, the training labels' values."""
    path = Path(path)
    role = "test labels"
    if not path.is_file():
        raise UserError(f"{role} file {path} not found: set data.test_labels=null or give its path")
    fix = "give an ImageId,Label file with one row per test image, or set data.test_labels=null"
    if path.stat().st_size == 0:
        raise UserError(f"{role} file {path} is empty: {fix}")
    frame = read_frame(path, role, fix)
    if "Label" not in frame.columns or len(frame) != n_rows:
        raise UserError(
            f"{role} file {path} must have a 'Label' column and {n_rows} rows (one per test image), "
            f"found columns {_names(frame.columns[:3])} and {len(frame)} rows: {fix}"
        )
    labels = _label_values(frame["Label"], path, role, "Label")
    if labels.dtype != object and classes.dtype != object and np.array_equal(classes, np.arange(len(classes))):
        _check_range(labels, path, role, "label", 0, len(classes) - 1, "a class index", ["Label"])
    return _encode(labels, classes, path, role, "Label")


def read_frame(path, role: str, fix: str) -> pd.DataFrame:
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


def _shown(label) -> str:
    """A label as written in the file: 7, 'seven' (not np.int64(7))."""
    label = label.item() if isinstance(label, np.generic) else label
    return repr(label) if isinstance(label, str) else str(label)


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
