"""What a fold job is, told apart from its run's main process without Keras: the environment
flag, the exit status of a job that stops to go on with more threads, and its quiet console.
src.training.scheduler starts and watches the jobs."""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

FOLD_JOB = "KFOLD_FOLD_JOB"  # set in a fold job's environment: it ends when its run's main process is gone
REGROUP_EXIT = 75  # a fold job's exit status when it stopped, as asked, to go on with more threads


class Regroup(Exception):
    """Raised in a fold job after a committed epoch when its run asked it to stop and go on with
    more threads."""


def in_fold_job() -> bool:
    """Whether this process is a fold job started by `run_fold_jobs`."""
    return os.environ.get(FOLD_JOB) == "1"


def quiet_fold_job() -> None:
    """In a fold job: leave the console to the main process (it reports the epochs and the
    result); the job's info lines still go to the run's log file, its warnings to both. End the
    job when the run's main process is gone (killed, even by SIGKILL), which closes the pipe on
    this process's stdin."""
    if not in_fold_job():
        return
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)

    def wait() -> None:
        while os.read(0, 4096):  # the raw descriptor: a buffered read would block the interpreter's exit
            pass
        log.warning("the run's main process is gone: this fold job stops (the same command resumes it)")
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()
