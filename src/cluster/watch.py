"""What ties a fold job to the run's main process, on one machine or many, through the run dir.

The main process writes a token into the run dir before it starts a job on another machine;
the job reads it back (bounded wait) or ends with one line saying the run dir is not shared.
While it waits for its jobs the main process beats a heartbeat in the run dir, with each fold's
time left; a job whose heartbeat stops changing for `stale_s` (by its own clock: no two machines'
clocks are ever compared) stops, and a job started with no watching parent (`cluster.wait=false`,
or by hand) is never stopped for that. A local job watches the pipe on its stdin instead, which
closes the moment its parent dies.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from src.files import write_json

log = logging.getLogger(__name__)

DIR = ".cluster"  # in the run dir
TOKEN, HEARTBEAT = "token", "heartbeat.json"
WATCH = "KFOLD_WATCH"  # stdin | heartbeat (absent: none)
HEARTBEAT_FILE, STALE = "KFOLD_HEARTBEAT", "KFOLD_STALE_S"
TOKEN_FILE, TOKEN_VALUE, SHARED_WAIT = "KFOLD_TOKEN_FILE", "KFOLD_TOKEN", "KFOLD_SHARED_WAIT_S"
ENGINE, NODE_ID, JOB_ID, ATTEMPT = "KFOLD_ENGINE", "KFOLD_NODE_ID", "KFOLD_JOB_ID", "KFOLD_ATTEMPT"
FINISH = "KFOLD_FINISH"  # a fold job with no waiting parent: the one that completes the last fold builds the ensemble
NOT_SHARED_EXIT = 76  # a fold job's exit status when it cannot read its run's token


def write_token(run_dir: Path) -> tuple[Path, str]:
    """A fresh token in the run dir, before jobs start elsewhere: its path and value."""
    path = Path(run_dir).resolve() / DIR / TOKEN
    value = secrets.token_hex(16)
    write_json(path, {"token": value, "host": socket.gethostname()})
    return path, value


def check_token(timeout_s: float) -> None:
    """In a fold job given a token: wait up to `timeout_s` to read it in the run dir, else end
    the process (NOT_SHARED_EXIT) with one line saying what to do."""
    path, value = os.environ.get(TOKEN_FILE), os.environ.get(TOKEN_VALUE)
    if not path or not value:
        return
    end = time.monotonic() + timeout_s
    while True:
        try:
            if json.loads(Path(path).read_text()).get("token") == value:
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > end:
            break
        time.sleep(0.5)
    log.error("%s: the run dir is not on storage shared with this node (%s): its token did not arrive within %.0f s. "
              "Put hydra.run.dir on a file system every node mounts at the same path (NFS, Lustre, GPFS)",
              path, socket.gethostname(), timeout_s)
    logging.shutdown()
    os._exit(NOT_SHARED_EXIT)


class Heartbeat(threading.Thread):
    """In the run's main process while it waits for its jobs: writes the heartbeat every
    `every_s` seconds, with each fold's seconds left (`left()`), until stopped."""

    def __init__(self, run_dir: Path, every_s: float, left=lambda: {}) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.path, self.every_s, self.left = Path(run_dir) / DIR / HEARTBEAT, every_s, left
        self.done, self.beat = threading.Event(), 0
        self.write()

    def write(self) -> None:
        self.beat += 1
        write_json(self.path, {"beat": self.beat, "host": socket.gethostname(), "pid": os.getpid(),
                               "left_s": {str(k): round(v, 1) for k, v in self.left().items()}})

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            try:
                self.write()
            except OSError as e:  # a full or lost disk: the jobs will see the heartbeat stop
                log.warning("heartbeat %s not written: %s", self.path, e)

    def stop(self) -> None:
        self.done.set()
        self.join()


def read_heartbeat(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def watch_parent(stop) -> None:
    """In a fold job: call `stop()` (in a thread) when its run's main process is gone, as its
    environment says to watch it: the pipe on stdin, or the heartbeat; not at all otherwise."""
    how = os.environ.get(WATCH)
    if how == "stdin":
        target = _watch_stdin
    elif how == "heartbeat" and os.environ.get(HEARTBEAT_FILE):
        target = _watch_heartbeat
    else:
        return
    threading.Thread(target=target, args=(stop,), name="parent-watch", daemon=True).start()


def _watch_stdin(stop) -> None:
    while os.read(0, 4096):  # the raw descriptor: a buffered read would block the interpreter's exit
        pass
    stop("the run's main process is gone")


def _watch_heartbeat(stop) -> None:
    path, stale_s = Path(os.environ[HEARTBEAT_FILE]), float(os.environ.get(STALE, "120"))
    last, changed = None, time.monotonic()
    while True:
        beat = (read_heartbeat(path) or {}).get("beat")
        if beat != last:
            last, changed = beat, time.monotonic()
        elif time.monotonic() - changed > stale_s:
            stop(f"the run's heartbeat ({path}) has not changed for {stale_s:.0f} s: its main process is gone")
            return
        time.sleep(min(5.0, stale_s / 4))


def seconds_left(fold: int) -> float | None:
    """In a fold job watched by heartbeat: its fold's seconds left, as the main process last wrote them."""
    path = os.environ.get(HEARTBEAT_FILE)
    beat = read_heartbeat(Path(path)) if path else None
    left = (beat or {}).get("left_s", {}).get(str(fold))
    return float(left) if left is not None else None


def provenance() -> dict:
    """Where this fold job ran, for its done.json: the engine, the node and the engine's job id."""
    return {"engine": os.environ.get(ENGINE, "local"), "node_id": os.environ.get(NODE_ID) or os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            "job_id": os.environ.get(JOB_ID) or os.environ.get("SLURM_JOB_ID") or str(os.getpid()),
            "attempt": int(os.environ.get(ATTEMPT, "1"))}
