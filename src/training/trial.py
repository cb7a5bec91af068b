"""`recipe=auto`: before a time-limited run commits to a recipe, a short run of each candidate
(conf/recipe/) on the same fold, within a stated share of the time_limit (`recipe.share`).

Each trial trains its recipe from scratch for `recipe.trial_epochs` epochs (its schedule laid over
them, its augmentation as it is) on as many of the fold's training rows as fit its part of the
share, then scores the fold's whole validation set with the weights the full run would keep (the
moving average where the recipe has one). The most accurate recipe runs; the comparison is
recorded in run.json (`recipe.compared`, `recipe.why`) and the report. A short trial favours the
recipe that learns fastest, which is what a short budget needs; docs/recipes.md says where it misleads.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from src.inputs import pipeline
from src.inputs.folds import FoldData
from src.training.budget import Rates
from src.training.fold import Placement, compile_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    """One candidate's short run: its validation accuracy, and what it trained on."""

    recipe: str
    accuracy: float
    rows: int
    epochs: int
    seconds: float


def trial_rows(seconds: float, rates: Rates, epochs: int, batch_size: int, available: int) -> int:
    """How many training rows `epochs` epochs fit in `seconds`, less building and scoring: at least
    two batches, at most the fold's `available` rows."""
    training_s = max(seconds - rates.build_s - rates.trace_predict_s, 0.0)
    return int(min(available, max(2 * batch_size, training_s * rates.train / epochs)))


def run_trial(name: str, cfg: DictConfig, data: FoldData, place: Placement, rows: int, epochs: int) -> Trial:
    """Train recipe `name` (its composed config `cfg`) for `epochs` epochs on `rows` of the fold's
    training rows (the same rows for every recipe), and score it on the fold's validation rows."""
    start = time.perf_counter()
    short = OmegaConf.merge(cfg, {"epochs": epochs})
    pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(data.x_train))[:rows])
    part = dataclasses.replace(data, x_train=data.x_train[pick], y_train=data.y_train[pick])
    model = compile_model(part, short, place)
    train = pipeline.train_dataset(part.x_train, part.y_train, short.augment, short.batch_size, data.num_classes, short.seed)
    model.fit(train, epochs=epochs, steps_per_epoch=pipeline.steps_per_epoch(rows, short.batch_size), shuffle=False, verbose=0)
    if short.optimizer.get("use_ema"):  # what the full run keeps: the moving average
        model.optimizer.finalize_variable_values(model.trainable_variables)
    scores = model.evaluate(pipeline.eval_dataset(data.x_val, data.y_val, short.batch_size, data.num_classes),
                            verbose=0, return_dict=True)
    found = Trial(name, float(scores["accuracy"]), rows, epochs, round(time.perf_counter() - start, 1))
    log.info("recipe=auto: %s reached %.4f on fold %d's %d validation rows after %d epoch(s) on %d rows (%.0f s)",
             name, found.accuracy, data.fold, len(data.y_val), epochs, rows, found.seconds)
    return found


def chosen(trials: list[Trial], share: float, limit_s: float) -> tuple[Trial, str]:
    """The most accurate trial (the first listed among equals), and why, for recipe.why."""
    best = max(trials, key=lambda t: t.accuracy)
    others = ", ".join(f"{t.recipe} {t.accuracy:.4f}" for t in trials if t is not best)
    spent = sum(t.seconds for t in trials)
    return best, (f"recipe=auto: {best.recipe} reached {best.accuracy:.4f} against {others} on one fold's validation rows "
                  f"after {best.epochs} epoch(s) on {best.rows:,} training rows each, {spent:.0f} s in all "
                  f"(recipe.share={share:g} of time_limit={limit_s:.0f}s)")
