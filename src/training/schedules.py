"""Learning-rate schedules (`schedule=NAME`, conf/schedule/), built from their `_target_`.

A schedule's config names a function here (or a `keras.optimizers.schedules` class) and its
arguments; the fold finishes it with what only the run knows: the peak rate
(`optimizer.learning_rate`), the epochs and the steps per epoch. It gives the rate the optimizer
starts with and the callbacks that move or record it, so history.csv has each epoch's rate.

Both built-in ones continue where a resumed fold left off: the exponential one is set from the
epoch number, the cosine one from the optimizer's step count, which the fold's checkpoint keeps.
A user's own schedule is one function with the signature of `exponential` in a module of theirs,
named by `_target_` in a YAML file of conf/schedule/.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.training.budget import Plan

EXPONENTIAL = "src.training.schedules.exponential"
SCHEDULES = ("exponential", "cosine")  # what a config may name here (src.recipe's registry)
LearningRate = float | keras.optimizers.schedules.LearningRateSchedule


@dataclass(frozen=True)
class Rate:
    """What a schedule gives a fold: the optimizer's starting rate and the callbacks that move or record it."""

    learning_rate: LearningRate
    callbacks: list = field(default_factory=list)

    @property
    def stepwise(self) -> bool:
        """Whether the rate follows the optimizer's step count (a Keras schedule), not the epoch number."""
        return isinstance(self.learning_rate, keras.optimizers.schedules.LearningRateSchedule)


def exponential(peak: float, epochs: int, steps_per_epoch: int, decay: float = 1.0) -> Rate:
    """The seed recipe's epoch-wise decay: rate at epoch e = peak · decay^e (decay 1: constant)."""
    return Rate(peak, [keras.callbacks.LearningRateScheduler(lambda epoch: peak * decay**epoch)])


def cosine(peak: float, epochs: int, steps_per_epoch: int, warmup: float = 0.05, start: float = 0.1,
           final: float = 0.01) -> Rate:
    """Per step: a linear warm-up from start · peak over the first `warmup` share of the run's
    steps, then a cosine decay to final · peak at its last step."""
    if not 0 <= warmup < 1:
        raise UserError(f"schedule.warmup={warmup}: give the warm-up's share of the steps, from 0 up to 1")
    total = epochs * steps_per_epoch
    steps = min(round(warmup * total), total - 1)
    rate = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak * start if steps else peak,
        decay_steps=total - steps,
        alpha=final,
        warmup_target=peak if steps else None,
        warmup_steps=steps,
    )
    return Rate(rate, [RecordRate()])


def build(cfg: DictConfig, steps_per_epoch: int) -> Rate:
    """The config's schedule for a fold of `steps_per_epoch` steps: a `_partial_` target is
    finished with the peak rate, the epochs and the steps; a Keras schedule object is taken as it is."""
    made = instantiate(cfg.schedule, _convert_="all")
    if callable(made) and not isinstance(made, keras.optimizers.schedules.LearningRateSchedule):
        made = made(peak=cfg.optimizer.learning_rate, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch)
    if isinstance(made, keras.optimizers.schedules.LearningRateSchedule):
        return Rate(made, [RecordRate()])
    if not isinstance(made, Rate):
        raise UserError(f"schedule._target_={cfg.schedule.get('_target_')!r} gave a {type(made).__name__}: name a "
                        "function that returns src.training.schedules.Rate, or a keras.optimizers.schedules class")
    return made


def averaging(cfg: DictConfig, steps_per_epoch: int) -> dict:
    """With `optimizer.use_ema`: the averaging's momentum, at most `optimizer.ema_momentum` and
    short enough that the average forgets the random start within the run (its horizon,
    1 / (1 - momentum) steps, is at most a tenth of the run's steps). Keras starts the average at
    the first step's weights, so a 0.99 average over a 125-step run still holds 28% of them."""
    if not cfg.optimizer.get("use_ema"):
        return {}
    total = cfg.epochs * steps_per_epoch
    return {"ema_momentum": min(cfg.optimizer.get("ema_momentum", 0.99), max(0.0, 1 - 10 / total))}


def apply_plan(plan: Plan, cfg: DictConfig) -> DictConfig:
    """The training config under `plan`: its epochs and their share of a pass (`epoch_fraction`),
    with an epoch-wise exponential decay stretched or squeezed so that the planned epochs span
    the schedule's whole range."""
    planned = OmegaConf.to_container(cfg, resolve=True)
    planned["epochs"] = plan.epochs
    if plan.epoch_fraction < 1:
        planned["epoch_fraction"] = plan.epoch_fraction
    schedule = planned["schedule"]
    if schedule.get("_target_") == EXPONENTIAL and plan.epochs != plan.schedule_epochs:
        schedule["decay"] = schedule["decay"] ** ((plan.schedule_epochs - 1) / max(plan.epochs - 1, 1))
    return OmegaConf.create(planned)


class RecordRate(keras.callbacks.Callback):
    """Puts the optimizer's learning rate at the epoch's end into its logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
