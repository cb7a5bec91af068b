"""time_limit: durations, the plan's arithmetic, the schedule over the planned steps, the deadline,
and real runs that plan, record, resume and refuse."""
from __future__ import annotations

import dataclasses
import json
import math
import time

import keras
import numpy as np
import pytest
from conftest import KILL_MID_EPOCH, check_run_dir, compose_config, run_cv, tiny_overrides

from src import kfold, rundir
from src.errors import UserError
from src.training import budget, schedules, trial
from src.training.budget import FoldDeadline, Plan, Rates
from src.training.callbacks import Deadline
from src.training.fold_job import FOLD_JOB


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400),
                                           ("90s", 90), (600, 600), ("2m 30s", 150), (None, None)])
def test_durations(text, seconds):
    assert budget.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["20", "abc", "0m", "-5m", "5x", True, 0, "m"])
def test_bad_durations_are_refused(bad):
    with pytest.raises(UserError, match="time_limit=.*e.g.|give a duration such as"):
        budget.parse_duration(bad)


RATES = Rates(train=1000.0, predict=4000.0, build_s=3.0, trace_predict_s=1.0, save_s=0.2)
ROWS = {"train": 32000, "val": 8000, "test": 28000}


def test_plan_fills_the_limit_and_no_more():
    plan = budget.make_plan(1200, 8.0, 20.0, RATES, folds=5, jobs=2, rows=ROWS, batch_size=128, tta=0,
                            schedule_epochs=45, cap=None)
    seconds = plan.seconds
    waves = 2 + math.sqrt(1 / 2)  # two full waves of 2 folds, then the fifth alone on freed cores
    share = plan.epoch_fraction  # of a pass, each epoch
    assert seconds["epoch"] == pytest.approx(budget.CONCURRENT * (250 * 128 * share / 1000 + 8000 / 4000) + 0.2, abs=0.01)
    estimate = 20.0 + waves * (seconds["fold"] + plan.epochs * seconds["epoch"]) + seconds["finish"]
    assert estimate == pytest.approx(seconds["total"], abs=0.5)
    assert estimate <= 1200 * (1 - budget.RESERVE)  # fits
    assert estimate + waves * seconds["epoch"] > 1200 * (1 - budget.RESERVE)  # one more epoch would not
    assert estimate > 1200 * (1 - budget.RESERVE) * 0.97  # and it is spent, not rounded down to whole passes
    assert budget.make_plan(1200, 8.0, 20.0, RATES, 5, 2, ROWS, 128, 0, 45, cap=3).epochs == 3  # epochs= caps it


@pytest.mark.parametrize("fold_s, cap, expected", [
    (100.0, None, (3, 0.783)),  # 2 whole epochs would leave 16 s: 3 epochs of 78.3% of a pass (2.35 passes)
    (100.0, 3, (3, 0.783)),  # epochs=3 allows it
    (100.0, 2, (2, 1.0)),  # epochs=2 is met with whole epochs
    (85.0, None, (2, 1.0)),  # 3 epochs would train 1.97 passes, under 2 × (1 + MIN_GAIN): the extra validation eats it
    (50.0, None, (2, 0.575)),  # 1.15 passes instead of 1
    (43.0, None, (1, 1.0)),
])
def test_the_budget_is_spent_in_epochs_of_part_of_a_pass(fold_s, cap, expected):
    assert budget.fractional_epochs(fold_s, train_s=40.0, check_s=2.0, cap=cap) == expected


def test_a_short_budget_plans_more_epochs_of_part_of_a_pass_and_they_fit():
    rows = {"train": 48000, "val": 12000, "test": 10000}
    slow = Rates(train=450.0, predict=1500.0, build_s=3.0, trace_predict_s=1.0, save_s=0.2)  # a Zen 3 core, float32
    plan = budget.make_plan(720, 8.0, 20.0, slow, 5, 2, rows, 32, 0, 12, None)
    assert plan.epochs == 2 and 0.5 < plan.epoch_fraction < 1  # whole epochs: one, which leaves a third of the limit
    assert plan.whole_passes == 1  # what a fold count is chosen on: as before
    assert plan.seconds["total"] <= 720 * (1 - budget.RESERVE) and plan.seconds["total"] > 0.97 * 720 * (1 - budget.RESERVE)
    cfg = schedules.apply_plan(plan, compose_config(["schedule=cosine"]))
    assert cfg.epochs == 2 and cfg.epoch_fraction == plan.epoch_fraction
    assert Plan.from_dict({k: v for k, v in plan.to_dict().items() if k != "epoch_fraction"}).epoch_fraction == 1.0  # older plan.json
    assert "epoch_fraction" not in schedules.apply_plan(dataclasses.replace(plan, epoch_fraction=1.0), compose_config([]))


