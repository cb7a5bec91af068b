"""Read one competition CSV into uint8 images, a chunk of rows at a time, checking every cell.

The header is read on its own first (duplicated names stay visible, and a file whose columns
cannot be images is refused before its body is read); the body then goes through pandas' C
parser CHUNK_ROWS rows at a time, each chunk checked and cast to uint8 into one array grown in
place. Memory stays near the uint8 images themselves, never a float64 copy of the whole table.
Every problem is a one-line UserError naming the file, its line (the header is line 1) and column.
"""
from __future__ import annotations

import contextlib
import csv
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
from pandas.io.common import get_handle

from src.errors import UserError

CHUNK_ROWS = 2048
SHOWN = 40  # characters of a cell or a name quoted in a message
LABEL_LIMIT = 2**31  # integer labels are classes: beyond this they are not (inf, 1e300, a pixel column)
PIXEL = re.compile(r"pixel(\d+)", re.IGNORECASE)
ID_NAMES = ("id", "imageid", "image_id")


@dataclass(frozen=True)
class Layout:
    """Where a CSV keeps its label, its ids and its pixels (column positions, 0-based)."""

    names: list[str]
    label: int | None
    id_column: int | None
    pixels: list[int]


@dataclass(frozen=True)
class Parsed:
    """A parsed CSV: images (N, H, W, C) uint8, the label column's values (int64, or str objects)
    or None, the id column's values or None, and the id column's name."""

    images: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray | None
    id_column: str | None


def read_header(path, role: str, fix: str) -> list[str]:
    """The header's names as written (duplicates kept), read from the first line alone."""
    with parse_errors(path, role, fix), get_handle(path, "r", compression="infer", encoding="utf-8") as handle:
        first = handle.handle.readline()
        names = next(csv.reader([first]), []) if first.strip() else None
        if names is None and not first and not handle.handle.read(1):
            raise pd.errors.EmptyDataError
    if names is None:
        raise UserError(f"{role} file {path}: line 1 is blank: the first line must be the header; {fix}")
    names = [n.lstrip("\ufeff") if i == 0 else n for i, n in enumerate(names)]
    if len(names) == 1 and any(sep in names[0] for sep in ";\t|"):
        raise UserError(f"{role} file {path} has a single column {shown(names[0])}: the file must be comma-separated")
    return names


