"""Learning-rate schedules (`schedule=NAME`, conf/schedule/): the seed recipe's epoch-wise
exponential decay, or a per-step warm-up then cosine decay laid over exactly the run's steps.

Both continue where a resumed fold left off: the exponential one is set from the epoch number,
the cosine one from the optimizer's step count, which the fold's checkpoint keeps.
"""
from __future__ import annotations

import keras
from omegaconf import DictConfig

from src.errors import UserError

KINDS = ("exponential", "cosine")


def learning_rate(cfg: DictConfig, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """What the optimizer starts with: the peak rate (an epoch-wise schedule sets it per epoch,
    `callbacks`) or a per-step schedule over `cfg.epochs` × `steps_per_epoch` steps."""
    kind, peak = cfg.schedule.get("kind", "exponential"), cfg.optimizer.learning_rate
    if kind not in KINDS:
        raise UserError(f"schedule.kind={kind!r} is not one of {KINDS}")
    if kind == "exponential":
        return peak
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.schedule.warmup * total), total - 1)
    if not 0 <= cfg.schedule.warmup < 1:
        raise UserError(f"schedule.warmup={cfg.schedule.warmup}: give the warm-up's share of the steps, from 0 up to 1")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak * cfg.schedule.start if warmup else peak,
        decay_steps=total - warmup,
        alpha=cfg.schedule.final,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def averaging(cfg: DictConfig, steps_per_epoch: int) -> dict:
    """With `optimizer.use_ema`: the averaging's momentum, at most `optimizer.ema_momentum` and
    short enough that the average forgets the random start within the run (its horizon,
    1 / (1 - momentum) steps, is at most a tenth of the run's steps). Keras starts the average at
    the first step's weights, so a 0.99 average over a 125-step run still holds 28% of them."""
    if not cfg.optimizer.get("use_ema"):
        return {}
    total = cfg.epochs * steps_per_epoch
    return {"ema_momentum": min(cfg.optimizer.get("ema_momentum", 0.99), max(0.0, 1 - 10 / total))}


def callbacks(cfg: DictConfig) -> list[keras.callbacks.Callback]:
    """The callbacks that set (epoch-wise) or record (per-step) each epoch's learning rate in the
    epoch's logs, so that history.csv has it."""
    if cfg.schedule.get("kind", "exponential") == "exponential":
        base_lr, decay = cfg.optimizer.learning_rate, cfg.schedule.decay
        return [keras.callbacks.LearningRateScheduler(lambda epoch: base_lr * decay**epoch)]
    return [_RecordRate()]


class _RecordRate(keras.callbacks.Callback):
    """Puts the optimizer's learning rate at the epoch's end into its logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