def test_an_epoch_of_part_of_a_pass_is_the_start_of_that_epochs_permutation():
    """Epoch e trains on the first `fraction` of epoch e's permutation, so a resumed fold still
    sees what an uninterrupted one would have."""
    from src.inputs import pipeline

    cfg = compose_config(["augment.enabled=false"])
    x = np.arange(64 * 4, dtype=np.uint8).reshape(64, 2, 2, 1)
    y = np.arange(64) % 10
    whole = [b[0].numpy() for b in pipeline.train_dataset(x, y, cfg.augment, 8, 10, 7).take(16)]  # 2 epochs of 8 batches
    half = [b[0].numpy() for b in pipeline.train_dataset(x, y, cfg.augment, 8, 10, 7, fraction=0.5).take(8)]
    assert pipeline.steps_per_epoch(64, 8, 0.5) == 4
    for got, want in zip(half, whole[:4] + whole[8:12]):
        np.testing.assert_array_equal(got, want)
    resumed = [b[0].numpy() for b in pipeline.train_dataset(x, y, cfg.augment, 8, 10, 7, start_epoch=1, fraction=0.5).take(4)]
    for got, want in zip(resumed, half[4:]):
        np.testing.assert_array_equal(got, want)


def test_a_limit_too_short_for_one_epoch_names_the_least_that_works():
    with pytest.raises(UserError) as e:
        budget.make_plan(120, 8.0, 20.0, RATES, 5, 2, ROWS, 128, 0, 45, None)
    assert "too short for one epoch per fold" in str(e.value)
    least = str(e.value).split("need at least ")[1].split(" ")[0]
    h, m, s = map(int, least.split(":"))
    # the least limit it names gives a plan of exactly one epoch
    assert budget.make_plan(h * 3600 + m * 60 + s, 8.0, 20.0, RATES, 5, 2, ROWS, 128, 0, 45, None).epochs == 1


def test_deadlines_leave_room_for_the_later_waves():
    plan = budget.make_plan(1200, 8.0, 20.0, RATES, 5, 2, ROWS, 128, 0, 45, None)
    found = budget.deadlines(plan, start=1000.0, folds=5)
    fold_total = plan.seconds["fold"] + plan.epochs * plan.seconds["epoch"]
    end = 1000.0 + 1200 - plan.seconds["finish"]
    assert found[4].at == pytest.approx(end) and found[3].at == found[2].at
    assert found[2].at == pytest.approx(end - math.sqrt(0.5) * fold_total)
    assert found[0].at == pytest.approx(end - (1 + math.sqrt(0.5)) * fold_total)
    assert [d.share for d in found] == pytest.approx([1, 1, 1, 1, math.sqrt(0.5)])  # fold 4 runs alone, faster


def test_a_last_fold_on_time_keeps_the_plan_though_its_wave_is_shorter():
    """The last, smaller wave's deadline gives it its wave's share of a fold's time (it runs on the
    freed cores): on time, it is neither late nor early."""
    plan = budget.make_plan(1200, 8.0, 20.0, RATES, 3, 2, ROWS, 128, 0, 45, None)
    last = budget.deadlines(plan, start=1000.0, folds=3)[2]
    start = last.at - last.share * (plan.seconds["fold"] - plan.seconds["startup"] + plan.epochs * plan.seconds["epoch"])
    assert last.share == pytest.approx(math.sqrt(0.5))
    assert budget.own_epochs(plan, last, start, None, None) == plan.epochs
    assert budget.own_epochs(plan, last, start, plan.seconds["epoch"], None) == plan.epochs
    assert budget.deadline_from_environment(0) is None


