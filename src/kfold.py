"""The stages of a K-fold CV run (src.cv wires them to Hydra), once the request is checked and
the data loaded and split (src.request, before Keras's import): decide the runtime, claim the
run dir, train the folds left, and build the ensemble, the report and the record once every fold
is complete.

Imported only after src.cv has chosen the Keras backend (src.runtime.backend): it imports Keras.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from src import models  # noqa: F401  (registers the custom layers that saved fold models name)
from src import cluster, rundir
from src.cluster import watch
from src.errors import UserError
from src.files import sha256, write_json
from src.inputs import dataset as data_mod
from src.inputs import pipeline
from src.inputs.folds import FoldData, make_folds
from src.models import load_model
from src.models.inference import reconstruct
from src.request import Inputs, Request, select_folds
from src.results import ensemble, pictures, report, tracking
from src.training import budget, schedules, trial
from src.training import strategy as strategy_mod
from src.training.budget import FoldChoice, FoldDeadline, Plan
from src.training.calibrate import calibrate
from src.training.callbacks import RunClock, fold_line
from src.training.checkpoint import epoch_seconds, epochs_committed
from src.training.fold import Placement, compile_model, train_fold
from src.training.fold_job import in_fold_job
from src.training.scheduler import FoldJobs, run_fold_jobs, submit_fold_jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    """Stage 2: the folds this process is asked for, the ones left to train, and where its files go."""

    run_dir: Path
    wanted: list[int]
    todo: list[int]
    started: float  # when the process started: a time_limit counts from there


@dataclass(frozen=True)
class Command:
    """What the command adds to its config (src.cv): how many jobs of a launcher's sweep share
    this machine (`parallel_jobs`, for the thread cap); `fold_job(k, threads)`, the command line
    that trains fold k alone (with it, `jobs` folds train at once, each in a process of its own:
    src.training.scheduler); the keys its command line set (`given`: a time_limit plans the
    epochs, and on a new run the fold count, that it leaves free); when it started (a time_limit
    counts from there); and recipe=auto's candidates, composed (`recipes`)."""

    parallel_jobs: int = 1
    fold_job: Callable[[int, int], list[str]] | None = None
    given: frozenset[str] = frozenset({"epochs", "fold"})
    started: float = field(default_factory=time.time)
    recipes: dict[str, DictConfig] = field(default_factory=dict)


def run(cfg: DictConfig, run_dir: Path, request: Request, command: Command | None = None) -> ensemble.Ensemble | None:
    """Train the folds asked for that are not complete, on the checked request's data
    (src.request.prepare), and build the ensemble once every fold is complete; returns it (None
    while folds are missing)."""
    command = command or Command()
    limit, inputs = request.limit, request.inputs
    work = plan_folds(cfg, inputs, run_dir, command.started)
    place = start_runtime(cfg, work, command.parallel_jobs, command.fold_job is not None)
    work = own_dir(work, place)
    cfg = choose_recipe(cfg, inputs, work, place, limit, command.recipes)
    ident = claim_run_dir(cfg, inputs, work, place, write=False)  # a resume with other settings is refused first
    plan = None
    if limit and work.todo:
        plan, cfg, inputs, work = _plan(cfg, work, inputs, place, limit, command.given)
    claim_run_dir(cfg, inputs, work, place, write=True, ident=None if plan and plan.fold_choice else ident)
    if plan:
        plan = _own_epochs(_record(work.run_dir, plan), work, cfg.epochs if "epochs" in command.given else None)
    failed = train(cfg, inputs, work, place, plan, command.fold_job)
    if in_fold_job() and not os.environ.get(watch.FINISH):  # the run's main process reports and builds the ensemble
        return None
    return finish(schedules.apply_plan(plan, cfg) if plan else cfg, inputs, work.run_dir, failed)


def plan_folds(cfg: DictConfig, inputs: Inputs, run_dir: Path, started: float) -> Work:
    """Stage 2: the folds asked for (`fold_index`) and those of them not yet complete in `run_dir`."""
    wanted = select_folds(cfg.fold_index, len(inputs.folds))
    return Work(run_dir, wanted, [k for k in wanted if rundir.load_complete(run_dir, k) is None], started)


