"""A fold's training state, committed at the end of every epoch so a killed fold resumes.

While fold k trains, `fold_k/train/` holds:

    state.json              epoch reached, best epoch and val_accuracy so far, history rows
    last-<e>.weights.h5     weights and optimizer state after epoch e (to resume from)
    best-<e>.keras          the best model so far
    <name>-<e>.npz          the state of a callback that keeps one (`checkpoint_name`,
                            `state_arrays()`, `load_state_arrays()`: src.training.swa's average)

Both files are written (atomically) before state.json is renamed over the old one, so a process
killed at any moment resumes from the last finished epoch, with the learning-rate schedule, the
optimizer's moments and the best-so-far val_accuracy carried over.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from src import rundir
from src.files import atomic_write, sha256, write_csv, write_json

log = logging.getLogger(__name__)


class FoldCheckpoint(keras.callbacks.Callback):
    """At each epoch's end: the best model so far, the latest weights, the state of the callbacks
    in `parts` (those with a `checkpoint_name`), then state.json (the commit). Made with a
    resumed fold's state, it gives each part the arrays it left."""

    def __init__(self, state_dir: Path, state: dict, parts: list | None = None) -> None:
        super().__init__()
        self.dir, self.state, self.parts = state_dir, state, list(parts or [])
        for part in self.parts:
            saved = state.get("parts", {}).get(part.checkpoint_name)
            if saved:
                with np.load(self.dir / saved["file"], allow_pickle=False) as arrays:
                    part.load_state_arrays({k: arrays[k] for k in arrays.files})

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        e, state = epoch + 1, self.state
        row = {"epoch": e, **{k: float(v) for k, v in logs.items()}, "seconds": round(time.perf_counter() - self.start, 3)}
        if row["val_accuracy"] > state["best_val_accuracy"]:
            best = f"best-{e}.keras"
            atomic_write(self.dir / best, self.model.save)
            state.update(best_file=best, best_epoch=e, best_val_accuracy=row["val_accuracy"], best_sha256=sha256(self.dir / best))
        last = f"last-{e}.weights.h5"
        atomic_write(self.dir / last, self.model.save_weights)
        state.update(epoch=e, last_file=last, last_sha256=sha256(self.dir / last))
        for part in self.parts:
            name = f"{part.checkpoint_name}-{e}.npz"
            atomic_write(self.dir / name, lambda tmp: save_arrays(tmp, **part.state_arrays()))
            state.setdefault("parts", {})[part.checkpoint_name] = {"file": name, "sha256": sha256(self.dir / name)}
        state["history"].append(row)
        state["seconds"] = state.get("seconds", 0.0) + time.perf_counter() - self.start  # the row's seconds miss the writes
        write_json(self.dir / rundir.STATE, state)
        for old in self.dir.iterdir():
            if old.name not in (rundir.STATE, state["best_file"], state["last_file"], *kept_parts(state)):
                old.unlink(missing_ok=True)
        write_csv(self.dir.parent / rundir.HISTORY, pd.DataFrame(state["history"]))


def kept_parts(state: dict) -> list[str]:
    """The files of the callbacks' states that `state` commits."""
    return [saved["file"] for saved in state.get("parts", {}).values()]


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Arrays into an .npz file at exactly `path`."""
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
        np.savez(f, **arrays)


def saved_precision(state_dir: Path) -> str | None:
    """The dtype policy an interrupted fold's state was trained in (None: no state, or one saved
    before 2026-12, which did not record it)."""
    try:
        return json.loads((state_dir / rundir.STATE).read_text()).get("precision")
    except (OSError, ValueError, AttributeError):
        return None


def restore(model: keras.Model, state_dir: Path, fold: int, precision: str) -> dict:
    """Load the state an interrupted run left in `state_dir` into `model`; a fresh state (in
    `precision`, the model's dtype policy) if none.

    A state whose files are missing or do not match their recorded hashes (a damaged disk, a
    copy cut short) is reported and dropped: the fold then starts again from epoch 0.
    """
    fresh = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "history": [], "precision": precision}
    path = state_dir / rundir.STATE
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
        if state.setdefault("precision", precision) != precision:  # src.training.fold resumes it in its own
            raise ValueError(f"it was trained in {state['precision']}, the model is built in {precision}")
        saved = [(state[f"{kind}_file"], state[f"{kind}_sha256"]) for kind in ("last", "best")]
        for name, hashed in saved + [(p["file"], p["sha256"]) for p in state.get("parts", {}).values()]:
            if sha256(state_dir / name) != hashed:
                raise ValueError(f"{name} does not match its recorded SHA-256")
        model.optimizer.build(model.trainable_variables)
        model.load_weights(state_dir / state["last_file"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("fold %d: the saved training state in %s is damaged (%s): training the fold from the start", fold, state_dir, e)
        for f in state_dir.iterdir():
            f.unlink()
        return fresh
    log.info("fold %d: resuming after epoch %d (best val_accuracy %.4f at epoch %d)", fold, state["epoch"], state["best_val_accuracy"], state["best_epoch"])
    return state


def read_history(fold_dir: Path) -> list[dict]:
    """A fold's history.csv (one row per finished epoch) as dicts; [] while it has none."""
    try:
        return pd.read_csv(fold_dir / rundir.HISTORY).to_dict("records")
    except (OSError, ValueError):  # not written yet (pandas' EmptyDataError is a ValueError)
        return []


def epoch_seconds(fold_dirs: list[Path], traced: bool = False) -> float | None:
    """The median wall time of the epochs the folds in `fold_dirs` have committed (history.csv,
    without the checkpoint's writes), their first epochs left out (they trace the steps) unless
    `traced`; None before any such epoch."""
    seconds = [row["seconds"] for fold_dir in fold_dirs for row in read_history(fold_dir)
               if (traced or row["epoch"] > 1) and row.get("seconds", 0) > 0]
    return float(np.median(seconds)) if seconds else None


def epochs_committed(fold_dir: Path) -> int:
    """How many epochs of an unfinished fold are committed (what a resume starts after)."""
    try:
        return int(json.loads((fold_dir / rundir.TRAIN_STATE / rundir.STATE).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
