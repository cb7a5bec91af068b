"""Train one fold: build the model under the strategy, fit with a best-epoch checkpoint and a
per-epoch backup, reload the best weights and predict the fold's validation rows and the test set.

While fold k trains, `fold_k/train/` holds its state, committed at the end of every epoch:

    state.json              epoch reached, best epoch and val_accuracy so far, history rows
    last-<e>.weights.h5     weights and optimizer state after epoch e (to resume from)
    best-<e>.keras          the best model so far

Both files are written (atomically) before state.json is renamed over the old one, so a process
killed at any moment resumes from the last finished epoch, with the learning-rate schedule, the
optimizer's moments and the best-so-far val_accuracy carried over. When the fold finishes, its
best model becomes `fold_k/model.keras`, and `done.json` (written last) marks it complete.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig

from src import augment, multi_worker, runstate, tracking
from src.files import atomic_write, remove_stale_temps, sha256, write_csv, write_json

log = logging.getLogger(__name__)

STATE = "state.json"


@dataclass
class FoldResult:
    """What one fold leaves behind for the ensemble."""

    fold: int  # 0-based
    val_index: np.ndarray
    val_labels: np.ndarray
    val_probs: np.ndarray
    test_probs: np.ndarray
    accuracy: float
    best_epoch: int  # 1-based
    seconds: float
    val_probs_plain: np.ndarray | None = None  # without test-time augmentation, when tta > 0

    @classmethod
    def load(cls, fold: int, record: dict) -> "FoldResult":
        """From `runstate.load_complete`'s record of a finished fold."""
        return cls(fold, record["val_index"], record["val_labels"], record["val_probs"], record["test_probs"],
                   float(record["accuracy"]), int(record["best_epoch"]), float(record["seconds"]),
                   record.get("val_probs_plain"))


class RunClock:
    """Counts finished epochs across all folds to give the whole run's ETA."""

    def __init__(self, folds: int, epochs: int) -> None:
        self.total = folds * epochs
        self.done = 0
        self.seconds = 0.0

    def eta(self) -> str:
        left = (self.seconds / self.done) * (self.total - self.done) if self.done else 0.0
        return str(timedelta(seconds=round(left)))


class Progress(keras.callbacks.Callback):
    """One line per epoch (fold, epoch, loss, val_accuracy, images/s, run ETA), live on a terminal."""

    def __init__(self, fold: int, folds: int, epochs: int, steps: int, batch_size: int, clock: RunClock) -> None:
        super().__init__()
        self.head = f"fold {fold} of {folds}"
        self.epochs, self.steps, self.batch_size, self.clock = epochs, steps, batch_size, clock
        self.live = sys.stdout.isatty()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        self.start = self.last_batch = self.last_draw = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch = time.perf_counter()
        if self.live and self.last_batch - self.last_draw > 0.5:
            self.last_draw = self.last_batch
            rate = (batch + 1) * self.batch_size / (self.last_batch - self.start)
            sys.stdout.write(
                f"\r\033[K{self.head} epoch {self.epoch}/{self.epochs} step {batch + 1}/{self.steps} "
                f"loss {logs['loss']:.4f} {rate:,.0f} img/s"
            )
            sys.stdout.flush()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.clock.done += 1
        self.clock.seconds += now - self.start
        rate = self.steps * self.batch_size / max(self.last_batch - self.start, 1e-9)
        if self.live:
            sys.stdout.write("\r\033[K")
        log.info(
            "%s epoch %d/%d loss %.4f val_accuracy %.4f %s img/s ETA %s",
            self.head, self.epoch, self.epochs, logs["loss"], logs["val_accuracy"],
            f"{rate:,.0f}", self.clock.eta(),
        )


