"""A time_limit's calibration: a fold process times its own training, validation, prediction and
checkpoint on the first fold's batches (`calibrate`), the `Rates` its plan is made from
(src.training.budget)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
from omegaconf import DictConfig

from src.inputs import pipeline
from src.inputs.folds import FoldData
from src.models.inference import predict
from src.training.budget import Rates


def calibrate(build: Callable[[], keras.Model], data: FoldData, cfg: DictConfig, seconds: float = 2.0) -> Rates:
    """Time a model from `build` (compiled; thrown away afterwards) training on the fold's
    augmented batches for about `seconds`, validating, predicting, and saving a checkpoint."""
    start = time.perf_counter()
    model = build()
    built = time.perf_counter()
    train = pipeline.train_dataset(data.x_train, data.y_train, cfg.augment, cfg.batch_size, data.num_classes, cfg.seed)
    steps = min(5, pipeline.steps_per_epoch(len(data.x_train), cfg.batch_size))
    timer = _StepTimer(seconds)
    model.fit(train, epochs=1000, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    train_rate = timer.images(cfg.batch_size) / timer.elapsed
    sample = data.x_val[: 16 * cfg.batch_size]
    val = pipeline.eval_dataset(sample[: 2 * cfg.batch_size], data.y_val[: 2 * cfg.batch_size], cfg.batch_size,
                                data.num_classes)
    validate = _timed(lambda: model.evaluate(val, verbose=0))
    predicting = _timed(lambda: predict(model, sample, cfg.batch_size))
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "best.keras")
        model.save_weights(Path(tmp) / "last.weights.h5")
    save_s = time.perf_counter() - begin
    tracing = (timer.first - steps * cfg.batch_size / train_rate) + (validate[0] - validate[1])
    return Rates(train=train_rate, predict=len(sample) / predicting[1], build_s=built - start + max(tracing, 0.0),
                 trace_predict_s=max(predicting[0] - predicting[1], 0.0), save_s=save_s)


def _timed(work: Callable[[], object], steady: int = 3) -> tuple[float, float]:
    """Seconds of the first call of `work` (it traces) and the median of the next `steady` (the
    steady cost: one call lasts a fraction of a second, so a single one is at the mercy of a
    neighbour's burst; measured: 783 against 1,441 predicted images/s in two runs of the same)."""
    times = []
    for _ in range(1 + steady):
        begin = time.perf_counter()
        work()
        times.append(time.perf_counter() - begin)
    return times[0], float(np.median(times[1:]))


class _StepTimer(keras.callbacks.Callback):
    """Times whole epochs of a calibration fit after the first (which traces the step); stops
    once `seconds` of steps are timed."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.elapsed, self.first, self.epochs = seconds, 0.0, 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        took = time.perf_counter() - self.begin
        if epoch == 0:
            self.first = took
            return
        self.elapsed += took
        self.epochs += 1
        if self.elapsed >= self.seconds:
            self.model.stop_training = True

    def images(self, batch_size: int) -> int:
        return self.epochs * self.params["steps"] * batch_size
