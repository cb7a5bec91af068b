"""Folds in parallel: every fold trains in a fold-job process of its own (`python -m src.cv
fold_index=k`, the same job a user can start by hand), `jobs` of them at once, scheduled by
joblib. This process reports every fold's epochs as they are committed, with the whole run's
ETA, and says which folds failed or were killed.

Each fold job holds its fold's lock and commits its state every epoch (src.training.checkpoint),
so a job that is killed loses at most its current epoch, and the same command run again trains
only what is missing. Ctrl-C (SIGINT) or SIGTERM is passed on to every running job.

When a job ends and no fold is left to start, the cores it frees go to the jobs still running:
each is asked to stop after its next committed epoch (`fold_<k>/regroup`) and is started again,
resuming from that epoch with its new share of the threads. Not under `deterministic` (its thread
count is fixed) or an explicit `threads=`.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from joblib import Parallel, delayed

from src import rundir
from src.cluster import Engine, Job, Running, watch
from src.cluster.local import LocalEngine
from src.training import budget
from src.training.budget import FoldDeadline
from src.training.callbacks import RunClock, epoch_line, fold_line
from src.training.checkpoint import epoch_seconds, read_history
from src.training.fold_job import FOLD_JOB, REGROUP_EXIT, in_fold_job

log = logging.getLogger(__name__)


RESTART_S = 20.0  # a fold job started again: Python, TensorFlow, the data, the model's tracing (8-15 s measured)


@dataclass
class FoldJobs:
    """The fold jobs of one run: the command line of each, and what this process reports."""

    run_dir: Path
    command: Callable[[int, int], list[str]]  # (fold, threads) → its job's command line
    todo: list[int]
    threads: int  # each job's TensorFlow threads at the start
    folds: int  # the run's fold count, for the progress lines
    epochs: int
    images_per_epoch: int
    cores: int = 1
    regroup: bool = False  # give freed cores to the jobs still running
    deadlines: dict[int, FoldDeadline] = field(default_factory=dict)  # with a time_limit: when each fold must be done
    engine: Engine = field(default_factory=LocalEngine)  # where the jobs run (src.cluster)
    retries: int = 0  # a failed job is started again this many times, from its fold's last committed epoch
    heartbeat_s: float = 10.0  # how often the heartbeat of a remote engine's jobs is written
    remote_env: dict[str, str] = field(default_factory=dict)  # what a job on another node is told (token, heartbeat)
    running: dict[int, Running] = field(default_factory=dict)
    retried: dict[int, int] = field(default_factory=dict)
    job_threads: dict[int, int] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def run_fold_jobs(jobs: FoldJobs, parallel: int, clock: RunClock) -> dict[int, str]:
    """Run every fold job, `parallel` at a time, reporting their epochs; returns why each failed
    job failed ({} when all finished)."""
    reporter = _Reporter(jobs, clock)
    heartbeat = _watched(jobs) if jobs.engine.remote else None
    previous = {sig: signal.signal(sig, _forward(jobs)) for sig in (signal.SIGINT, signal.SIGTERM)}
    reporter.start()
    try:
        outcomes = Parallel(n_jobs=parallel, backend="threading")(delayed(_run_one)(jobs, k) for k in jobs.todo)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reporter.stop()
        if heartbeat:
            heartbeat.stop()
    if jobs.retried:
        log.warning("fold(s) retried after their job failed: %s (cluster.retries=%d)",
                    ", ".join(f"fold {k} ({n}x)" for k, n in sorted(jobs.retried.items())), jobs.retries)
    return {k: why for k, why in outcomes if why}


def submit_fold_jobs(jobs: FoldJobs) -> dict[int, str]:
    """cluster.wait=false: start every fold job on the engine and return at once. Nothing watches
    them, so none stops for want of a parent; the one that completes the last fold builds the
    ensemble, and the same command starts again any that failed."""
    _share_run_dir(jobs)
    jobs.remote_env[watch.FINISH] = "1"
    idents = [_start(jobs, k, jobs.threads, attempt=1).ident for k in jobs.todo]
    log.info("submitted %d fold job(s) (%s: %s) and not waiting (cluster.wait=false): see them with `squeue -j %s`; "
             "the job that completes the last fold builds the ensemble, and if one fails, the same command starts "
             "what is missing", len(idents), jobs.engine.name, " ".join(idents), ",".join(idents))
    return {}


def _watched(jobs: FoldJobs) -> watch.Heartbeat:
    """Before jobs start on other nodes: the run dir shared with them (`_share_run_dir`), and the
    heartbeat (with each fold's seconds left) they watch this process by, named in jobs.remote_env."""
    _share_run_dir(jobs)
    left = lambda: {k: d.at - time.time() for k, d in jobs.deadlines.items()}  # noqa: E731
    heartbeat = watch.Heartbeat(jobs.run_dir, jobs.heartbeat_s, left)
    heartbeat.start()
    jobs.remote_env |= {watch.WATCH: "heartbeat", watch.HEARTBEAT_FILE: str(heartbeat.path.resolve())}
    return heartbeat


def _share_run_dir(jobs: FoldJobs) -> None:
    """The token jobs on other nodes check the run dir by, written there and named in
    jobs.remote_env, with this process's PYTHONPATH."""
    token, value = watch.write_token(jobs.run_dir)
    jobs.remote_env |= {watch.TOKEN_FILE: str(token), watch.TOKEN_VALUE: value}
    if os.environ.get("PYTHONPATH"):
        jobs.remote_env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])