def layout(names: list[str], path, role: str) -> Layout:
    """The label, id and pixel columns of a header: the label is the column named `label` (any
    case), pixels are `pixel0..` or `pixel1..` in order (or every other column, when none is
    named so), and a test file may have one more column, its ids."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise UserError(f"{role} file {path}: column {shown(name)} appears twice (columns {seen[name] + 1} and {i + 1}): "
                            "every column needs its own name; drop or rename one")
        seen[name] = i
    labels = [i for i, n in enumerate(names) if n.lower() == "label"]
    if len(labels) > 1:
        raise UserError(f"{role} file {path} has {len(labels)} label columns {[names[i] for i in labels]}: keep one")
    label = labels[0] if labels else None
    if role == "train" and label is None:
        raise UserError(f"train file {path} has no 'label' column (first header names: {[shown(n)[1:-1] for n in names[:3]]}): "
                        "the training file needs a header `label,pixel0,...`; is it the test file?")
    pixels = [i for i, n in enumerate(names) if PIXEL.fullmatch(n)]
    if not pixels:  # headers without pixel names: every column but the label is a pixel
        return Layout(names, label, None, [i for i in range(len(names)) if i != label])
    start = int(PIXEL.fullmatch(names[pixels[0]])[1])
    for k, i in enumerate(pixels):
        if start not in (0, 1) or int(PIXEL.fullmatch(names[i])[1]) != start + k:
            raise UserError(f"{role} file {path}: pixel column {shown(names[i])} is out of order (column {i + 1}): "
                            "pixel columns must run pixel0, pixel1, ... or pixel1, pixel2, ... in order")
    others = [i for i in range(len(names)) if i != label and i not in set(pixels)]
    if role == "train" and others:
        first = names[others[0]]
        if first.lower() in ID_NAMES:
            raise UserError(f"train file {path} has an id column {shown(first)}: training rows take no ids, "
                            "only the label and the pixels: drop the column")
        raise UserError(f"train file {path}: column {shown(first)} is neither the label nor a pixel "
                        "(pixel0.. or pixel1..): drop it, or rename it to `label` if it holds the labels")
    if len(others) > 1:
        raise UserError(f"test file {path} has {len(others)} columns that are neither pixels nor the label "
                        f"({[shown(names[i]) for i in others[:4]]}): a test file may have one, its ids")
    return Layout(names, label, others[0] if others else None, pixels)


def read_body(path, role: str, found: Layout, shape: tuple[int, int, int], fix: str) -> Parsed:
    """Every row of the file after its header, checked, as uint8 images of `shape`."""
    text = [i for i in (found.label, found.id_column) if i is not None]
    images = np.empty((CHUNK_ROWS, *shape), np.uint8)
    labels, ids, rows = [], [], 0
    for chunk in _chunks(path, role, fix, len(found.names), {i: str for i in text}):
        end = rows + len(chunk)
        if end > len(images):  # realloc: large blocks grow in place (mremap), no second copy
            images.resize((max(end, 2 * len(images)), *shape), refcheck=False)
        images[rows:end] = _pixels(chunk, found, path, role, rows).reshape(-1, *shape)
        if found.label is not None:
            labels.append(present(chunk[found.label], found.names[found.label], "label", path, role, rows))
        if found.id_column is not None:
            ids.append(present(chunk[found.id_column], found.names[found.id_column], "id", path, role, rows))
        rows = end
    if rows == 0:
        raise UserError(f"{role} file {path} has a header but no rows: it needs at least one image per row")
    images.resize((rows, *shape), refcheck=False)
    return Parsed(images, label_values(np.concatenate(labels), path, role, found.names[found.label]) if labels else None,
                  id_values(np.concatenate(ids)) if ids else None,
                  found.names[found.id_column] if found.id_column is not None else None)


def _chunks(path, role: str, fix: str, columns: int, dtype: dict) -> Iterator[pd.DataFrame]:
    """The rows after the header, CHUNK_ROWS at a time; blank lines kept (as empty rows, refused
    later) so that row i is always file line i + 2."""
    with parse_errors(path, role, fix):
        reader = pd.read_csv(path, header=None, skiprows=1, names=range(columns), index_col=False, skip_blank_lines=False,
                             chunksize=CHUNK_ROWS, dtype=dtype, encoding="utf-8")
    with reader:
        while True:
            with parse_errors(path, role, fix), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                chunk = next(reader, None)
            if any("Length of header" in str(w.message) for w in caught):  # pandas would drop the extra field
                raise UserError(f"{role} file {path}: line 2 has more fields than the {columns} of the header; "
                                "every row needs one value per header column")
            if chunk is None:
                return
            if len(chunk):
                yield chunk


def _pixels(chunk: pd.DataFrame, found: Layout, path, role: str, offset: int) -> np.ndarray:
    """A chunk's pixel cells as uint8 (rows, pixels), refusing missing, non-numeric and out-of-range ones."""
    frame = chunk[found.pixels]
    for col, dtype in frame.dtypes.items():
        if not pd.api.types.is_numeric_dtype(dtype):
            numeric = pd.to_numeric(frame[col], errors="coerce")
            bad = (numeric.isna() & frame[col].notna()).to_numpy()
            if bad.any():
                row = int(np.argmax(bad))
                raise UserError(f"{role} file {path}: non-numeric value {shown(frame[col].iloc[row])} at line "
                                f"{line(offset + row)}, column {shown(found.names[col])}: every cell must be a number")
            frame[col] = numeric
    values = frame.to_numpy()
    missing = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    if missing.any():
        row, col = np.argwhere(missing)[0]
        filled = int((~missing[row]).sum())
        if filled == 0:
            raise UserError(f"{role} file {path}: line {line(offset + row)} is empty: delete the line or fill in its values")
        raise UserError(f"{role} file {path}: missing value at line {line(offset + row)}, column "
                        f"{shown(found.names[found.pixels[col]])} (the row has {filled} of {len(found.pixels)} values): "
                        "fill it in or drop the row")
    check_range(values, path, role, "pixel", 0, 255, "a gray level", [found.names[i] for i in found.pixels], offset)
    return values.astype(np.uint8)