def test_a_fold_job_that_starts_late_plans_the_epochs_that_still_fit():
    plan = budget.make_plan(1200, 8.0, 20.0, RATES, 4, 4, ROWS, 128, 0, 45, None)  # a cluster: all four at once
    seconds = plan.seconds
    on_time = FoldDeadline(1000.0 + seconds["fold"] + plan.epochs * seconds["epoch"], seconds["predict"])
    assert budget.epochs_before(plan, on_time, now=1000.0 + seconds["startup"] + 1e-6) == plan.epochs - 1
    assert budget.own_epochs(plan, on_time, 1000.0 + seconds["startup"] + 1e-6, None, None) == plan.epochs  # LATE_SLACK
    late = 3.5 * seconds["epoch"]  # waited in a queue
    assert budget.epochs_before(plan, on_time, now=1000.0 + seconds["startup"] + late) == plan.epochs - 4
    assert budget.epochs_before(plan, on_time, now=on_time.at) == 1  # at least one


def test_a_fold_job_that_starts_early_plans_the_epochs_its_forerunners_timing_says_fit():
    """Early, by the epochs the folds before it took (median), with the run's reserve kept and at
    most an epochs= given; without their timing, or on time, the plan stands."""
    plan = budget.make_plan(1200, 8.0, 20.0, RATES, 4, 2, ROWS, 128, 0, 45, None)
    seconds = plan.seconds
    fixed_s = seconds["fold"] - seconds["startup"]
    reserve_s = budget.RESERVE * plan.time_limit_s
    start = 1000.0 + seconds["startup"]
    on_time = FoldDeadline(start + fixed_s + plan.epochs * seconds["epoch"], seconds["predict"])
    assert budget.own_epochs(plan, on_time, start, None, None) == plan.epochs
    assert budget.own_epochs(plan, on_time, start, seconds["epoch"], None) == plan.epochs  # the reserve is kept
    early = dataclasses.replace(on_time, at=on_time.at + 2.5 * seconds["epoch"] + reserve_s)
    assert budget.own_epochs(plan, early, start, None, None) == plan.epochs  # no fold has timed an epoch yet
    assert budget.own_epochs(plan, early, start, seconds["epoch"], None) == plan.epochs + 2
    assert budget.own_epochs(plan, early, start, seconds["epoch"], cap=plan.epochs + 1) == plan.epochs + 1
    assert budget.own_epochs(plan, on_time, start, seconds["epoch"] / 2, None) > plan.epochs  # they ran twice as fast
    # slower ones on time: the plan stands (only lateness cuts it; Deadline times the fold's own epochs)
    assert budget.own_epochs(plan, on_time, start, seconds["epoch"] * 2, None) == plan.epochs


