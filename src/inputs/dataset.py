"""Read and check competition CSVs (train: label + pixels, test: pixels), with a content-hash cache.

Every check happens here, at the boundary, so the rest of the pipeline can trust its arrays:
uint8 images of shape (N, H, W, C) and integer labels in [0, num_classes).
"""
from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.files import sha256
from src.inputs import cache, csv_file, idx
from src.inputs.csv_file import check_range, line, shown

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
    pending: list = []  # parses to cache once the whole data set has passed its checks
    train = _read(cfg.train, "train", _configured_shape(cfg), cfg.cache_dir, pending=pending)
    test = _read(cfg.test, "test", train.images.shape[1:], cfg.cache_dir, train_path=cfg.train, pending=pending)
    classes, y_train = _classes(train.labels, cfg.get("num_classes"), cfg.train)
    y_test = None
    if test.labels is not None:
        y_test = _encode(test.labels, classes, cfg.test, "test", "label")
    if cfg.test_labels:
        y_test = read_labels(cfg.test_labels, len(test.images), classes)
    cache.commit(pending)
    log.info("train %s: %d images; test %s: %d images", cfg.train, len(train.images), cfg.test, len(test.images))
    return Dataset(train.images, y_train, test.images, y_test, len(classes), {"train": train.digest, "test": test.digest},
                   classes, test.ids, test.id_column)


def of_run(run_dir: Path, record: dict, given: DictConfig, roles: tuple[str, ...] = ("train", "test")) -> DictConfig:
    """The data config with which a command reads a finished run's data again: the recorded one,
    each file of `roles` from `given` (the command's `data.train=` ...) or else from its recorded
    path, and only when its SHA-256 is the one run.json records (a run dir from someone else
    cannot make a command read a file of its choosing); the parse cache is the command's own."""
    data = copy.deepcopy(record["resolved_config"]["data"])
    digests = record.get("data") or {}
    for role in roles:
        if role not in digests:
            continue
        path = given.get(role) or data.get(role)
        if not path or not Path(path).is_file():
            problem = "is not there"
        elif sha256(path) != digests[role]:
            problem = "is not the file the run was trained on (its SHA-256 differs from run.json's)"
        else:
            data[role] = str(path)
            continue
        raise UserError(f"{run_dir}: the run's {role} file {path} {problem}: give the file it was trained on "
                        f"with data.{role}=PATH")
    data.update(cache_dir=given.get("cache_dir"), sample=False, test_labels=given.get("test_labels") or
                _verified(data.get("test_labels"), (record.get("files") or {}).get("test_labels")))
    return OmegaConf.create(data)


def _verified(path: str | None, digest: str | None) -> str | None:
    """`path` when it is a file whose SHA-256 is `digest`, else None (test labels are optional:
    without them a command goes on without the test accuracy)."""
    if path and digest and Path(path).is_file() and sha256(path) == digest:
        return str(path)
    if path:
        log.info("the recorded test labels %s are not read (%s): give data.test_labels=PATH for the test accuracy", path,
                 "no SHA-256 recorded" if not digest else "missing or changed")
    return None


def read_test_format(path: str | Path, cfg: DictConfig) -> Table:
    """A CSV in the competition's test layout (pixel columns, optionally an id or a label column),
    with every check the training data gets; uses the parse cache."""
    return _read(path, "test", _configured_shape(cfg), cfg.cache_dir)


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


def _read(path, role, shape, cache_dir, train_path=None, pending: list | None = None) -> Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{role} file {path} not found: give the path of a CSV file")
    if path.stat().st_size == 0:
        raise UserError(f"{role} file {path} is empty: replace it with the competition's {role}.csv")
    digest = sha256(path)
    # path and train_path only word error messages, and errors are never cached: the key is the content
    name = cache.key(digest, role, list(shape) if shape else None)
    parsed = cache.cached(cache_dir, name, lambda: csv_file_parse(path, role, shape, train_path), pending)
    return Table(parsed.images, parsed.labels, parsed.ids, parsed.id_column, digest)


def csv_file_parse(path, role: str, shape: tuple | None, train_path=None) -> csv_file.Parsed:
    """Parse and check one competition CSV (src.inputs.csv_file): its header first, so that a file
    whose columns are not images is refused before its body is read."""
    fix = f"replace it with the competition's {role}.csv"
    found = csv_file.layout(csv_file.read_header(path, role, fix), path, role)
    return csv_file.read_body(path, role, found, image_shape(len(found.pixels), shape, path, role, train_path), fix)


def parse_csv(path: str, digest: str, role: str, shape: tuple | None, train_path: str | None = None):
    """Parse and check one competition CSV; returns (images uint8 (N,H,W,C), the label column's
    values or None, the id column's values or None, the id column's name or None). `digest` is
    not used (it keyed the cache of older versions)."""
    parsed = csv_file_parse(path, role, shape, train_path)
    return parsed.images, parsed.labels, parsed.ids, parsed.id_column


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
    text = column.where(column.isna(), column.astype(str)).astype(object)
    return csv_file.label_values(csv_file.present(text, name, "label", path, role, 0), path, role, name)


def _classes(labels: np.ndarray, num_classes: int | None, path) -> tuple[np.ndarray, np.ndarray]:
    """(the classes, the labels as indices into them). With `num_classes` set, integer labels must be
    0..num_classes-1 (the classes, whether all occur or not); otherwise the classes are the labels'
    distinct values."""
    if num_classes is not None and labels.dtype != object:
        check_range(labels, path, "train", "label", 0, int(num_classes) - 1, "a class index", ["label"])
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
        known = ", ".join(_shown(c) for c in classes[:10]) + (", …" if len(classes) > 10 else "")
        raise UserError(f"{role} file {path}: label {_shown(labels[row])} at line {line(row)}, column {column!r} is not among "
                        f"the training labels ({known})")
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
            f"found columns {[shown(c) for c in frame.columns[:3]]} and {len(frame)} rows: {fix}"
        )
    labels = _label_values(frame["Label"], path, role, "Label")
    if labels.dtype != object and classes.dtype != object and np.array_equal(classes, np.arange(len(classes))):
        check_range(labels, path, role, "label", 0, len(classes) - 1, "a class index", ["Label"])
    return _encode(labels, classes, path, role, "Label")


def read_frame(path, role: str, fix: str) -> pd.DataFrame:
    """`pd.read_csv` of a small CSV (labels, a sample submission), every way it can fail a
    one-line UserError naming the file.

    Blank lines are kept (as empty rows, refused later) so that row i is always file line i + 2,
    and `index_col=False` stops pandas from silently taking column 0 as the index when a row
    has one field more than the header.
    """
    with csv_file.parse_errors(path, role, fix), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(path, low_memory=False, skip_blank_lines=False, index_col=False)
    if frame.shape[1] == 0:
        raise UserError(f"{role} file {path}: line 1 is blank: the first line must be the header; {fix}")
    if any("Length of header" in str(w.message) for w in caught):
        raise UserError(
            f"{role} file {path}: line 2 has more fields than the {frame.shape[1]} of the header; "
            "every row needs one value per header column"
        )
    if frame.shape[1] == 1 and any(sep in str(frame.columns[0]) for sep in ";\t|"):
        raise UserError(f"{role} file {path} has a single column {shown(frame.columns[0])}: the file must be comma-separated")
    return frame


def _shown(label) -> str:
    """A label as written in the file: 7, 'seven' (not np.int64(7)), cut to a readable length."""
    label = label.item() if isinstance(label, np.generic) else label
    return shown(label) if isinstance(label, str) else str(label)
