"""`time_limit=20m`: plan a run's epochs so that the whole run, from process start to the written
submission and report, ends within a wall-clock budget. Arithmetic only, no Keras: src.cv parses
the limit before it imports a backend, so a bad one is refused at once.

The run times its own training and prediction in a short calibration on the first fold's batches
(src.training.calibrate: the `Rates`), under the threads each fold process gets, then lays its
folds out in waves of `jobs` at once and picks the most epochs per fold that fit (`make_plan`).
The plan is recorded in the run dir (plan.json) so that a resume trains to the same epochs. The
learning-rate schedule is laid over the planned epochs (src.training.schedules.apply_plan).

Calibration is a few seconds and machines are noisy, so every fold also gets a deadline
(`deadlines`): a fold that runs slower than planned drops the epochs that would miss it from the
middle of its learning-rate schedule, or stops after its last epoch that fits
(src.training.callbacks.Deadline), and the run still ends on time, a little less trained.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

import numpy as np

from src.cluster import watch
from src.errors import UserError


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])")
RESERVE = 0.02  # of the limit, kept free for the noise the calibration cannot see
CONCURRENT = 1.13  # fold jobs side by side each train this much slower than the lone calibration (measured: 1.13 in 20-min runs)


def parse_duration(value: object) -> float | None:
    """Seconds in a `time_limit` value: 600, "90s", "20m", "1.5h", "1h30m"; None for none."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    parts = _PART.findall(text)
    if text and parts and "".join(a + u for a, u in parts) == text:
        seconds = sum(float(amount) * _UNITS[unit] for amount, unit in parts)
        if seconds > 0:
            return seconds
    raise UserError(f"time_limit={value!r}: give a duration such as time_limit=20m, 1h, 1h30m or 900s (seconds)")


def duration(seconds: float) -> str:
    """Seconds as h:mm:ss, for messages."""
    return str(timedelta(seconds=round(seconds)))


@dataclass(frozen=True)
class Rates:
    """What one fold process measured: images per second training (augmented) and predicting;
    seconds to build a model and trace its training and validation steps, to trace prediction,
    and to write a checkpoint."""

    train: float
    predict: float
    build_s: float
    trace_predict_s: float
    save_s: float


@dataclass(frozen=True)
class Plan:
    """A time_limit's plan, recorded in plan.json: a resume trains to the same epochs."""

    time_limit_s: float
    epochs: int
    schedule_epochs: int  # the epochs the config's schedule was written for; it is laid over `epochs`
    folds: int  # folds trained under this plan
    jobs: int  # at once
    rates: dict  # Rates, per fold process
    seconds: dict  # the estimate: start-up, per fold, per epoch, finish, total
    fold_choice: dict | None = None  # FoldChoice, when the plan chose the fold count too (no fold= given)
    epoch_fraction: float = 1.0  # the share of a pass over the fold's training rows each epoch trains on (older plans: 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def whole_passes(self) -> int:
        """Whole passes over a fold's training rows the plan trains: what choosing a fold count
        compares with `recipe.fold_epochs` (epochs of part of a pass count for their share)."""
        return math.floor(self.epochs * self.epoch_fraction + 1e-9)

    @classmethod
    def from_dict(cls, record: dict) -> "Plan":
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


FEWEST_FOLDS = 3  # below it a fold trains on too little of the data, and there is little to ensemble


@dataclass(frozen=True)
class FoldChoice:
    """With a time_limit and no fold= given: the fold count chosen, the epochs per fold each
    candidate count would get, and why."""

    folds: int
    epochs: dict[int, int]  # candidate fold count: epochs per fold that fit (0: not one)
    want: int  # the recipe's fold_epochs, or epochs= where smaller
    why: str


def choose_folds(epochs: dict[int, int], want: int) -> FoldChoice:
    """The most folds whose epochs per fold reach `want`: a budget first buys each fold the epochs
    its recipe needs (`recipe.fold_epochs`), then more folds. When no count reaches `want`, the
    fewest folds (the most epochs each; 0 when not one epoch fits any count, which the plan of
    that count then refuses)."""
    enough = [k for k, e in epochs.items() if e >= want]
    if enough:
        k = max(enough)
        why = (f"{k} folds, the most that get at least recipe.fold_epochs={want} epochs each" if k < max(epochs)
               else f"{k} folds (the config's fold) get at least recipe.fold_epochs={want} epochs each")
        return FoldChoice(k, epochs, want, why)
    fitting = [k for k, e in epochs.items() if e >= 1]
    k = min(fitting or epochs)
    return FoldChoice(k, epochs, want, f"no fold count gets recipe.fold_epochs={want} epochs each: the fewest, {k} folds "
                                       f"of {epochs[k]} epochs")