def _history(fold_dir, seconds: list[float]) -> None:
    fold_dir.mkdir(parents=True)
    rows = "".join(f"{e},0.9,0.3,0.9,0.3,0.001,{s}\n" for e, s in enumerate(seconds, 1))
    (fold_dir / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss,learning_rate,seconds\n" + rows)


@pytest.mark.parametrize("late_epochs, forerunners, change", [(0.5, None, 0), (1.5, None, -2), (3.5, None, -4),
                                                               (-2.5, None, 0), (-2.5, 1.0, 2), (-2.5, 0.5, "more")])
def test_a_local_fold_job_that_starts_off_its_time_lays_its_schedule_over_the_epochs_that_fit(
        tmp_path, monkeypatch, late_epochs, forerunners, change):
    """Up to one epoch short, the plan stands (Deadline skips it from the schedule's middle, timing
    the fold's own epochs); more, and the fold plans fewer. Early, it plans more where the folds
    before it timed their epochs (`forerunners`: their epoch time as a share of the plan's; their
    first epochs, which trace, left out). Recorded for its retries."""
    plan = budget.make_plan(1200, 8.0, 20.0, RATES, 4, 2, ROWS, 128, 0, 45, None)
    seconds, now = plan.seconds, time.time()
    on_time = now - seconds["startup"] + seconds["fold"] + plan.epochs * seconds["epoch"]
    if late_epochs < 0:
        on_time += budget.RESERVE * plan.time_limit_s
    if forerunners:
        for k in (0, 1):
            _history(tmp_path / f"fold_{k}", [9 * seconds["epoch"]] + [forerunners * seconds["epoch"]] * 3)
    monkeypatch.setenv(FOLD_JOB, "1")
    monkeypatch.setenv(budget.DEADLINE, f"{on_time - late_epochs * seconds['epoch']!r},{seconds['predict']!r}")
    got = kfold._own_epochs(plan, kfold.Work(tmp_path, [2], [2], now), None)
    assert got.epochs > plan.epochs + 2 if change == "more" else got.epochs == plan.epochs + change
    record = tmp_path / "fold_2" / "epochs.json"
    assert record.exists() == bool(change)
    if change:
        assert json.loads(record.read_text()) == {"epochs": got.epochs, "planned": plan.epochs}
    assert rundir.fold_epochs(tmp_path / "fold_2", plan.epochs) == got.epochs  # what the run's progress lines count to
    assert kfold._own_epochs(plan, kfold.Work(tmp_path, [2], [2], now + 1e6), None).epochs == got.epochs  # a retry
    # the same command run again with this fold the last one left trains it in its main process, to its own epochs
    assert kfold._fold_config(compose_config(["schedule=cosine"]), plan, tmp_path, 2).epochs == got.epochs


def test_a_fold_job_on_a_cluster_is_not_timed_by_other_nodes_epochs(tmp_path, monkeypatch):
    plan = budget.make_plan(1200, 8.0, 20.0, RATES, 4, 4, ROWS, 128, 0, 45, None)
    for k in (0, 1):
        _history(tmp_path / f"fold_{k}", [plan.seconds["epoch"] / 4] * 4)  # other nodes, four times as fast
    left = plan.seconds["fold"] - plan.seconds["startup"] + plan.epochs * plan.seconds["epoch"]
    monkeypatch.setenv(FOLD_JOB, "1")
    monkeypatch.delenv(budget.DEADLINE, raising=False)
    monkeypatch.setenv(budget.DEADLINE_LEFT, f"{left + 60!r},{plan.seconds['predict']!r},1.0")
    assert kfold._own_epochs(plan, kfold.Work(tmp_path, [2], [2], time.time()), None).epochs == plan.epochs


def test_a_fold_job_on_another_node_takes_its_time_left_from_the_heartbeat(tmp_path, monkeypatch):
    from src.cluster import watch

    deadline = FoldDeadline(time.time() + 300, 2.0, 0.7)
    env = budget.remote_environment(deadline)  # at submission: a duration, no clock time
    assert float(env[budget.DEADLINE_LEFT].split(",")[0]) == pytest.approx(300, abs=1)
    monkeypatch.setenv(budget.DEADLINE_LEFT, env[budget.DEADLINE_LEFT])
    monkeypatch.delenv(budget.DEADLINE, raising=False)
    assert budget.deadline_from_environment(1).at == pytest.approx(time.time() + 300, abs=1)  # no heartbeat: from its start
    beat = watch.Heartbeat(tmp_path, every_s=60, left=lambda: {1: 120.0})  # the main process, 180 s later by its clock
    monkeypatch.setenv(watch.HEARTBEAT_FILE, str(beat.path))
    found = budget.deadline_from_environment(1)
    assert found.at == pytest.approx(time.time() + 120, abs=1) and found.tail_s == 2.0 and found.share == 0.7
    monkeypatch.setenv(budget.DEADLINE, "1000.5,2.0")  # from a main process before wave shares: a full wave
    assert budget.deadline_from_environment(1) == FoldDeadline(1000.5, 2.0, 1.0)


def test_the_exponential_schedule_is_laid_over_the_planned_epochs():
    cfg = compose_config(["epochs=45"])
    plan = Plan(600, 5, 45, 5, 2, {}, {})
    planned = schedules.apply_plan(plan, cfg)
    assert planned.epochs == 5
    # the last planned epoch gets the rate the 45th had: the whole decay, squeezed
    assert planned.schedule.decay ** 4 == pytest.approx(cfg.schedule.decay ** 44)
    assert schedules.apply_plan(Plan(600, 45, 45, 5, 2, {}, {}), cfg).schedule.decay == cfg.schedule.decay


def test_the_cosine_schedule_spans_exactly_the_planned_steps():
    cfg = compose_config(["schedule=cosine", "epochs=7"])
    steps = 30
    rate = schedules.build(cfg, steps).learning_rate
    peak, total = cfg.optimizer.learning_rate, 7 * steps
    warmup = round(cfg.schedule.warmup * total)
    assert float(rate(0)) == pytest.approx(peak * cfg.schedule.start)
    assert float(rate(warmup)) == pytest.approx(peak)
    assert float(rate(total)) == pytest.approx(peak * cfg.schedule.final)  # reached at the last step, not before
    assert float(rate(total - 1)) > peak * cfg.schedule.final


def test_deadline_stops_training_after_the_epoch_that_would_miss_it():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    x, y = np.zeros((64, 4), np.float32), keras.utils.to_categorical(np.zeros(64), 2)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[Deadline(0, FoldDeadline(time.time() + 0.5, 3600.0))])
    assert len(history.history["loss"]) == 1
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[Deadline(0, FoldDeadline(time.time() + 3600, 1.0))])
    assert len(history.history["loss"]) == 5


