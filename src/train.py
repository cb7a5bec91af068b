"""Train one fold: build the model under the strategy, fit with a best-epoch checkpoint,
reload the best weights and predict the fold's validation rows and the test set."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig

from src import augment
from src.files import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT = "model.keras"
HISTORY = "history.csv"
PREDICTIONS = "predictions.npz"


@dataclass
class FoldResult:
    """What one fold leaves behind for the ensemble."""

    fold: int  # 1-based
    val_index: np.ndarray
    val_probs: np.ndarray
    test_probs: np.ndarray
    accuracy: float
    best_epoch: int  # 1-based
    seconds: float


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
        self.head = f"fold {fold}/{folds}"
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
    """Fit fold `fold` (1-based) on `data` = (x_train, y_train, x_val, y_val, x_test); save to `fold_dir`.

    `precision` is a Keras dtype policy name (see `src.strategy.resolve_precision`).
    """
    x_tr, y_tr, x_va, y_va, x_test = data
    start = time.perf_counter()
    fold_dir.mkdir(parents=True, exist_ok=True)
    keras.backend.clear_session()  # also resets the dtype policy, so set it after
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(cfg.seed + fold)
    with strategy.scope():
        model = instantiate(cfg.model)(input_shape=x_tr.shape[1:], num_classes=num_classes)
        model.compile(
            optimizer=instantiate(cfg.optimizer)(),
            loss="categorical_crossentropy",
            weighted_metrics=["accuracy"],  # weighted, so padded validation rows (weight 0) don't count
        )
    steps = augment.steps_per_epoch(len(x_tr), cfg.batch_size)
    checkpoint = fold_dir / CHECKPOINT
    base_lr, decay = cfg.optimizer.learning_rate, cfg.schedule.decay
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_accuracy", mode="max", save_best_only=True),
        keras.callbacks.LearningRateScheduler(lambda epoch: base_lr * decay**epoch),
        keras.callbacks.CSVLogger(fold_dir / HISTORY),
    ]
    if cfg.verbose:
        callbacks.append(Progress(fold, cfg.fold, cfg.epochs, steps, cfg.batch_size, clock))
    history = model.fit(
        augment.train_dataset(x_tr, y_tr, cfg.augment, cfg.batch_size, num_classes, cfg.seed + fold),
        epochs=cfg.epochs,
        steps_per_epoch=steps,
        validation_data=augment.eval_dataset(x_va, y_va, cfg.batch_size, num_classes),
        callbacks=callbacks,
        verbose=0,
    )
    model.load_weights(checkpoint)
    val_probs = augment.predict(model, x_va, cfg.batch_size)
    test_probs = augment.predict(model, x_test, cfg.batch_size)
    accuracy = float(np.mean(val_probs.argmax(1) == y_va))
    best_epoch = int(np.argmax(history.history["val_accuracy"])) + 1
    atomic_write(fold_dir / PREDICTIONS, lambda tmp: _save_npz(tmp, val_index=val_index, val_probs=val_probs, test_probs=test_probs))
    return FoldResult(fold, val_index, val_probs, test_probs, accuracy, best_epoch, time.perf_counter() - start)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
        np.savez(f, **arrays)