def fold_counts(most: int) -> list[int]:
    """The fold counts a budget chooses among when fold= is not given: FEWEST_FOLDS up to the config's."""
    return list(range(min(FEWEST_FOLDS, most), most + 1))


def make_plan(limit_s: float, startup_s: float, elapsed_s: float, rates: Rates, folds: int, jobs: int,
              rows: dict[str, int], batch_size: int, tta: int, schedule_epochs: int, cap: int | None) -> Plan:
    """The most training per fold (at most `cap` epochs) with which `folds` folds, `jobs` at a
    time, end within `limit_s` of process start, `elapsed_s` of which are spent (`startup_s` of
    them before the calibration: what each fold job spends again). `rows` holds one fold's
    "train", "val" and "test" rows. The budget is spent, not rounded down to whole passes: where
    whole epochs would leave part of it unused, one more epoch is planned and every epoch trains
    on the same share of a pass (`epoch_fraction`), a fresh random subset each (`fractional_epochs`).
    UserError, naming the least limit that works, when not even one whole epoch fits."""
    startup_s = startup_s if jobs > 1 else 0.0
    waves = _waves(folds, jobs)
    slow = CONCURRENT if jobs > 1 else 1.0
    train_s = slow * (rows["train"] // batch_size) * batch_size / rates.train  # one whole pass
    check_s = slow * rows["val"] / rates.predict + rates.save_s  # each epoch's validation and checkpoint
    predict_s = rates.trace_predict_s + slow * (1 + tta) * (rows["val"] + rows["test"]) / rates.predict + 2 * rates.save_s
    fold_s = startup_s + rates.build_s + predict_s
    finish_s = finish_seconds(rows, folds)
    fixed_s = elapsed_s + sum(waves) * fold_s + finish_s
    per_fold_s = (limit_s * (1 - RESERVE) - fixed_s) / sum(waves)  # what each fold's epochs may take
    fitting = math.floor(per_fold_s / (train_s + check_s))
    if fitting < 1:
        least = (fixed_s + sum(waves) * (train_s + check_s)) / (1 - RESERVE)
        raise UserError(
            f"time_limit={duration(limit_s)} is too short for one epoch per fold: {folds} fold(s), {jobs} at a time, "
            f"need at least {duration(math.ceil(least))} on this machine (measured {rates.train:,.0f} training images/s "
            f"per fold process): raise time_limit, or lower fold"
        )
    epochs, fraction = fractional_epochs(per_fold_s, train_s, check_s, cap)
    epoch_s = train_s * fraction + check_s
    return Plan(limit_s, epochs, schedule_epochs, folds, jobs, asdict(rates),
                {"startup": round(startup_s, 1), "elapsed": round(elapsed_s, 1), "fold": round(fold_s, 1),
                 "predict": round(predict_s, 1), "epoch": round(epoch_s, 2), "finish": round(finish_s, 1),
                 "total": round(fixed_s + sum(waves) * epochs * epoch_s, 1)}, epoch_fraction=fraction)


MIN_GAIN = 0.03  # a fractional plan is kept only when it trains this much more than whole epochs would


def fractional_epochs(fold_s: float, train_s: float, check_s: float, cap: int | None) -> tuple[int, float]:
    """(epochs, share of a pass each) that spend `fold_s` seconds on a fold whose whole pass takes
    `train_s` and whose every epoch adds `check_s` (validation, checkpoint): the fewest epochs
    that use it all, each on the same share. Whole epochs where that would train under MIN_GAIN
    more (every extra epoch costs another validation), or where `cap` (an `epochs=` given) fits."""
    whole = math.floor(fold_s / (train_s + check_s))
    if cap and whole >= cap:
        return cap, 1.0
    epochs = whole + 1  # within cap: whole < cap here
    fraction = min(1.0, (fold_s / epochs - check_s) / train_s)
    if epochs * fraction < whole * (1 + MIN_GAIN):
        return whole, 1.0
    return epochs, round(math.floor(fraction * 1000) / 1000, 3)


def finish_seconds(rows: dict[str, int], folds: int) -> float:
    """Time for the ensemble, report and pictures after the last fold (measured: 10-20 s on the full data)."""
    return 10.0 + 2e-4 * (rows["train"] + rows["val"] + rows["test"]) + 0.5 * folds


def time_share(threads: int, more: int) -> float:
    """The share of its time a fold needs with `more` threads instead of `threads`: √ of the thread
    ratio (2 threads instead of 1: 1.41x faster, measured here)."""
    return math.sqrt(threads / more)


def _waves(folds: int, jobs: int) -> list[float]:
    """The folds' waves as fractions of a fold's time: full waves of `jobs` folds, then a last one
    of the rest, which run faster with the freed cores."""
    full, rest = divmod(folds, jobs)
    return [1.0] * full + ([time_share(rest, jobs)] if rest else [])


def deadlines(plan: Plan, start: float, folds: int) -> list[FoldDeadline]:
    """For each of the `folds` folds (in the order they start), the wall-clock time by which it
    must be complete for the run to end on time: the limit, less the finish and the later waves;
    with its wave's share of a fold's time (a last, smaller wave runs faster on the freed cores)."""
    waves = _waves(folds, plan.jobs)
    fold_total = plan.seconds["fold"] + plan.epochs * plan.seconds["epoch"]
    end = start + plan.time_limit_s - plan.seconds["finish"]
    after = np.cumsum(waves[::-1])[::-1] - waves  # the waves after each wave, in fold times
    return [FoldDeadline(float(end - after[i // plan.jobs] * fold_total), plan.seconds["predict"], waves[i // plan.jobs])
            for i in range(folds)]


LATE_SLACK = 1  # epochs a late fold job may be short before it plans fewer: `Deadline` skips one from the schedule's middle


def epochs_before(plan: Plan, deadline: FoldDeadline, now: float, epoch_s: float | None = None) -> int:
    """The epochs (at least 1) a fold starting `now`, with its start-up behind it, can train, each
    taking `epoch_s` side by side (the plan's where None), and still be complete by `deadline`
    (in its wave's share of the time: a last, smaller wave runs faster)."""
    fixed_s = plan.seconds["fold"] - plan.seconds["startup"]
    share = deadline.share
    return max(1, math.floor((deadline.at - now - share * fixed_s) / (share * (epoch_s or plan.seconds["epoch"]))))


def own_epochs(plan: Plan, deadline: FoldDeadline, now: float, measured_s: float | None, cap: int | None) -> int:
    """The epochs a fold job starting `now` lays its schedule over. Fewer than the plan's where
    more than LATE_SLACK of the plan's epochs no longer fit before its deadline (it started late:
    a queue, or slower folds before it). More where it started early and the epochs of the folds
    before it (`measured_s`, side by side as it will run; None: not measured) say that whole
    epochs more fit, the run's RESERVE kept and at most `cap` (an `epochs=` given). Else the plan's."""
    late = epochs_before(plan, deadline, now)
    if late < plan.epochs - LATE_SLACK:
        return late
    if not measured_s:
        return plan.epochs
    early = epochs_before(plan, deadline, now + RESERVE * plan.time_limit_s, measured_s)
    return max(plan.epochs, min(early, cap or early))


@dataclass(frozen=True)
class FoldDeadline:
    """When a fold must be complete (time.time()), the seconds its predictions take after
    training, and its wave's share of a fold's time (1: a full wave)."""

    at: float
    tail_s: float
    share: float = 1.0


DEADLINE = "KFOLD_DEADLINE"  # in a local fold job's environment: "at,tail_s,share" (this machine's clock)
DEADLINE_LEFT = "KFOLD_DEADLINE_LEFT"  # on another node: "seconds left at submission,tail_s,share"


def environment(deadline: FoldDeadline | None) -> dict[str, str]:
    """The environment variables that give a local fold job its deadline."""
    return {DEADLINE: f"{deadline.at!r},{deadline.tail_s!r},{deadline.share!r}"} if deadline else {}


def remote_environment(deadline: FoldDeadline | None) -> dict[str, str]:
    """The same for a job on another node, as a duration: no two machines' clocks are compared.
    The job takes its time left from the run's heartbeat when it starts (src.cluster.watch), so
    time spent in a queue comes off its share; from this, measured from its own start, if none."""
    return {DEADLINE_LEFT: f"{deadline.at - time.time()!r},{deadline.tail_s!r},{deadline.share!r}"} if deadline else {}


def deadline_from_environment(fold: int) -> FoldDeadline | None:
    """In a fold job: the deadline its run's main process gave it, if any (an older process's
    "at,tail_s": a full wave's share)."""
    if value := os.environ.get(DEADLINE):
        at, tail, *share = (float(v) for v in value.split(","))
        return FoldDeadline(at, tail, *share)
    if value := os.environ.get(DEADLINE_LEFT):
        left, tail, *share = (float(v) for v in value.split(","))
        now_left = watch.seconds_left(fold)
        return FoldDeadline(time.time() + (left if now_left is None else now_left), tail, *share)
    return None