class _Tick(keras.callbacks.Callback):
    """A clock for Deadline that each epoch advances by `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.now, self.seconds = 1000.0, seconds

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.seconds


def _slow_fold(steps_per_epoch: int | None, schedule: schedules.Rate) -> tuple[keras.Model, list]:
    """Six planned epochs of 2 steps, each taking 10 s on a fake clock, with time for 4 of them."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(schedule.learning_rate), "categorical_crossentropy")
    x, y = np.zeros((64, 4), np.float32), keras.utils.to_categorical(np.zeros(64), 2)
    tick = _Tick(10.0)
    deadline = Deadline(0, FoldDeadline(tick.now + 41.5, 1.0), steps_per_epoch, clock=lambda: tick.now)
    history = model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[*schedule.callbacks, tick, deadline])
    return model, history.history["loss"]


def test_a_fold_behind_its_deadline_skips_the_middle_of_its_schedule_and_ends_on_its_last_rate():
    cfg = compose_config(["schedule=cosine", "epochs=6", "schedule.warmup=0"])
    rate = schedules.build(cfg, 2)
    model, losses = _slow_fold(2, rate)
    # epoch 1 traces (trusted only to stop); after epoch 2, 2 of the 4 left fit: 2 are skipped
    assert len(losses) == 4
    assert int(model.optimizer.iterations) == 6 * 2  # the schedule's last step
    final = cfg.optimizer.learning_rate * cfg.schedule.final
    assert float(model.optimizer.learning_rate) == pytest.approx(final)


def test_a_fold_on_an_epoch_wise_schedule_trains_the_epochs_that_fit_then_stops():
    model, losses = _slow_fold(None, schedules.exponential(0.01, 6, 2, decay=0.5))
    assert len(losses) == 4  # its last epochs are cut, not skipped
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01 * 0.5**3)


def test_a_time_limited_run_plans_records_and_resumes_its_plan(tiny, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny, tmp_path) + ["epochs=3", "time_limit=10m", "schedule=cosine", f"hydra.run.dir={run_dir}"]
    proc = run_cv(args, prelude=KILL_MID_EPOCH.format(fold=1, epoch=2, batch=2), check=False)
    assert proc.returncode == -9
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["epochs"] == 3 and plan["time_limit_s"] == 600 and plan["rates"]["train"] > 0  # capped by epochs=3
    assert "time_limit 0:10:00: planned 3 epoch(s) per fold" in (run_dir / "cv.log").read_text()

    run_cv(args)
    assert json.loads((run_dir / "plan.json").read_text()) == plan
    assert "keeping the plan of 3 epoch(s)" in (run_dir / "cv.log").read_text()
    metrics = check_run_dir(run_dir, folds=2)
    assert metrics["time_limit"] == {"seconds": 600, "epochs": 3, "epoch_fraction": 1.0, "folds": 2, "rates": plan["rates"]}
    assert plan["fold_choice"] is None  # fold=2 was given
    for k in range(2):
        history = (run_dir / f"fold_{k}" / "history.csv").read_text().splitlines()
        assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]
        last_rate = float(history[-1].split(",")[history[0].split(",").index("learning_rate")])
        assert last_rate == pytest.approx(1e-3 * 0.01, rel=1e-3)  # the cosine's end, at the planned last step

    # another limit is another run
    proc = run_cv([a for a in args if a != "time_limit=10m"] + ["time_limit=20m"], check=False)
    assert proc.returncode == 1 and "time_limit: '10m' → '20m'" in proc.stderr