def train_fold(
    fold: int,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    val_index: np.ndarray,
    cfg: DictConfig,
    strategy: tf.distribute.Strategy,
    fold_dir: Path,
    clock: RunClock,
    num_classes: int,
    precision: str = "float32",
) -> FoldResult:
    """Fit fold `fold` (0-based) on `data` = (x_train, y_train, x_val, y_val, x_test) into `fold_dir`.

    Resumes from `fold_dir/train/` when an earlier process left state there. `precision` is a
    Keras dtype policy name (see `src.strategy.resolve_precision`).
    """
    x_tr, y_tr, x_va, y_va, x_test = data
    start = time.perf_counter()
    state_dir = fold_dir / "train"
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(fold_dir, anyone=True)  # the caller holds the fold's lock
    remove_stale_temps(state_dir, anyone=True)
    keras.backend.clear_session()  # also resets the dtype policy, so set it after
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(cfg.seed + fold)
    with strategy.scope():
        model = instantiate(cfg.model)(input_shape=x_tr.shape[1:], num_classes=num_classes)
        model.compile(
            optimizer=instantiate(cfg.optimizer)(),
            loss=cfg.loss,
            # weighted, so padded validation rows (weight 0) don't count; argmax-based whatever the loss
            weighted_metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            steps_per_execution=cfg.steps_per_execution,
        )
        state = _restore(model, state_dir, fold)
    initial_epoch, earlier_seconds = state["epoch"], state.get("seconds", 0.0)
    clock.total -= initial_epoch
    steps = augment.steps_per_epoch(len(x_tr), cfg.batch_size)
    base_lr, decay = cfg.optimizer.learning_rate, cfg.schedule.decay
    callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch: base_lr * decay**epoch),
        FoldCheckpoint(state_dir, state),
    ]
    if cfg.tensorboard:
        callbacks.append(tracking.tensorboard_callback(fold_dir.parent, fold))
    if cfg.verbose:
        callbacks.append(Progress(fold, cfg.fold, cfg.epochs, steps, cfg.batch_size, clock))
    train_data = augment.train_dataset(x_tr, y_tr, cfg.augment, cfg.batch_size, num_classes, cfg.seed + fold, initial_epoch)
    if multi_worker.is_multi_worker(strategy):
        multi_worker.prepare(model, strategy, train_data)
    if initial_epoch < cfg.epochs:
        model.fit(
            train_data,
            epochs=cfg.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=augment.eval_dataset(x_va, y_va, cfg.batch_size, num_classes),
            callbacks=callbacks,
            shuffle=False,  # the dataset shuffles itself, per epoch
            verbose=0,
        )
    if "best_file" not in state:
        raise RuntimeError(f"fold {fold}: no epoch produced a finite val_accuracy (training diverged): lower optimizer.learning_rate")
    best = state_dir / state["best_file"]
    model.load_weights(best)
    if multi_worker.is_multi_worker(strategy):  # every worker predicts everything, on its own
        model = keras.models.load_model(best, compile=False)
    views, seed = cfg.tta, cfg.seed + fold
    val_plain = augment.predict(model, x_va, cfg.batch_size)
    val_probs = augment.predict(model, x_va, cfg.batch_size, views, cfg.augment, seed) if views else val_plain
    test_probs = augment.predict(model, x_test, cfg.batch_size, views, cfg.augment, seed + 1_000_003)
    accuracy = float(np.mean(val_probs.argmax(1) == y_va))
    accuracy_plain = float(np.mean(val_plain.argmax(1) == y_va))
    seconds = earlier_seconds + time.perf_counter() - start
    atomic_write(fold_dir / runstate.MODEL, lambda tmp: shutil.copyfile(best, tmp))
    atomic_write(fold_dir / runstate.PREDICTIONS, lambda tmp: _save_npz(
        tmp, val_index=val_index, val_labels=y_va, val_probs=val_probs, val_probs_plain=val_plain, test_probs=test_probs))
    runstate.mark_complete(fold_dir, {"fold": fold, "accuracy": accuracy, "accuracy_plain": accuracy_plain,
                                      "best_epoch": state["best_epoch"], "seconds": round(seconds, 1)})
    shutil.rmtree(state_dir, ignore_errors=True)
    return FoldResult(fold, val_index, y_va, val_probs, test_probs, accuracy, state["best_epoch"], seconds, val_plain)


class FoldCheckpoint(keras.callbacks.Callback):
    """At each epoch's end: the best model so far, the latest weights, then state.json (the commit)."""

    def __init__(self, state_dir: Path, state: dict) -> None:
        super().__init__()
        self.dir, self.state = state_dir, state

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        e, state = epoch + 1, self.state
        row = {"epoch": e, **{k: float(v) for k, v in logs.items()}}
        if row["val_accuracy"] > state["best_val_accuracy"]:
            best = f"best-{e}.keras"
            atomic_write(self.dir / best, self.model.save)
            state.update(best_file=best, best_epoch=e, best_val_accuracy=row["val_accuracy"], best_sha256=sha256(self.dir / best))
        last = f"last-{e}.weights.h5"
        atomic_write(self.dir / last, self.model.save_weights)
        state.update(epoch=e, last_file=last, last_sha256=sha256(self.dir / last))
        state["history"].append(row)
        state["seconds"] = state.get("seconds", 0.0) + time.perf_counter() - self.start
        write_json(self.dir / STATE, state)
        for old in self.dir.iterdir():
            if old.name not in (STATE, state["best_file"], state["last_file"]):
                old.unlink(missing_ok=True)
        write_csv(self.dir.parent / runstate.HISTORY, pd.DataFrame(state["history"]))


def _restore(model: keras.Model, state_dir: Path, fold: int) -> dict:
    """Load the state an interrupted run left in `state_dir` into `model`; a fresh state if none.

    A state whose files are missing or do not match their recorded hashes (a damaged disk, a
    copy cut short) is reported and dropped: the fold then starts again from epoch 0.
    """
    fresh = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "history": []}
    path = state_dir / STATE
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
        for kind in ("last", "best"):
            if sha256(state_dir / state[f"{kind}_file"]) != state[f"{kind}_sha256"]:
                raise ValueError(f"{state[f'{kind}_file']} does not match its recorded SHA-256")
        model.optimizer.build(model.trainable_variables)
        model.load_weights(state_dir / state["last_file"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("fold %d: the saved training state in %s is damaged (%s): training the fold from the start", fold, state_dir, e)
        for f in state_dir.iterdir():
            f.unlink()
        return fresh
    log.info("fold %d: resuming after epoch %d (best val_accuracy %.4f at epoch %d)", fold, state["epoch"], state["best_val_accuracy"], state["best_epoch"])
    return state


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
        np.savez(f, **arrays)