def start_runtime(cfg: DictConfig, work: Work, parallel_jobs: int, fold_jobs: bool) -> Placement:
    """Stage 3: this process's runtime (src.runtime) and strategy, before TensorFlow's first op. A
    resume keeps the precision its run dir recorded, and says what differs on this hardware."""
    recorded = rundir.recorded_runtime(work.run_dir)
    asked = strategy_mod.request(cfg, cfg.jobs if fold_jobs else 1, len(work.todo), parallel_jobs)
    if recorded.get("precision") and cfg.precision == "auto":
        asked = dataclasses.replace(asked, precision=recorded["precision"])
    runtime = strategy_mod.start(asked)
    if changes := runtime.changes_from(recorded):
        log.warning("this run dir was started on other hardware (%s): it goes on in its recorded precision %s",
                    ", ".join(changes), runtime.precision)
    place = Placement(runtime, strategy_mod.make_strategy(runtime, cfg.strategy))
    strategy_mod.check_batch(cfg.batch_size, place.strategy.num_replicas_in_sync)
    return place


def choose_recipe(cfg: DictConfig, inputs: Inputs, work: Work, place: Placement, limit: float,
                  recipes: dict[str, DictConfig]) -> DictConfig:
    """Stage 3b, recipe=auto on a new run: the candidate recipe (`recipes`, composed) that a short
    trial of each on the first fold to train finds most accurate, within recipe.share of the
    time_limit (src.training.trial); its config, with the comparison in recipe.why and
    recipe.compared. Any other recipe: `cfg` as it is."""
    if cfg.recipe.name != "auto" or not work.todo:
        return cfg
    if not recipes:
        raise UserError("recipe=auto needs candidates: recipe.candidates=[seed,generic] (recipes of conf/recipe/)")
    data = inputs.fold(work.todo[0])
    first = next(iter(recipes.values()))
    rates = calibrate(lambda: compile_model(data, first, place), data, first)
    share_s = cfg.recipe.share * limit / len(recipes)
    trials = []
    for name, candidate in recipes.items():
        strategy_mod.check_batch(candidate.batch_size, place.strategy.num_replicas_in_sync)
        rows = trial.trial_rows(share_s, rates, cfg.recipe.trial_epochs, candidate.batch_size, len(data.x_train))
        trials.append(trial.run_trial(name, candidate, data, place, rows, cfg.recipe.trial_epochs))
    best, why = trial.chosen(trials, cfg.recipe.share, limit)
    log.info("%s", why)
    chosen = recipes[best.recipe].copy()
    chosen.recipe.why, chosen.recipe.compared = why, {t.recipe: t.accuracy for t in trials}
    return chosen


def own_dir(work: Work, place: Placement) -> Work:
    """Under several workers each trains the same steps, and only the chief's files are the run's:
    the others write into a hidden dir of their own."""
    if strategy_mod.is_chief(place.strategy):
        return work
    own = work.run_dir / f".{strategy_mod.worker_id(place.strategy)}"
    return dataclasses.replace(work, run_dir=own, todo=[k for k in work.wanted if rundir.load_complete(own, k) is None])


def claim_run_dir(cfg: DictConfig, inputs: Inputs, work: Work, place: Placement, write: bool,
                  ident: dict | None = None) -> dict:
    """Stage 4: check the run dir's record against this run (always when it has one) and, with
    `write`, record this run there and its submission format; returns the run's identity."""
    ds = inputs.dataset
    ident = ident or rundir.identity(cfg, ds.digests, inputs.pseudo.record if inputs.pseudo else None, inputs.resolved)
    rows = {"train": len(ds.y_train), "test": len(ds.x_test)}
    if not write:
        rundir.check_writable(work.run_dir, _bytes_needed(cfg, ds, len(work.wanted)))
        if (work.run_dir / rundir.RUN).exists():
            rundir.claim(work.run_dir, ident, cfg, rows, inputs.resolved, place.runtime.record())
        return ident
    labels = cfg.data.get("test_labels")
    files = {"test_labels": sha256(labels)} if labels and Path(labels).is_file() else None
    rundir.claim(work.run_dir, ident, cfg, rows, inputs.resolved, place.runtime.record(), files)
    rundir.write_submission_format(work.run_dir, inputs.fmt)
    return ident