def test_a_budget_buys_each_fold_its_recipes_epochs_then_more_folds():
    choice = budget.choose_folds({3: 17, 4: 13, 5: 9, 6: 7}, want=12)
    assert (choice.folds, choice.want) == (4, 12) and "the most that get at least recipe.fold_epochs=12" in choice.why
    assert budget.choose_folds({3: 17, 4: 13, 5: 12}, want=12).folds == 5  # all of the config's folds
    few = budget.choose_folds({3: 5, 4: 3, 5: 0}, want=12)
    assert few.folds == 3 and "the fewest, 3 folds of 5 epochs" in few.why  # the most epochs each
    assert budget.choose_folds({3: 0, 4: 0}, want=12).folds == 3  # not one epoch: the fewest, whose plan's error follows
    assert budget.fold_counts(15) == list(range(3, 16)) and budget.fold_counts(2) == [2]


def test_a_trial_gets_the_rows_its_share_fits_and_the_most_accurate_recipe_wins():
    assert trial.trial_rows(60, RATES, epochs=2, batch_size=32, available=50_000) == int((60 - 3 - 1) * 1000 / 2)
    assert trial.trial_rows(60, RATES, 2, 32, available=10_000) == 10_000  # at most the fold's rows
    assert trial.trial_rows(1, RATES, 2, 32, 10_000) == 64  # at least two batches
    trials = [trial.Trial("seed", 0.97, 2000, 2, 10.0), trial.Trial("generic", 0.98, 2000, 2, 12.0),
              trial.Trial("other", 0.98, 2000, 2, 9.0)]
    best, why = trial.chosen(trials, share=0.1, limit_s=1200)
    assert best.recipe == "generic"  # the first listed among equals
    assert why == ("recipe=auto: generic reached 0.9800 against seed 0.9700, other 0.9800 on one fold's validation rows "
                   "after 2 epoch(s) on 2,000 training rows each, 31 s in all (recipe.share=0.1 of time_limit=1200s)")


def test_recipe_auto_compares_its_candidates_on_one_fold_and_the_run_keeps_its_choice(tiny, tmp_path):
    """recipe=auto under a small budget (fold=2 given): a trial of seed and of generic on fold 0,
    then the more accurate trains both folds; run.json, the report and the same command on the
    finished run dir agree, and nothing is compared again."""
    run_dir = tmp_path / "run"
    args = [a for a in tiny_overrides(tiny, tmp_path) if not a.startswith("recipe=")]
    # 12 s of trials, as share=0.2 of 60 s, with room for one epoch per fold on a slow, busy 2-core host
    args += ["recipe=auto", "recipe.share=0.12", "time_limit=100s", "tensorboard=false", f"hydra.run.dir={run_dir}"]
    run_cv(args)
    chosen = _check_auto_choice(run_dir)
    assert json.loads((run_dir / "plan.json").read_text())["fold_choice"] is None  # fold=2 given
    check_run_dir(run_dir, folds=2)
    run_cv(args)  # the finished run dir: its recorded choice, nothing compared again
    assert (run_dir / "cv.log").read_text().count("[src.training.trial]") == 2
    assert json.loads((run_dir / "run.json").read_text())["resolved_config"]["recipe"] == chosen