def _run_one(jobs: FoldJobs, k: int) -> tuple[int, str]:
    with jobs.lock:
        jobs.started.add(k)
        threads = jobs.job_threads[k] = jobs.threads
    attempt = 1
    while True:
        if jobs.stopping.is_set():
            return k, "not started: the run was interrupted"
        code, reason = _launch(jobs, k, threads, attempt)
        request = rundir.fold_dir(jobs.run_dir, k) / rundir.REGROUP
        request.unlink(missing_ok=True)
        if code == REGROUP_EXIT:
            threads = jobs.job_threads[k]
            log.info("fold %d goes on with %d thread(s) from its last finished epoch (no fold is left to start)", k, threads)
            continue
        why = _failure(jobs, k, code, reason)
        if not why or attempt > jobs.retries or jobs.stopping.is_set() or code == watch.NOT_SHARED_EXIT:
            break
        attempt += 1
        jobs.retried[k] = attempt - 1
        log.warning("fold %d: %s; started again from its last committed epoch (retry %d of %d)", k, why, attempt - 1, jobs.retries)
    with jobs.lock:
        del jobs.job_threads[k]
        _share_freed_cores(jobs)
    if not why:
        log.info("%s", fold_line(rundir.load_complete(jobs.run_dir, k), jobs.folds))
    return k, why


def _failure(jobs: FoldJobs, k: int, code: int, reason: str) -> str:
    """Why fold k's job failed ("" when its fold is complete)."""
    if code == 0 and rundir.load_complete(jobs.run_dir, k) is not None:
        return ""
    if code == watch.NOT_SHARED_EXIT:
        return (f"its node cannot read the run dir {jobs.run_dir} (see {rundir.LOG}): put hydra.run.dir on storage "
                "every node mounts at the same path")
    if reason:
        return reason
    if code == 0:
        return f"its process ended without completing it (see {rundir.LOG})"
    if code < 0:
        name = signal.Signals(-code).name
        hint = ": out of memory, or killed by hand" if -code == signal.SIGKILL else ""
        return f"its process was killed by {name}{hint}"
    return f"its process ended with exit status {code} (see {rundir.LOG})"


def _launch(jobs: FoldJobs, k: int, threads: int, attempt: int) -> tuple[int, str]:
    """Run fold k's job with `threads` TensorFlow threads to its end, on the engine: its exit
    status, and why it ended where the engine says."""
    job = _start(jobs, k, threads, attempt)
    jobs.running[k] = job
    code = job.wait()
    del jobs.running[k]
    return code, job.reason