def train(cfg: DictConfig, inputs: Inputs, work: Work, place: Placement, plan: Plan | None,
          fold_job: Callable[[int, int], list[str]] | None) -> dict[int, str]:
    """Stage 5: train the folds left under the time_limit's `plan` if any, here one after another
    or as fold jobs (locally, or on the cluster that cfg.cluster names); the failed ones' reasons."""
    base, cfg = cfg, schedules.apply_plan(plan, cfg) if plan else cfg
    rt, todo, replicas = place.runtime, work.todo, place.strategy.num_replicas_in_sync
    deadlines = dict(zip(todo, budget.deadlines(plan, work.started, len(todo)))) if plan else {}
    if in_fold_job():  # its run's main process set its deadline
        deadlines = {k: budget.deadline_from_environment(k) for k in todo}
    remote = bool(fold_job and todo) and not in_fold_job() and cfg.cluster.engine != "local"
    jobs = len(todo) if remote else max(1, min(rt.fold_jobs, len(todo)))
    threads = cfg.cluster.cpus_per_job if remote else rt.job_threads
    if inputs.pseudo:
        log.info("pseudo-labels: %d test images at probability ≥ %s from %s join every fold's training rows",
                 len(inputs.pseudo.index), inputs.pseudo.record["threshold"], cfg.pseudo.run_dir)
    if not in_fold_job():
        log.info("recipe %s: %s", cfg.recipe.name or "not named", rundir.recipe_why(cfg))  # a run dir from before: LATER_KEYS
    log.info("%d fold(s), %d to train %s %s, × %d epoch(s), batch %d (%d per replica × %d replica(s), %s); %s%s",
             len(inputs.folds), len(todo), f"on cluster={cfg.cluster.engine}" if remote else "here", todo, cfg.epochs,
             cfg.batch_size, cfg.batch_size // replicas, replicas, strategy_mod.strategy_name(place.strategy), rt.summary(),
             f"; {jobs} fold jobs at once × {threads} thread(s)" if jobs > 1
             else f"; {rt.threads} thread(s)" if rt.threads else "")
    if fold_job and (jobs > 1 or remote):
        return _train_in_jobs(cfg, inputs, work, rt, deadlines, fold_job, jobs, threads)
    clock = RunClock(len(todo) * cfg.epochs)
    for k in todo:
        _train_here(_fold_config(base, plan, work.run_dir, k), inputs.fold(k), place, work.run_dir, clock, deadlines.get(k))
    return {}


def _fold_config(cfg: DictConfig, plan: Plan | None, run_dir: Path, k: int) -> DictConfig:
    """Fold k's training config: `cfg` under the plan, with the fold's own epochs where its job
    planned them when it started early or late (epochs.json), so a rerun in this process trains
    the schedule it began."""
    if not plan:
        return cfg
    own = rundir.fold_epochs(rundir.fold_dir(run_dir, k), plan.epochs)
    return schedules.apply_plan(dataclasses.replace(plan, epochs=own), cfg)


def _train_in_jobs(cfg: DictConfig, inputs: Inputs, work: Work, rt, deadlines: dict, fold_job: Callable[[int, int], list[str]],
                   jobs: int, threads: int) -> dict[int, str]:
    """The folds left as fold jobs on the engine cfg.cluster names, `jobs` at a time, each with
    `threads` threads; the failed ones' reasons."""
    todo = work.todo
    engine = cluster.engine(cfg)
    pseudo_rows = len(inputs.pseudo.index) if inputs.pseudo else 0
    rows = len(inputs.folds[todo[0]][0]) + pseudo_rows
    steps = pipeline.steps_per_epoch(rows, cfg.batch_size, cfg.get("epoch_fraction", 1.0))
    fold_jobs = FoldJobs(work.run_dir, fold_job, todo, threads, len(inputs.folds), cfg.epochs, steps * cfg.batch_size,
                         cores=rt.hardware.cores, regroup=cfg.threads == "auto" and not cfg.deterministic and not engine.remote,
                         deadlines=deadlines, engine=engine, retries=cfg.cluster.retries, heartbeat_s=cfg.cluster.heartbeat_s,
                         remote_env={watch.STALE: str(cfg.cluster.stale_s), watch.SHARED_WAIT: str(cfg.cluster.shared_wait_s)})
    clock = RunClock(sum(cfg.epochs - epochs_committed(rundir.fold_dir(work.run_dir, k)) for k in todo), jobs)
    try:
        if engine.remote and not cfg.cluster.wait:
            return submit_fold_jobs(fold_jobs)
        return run_fold_jobs(fold_jobs, jobs, clock)
    finally:
        engine.close()


def finish(cfg: DictConfig, inputs: Inputs, run_dir: Path, failed: dict[int, str]) -> ensemble.Ensemble | None:
    """Stage 6: once every fold is complete, the ensemble, the report and the tracking, built once."""
    folds, ds = inputs.folds, inputs.dataset
    missing = [k for k in range(len(folds)) if rundir.load_complete(run_dir, k) is None]
    if failed:
        raise UserError("; ".join(f"fold {k}: {why}" for k, why in sorted(failed.items()))
                        + f". Run the same command again: it trains only the missing fold(s) {missing}")
    if missing:
        log.info("folds %s of %s are not complete yet; the job that finishes the last one builds the ensemble "
                 "(or run `python -m src.ensemble run_dir=%s`)", missing, run_dir, run_dir)
        return None
    with rundir.ensemble_lock(run_dir):  # fold jobs finishing together build it once
        ens, written = ensemble.build(run_dir, len(folds), len(ds.y_train), ds.y_test)
        if written or not (run_dir / rundir.REPORT).exists():  # a finished run run again is left exactly as it was
            _autoencoder_picture(run_dir, ds.x_train[folds[0][1]])
            report.build(run_dir, ds.x_train, ds.x_test)
            tracking.log_run(cfg, run_dir, ens.metrics)
    log.info("results in %s (report.md)\n%s\nsubmission: %s", run_dir, ensemble.summary(ens), run_dir / rundir.SUBMISSION)
    return ens


