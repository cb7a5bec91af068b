"""Train one fold, in five steps: build and compile the model under the strategy; gather the
callbacks; fit (resuming from the fold's saved state, src.training.checkpoint); predict the
validation rows and the test set with the best epoch; commit the fold's files, done.json last.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from typing import Any

import keras
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from src import rundir
from src.cluster import watch
from src.files import atomic_write, remove_stale_temps
from src.inputs import pipeline
from src.inputs.folds import FoldData
from src.models.inference import predict
from src.models.layers import load_model
from src.rundir import FoldResult
from src.errors import UserError
from src.runtime import Runtime
from src.training import schedules
from src.training.budget import FoldDeadline
from src.training.callbacks import Deadline, Progress, RunClock, chosen_callbacks, tensorboard
from src.training.checkpoint import FoldCheckpoint, restore, save_arrays, saved_precision
from src.training.fold_job import Regroup
from src.training.scheduler import regroup_requested

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldPredictions:
    """A fold's class probabilities: validation rows (with and without test-time augmentation) and test."""

    val: np.ndarray
    val_plain: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Placement:
    """Where a fold trains: the process's runtime and the live strategy it chose (a tf.distribute
    strategy, or src.training.strategy.KerasDistribution on JAX)."""

    runtime: Runtime
    strategy: Any

    @property
    def multi_worker(self) -> bool:
        return self.runtime.distribution == "multi_worker"


def train_fold(data: FoldData, cfg: DictConfig, place: Placement, fold_dir: Path, clock: RunClock,
               deadline: FoldDeadline | None = None) -> FoldResult:
    """Fit fold `data.fold` into `fold_dir` and return its result; resumes from `fold_dir/train/`
    when an earlier process left state there, in the precision that state was trained in; with a
    `deadline`, training stops early rather than miss it (src.training.budget)."""
    clocked = Phases()
    state_dir = fold_dir / rundir.TRAIN_STATE
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(fold_dir, anyone=True)  # the caller holds the fold's lock
    remove_stale_temps(state_dir, anyone=True)
    place = fold_placement(place, saved_precision(state_dir), data.fold)
    model, state = build(data, cfg, place, state_dir)
    earlier_seconds = state.get("seconds", 0.0)
    clock.total -= state["epoch"]
    found = callbacks(cfg, data, fold_dir.parent, state_dir, state, clock, deadline)
    clocked.mark("build")
    fit(model, data, cfg, place, state["epoch"], found)
    clocked.mark("fit")
    runtime = {**place.runtime.record(), "jit_compile": model.jit_compile}  # as Keras resolved "auto"
    final = final_model(model, found, data, state_dir, state, place)
    clocked.mark("final_model")
    predictions = predict_fold(final.model, data, cfg)
    clocked.mark("predict")
    return commit(fold_dir, data, predictions, final, earlier_seconds, runtime, clocked)


