"""The stages of a K-fold CV run (src.cv wires them to Hydra): check the request, load the data
and split it, decide the runtime, claim the run dir, train the folds left, and build the
ensemble, the report and the record once every fold is complete.

Imported only after src.cv has chosen the Keras backend (src.runtime.backend): it imports Keras.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, ListConfig

from src import models  # noqa: F401  (registers the custom layers that saved fold models name)
from src import rundir
from src.errors import UserError
from src.files import sha256, write_json
from src.inputs import dataset as data_mod
from src.inputs import pipeline
from src.inputs import pseudo as pseudo_labels
from src.inputs.folds import FoldData, fold_data, make_folds
from src.inputs.submission import submission_format
from src.models import load_model
from src.models.inference import reconstruct
from src.results import ensemble, pictures, report, tracking
from src.training import budget
from src.training import strategy as strategy_mod
from src.training.budget import FoldDeadline, Plan
from src.training.callbacks import RunClock, fold_line
from src.training.checkpoint import epochs_committed
from src.training.fold import Placement, compile_model, train_fold
from src.training.fold_job import in_fold_job
from src.training.scheduler import FoldJobs, run_fold_jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    """Stage 1: the checked data, what a submission must look like, the pseudo-labels, the folds,
    and what the data resolved (recorded in run.json; the composed config is never written to)."""

    dataset: data_mod.Dataset
    fmt: rundir.SubmissionFormat
    pseudo: pseudo_labels.PseudoLabels | None
    folds: list
    resolved: dict  # {"data.image_shape": [...], "data.num_classes": K}

    def fold(self, k: int) -> FoldData:
        return fold_data(self.dataset, self.folds, k, self.pseudo)


@dataclass(frozen=True)
class Work:
    """Stage 2: the folds this process is asked for, the ones left to train, and where its files go."""

    run_dir: Path
    wanted: list[int]
    todo: list[int]
    started: float  # when the process started: a time_limit counts from there


def run(cfg: DictConfig, run_dir: Path, parallel_jobs: int = 1,
        fold_job: Callable[[int, int], list[str]] | None = None, epochs_given: bool = True,
        started: float | None = None) -> ensemble.Ensemble | None:
    """Check the data, train the folds asked for that are not complete, and build the ensemble
    once every fold is complete; returns it (None while folds are missing).

    `parallel_jobs` is how many jobs of a launcher's sweep share this machine (for the thread
    cap). `fold_job(k, threads)` is the command line that trains fold k alone; with it, `jobs`
    folds train at once, each in a process of its own (src.training.scheduler). With a
    `time_limit`, `epochs` caps the plan only when `epochs_given` (src.training.budget), and
    counts from `started` (now when not given).
    """
    limit = check_request(cfg)
    inputs = load_inputs(cfg)
    work = plan_folds(cfg, inputs, run_dir, time.time() if started is None else started)
    place = start_runtime(cfg, work, parallel_jobs, fold_job is not None)
    work = own_dir(work, place)
    ident = claim_run_dir(cfg, inputs, work, place, write=False)  # a resume with other settings is refused first
    plan = _plan(cfg, work, inputs, place, limit, epochs_given) if limit and work.todo else None
    claim_run_dir(cfg, inputs, work, place, write=True, ident=ident)
    if plan:
        plan = _record(work.run_dir, plan)
        cfg = budget.apply(plan, cfg)
    failed = train(cfg, inputs, work, place, plan, fold_job)
    if in_fold_job():  # the run's main process reports and builds the ensemble
        return None
    return finish(cfg, inputs, work.run_dir, failed)


def check_request(cfg: DictConfig) -> float | None:
    """What can be refused before any data is read; the time limit in seconds, if any."""
    if cfg.epochs < 1:
        raise UserError(f"epochs={cfg.epochs}: need at least 1")
    limit = budget.parse_duration(cfg.get("time_limit"))
    tracking.wanted(cfg)  # logger=mlflow without MLflow is refused before any training
    return limit


def load_inputs(cfg: DictConfig) -> Inputs:
    """Stage 1: read and check the data files, the sample submission and the pseudo-labels, and split."""
    dataset = data_mod.load(cfg.data)
    pseudo = pseudo_labels.load(cfg.get("pseudo"), dataset.x_test, dataset.digests["test"], dataset.num_classes)
    folds = make_folds(dataset.y_train, cfg.fold, cfg.split, cfg.seed, cfg.val_fraction)
    smallest = min(len(tr) for tr, _ in folds)
    if smallest < cfg.batch_size:
        raise UserError(f"a fold trains on only {smallest} rows, less than batch_size={cfg.batch_size}: lower batch_size or fold")
    resolved = {"data.image_shape": list(dataset.x_train.shape[1:]), "data.num_classes": dataset.num_classes}
    return Inputs(dataset, submission_format(cfg.data, dataset), pseudo, folds, resolved)


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
    """Stage 5: train the folds left, here one after another or as fold jobs; the failed ones' reasons."""
    rt, todo, replicas = place.runtime, work.todo, place.strategy.num_replicas_in_sync
    deadlines = dict(zip(todo, budget.deadlines(plan, work.started, len(todo)))) if plan else {}
    if in_fold_job():  # its run's main process set its deadline
        deadlines = {k: budget.deadline_from_environment() for k in todo}
    jobs = max(1, min(rt.fold_jobs, len(todo)))
    if inputs.pseudo:
        log.info("pseudo-labels: %d test images at probability ≥ %s from %s join every fold's training rows",
                 len(inputs.pseudo.index), inputs.pseudo.record["threshold"], cfg.pseudo.run_dir)
    if not in_fold_job():
        log.info("recipe %s: %s", cfg.recipe.name or "not named", cfg.recipe.why)  # a run dir from before: LATER_KEYS
    log.info("%d fold(s), %d to train here %s, × %d epoch(s), batch %d (%d per replica × %d replica(s), %s); %s%s",
             len(inputs.folds), len(todo), todo, cfg.epochs, cfg.batch_size, cfg.batch_size // replicas, replicas,
             strategy_mod.strategy_name(place.strategy), rt.summary(),
             f"; {jobs} fold jobs at once × {rt.job_threads} thread(s)" if jobs > 1
             else f"; {rt.threads} thread(s)" if rt.threads else "")
    if jobs > 1 and fold_job:
        pseudo_rows = len(inputs.pseudo.index) if inputs.pseudo else 0
        steps = pipeline.steps_per_epoch(len(inputs.folds[todo[0]][0]) + pseudo_rows, cfg.batch_size)
        fold_jobs = FoldJobs(work.run_dir, fold_job, todo, rt.job_threads, len(inputs.folds), cfg.epochs,
                             steps * cfg.batch_size, cores=rt.hardware.cores,
                             regroup=cfg.threads == "auto" and not cfg.deterministic, deadlines=deadlines)
        clock = RunClock(sum(cfg.epochs - epochs_committed(rundir.fold_dir(work.run_dir, k)) for k in todo), jobs)
        return run_fold_jobs(fold_jobs, jobs, clock)
    clock = RunClock(len(todo) * cfg.epochs)
    for k in todo:
        _train_here(cfg, inputs.fold(k), place, work.run_dir, clock, deadlines.get(k))
    return {}


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


