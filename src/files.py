"""Atomic file writes: a killed run never leaves a half-written file under the final name."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = socket.gethostname().split(".")[0]
_OWNER = f"{_HOST}-{os.getpid()}"  # in temporary names: who may clean them up


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the final suffixes (".keras", ".weights.h5"): Keras picks the format by them.
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{_OWNER}.", suffix=f".tmp{suffixes}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the final file gets the usual permissions
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV (no index), atomically."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_json(path: str | Path, obj: object) -> Path:
    """Write an object as indented JSON, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale_temps(directory: str | Path, anyone: bool = False) -> None:
    """Delete temporary files left in `directory` by processes killed mid-write.

    Only files of dead processes on this host are removed (another live process may be about to
    rename its own), or every one when `anyone` is set (the caller holds the directory's lock).
    """
    for tmp in Path(directory).glob(".*.tmp*"):
        m = re.search(r"\.([^.]+)-(\d+)\.[^.]*\.tmp", tmp.name)
        if anyone or (m and m[1] == _HOST and not _alive(int(m[2]))):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if os.name != "posix":  # Windows' os.kill(pid, 0) would end the process: keep its files
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