class Phases:
    """Wall seconds of a fold's phases in this process, for done.json: where a fold's time goes
    besides its epochs (history.csv has those)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start


def fold_placement(place: Placement, saved: str | None, fold: int) -> Placement:
    """A fold never mixes precisions: one resumed from state saved in another precision goes on in
    that one (loading it into another would silently reset the optimizer's moments)."""
    if saved is None or saved == place.runtime.precision:
        return place
    log.warning("fold %d: its saved state was trained in %s, so it goes on in %s (this run's runtime says %s)",
                fold, saved, saved, place.runtime.precision)
    return dataclasses.replace(place, runtime=dataclasses.replace(place.runtime, precision=saved))


def build(data: FoldData, cfg: DictConfig, place: Placement, state_dir: Path) -> tuple[keras.Model, dict]:
    """The compiled model under the placement's strategy, with the fold's saved state loaded when there is one."""
    model = compile_model(data, cfg, place)
    with place.strategy.scope():
        state = restore(model, state_dir, data.fold, place.runtime.precision)
    return model, state


def compile_model(data: FoldData, cfg: DictConfig, place: Placement) -> keras.Model:
    """A fresh model for fold `data.fold`, compiled with the config's optimizer, schedule and loss,
    in the runtime's dtype policy (under mixed_float16 Keras wraps the optimizer in a
    LossScaleOptimizer) and with its XLA choice."""
    keras.backend.clear_session()  # also resets the dtype policy, so set it after
    keras.mixed_precision.set_global_policy(place.runtime.precision)
    keras.utils.set_random_seed(cfg.seed + data.fold)
    steps = epoch_steps(data, cfg)
    with place.strategy.scope():
        model = instantiate(cfg.model)(input_shape=data.x_train.shape[1:], num_classes=data.num_classes)
        model.compile(
            optimizer=instantiate(cfg.optimizer)(learning_rate=schedules.build(cfg, steps).learning_rate,
                                                 **schedules.averaging(cfg, steps)),
            loss=_loss(cfg),
            # weighted, so padded validation rows (weight 0) don't count; argmax-based whatever the loss
            weighted_metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            steps_per_execution=cfg.steps_per_execution,
            jit_compile=place.runtime.jit_compile,
        )
    return model


def epoch_steps(data: FoldData, cfg: DictConfig) -> int:
    """Training steps per epoch: a pass over the fold's training rows, or the share of one a time
    budget planned (`epoch_fraction`, set by src.training.schedules.apply_plan)."""
    return pipeline.steps_per_epoch(len(data.x_train), cfg.batch_size, cfg.get("epoch_fraction", 1.0))


def _loss(cfg: DictConfig) -> str | keras.losses.Loss:
    smoothing = cfg.get("label_smoothing", 0.0)
    if not smoothing:
        return cfg.loss
    if cfg.loss != "categorical_crossentropy" or not 0 < smoothing < 1:
        raise UserError(f"label_smoothing={smoothing} needs loss=categorical_crossentropy and a value between 0 and 1")
    return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)


def callbacks(cfg: DictConfig, data: FoldData, run_dir: Path, state_dir: Path, state: dict,
              clock: RunClock, deadline: FoldDeadline | None = None) -> list[keras.callbacks.Callback]:
    """The learning-rate schedule's, the config's own (`callbacks`, conf/callbacks/), EMA weights,
    and the framework's, which no config can remove: the per-epoch checkpoint, the time limit's
    deadline, the optional logs and the regroup check."""
    steps = epoch_steps(data, cfg)
    chosen = chosen_callbacks(cfg)
    rate = schedules.build(cfg, steps)
    found = rate.callbacks + chosen
    if cfg.optimizer.get("use_ema"):
        found.append(EMAWeights(resumed=state["epoch"] > 0))
    found.append(FoldCheckpoint(state_dir, state, [c for c in chosen if hasattr(c, "checkpoint_name")]))
    if deadline is not None:
        found.append(Deadline(data.fold, deadline, steps if rate.stepwise else None))
    if cfg.tensorboard and (board := tensorboard(run_dir, data.fold)):
        found.append(board)
    if cfg.verbose:
        found.append(Progress(data.fold, cfg.fold, cfg.epochs, steps, cfg.batch_size, clock))
    found.append(RegroupCheck(state_dir.parent, cfg.epochs))  # after FoldCheckpoint: the epoch is committed
    return found


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """With `optimizer.use_ema`: the averaged weights are in the model at every epoch's end, so
    validation, the best model and the checkpoint see them; the raw ones go on training. A fold
    resumed from such a checkpoint starts with them swapped, as it left them."""

    def __init__(self, resumed: bool) -> None:
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed


class RegroupCheck(keras.callbacks.Callback):
    """In a fold job: stop after a committed epoch when the run asks (src.training.scheduler)."""

    def __init__(self, fold_dir: Path, epochs: int) -> None:
        super().__init__()
        self.fold_dir, self.epochs = fold_dir, epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 < self.epochs and regroup_requested(self.fold_dir):
            raise Regroup(f"{self.fold_dir.name}: stopped after epoch {epoch + 1} to go on with more threads")