def _plan(cfg: DictConfig, work: Work, inputs: Inputs, place: Placement, limit: float, epochs_given: bool) -> Plan:
    """The run's time_limit plan: the one recorded in the run dir, or a new one from a calibration
    on the first fold to train."""
    recorded = rundir.read_plan(work.run_dir)
    if recorded:
        return Plan.from_dict(recorded)
    if place.runtime.distribution == "multi_worker":
        raise UserError("time_limit is not supported with strategy=multi_worker (the workers would plan apart): set epochs instead")
    data = inputs.fold(work.todo[0])
    startup = time.time() - work.started
    rates = budget.calibrate(lambda: compile_model(data, cfg, place), data, cfg)
    rows = {"train": len(data.x_train), "val": len(data.x_val), "test": len(inputs.dataset.x_test)}
    jobs = max(1, min(place.runtime.fold_jobs, len(work.todo)))
    return budget.make_plan(limit, startup, time.time() - work.started, rates, len(work.todo), jobs, rows, cfg.batch_size,
                            cfg.tta, cfg.epochs, cfg.epochs if epochs_given else None)


def _record(run_dir: Path, plan: Plan) -> Plan:
    """Write the plan unless the run dir has one (a resume, or a fold job that planned first);
    the recorded one, logged."""
    fresh = rundir.write_once(run_dir / rundir.PLAN, plan.to_dict())
    plan = Plan.from_dict(rundir.read_plan(run_dir))
    rates, seconds = plan.rates, plan.seconds
    log.info("time_limit %s: %s %d epoch(s) per fold for %d fold(s), %d at a time (measured per fold process: "
             "%s training images/s, %s predicting; estimated %s in all) in %s",
             budget.duration(plan.time_limit_s), "planned" if fresh else "keeping the plan of", plan.epochs, plan.folds,
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


def select_folds(fold_index, folds: int) -> list[int]:
    """The 0-based folds to train: all when `fold_index` is null, else the one or the list given."""
    if fold_index is None:
        return list(range(folds))
    chosen = list(fold_index) if isinstance(fold_index, (list, tuple, ListConfig)) else [fold_index]
    bad = [k for k in chosen if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < folds]
    if bad or not chosen:
        raise UserError(f"fold_index={fold_index!r}: need fold numbers in 0..{folds - 1} (fold={folds}), e.g. fold_index=0 or fold_index=[0,2]")
    return sorted(set(chosen))


def _bytes_needed(cfg: DictConfig, dataset: data_mod.Dataset, folds: int) -> int:
    """A generous estimate of what the run writes: per fold two models with optimizer state and
    the predictions, plus the ensemble's CSVs."""
    classes = dataset.num_classes
    model_bytes = 3 * 4 * 400_000 + (1 << 20)  # the default CNN: ~330k parameters, float32, weights + Adam moments
    predictions = 4 * classes * (len(dataset.y_train) // max(cfg.fold, 1) + len(dataset.x_test))
    csvs = 12 * classes * (len(dataset.y_train) + len(dataset.x_test))
    return folds * (3 * model_bytes + predictions) + csvs + (16 << 20)


