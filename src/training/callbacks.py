"""What a fold's fit reports while it runs: one progress line per epoch with the whole run's
ETA, and TensorBoard logs."""
from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from pathlib import Path

import keras

from src import rundir

log = logging.getLogger(__name__)


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


def tensorboard(run_dir: Path, fold: int) -> keras.callbacks.TensorBoard:
    """Fold `fold`'s per-epoch TensorBoard log; a resumed fold goes on writing into the same dir."""
    return keras.callbacks.TensorBoard(
        log_dir=str(rundir.tensorboard_dir(run_dir, fold)), write_graph=False, profile_batch=0, update_freq="epoch"
    )
