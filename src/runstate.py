"""What a run dir holds on disk: which run it is, which folds are complete, who is training what.

    run.json            written once, by the first process: the config keys that change results,
                        the data files' SHA-256, package versions. Every later process (a resume,
                        a parallel fold job) must match it or is refused.
    fold_<k>/done.json  written last when fold k finishes: its scores and the SHA-256 of its
                        model.keras and predictions.npz. A fold is complete only when the hashes match.
    fold_<k>/.lock      held (flock) while a process trains fold k; the kernel frees it if the process dies.

Every file is written to a temporary name and renamed, so a process killed at any moment leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import shutil
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterator

import numpy as np
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.files import atomic_write, sha256, write_json

log = logging.getLogger(__name__)

RUN = "run.json"
DONE = "done.json"
MODEL = "model.keras"
PREDICTIONS = "predictions.npz"
HISTORY = "history.csv"

# Keys that cannot change a run's results: a resume or a fold job may differ in these.
# The data paths are compared by content instead (run.json's "data").
VOLATILE = (
    "verbose", "fold_index", "strategy", "threads", "deterministic", "steps_per_execution", "tensorboard", "logger",
    "data.train", "data.train_labels", "data.test", "data.test_labels", "data.cache_dir", "data.sample",
)
PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "hydra-core", "joblib")


def finished_config(run_dir: Path) -> dict:
    """The recorded config of a finished run of src.cv (every fold complete); UserError otherwise."""
    try:
        config = json.loads((run_dir / RUN).read_text())["resolved_config"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{run_dir} is not a run dir of src.cv (no readable {RUN}: {e})") from None
    folds = int(config["fold"])
    missing = [k for k in range(folds) if load_complete(fold_dir(run_dir, k)) is None]
    if missing:
        raise UserError(f"{run_dir}: fold(s) {missing} of {folds} are not complete: finish the run first "
                        f"(python -m src.cv hydra.run.dir={run_dir} with its settings)")
    return config


def fold_dir(run_dir: Path, k: int) -> Path:
    """Where fold k (0-based) keeps its checkpoint, history, predictions and training state."""
    return run_dir / f"fold_{k}"


def identity(cfg: DictConfig, digests: dict[str, str]) -> dict:
    """The run's identity: every config key that changes results, and the data it was trained on."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    keys = {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in VOLATILE)}
    return {"config": keys, "data": dict(digests)}


def claim(run_dir: Path, ident: dict, cfg: DictConfig, rows: dict[str, int]) -> None:
    """Record the run's identity in `run_dir`, or check it against the one recorded there.

    Refuses (UserError) a run dir that belongs to other data, or whose recorded config differs in
    a key that changes results, naming the keys. Safe when several fold jobs start at once.
    """
    path = run_dir / RUN
    record = {
        **ident,
        "rows": rows,
        "resolved_config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
    }
    if not path.exists():
        tmp = atomic_write(run_dir / f".{RUN}.{os.getpid()}", lambda t: t.write_text(json.dumps(record, indent=2) + "\n"))
        try:
            os.link(tmp, path)  # fails if another process got there first: then compare with theirs
            log.info("new run in %s", run_dir)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}): this is not a run dir of this tool; choose another hydra.run.dir") from None
    if recorded.get("data") != ident["data"]:
        raise UserError(
            f"{run_dir} belongs to a run on different data (train/test file contents differ from "
            f"{path}'s SHA-256): point data.train/data.test at that run's files, or choose another hydra.run.dir"
        )
    old, new = recorded.get("config", {}), ident["config"]
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k, '<unset>')!r} → {new.get(k, '<unset>')!r}" for k in changed[:8])
        raise UserError(
            f"{run_dir} holds a run with a different config ({detail}{', …' if len(changed) > 8 else ''}): "
            "resume it with its own settings, or choose another hydra.run.dir for the new ones"
        )
    if recorded.get("versions") != record["versions"]:
        log.warning("package versions differ from the ones %s was started with (%s)", run_dir, path)


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages that decide a run's numbers."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_writable(run_dir: Path, need_bytes: int) -> None:
    """Fail before training when the run dir cannot be written or the disk cannot hold the run."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / ".write-test", lambda t: t.write_bytes(b"ok")).unlink()
    except OSError as e:
        raise UserError(f"cannot write to the run dir {run_dir} ({e.strerror or e}): choose a writable hydra.run.dir") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise UserError(
            f"only {free / 2**20:,.0f} MiB free on the disk of {run_dir}, and this run needs about "
            f"{need_bytes / 2**20:,.0f} MiB: free some space or choose another hydra.run.dir"
        )


def mark_complete(fdir: Path, summary: dict) -> None:
    """Write fold_dir/done.json (last): the fold's scores and the hashes of its results."""
    hashes = {name: sha256(fdir / name) for name in (MODEL, PREDICTIONS)}
    write_json(fdir / DONE, {**summary, "sha256": hashes})


def load_complete(fdir: Path) -> dict | None:
    """A complete fold's done.json and predictions, or None if it must be (re)trained.

    A fold whose files do not match the hashes in done.json (a truncated or edited checkpoint)
    is reported with a warning and its done.json removed, so it is retrained.
    """
    done_path = fdir / DONE
    if not done_path.exists():
        return None
    try:
        done = json.loads(done_path.read_text())
        bad = [name for name, digest in done["sha256"].items() if not (fdir / name).is_file() or sha256(fdir / name) != digest]
    except (OSError, ValueError, KeyError, TypeError) as e:
        bad = [f"{DONE} ({e})"]
    if not bad:
        with np.load(fdir / PREDICTIONS) as z:
            return {**done, **{k: z[k] for k in z.files}}
    log.warning("fold %s is damaged (%s missing or not what was written): training it again", fdir.name, ", ".join(bad))
    done_path.unlink(missing_ok=True)
    return None


@contextmanager
def fold_lock(fdir: Path) -> Iterator[bool]:
    """Hold fold_dir/.lock while training it; yields False if another live process holds it."""
    fdir.mkdir(parents=True, exist_ok=True)
    with open(fdir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        try:
            f.seek(0), f.truncate(), f.write(f"{os.getpid()}\n"), f.flush()
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def flatten(tree, prefix: str = "") -> dict:
    """A nested config as one level of dotted keys: {"model.dropout": 0.4, ...}."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}
