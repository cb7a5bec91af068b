"""What a fold job is, told apart from its run's main process without Keras: the environment
flag, the exit status of a job that stops to go on with more threads, and its quiet console.
src.training.scheduler starts and watches the jobs."""
from __future__ import annotations

import logging
import os

from src.cluster import watch

log = logging.getLogger(__name__)

FOLD_JOB = "KFOLD_FOLD_JOB"  # set in a fold job's environment
REGROUP_EXIT = 75  # a fold job's exit status when it stopped, as asked, to go on with more threads


class Regroup(Exception):
    """Raised in a fold job after a committed epoch when its run asked it to stop and go on with
    more threads."""


def in_fold_job() -> bool:
    """Whether this process is a fold job started by `run_fold_jobs`."""
    return os.environ.get(FOLD_JOB) == "1"


def quiet_fold_job() -> None:
    """In a fold job: leave the console to the main process (it reports the epochs and the
    result); the job's info lines still go to the run's log file, its warnings to both. On
    another node, check that the run dir is the one its main process wrote (src.cluster.watch).
    End the job when its run's main process is gone, as the engine that started it watches it
    (the pipe on stdin locally, the run's heartbeat on a cluster; a job started by hand or by a
    cluster job with no parent waiting is not watched)."""
    if not in_fold_job():
        return
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)
    watch.check_token(float(os.environ.get(watch.SHARED_WAIT, "30")))

    def stop(why: str) -> None:
        log.warning("%s: this fold job stops (the same command resumes it)", why)
        logging.shutdown()
        os._exit(1)

    watch.watch_parent(stop)