def _train_here(cfg: DictConfig, data: FoldData, place: Placement, run_dir: Path, clock: RunClock,
                deadline: FoldDeadline | None) -> None:
    """Train fold `data.fold` in this process, unless another process holds it or has finished it."""
    k = data.fold
    fdir = rundir.fold_dir(run_dir, k)
    with rundir.fold_lock(fdir) as mine:
        if not mine:
            log.warning("fold %d is being trained by another process: left to it", k)
            return
        if rundir.load_complete(run_dir, k) is not None:  # finished by another process meanwhile
            return
        result = train_fold(data, cfg, place, fdir, clock, deadline)
    log.info("%s", fold_line(result, cfg.fold))


def _plan(cfg: DictConfig, work: Work, inputs: Inputs, place: Placement, limit: float,
          given: frozenset[str]) -> tuple[Plan, DictConfig, Inputs, Work]:
    """The run's time_limit plan: the one recorded in the run dir, or a new one from a calibration
    on the first fold to train, with the config, folds and work of the fold count it chose (when
    it chose one: `_fold_choice`)."""
    recorded = rundir.read_plan(work.run_dir)
    if recorded:
        return Plan.from_dict(recorded), cfg, inputs, work
    if place.runtime.distribution == "multi_worker":
        raise UserError("time_limit is not supported with strategy=multi_worker (the workers would plan apart): set epochs instead")
    data = inputs.fold(work.todo[0])
    startup = time.time() - work.started
    rates = calibrate(lambda: compile_model(data, cfg, place), data, cfg)
    cap = cfg.epochs if "epochs" in given else None
    n, pseudo, test = len(inputs.dataset.y_train), len(inputs.pseudo.index) if inputs.pseudo else 0, len(inputs.dataset.x_test)
    measured = {len(inputs.folds): len(data.x_val)}  # the split as it is; another count: its largest fold

    def plan_for(folds: int, todo: int) -> Plan:
        val = measured.get(folds, -(-n // folds))
        rows = {"train": n - val + pseudo, "val": val, "test": test}
        jobs = todo if cfg.cluster.engine != "local" else max(1, min(place.runtime.fold_jobs, todo))  # a cluster: all at once
        return budget.make_plan(limit, startup, time.time() - work.started, rates, todo, jobs, rows, cfg.batch_size,
                                cfg.tta, cfg.epochs, cap)

    choice = _fold_choice(cfg, work, plan_for, cap) if "fold" not in given else None
    if choice is None:
        return plan_for(len(inputs.folds), len(work.todo)), cfg, inputs, work
    if not choice.epochs[choice.folds]:
        plan_for(choice.folds, choice.folds)  # not one epoch fits even the fewest folds: its error names the least limit
    cfg = OmegaConf.merge(cfg, {"fold": choice.folds})
    inputs = dataclasses.replace(inputs, folds=make_folds(inputs.dataset.y_train, cfg.fold, cfg.split, cfg.seed, cfg.val_fraction))
    work = plan_folds(cfg, inputs, work.run_dir, work.started)
    plan = dataclasses.replace(plan_for(choice.folds, choice.folds), fold_choice=dataclasses.asdict(choice))
    return plan, cfg, inputs, work


def _fold_choice(cfg: DictConfig, work: Work, plan_for: Callable[[int, int], Plan], cap: int | None) -> FoldChoice | None:
    """On a new run of `fold` >= 3 folds with none of them named (fold_index): the fold count the
    budget gives (budget.choose_folds among budget.fold_counts), else None (keep `fold`)."""
    if cfg.fold < budget.FEWEST_FOLDS or cfg.fold_index is not None or (work.run_dir / rundir.RUN).exists():
        return None
    epochs = {}
    for folds in budget.fold_counts(cfg.fold):
        try:
            epochs[folds] = plan_for(folds, folds).whole_passes
        except UserError:
            epochs[folds] = 0
    want = min(cfg.recipe.fold_epochs, cap) if cap else cfg.recipe.fold_epochs
    choice = budget.choose_folds(epochs, want)
    log.info("time_limit: %s (epochs per fold by fold count: %s); fold=K fixes it", choice.why, rundir.fold_counts_text(epochs))
    return choice


def _own_epochs(plan: Plan, work: Work, cap: int | None) -> Plan:
    """In a fold job with a deadline: the plan with the epochs that fit between the job's start
    and its deadline where they differ from the plan's (budget.own_epochs), so that its schedule
    is laid over them and ends on time: fewer where it started late (it waited in a cluster's
    queue, or the folds before it ran slower than planned); more where a local job started early,
    timed by the epochs the folds before it took on this machine. Its fold dir keeps what it
    planned (epochs.json), so a retry of it trains to the same epochs."""
    local = os.environ.get(budget.DEADLINE)
    if not (in_fold_job() and len(work.todo) == 1 and (local or os.environ.get(budget.DEADLINE_LEFT))):
        return plan
    k = work.todo[0]
    fdir = rundir.fold_dir(work.run_dir, k)
    record = fdir / rundir.FOLD_EPOCHS
    if not record.exists() and epochs_committed(fdir) == 0:
        measured = epoch_seconds([rundir.fold_dir(work.run_dir, j) for j in range(plan.folds) if j != k]) if local else None
        measured = measured and measured + plan.rates["save_s"]  # history's seconds leave out the checkpoint's writes
        epochs = budget.own_epochs(plan, budget.deadline_from_environment(k), time.time(), measured, cap)
        if epochs != plan.epochs:
            log.warning("fold %d re-planned at its start: %d epoch(s) fit before its deadline instead of %d (%s); its "
                        "schedule is laid over them", k, epochs, plan.epochs,
                        f"the folds before it took {measured:.1f} s an epoch, planned {plan.seconds['epoch']:.1f}"
                        if measured else "it started late")
            rundir.write_once(record, {"epochs": epochs, "planned": plan.epochs})
    return dataclasses.replace(plan, epochs=rundir.fold_epochs(fdir, plan.epochs))


def _record(run_dir: Path, plan: Plan) -> Plan:
    """Write the plan unless the run dir has one (a resume, or a fold job that planned first);
    the recorded one, logged."""
    fresh = rundir.write_once(run_dir / rundir.PLAN, plan.to_dict())
    plan = Plan.from_dict(rundir.read_plan(run_dir))
    rates, seconds = plan.rates, plan.seconds
    log.info("time_limit %s: %s %d epoch(s)%s per fold for %d fold(s), %d at a time (measured per fold process: "
             "%s training images/s, %s predicting; estimated %s in all) in %s",
             budget.duration(plan.time_limit_s), "planned" if fresh else "keeping the plan of", plan.epochs,
             f" of {plan.epoch_fraction:.0%} of a pass each" if plan.epoch_fraction < 1 else "", plan.folds,
             plan.jobs, f"{rates['train']:,.0f}", f"{rates['predict']:,.0f}", budget.duration(seconds["total"]),
             rundir.PLAN)
    return plan


def _autoencoder_picture(run_dir: Path, val_images) -> None:
    """For a model with an autoencoder: fold 0's inputs above their reconstructions, and its MSE."""
    model = load_model(rundir.fold_dir(run_dir, 0) / rundir.MODEL, compile=False)
    recon = reconstruct(model, val_images)
    if recon is None:
        return
    pixels = val_images.reshape(len(val_images), -1).astype("float32") / 255.0
    mse = pictures.reconstructions(pixels, recon, val_images.shape[1:], run_dir / rundir.AUTOENCODER_PICTURE)
    write_json(run_dir / rundir.AUTOENCODER_SCORE, {"reconstruction_mse": mse, "fold": 0, "images": len(val_images)})
    log.info("autoencoder: reconstruction MSE %.4f on fold 0's validation images (%s)", mse, rundir.AUTOENCODER_PICTURE)


def _bytes_needed(cfg: DictConfig, dataset: data_mod.Dataset, folds: int) -> int:
    """A generous estimate of what the run writes: per fold two models with optimizer state and
    the predictions, plus the ensemble's CSVs."""
    classes = dataset.num_classes
    model_bytes = 3 * 4 * 400_000 + (1 << 20)  # the default CNN: ~330k parameters, float32, weights + Adam moments
    predictions = 4 * classes * (len(dataset.y_train) // max(cfg.fold, 1) + len(dataset.x_test))
    csvs = 12 * classes * (len(dataset.y_train) + len(dataset.x_test))
    return folds * (3 * model_bytes + predictions) + csvs + (16 << 20)