def present(column: pd.Series, name: str, what: str, path, role: str, offset: int) -> np.ndarray:
    """A label or id column's cells as stripped strings, refusing a missing one."""
    values = column.to_numpy(object)
    missing = pd.isna(values) | (column.fillna("").str.strip() == "").to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        fix = "fill it in or drop the row" if what == "label" else "every image needs its id"
        raise UserError(f"{role} file {path}: missing {what} at line {line(offset + row)}, column {shown(name)}: {fix}")
    return column.str.strip().to_numpy(object)


def label_values(values: np.ndarray, path, role: str, name: str) -> np.ndarray:
    """A label column's values (str objects): integers when every value is one, else the text."""
    numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    if not np.isnan(numeric).any():
        bad = ~np.isfinite(numeric) | (np.abs(numeric) >= LABEL_LIMIT) | (numeric != np.round(numeric))
        if bad.any():
            row = int(np.argmax(bad))
            raise UserError(f"{role} file {path}: label {shown(values[row])[1:-1]} at line {line(row)}, column {shown(name)} "
                            f"is not an integer (a class) below {LABEL_LIMIT:,} in magnitude: correct it or drop the row")
        return numeric.astype(np.int64)
    if not np.isnan(numeric).all():  # a typo among numbers, not a text class
        row = int(np.argmax(np.isnan(numeric)))
        raise UserError(f"{role} file {path}: non-numeric value {shown(values[row])} at line {line(row)}, column {shown(name)} "
                        "among numeric labels: correct it or drop the row (labels are all numbers or all text)")
    return values


def id_values(values: np.ndarray) -> np.ndarray:
    """An id column as pandas would have typed it: int64 when every id is an integer, else text."""
    numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    if np.isfinite(numeric).all() and (numeric == np.round(numeric)).all() and (np.abs(numeric) < 2**53).all():
        return numeric.astype(np.int64)
    return values


def check_range(values, path, role, what, lo, hi, meaning, columns, offset: int = 0) -> None:
    """Refuse a value that is not an integer in lo..hi; `values` is (rows,) or (rows, len(columns))."""
    v = values.astype(np.float64) if values.dtype == object else values
    bad = (v < lo) | (v > hi) | (v != np.round(v)) if v.dtype.kind == "f" else (v < lo) | (v > hi)
    if bad.any():
        idx = np.argwhere(bad)[0]
        col = columns[idx[1]] if len(idx) > 1 else columns[0]
        raise UserError(f"{role} file {path}: {what} {number(values[tuple(idx)])} at line {line(offset + int(idx[0]))}, "
                        f"column {shown(col)} is not an integer in {lo}..{hi} ({meaning}): correct it or drop the row")


@contextlib.contextmanager
def parse_errors(path, role: str, fix: str) -> Iterator[None]:
    """Every way pandas can fail on a file, as a one-line UserError naming it."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise UserError(f"{role} file {path} is empty (or its first lines are blank): {fix}") from None
    except pd.errors.ParserError as e:
        text = " ".join(str(e).split())
        if m := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text):
            detail = f"line {m[2]} has {m[3]} fields where the header has {m[1]}; every row needs one value per header column"
        elif m := re.search(r"EOF inside string starting at row (\d+)", text):  # pandas counts rows from 0
            detail = f'line {int(m[1]) + 1} opens a quote (") that is never closed: remove the stray quote'
        else:
            detail = f"{text[:200]}; every row needs one value per header column"
        raise UserError(f"{role} file {path}: {detail}") from None
    except (UnicodeDecodeError, OSError, EOFError, zipfile.BadZipFile, ValueError, OverflowError, csv.Error) as e:
        reason = " ".join(str(e).split())[:200]
        raise UserError(f"{role} file {path} is not a readable CSV ({type(e).__name__}: {reason}): "
                        "give a UTF-8 .csv file, or a .csv.gz / single-file .zip of one") from None


def shown(value) -> str:
    """A cell or a name for a message: quoted, at most SHOWN characters."""
    text = str(value)
    return repr(text if len(text) <= SHOWN else text[: SHOWN - 3] + "...")


def number(v) -> str:
    """A cell value as the user would write it: 256, 12.5, -1, inf (not np.float64(256.0))."""
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def line(row: int) -> int:
    """The file's 1-based line of data row `row` (0-based), after the header line."""
    return int(row) + 2