def fit(model: keras.Model, data: FoldData, cfg: DictConfig, place: Placement, initial_epoch: int,
        callbacks: list[keras.callbacks.Callback]) -> None:
    """Train from `initial_epoch` to `cfg.epochs` on freshly augmented batches."""
    seed = cfg.seed + data.fold
    train = pipeline.train_dataset(data.x_train, data.y_train, cfg.augment, cfg.batch_size, data.num_classes, seed,
                                   initial_epoch, cfg.get("epoch_fraction", 1.0))
    if place.multi_worker:
        from src.training import multi_worker

        multi_worker.prepare(model, place.strategy, train)
    if initial_epoch >= cfg.epochs:
        return
    model.fit(
        train,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=epoch_steps(data, cfg),
        validation_data=pipeline.eval_dataset(data.x_val, data.y_val, cfg.batch_size, data.num_classes),
        callbacks=callbacks,
        shuffle=False,  # the batches are shuffled per epoch by the pipeline
        verbose=0,
    )


@dataclass(frozen=True)
class FinalModel:
    """The fold's model, the file it is saved in, and what done.json says of it."""

    model: keras.Model
    path: Path
    summary: dict


def final_model(model: keras.Model, found: list, data: FoldData, state_dir: Path, state: dict,
                place: Placement) -> FinalModel:
    """The fold's model: the one a callback finishes (`finish(model, images)`: SWA's average),
    else the best epoch's."""
    for callback in found:
        said = callback.finish(model, data.x_train) if hasattr(callback, "finish") else None
        if said:
            path = state_dir / f"{callback.checkpoint_name}.keras"
            atomic_write(path, model.save)
            return FinalModel(model, path, {"best_epoch": state["epoch"], **said})
    return FinalModel(best_model(model, state_dir, state, place.multi_worker, data.fold), state_dir / state["best_file"],
                      {"best_epoch": state["best_epoch"]})


def best_model(model: keras.Model, state_dir: Path, state: dict, multi_worker: bool, fold: int) -> keras.Model:
    """The model with the best epoch's weights."""
    if "best_file" not in state:
        raise RuntimeError(f"fold {fold}: no epoch produced a finite val_accuracy (training diverged): lower optimizer.learning_rate")
    best = state_dir / state["best_file"]
    model.load_weights(best)
    if multi_worker:  # every worker predicts everything, on its own
        model = load_model(best, compile=False)
    return model


def predict_fold(model: keras.Model, data: FoldData, cfg: DictConfig) -> FoldPredictions:
    """The validation rows' and the test set's probabilities, with `cfg.tta` augmented views."""
    views, seed = cfg.tta, cfg.seed + data.fold
    val_plain = predict(model, data.x_val, cfg.batch_size)
    val = predict(model, data.x_val, cfg.batch_size, views, cfg.augment, seed) if views else val_plain
    test = predict(model, data.x_test, cfg.batch_size, views, cfg.augment, seed + 1_000_003)
    return FoldPredictions(val, val_plain, test)


def commit(fold_dir: Path, data: FoldData, predictions: FoldPredictions, final: FinalModel, earlier_seconds: float,
           runtime: dict, clocked: Phases) -> FoldResult:
    """Write the fold's model and its predictions, then done.json (the fold is complete, its
    seconds those of earlier processes and this one's phases), and drop its training state."""
    state_dir = fold_dir / rundir.TRAIN_STATE
    best, best_epoch = final.path, final.summary.get("best_epoch", 0)
    accuracy = float(np.mean(predictions.val.argmax(1) == data.y_val))
    accuracy_plain = float(np.mean(predictions.val_plain.argmax(1) == data.y_val))
    atomic_write(fold_dir / rundir.MODEL, lambda tmp: shutil.copyfile(best, tmp))
    atomic_write(fold_dir / rundir.PREDICTIONS, lambda tmp: save_arrays(
        tmp, val_index=data.val_index, val_labels=data.y_val, val_probs=predictions.val,
        val_probs_plain=predictions.val_plain, test_probs=predictions.test))
    clocked.mark("commit")
    seconds = earlier_seconds + clocked.total()
    rundir.mark_complete(fold_dir, {"fold": data.fold, "accuracy": accuracy, "accuracy_plain": accuracy_plain,
                                    "best_epoch": best_epoch, **final.summary, "seconds": round(seconds, 1),
                                    "phases_s": clocked.seconds,
                                    "precision": runtime["precision"], "runtime": runtime, "cluster": watch.provenance()})
    shutil.rmtree(state_dir, ignore_errors=True)
    return FoldResult(data.fold, data.val_index, data.y_val, predictions.val, predictions.test, accuracy, best_epoch,
                      seconds, predictions.val_plain, runtime["precision"])

