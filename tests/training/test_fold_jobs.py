"""Folds trained at once in fold-job processes (jobs=2): the same bytes as one process under
deterministic=true, a run killed mid-epoch resumes, and a killed fold job is named while the
other fold finishes, and the re-run trains only the killed one."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from conftest import check_run_dir, data_only, run_cv, snapshot, tiny_overrides
from src import rundir

# A sitecustomize.py: in the fold job of fold FOLD, SIGKILL the process at epoch EPOCH, batch BATCH.
KILL_FOLD_JOB = """
import os, sys
if os.environ.get("KFOLD_FOLD_JOB") == "1" and "fold_index={fold}" in sys.argv:
    import signal, keras
    _fit = keras.Model.fit
    class _Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == {epoch} and batch == {batch}:
                os.kill(os.getpid(), signal.SIGKILL)
    def fit(self, *args, callbacks=(), **kwargs):
        return _fit(self, *args, callbacks=[*callbacks, _Kill()], **kwargs)
    keras.Model.fit = fit
"""

# In the run's main process: SIGKILL it once fold FOLD has committed its first epoch.
KILL_MAIN_AFTER_EPOCH_1 = """
import json, os, signal, threading, time
from pathlib import Path
def _watch(state=Path({state!r})):
    while True:
        try:
            if json.loads(state.read_text())["epoch"] >= 1:
                os.kill(os.getpid(), signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
threading.Thread(target=_watch, daemon=True).start()
"""


def overrides(tiny, tmp_path, jobs: int) -> list[str]:
    return [a for a in tiny_overrides(tiny, tmp_path) if not a.startswith("jobs=")] + [f"jobs={jobs}"]


def wait_unlocked(run_dir, folds: int, timeout: float = 60) -> None:
    """Wait until no process holds a fold's lock (the fold jobs are gone)."""
    deadline = time.time() + timeout
    for k in range(folds):
        while True:
            with rundir.fold_lock(rundir.fold_dir(run_dir, k)) as free:
                if free:
                    break
            assert time.time() < deadline, f"fold {k}'s job still runs"
            time.sleep(0.2)


@pytest.mark.slow  # the suite's time: test_a_parallel_run_killed_mid_run_resumes runs fold jobs by default
def test_jobs_2_gives_the_same_bytes_as_jobs_1_under_deterministic(tiny, tmp_path):
    outputs = []
    for jobs in (1, 2):
        run_dir = tmp_path / f"jobs{jobs}"
        run_cv(overrides(tiny, tmp_path, jobs) + ["deterministic=true", f"hydra.run.dir={run_dir}"])
        outputs.append({f: (run_dir / f).read_bytes() for f in ("submission.csv", "oof.csv", "test_probs.csv")})
        for k in (0, 1):
            outputs[-1][k] = np.load(run_dir / f"fold_{k}" / "predictions.npz")["test_probs"].tobytes()
    assert outputs[0] == outputs[1]
    log = (tmp_path / "jobs2" / "cv.log").read_text()
    assert "2 fold jobs at once" in log
    for k in (0, 1):  # one progress line per epoch per fold, from the main process
        assert log.count(f"fold {k} of 2 epoch 1/1 loss") == 1


@pytest.mark.slow  # 44 s: a killed fold job and a killed jobs=1 run are in the default suite
def test_a_parallel_run_killed_mid_run_resumes(tiny, tmp_path):
    run_dir = tmp_path / "run"
    args = overrides(tiny, tmp_path, 2) + ["epochs=3", f"hydra.run.dir={run_dir}"]
    proc = run_cv(args, prelude=KILL_MAIN_AFTER_EPOCH_1.format(state=str(run_dir / "fold_1" / "train" / "state.json")),
                  check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    wait_unlocked(run_dir, 2)  # the fold jobs end with their main process
    assert not (run_dir / "metrics.json").exists()
    committed = json.loads((run_dir / "fold_1" / "train" / "state.json").read_text())["epoch"]
    assert 1 <= committed < 3

    run_cv(args)
    check_run_dir(run_dir, folds=2)
    assert f"fold 1: resuming after epoch {committed}" in (run_dir / "cv.log").read_text()
    assert not list(run_dir.rglob(".*.tmp*"))


def test_a_killed_fold_job_is_named_and_the_rerun_trains_only_what_is_missing(tiny, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(KILL_FOLD_JOB.format(fold=1, epoch=2, batch=2))
    run_dir = tmp_path / "run"
    args = overrides(tiny, tmp_path, 2) + ["epochs=2", f"hydra.run.dir={run_dir}"]
    proc = run_cv(args, check=False, site=site)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: fold 1: its process was killed by SIGKILL") and "missing fold(s) [1]" in last
    assert (run_dir / "fold_0" / "done.json").exists() and not (run_dir / "fold_1" / "done.json").exists()
    fold0 = snapshot(run_dir / "fold_0")

    run_cv(args)
    check_run_dir(run_dir, folds=2)
    assert snapshot(run_dir / "fold_0") == fold0
    log = (run_dir / "cv.log").read_text()
    assert "1 to train here [1]" in log and "fold 1: resuming after epoch 1" in log


@pytest.mark.parametrize("bad", ["jobs=0", "jobs=two"])
def test_bad_jobs_is_refused(tiny, tmp_path, bad):
    proc = run_cv([a for a in tiny_overrides(tiny, tmp_path) if not a.startswith("jobs=")] + [bad, f"hydra.run.dir={tmp_path / 'run'}"],
                  check=False)
    assert proc.returncode == 1 and "need a whole number of fold processes" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # 50 s: the regroup of freed cores, under -m slow for the suite's time
def test_a_lone_last_fold_goes_on_with_the_freed_cores(tiny, tmp_path):
    # 3 folds, 2 at a time: the third starts when one of the first two ends; when the other ends,
    # no fold is left to start, so the third stops after a committed epoch and goes on with 2 threads.
    # Tiny folds are over before a restart pays for itself, so the restart is made free here.
    run_dir = tmp_path / "run"
    run_cv(overrides(tiny, tmp_path, 2) + ["fold=3", "epochs=4", f"hydra.run.dir={run_dir}"],
           prelude="import src.training.scheduler as s; s.RESTART_S = 0.0")
    log = (run_dir / "cv.log").read_text()
    assert "goes on with 2 thread(s) from its last finished epoch" in log
    k = int(log.split(" goes on with 2 thread(s)")[0].rsplit("fold ", 1)[1])
    assert f"fold {k}: resuming after epoch" in log
    history = (run_dir / f"fold_{k}" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3", "4"]  # each epoch once
    assert not (run_dir / f"fold_{k}" / "regroup").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] and [f["fold"] for f in metrics["folds"]] == [0, 1, 2]


@pytest.mark.parametrize("engine", ["ray", "slurm"])
def test_a_finished_run_run_again_on_a_cluster_is_left_as_it_was_without_reaching_one(tiny, finished_run, tmp_path, engine):
    """cluster= can never change results: a finished local run given another engine is the same
    run, and with no fold left no engine is asked for (none is running here)."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir / "fold_1")
    proc = run_cv(data_only(tiny, tmp_path) + [f"cluster={engine}", f"hydra.run.dir={run_dir}"])  # no RAY_ADDRESS: connecting would fail
    assert proc.returncode == 0 and snapshot(run_dir / "fold_1") == before
