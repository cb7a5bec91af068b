"""What a fold's fit reports while it runs: one progress line per epoch with the whole run's
ETA, and TensorBoard logs; and what keeps it within a time_limit (`Deadline`)."""
from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable

import keras
from hydra.utils import instantiate
from omegaconf import DictConfig

from src import rundir
from src.errors import UserError
from src.rundir import FoldResult
from src.training.budget import FoldDeadline
from src.runtime.backend import installed

log = logging.getLogger(__name__)


class RunClock:
    """The whole run's ETA from the epochs finished so far across all folds and the wall time
    they took since the clock started: right whether folds run one after another or overlap.
    While fewer epochs than `parallel` (folds at once) are done, the others are taken as about
    done too."""

    def __init__(self, epochs_to_train: int, parallel: int = 1) -> None:
        self.total = epochs_to_train
        self.done = 0
        self.parallel = parallel
        self.start = time.perf_counter()

    def eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        left = elapsed / max(self.done, self.parallel) * max(self.total - self.done, 0) if self.done else 0.0
        return str(timedelta(seconds=round(left)))


def epoch_line(fold: int, folds: int, epoch: int, epochs: int, loss: float, val_accuracy: float,
               rate: float | None, eta: str) -> str:
    """One epoch's progress line, the same whether the fold trains here or in a fold job."""
    speed = f"{rate:,.0f} img/s " if rate else ""
    return f"fold {fold} of {folds} epoch {epoch}/{epochs} loss {loss:.4f} val_accuracy {val_accuracy:.4f} {speed}ETA {eta}"


def fold_line(result: FoldResult, folds: int) -> str:
    """A finished fold's line, the same whether it trained here or in a fold job."""
    return f"fold {result.fold} of {folds} accuracy {result.accuracy:.4f} (best epoch {result.best_epoch}, {result.seconds:.0f} s)"


class Progress(keras.callbacks.Callback):
    """One line per epoch (fold, epoch, loss, val_accuracy, images/s, run ETA), live on a terminal."""

    def __init__(self, fold: int, folds: int, epochs: int, steps: int, batch_size: int, clock: RunClock) -> None:
        super().__init__()
        self.fold, self.folds, self.head = fold, folds, f"fold {fold} of {folds}"
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
        self.clock.done += 1
        rate = self.steps * self.batch_size / max(self.last_batch - self.start, 1e-9)
        if self.live:
            sys.stdout.write("\r\033[K")
        log.info("%s", epoch_line(self.fold, self.folds, self.epoch, self.epochs, logs["loss"], logs["val_accuracy"],
                                  rate, self.clock.eta()))


def tensorboard(run_dir: Path, fold: int) -> keras.callbacks.TensorBoard | None:
    """Fold `fold`'s per-epoch TensorBoard log; a resumed fold goes on writing into the same dir.
    None where TensorFlow is not installed (Keras writes the logs with it), said once per process."""
    if not installed("tensorflow"):
        if not _SAID:
            _SAID.append(True)
            log.warning("tensorboard: no TensorBoard logs, TensorFlow is not installed (Keras writes them with it): "
                        "set tensorboard=false, or pip install tensorflow-cpu")
        return None
    return keras.callbacks.TensorBoard(
        log_dir=str(rundir.tensorboard_dir(run_dir, fold)), write_graph=False, profile_batch=0, update_freq="epoch"
    )


_SAID: list[bool] = []


def chosen_callbacks(cfg: DictConfig) -> list[keras.callbacks.Callback]:
    """The config's optional callbacks (`callbacks`: name -> `_target_`, conf/callbacks/), in name order."""
    found = []
    for name, node in sorted((cfg.get("callbacks") or {}).items()):
        made = instantiate(node, _convert_="all")
        if not isinstance(made, keras.callbacks.Callback):
            raise UserError(f"callbacks.{name}: {node.get('_target_')!r} gave a {type(made).__name__}, not a "
                            "keras.callbacks.Callback: name a callback class in its _target_")
        found.append(made)
    return found


class Deadline(keras.callbacks.Callback):
    """Keeps a fold within its deadline, checked after every epoch from that epoch's wall time.

    Where the epochs left would run past it, a fold on a step-wise schedule (`steps_per_epoch`
    given: the cosine one, any Keras schedule) drops the epochs that do not fit from the middle of
    its schedule: the optimizer's step count, which the schedule reads and the checkpoint keeps,
    jumps ahead, so the fold still ends at its schedule's last rate, and stops when the schedule
    is done. On an epoch-wise schedule (the seed's exponential) the fold stops after its last epoch
    that fits. A process's first epoch traces the steps, so it is trusted only to stop, not to skip.
    """

    def __init__(self, fold: int, deadline: FoldDeadline, steps_per_epoch: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.fold, self.deadline, self.steps, self.clock = fold, deadline, steps_per_epoch, clock
        self.first = True

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now, planned = self.clock(), self.params["epochs"]
        left = planned - self.reached(epoch)
        fit = math.floor((self.deadline.at - self.deadline.tail_s - now) / max(now - self.begin, 1e-9))
        if left <= 0:
            self.model.stop_training = True  # the schedule is done: its skipped epochs are not trained
        elif fit < 1:
            log.warning("fold %d: stopped after epoch %d of %d to end within time_limit (the machine ran slower "
                        "than measured)", self.fold, epoch + 1, planned)
            self.model.stop_training = True
        elif fit < left and self.steps and not self.first:
            self.model.optimizer.iterations.assign_add((left - fit) * self.steps)
            log.warning("fold %d: runs slower than planned: after epoch %d its schedule skips %d epoch(s) so that its "
                        "last %d fit before the deadline", self.fold, epoch + 1, left - fit, fit)
        self.first = False

    def reached(self, epoch: int) -> int:
        """The epochs of its schedule the fold is through after `epoch`: those trained, and those skipped."""
        if not self.steps:
            return epoch + 1
        return round(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) / self.steps)
