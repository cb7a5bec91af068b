"""The parse cache: a parsed CSV kept as plain arrays, keyed by its content, never a pickle.

An entry is a folder `<cache_dir>/<key>/` holding `images.npy` (uint8), the labels and ids as
`.npy` (integers, never unpickled) or `.json` (text), and `entry.json` with the SHA-256 of each
64 MiB piece of each of them. Nothing in it can run code, whoever wrote it; an entry whose files do
not match entry.json is ignored and rebuilt. Entries are written whole under a temporary name,
then renamed. Caches of older versions (joblib pickles) are never read: they are simply rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import mmap
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from src.inputs.csv_file import Parsed

log = logging.getLogger(__name__)

VERSION = 2  # 1: joblib.Memory pickles (before 2026-12)
PIECE = 64 << 20  # bytes per SHA-256 of an entry's file
THREADS = 2
ENTRY = "entry.json"


def key(*parts) -> str:
    """An entry's name for what it was parsed from (the file's SHA-256, the role, the shape)."""
    return hashlib.sha256(json.dumps([VERSION, *parts]).encode()).hexdigest()[:32]


def cached(cache_dir: str | Path | None, name: str, parse: Callable[[], Parsed], pending: list | None = None) -> Parsed:
    """`parse()`, or what an earlier call with the same `name` stored in `cache_dir` (None: no cache).
    A new parse is stored at once, or, with `pending`, added to it for `commit` to store once
    every file of the data set has passed its checks (a refused data set leaves no cache)."""
    if not cache_dir:
        return parse()
    entry = Path(cache_dir) / name
    found = load(entry)
    if found is not None:
        return found
    parsed = parse()  # a UserError is never stored
    if pending is None:
        commit([(entry, parsed)])
    else:
        pending.append((entry, parsed))
    return parsed


def commit(pending: list[tuple[Path, Parsed]]) -> None:
    """Store the parses `cached` left pending."""
    for entry, parsed in pending:
        try:
            store(entry, parsed)
        except OSError as e:  # a full or read-only cache costs time, not the run
            log.warning("cannot write the parse cache %s (%s): going on without it", entry, e.strerror or e)


def load(entry: Path) -> Parsed | None:
    """The entry's arrays, or None when it is missing, damaged or not what entry.json records."""
    try:
        record = json.loads((entry / ENTRY).read_text())
        if record.get("version") != VERSION:
            return None
        arrays = {Path(name).stem: _read(entry / name, digest) for name, digest in record["sha256"].items()}
        return Parsed(arrays["images"], arrays.get("labels"), arrays.get("ids"), record.get("id_column"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.info("parse cache entry %s is not usable (%s): parsing again", entry, e)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def store(entry: Path, parsed: Parsed) -> None:
    """Write `parsed` as the entry (a temporary folder renamed into place)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        names = [_write(tmp, "images", parsed.images)]
        names += [_write(tmp, role, values) for role, values in (("labels", parsed.labels), ("ids", parsed.ids))
                  if values is not None]
        record = {"version": VERSION, "id_column": parsed.id_column,
                  "sha256": {n: file_pieces(tmp / n) for n in names}}
        (tmp / ENTRY).write_text(json.dumps(record, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process stored the same entry first
            if not (entry / ENTRY).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(folder: Path, role: str, values: np.ndarray) -> str:
    if values.dtype == object:
        name = f"{role}.json"
        (folder / name).write_text(json.dumps([str(v) for v in values]))
    else:
        name = f"{role}.npy"
        np.save(folder / name, values, allow_pickle=False)
    return name


def _read(path: Path, digest: str) -> np.ndarray:
    """One file of an entry, mapped once (copy-on-write: the array is this process's own to
    change): its bytes are hashed (ValueError unless they are `digest`) and then viewed as the
    array, never unpickled. Mapping the file costs no copy: a 784 MB entry is checked and ready in
    the time its hash takes, where reading it into fresh memory took 0.2-1.8 s more."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError(f"{path.name} is empty")
        data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY), np.uint8)
    if pieces(data) != digest:
        raise ValueError(f"{path.name} does not match its SHA-256")
    data = data.tobytes() if path.suffix == ".json" else data
    if path.suffix == ".json":
        values = json.loads(data)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{path.name} is not a list of strings")
        return np.array(values, dtype=object)
    header = io.BytesIO(data[: 1 << 17].tobytes())  # the header alone (at most 64 KiB in any npy version)
    version = np.lib.format.read_magic(header)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(header)
    if dtype.hasobject or fortran:
        raise ValueError(f"{path.name} holds {dtype} objects: an entry holds numbers only")
    return data[header.tell():].view(dtype)[: math.prod(shape)].reshape(shape)


def file_pieces(path: Path) -> list[str]:
    """`pieces` of a file's bytes, each piece read (pread) by the thread that hashes it: the file is
    never in this process's memory whole (a 784 MB entry written by src.predict added 0.8 GB to
    its peak when it was read back to be hashed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(lambda i: hashlib.sha256(os.pread(fd, PIECE, i)).hexdigest(),
                                 range(0, max(size, 1), PIECE)))
    finally:
        os.close(fd)


def pieces(data) -> list[str]:
    """The SHA-256 of each PIECE bytes of `data`, hashed on THREADS threads (hashlib lets go of the
    GIL): a large entry is checked in a fraction of the time one hash would take."""
    view = memoryview(data).cast("B")
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda i: hashlib.sha256(view[i:i + PIECE]).hexdigest(), range(0, max(len(view), 1), PIECE)))