def _start(jobs: FoldJobs, k: int, threads: int, attempt: int) -> Running:
    """Start fold k's job on the engine: its command line, and its environment (its deadline, and
    on other nodes what jobs.remote_env tells them); a remote job's output goes to .cluster/."""
    env = {FOLD_JOB: "1", watch.ATTEMPT: str(attempt), watch.ENGINE: jobs.engine.name}
    if jobs.engine.remote:
        env |= {**jobs.remote_env, **budget.remote_environment(jobs.deadlines.get(k))}
    else:
        env |= budget.environment(jobs.deadlines.get(k))
    output = jobs.run_dir / watch.DIR / f"fold_{k}-%j.out"
    output.parent.mkdir(parents=True, exist_ok=True)
    return jobs.engine.start(Job(k, jobs.command(k, threads), env, threads, output))


def _share_freed_cores(jobs: FoldJobs) -> None:
    """Once every fold has started, ask the running jobs that would get more threads from the
    cores now free to stop after their next epoch and go on with them. Call with jobs.lock held."""
    if not jobs.regroup or jobs.stopping.is_set() or len(jobs.started) < len(jobs.todo) or not jobs.job_threads:
        return
    share = max(1, jobs.cores // len(jobs.job_threads))
    for k, threads in jobs.job_threads.items():
        if share > threads and _worth_restarting(jobs, k, threads, share):
            jobs.job_threads[k] = share
            request = rundir.fold_dir(jobs.run_dir, k) / rundir.REGROUP
            request.parent.mkdir(parents=True, exist_ok=True)
            request.touch()


def _worth_restarting(jobs: FoldJobs, k: int, threads: int, share: int) -> bool:
    """Whether fold k, going on with `share` threads instead of `threads`, saves more than its
    job's restart costs. A fold with no epoch done yet is judged by the other folds' epochs."""
    rows = read_history(rundir.fold_dir(jobs.run_dir, k))
    seconds = epoch_seconds([rundir.fold_dir(jobs.run_dir, j) for j in jobs.todo], traced=True)
    if not seconds:
        return True
    epochs = rundir.fold_epochs(rundir.fold_dir(jobs.run_dir, k), jobs.epochs)
    left = (epochs - (rows[-1]["epoch"] if rows else 0)) * seconds
    return left * (1 - budget.time_share(threads, share)) > RESTART_S


def regroup_requested(fold_dir: Path) -> bool:
    """In a fold job: whether its run asked it to stop after this epoch (see `_share_freed_cores`)."""
    return in_fold_job() and (fold_dir / rundir.REGROUP).exists()


def _forward(jobs: FoldJobs):
    """On Ctrl-C or SIGTERM: end every running fold job (its finished epochs are committed), start
    no more, and stop this process."""
    def handler(signum, frame):
        jobs.stopping.set()
        for job in list(jobs.running.values()):
            job.stop()
        raise KeyboardInterrupt

    return handler


class _Reporter(threading.Thread):
    """Polls the folds' history files and logs one line per newly committed epoch."""

    def __init__(self, jobs: FoldJobs, clock: RunClock, every: float = 0.5) -> None:
        super().__init__(name="fold-progress", daemon=True)
        self.jobs, self.clock, self.every = jobs, clock, every
        self.last = {k: max((row["epoch"] for row in self._epochs(k)), default=0) for k in jobs.todo}
        self.own = {k: jobs.epochs for k in jobs.todo}  # each fold's epochs: its job may re-plan them (epochs.json)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.poll()
        self.poll()

    def stop(self) -> None:
        self.done.set()
        self.join()

    def _epochs(self, k: int) -> list[dict]:
        return read_history(rundir.fold_dir(self.jobs.run_dir, k))

    def poll(self) -> None:
        for k in self.jobs.todo:
            rows = self._epochs(k)
            if rows and rows[-1]["epoch"] < self.last[k]:  # the fold started again (its saved state was damaged)
                self.last[k] = 0
            for row in rows:
                if row["epoch"] <= self.last[k]:
                    continue
                self.clock.done += 1
                seconds = row.get("seconds")
                rate = self.jobs.images_per_epoch / seconds if seconds and seconds == seconds else None
                epochs = rundir.fold_epochs(rundir.fold_dir(self.jobs.run_dir, k), self.jobs.epochs)
                self.clock.total += epochs - self.own[k]  # the ETA counts the epochs the fold will train
                self.own[k] = epochs
                log.info("%s", epoch_line(k, self.jobs.folds, int(row["epoch"]), epochs, row["loss"],
                                          row["val_accuracy"], rate, self.clock.eta()))
                self.last[k] = row["epoch"]
