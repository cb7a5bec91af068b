"""Read one competition CSV into uint8 images, a block of lines at a time, checking every cell.

The header is read on its own first (duplicated names stay visible, and a file whose columns
cannot be images is refused before its body is read); the body then goes block by block into
one uint8 array grown in place (read_body): memory stays near the images themselves, never a
float64 copy of the whole table.
Every problem is a one-line UserError naming the file, its line (the header is line 1) and column.
"""
from __future__ import annotations

import contextlib
import csv
import io
import re
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
from pandas.io.common import get_handle

from src.errors import UserError

BLOCK_BYTES = 8 << 20  # of the file per block: the parse's working memory is a few times this
THREADS = 2  # blocks parsed at once (numpy releases the GIL)
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
    taken = set(pixels) | {label}
    others = [i for i in range(len(names)) if i not in taken]
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
    """Every row of the file after its header, checked, as uint8 images of `shape`.

    The file is read in blocks of whole lines. A block of plain unsigned integers of at most three
    digits (what competition files hold) is parsed with numpy alone, THREADS blocks at once; any
    other block (text labels or ids, quotes, decimals, blanks, a bad cell) goes through pandas,
    whose cell-by-cell checks name the first problem exactly.
    """
    images = np.empty((1024, *shape), np.uint8)
    labels, ids, rows = [], [], 0
    with ThreadPoolExecutor(THREADS) as pool:
        for window in _windows(_blocks(path, role, fix), THREADS):
            for block, part in zip(window, pool.map(lambda b: _fast(b, found), window)):
                pixels, label, ident = part or _exact(block, found, path, role, fix, rows)
                end = rows + len(pixels)
                if end > len(images):  # realloc: large blocks grow in place (mremap), no second copy
                    images.resize((max(end, 2 * len(images)), *shape), refcheck=False)
                images[rows:end] = pixels.reshape(-1, *shape)
                labels += [] if label is None else [label]
                ids += [] if ident is None else [ident]
                rows = end
    if rows == 0:
        raise UserError(f"{role} file {path} has a header but no rows: it needs at least one image per row")
    images.resize((rows, *shape), refcheck=False)
    return Parsed(images, label_values(np.concatenate(labels), path, role, found.names[found.label]) if labels else None,
                  id_values(np.concatenate(ids)) if ids else None,
                  found.names[found.id_column] if found.id_column is not None else None)


def plain_integers(block: bytes, columns: int) -> np.ndarray | None:
    """The cells of `block` (whole lines of `columns` comma-separated cells) as uint16 (rows,
    columns) when every cell is 1 to 3 digits, else None. Vectorized: the cell ends are the bytes
    below '0', and each value is read from the up to three digits before its end."""
    buf = np.frombuffer(block, np.uint8)
    if np.count_nonzero(buf > ord("9")):
        return None
    ends = np.flatnonzero(buf < ord("0"))
    term = buf[ends]
    newline = term == ord("\n")
    if len(ends) % columns or not (newline | (term == ord(","))).all():
        return None
    if not newline[columns - 1::columns].all() or np.count_nonzero(newline) != len(ends) // columns:
        return None
    digits = np.diff(ends, prepend=-1) - 1
    if digits.min() < 1 or digits.max() > 3:
        return None
    values = (buf[ends - 1] - ord("0")).astype(np.uint16)
    for place, scale in ((2, 10), (3, 100)):
        more = digits >= place
        values[more] += scale * (buf[ends[more] - place] - ord("0")).astype(np.uint16)
    return values.reshape(-1, columns)


def _fast(block: bytes, found: Layout) -> tuple | None:
    """(pixels, labels, ids) of a block that `plain_integers` reads; None when it cannot, or when
    a pixel is over 255 (the exact parser then names it)."""
    values = plain_integers(block, len(found.names))
    if values is None:
        return None
    first = found.pixels[0]
    contiguous = found.pixels[-1] - first + 1 == len(found.pixels)
    pixels = values[:, first:first + len(found.pixels)] if contiguous else values[:, found.pixels]
    if pixels.max(initial=0) > 255:
        return None
    label = values[:, found.label].astype(np.int64) if found.label is not None else None
    ident = values[:, found.id_column].astype(np.int64) if found.id_column is not None else None
    return pixels, label, ident  # uint16 under 256: stored into the uint8 images as they are


def _exact(block: bytes, found: Layout, path, role: str, fix: str, offset: int) -> tuple:
    """(pixels, labels, ids) of a block through pandas, every cell checked (`offset`: rows before it)."""
    text = {i: str for i in (found.label, found.id_column) if i is not None}
    with parse_errors(path, role, fix, offset), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        chunk = pd.read_csv(io.BytesIO(block), header=None, names=range(len(found.names)), index_col=False,
                            skip_blank_lines=False, dtype=text, encoding="utf-8")
    if any("Length of header" in str(w.message) for w in caught):  # pandas would drop the extra field
        raise UserError(f"{role} file {path}: line {line(offset)} has more fields than the {len(found.names)} of the "
                        "header; every row needs one value per header column")
    pixels = _pixels(chunk, found, path, role, offset)
    columns = [(found.label, "label"), (found.id_column, "id")]
    label, ident = (None if i is None else present(chunk[i], found.names[i], what, path, role, offset) for i, what in columns)
    return pixels, label, ident


def _blocks(path, role: str, fix: str) -> Iterator[bytes]:
    """The file's bytes after its header line (decompressed), in blocks of about BLOCK_BYTES that
    end at a line end."""
    with parse_errors(path, role, fix), get_handle(path, "rb", compression="infer", is_text=False) as handle:
        stream, rest = handle.handle, b""
        stream.readline()
        while block := stream.read(BLOCK_BYTES):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
        if rest.strip(b"\r\n"):
            yield rest + b"\n"


def _windows(blocks: Iterator[bytes], n: int) -> Iterator[list[bytes]]:
    """`blocks` n at a time: the threads' work, and all of the file that is in memory at once."""
    window = []
    for block in blocks:
        window.append(block)
        if len(window) == n:
            yield window
            window = []
    if window:
        yield window


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
def parse_errors(path, role: str, fix: str, offset: int | None = None) -> Iterator[None]:
    """Every way pandas can fail on a file, as a one-line UserError naming it. `offset`: when
    pandas was given a block of the file's data lines, the data rows before it (pandas then counts
    the block's lines from 1); None when it read the whole file, header included."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise UserError(f"{role} file {path} is empty (or its first lines are blank): {fix}") from None
    except pd.errors.ParserError as e:
        text = " ".join(str(e).split())
        if m := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text):
            at = int(m[2]) if offset is None else line(offset + int(m[2]) - 1)
            detail = f"line {at} has {m[3]} fields where the header has {m[1]}; every row needs one value per header column"
        elif m := re.search(r"EOF inside string starting at row (\d+)", text):  # pandas counts rows from 0
            at = int(m[1]) + 1 if offset is None else line(offset + int(m[1]))
            detail = f'line {at} opens a quote (") that is never closed: remove the stray quote'
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