@pytest.mark.slow  # the budget is filled with folds: 2 to 3 minutes
@pytest.mark.parametrize("jobs, limit", [(1, 120), (2, 150)])  # fold jobs start slower
def test_a_budget_without_fold_or_recipe_chooses_both_and_the_run_keeps_them(tiny, tmp_path, jobs, limit):
    """recipe=auto and no fold=: after the trials, the most folds (3 to conf's 15) that get the
    chosen recipe's 1 epoch each (epochs=1 given) in what is left. run.json, plan.json, the fold
    jobs, the report and the same command on the finished run dir agree on both."""
    run_dir = tmp_path / "run"
    args = [a for a in tiny_overrides(tiny, tmp_path) if not a.startswith(("recipe=", "jobs=", "fold="))]
    args += ["recipe=auto", "recipe.share=0.1", f"time_limit={limit}s", f"jobs={jobs}", "tensorboard=false", f"hydra.run.dir={run_dir}"]
    run_cv(args)
    _check_auto_choice(run_dir)
    recorded = json.loads((run_dir / "run.json").read_text())["resolved_config"]
    plan = json.loads((run_dir / "plan.json").read_text())
    choice, folds = plan["fold_choice"], plan["folds"]
    assert choice["folds"] == folds == recorded["fold"] and 3 <= folds <= 15 and choice["want"] == 1
    assert choice["epochs"][str(folds)] == plan["epochs"] >= 1 and all(e < 1 for k, e in choice["epochs"].items() if int(k) > folds)
    check_run_dir(run_dir, folds=folds)
    assert f"Fold count: **{folds}**, chosen for time_limit={limit}s" in (run_dir / "report.md").read_text()
    run_cv(args)  # the finished run dir: its recorded choices, nothing compared or planned again
    log = (run_dir / "cv.log").read_text()
    assert log.count("[src.training.trial]") == 2 and log.count("epochs per fold by fold count") == 1
    assert json.loads((run_dir / "plan.json").read_text()) == plan


def _check_auto_choice(run_dir) -> dict:
    """run.json, the log and the report of a recipe=auto run agree on what was compared and chosen."""
    recorded = json.loads((run_dir / "run.json").read_text())["resolved_config"]
    chosen = recorded["recipe"]
    assert chosen["name"] in {"seed", "generic"} and set(chosen["compared"]) == {"seed", "generic"}
    assert chosen["why"].startswith(f"recipe=auto: {chosen['name']} reached {chosen['compared'][chosen['name']]:.4f}")
    assert chosen["compared"][chosen["name"]] == max(chosen["compared"].values())
    assert recorded["batch_size"] == 32  # given on the command line: each candidate has it
    assert recorded["model"]["dropout"] == {"seed": 0.4, "generic": 0.1}[chosen["name"]]
    assert f"Recipe: **{chosen['name']}**: recipe=auto: " in (run_dir / "report.md").read_text()
    trials = [line for line in (run_dir / "cv.log").read_text().splitlines() if "[src.training.trial]" in line]
    assert [line.split("recipe=auto: ")[1].split()[0] for line in trials] == ["seed", "generic"]
    return chosen


def test_recipe_auto_without_a_time_limit_is_refused_leaving_nothing(tiny, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cv([a for a in tiny_overrides(tiny, tmp_path) if not a.startswith("recipe=")]
                  + ["recipe=auto", f"hydra.run.dir={run_dir}"], check=False)
    assert proc.returncode == 1 and "recipe=auto compares recipes within a share of a time_limit" in proc.stderr.splitlines()[-1]
    assert not run_dir.exists()


def test_a_limit_too_short_is_refused_before_training(tiny, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cv(tiny_overrides(tiny, tmp_path) + ["time_limit=2s", f"hydra.run.dir={run_dir}"], check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "too short for one epoch per fold" in last and "need at least" in last
    assert not run_dir.exists()  # nothing written


def test_weight_averaging_forgets_the_random_start_within_the_run():
    cfg = compose_config(["experiment=cnn_cosine_ema", "epochs=1"])
    momentum = schedules.averaging(cfg, 125)["ema_momentum"]
    assert momentum == pytest.approx(0.92) and momentum**125 < 1e-4  # a short run: a short average
    assert schedules.averaging(compose_config(["experiment=cnn_cosine_ema", "epochs=45"]), 250)["ema_momentum"] == cfg.optimizer.ema_momentum
    assert schedules.averaging(compose_config(["epochs=1"]), 125) == {}  # no averaging unless asked


def test_the_runs_eta_counts_the_epochs_a_fold_job_re_planned(tmp_path):
    from src.training.callbacks import RunClock
    from src.training.scheduler import FoldJobs, _Reporter

    clock = RunClock(2 * 4, parallel=2)
    reporter = _Reporter(FoldJobs(tmp_path, lambda k, t: [], [2, 3], 1, 4, 4, 1000), clock)
    _history(tmp_path / "fold_2", [10.0])
    rundir.write_once(tmp_path / "fold_2" / "epochs.json", {"epochs": 6, "planned": 4})  # started early
    reporter.poll()
    assert clock.done == 1 and clock.total == 2 * 4 + 2
