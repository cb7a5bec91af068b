"""Interrupted runs resume: processes SIGKILLed at several points, then the same command again."""
from __future__ import annotations

import json

import pytest
from conftest import KILL_MID_EPOCH, check_run_dir, run_cv, snapshot, tiny_overrides

# Kill this process halfway through writing the file named `NAME` whose path contains `INSIDE`:
# the temporary file is left half-written, the final name never appears.
KILL_IN_WRITE = """
import os, signal, socket
from pathlib import Path
import src.files, src.rundir, src.training.checkpoint, src.training.fold
_atomic = src.files.atomic_write
def atomic_write(path, write):
    path = Path(path)
    if path.name == {name!r} and {inside!r} in str(path):
        suffixes = "".join(path.suffixes)
        owner = f"{{socket.gethostname().split('.')[0]}}-{{os.getpid()}}"
        tmp = path.with_name(f".{{path.name[: -len(suffixes)]}}.{{owner}}.killed.tmp{{suffixes}}")
        write(tmp)
        os.truncate(tmp, os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return _atomic(path, write)
for module in (src.files, src.rundir, src.training.checkpoint, src.training.fold):
    module.atomic_write = atomic_write
"""


def killed(args, prelude):
    proc = run_cv(args, prelude=prelude, check=False)
    assert proc.returncode == -9, f"expected SIGKILL, got {proc.returncode}:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize(
    "where, prelude",
    [
        ("mid-epoch of the second fold", KILL_MID_EPOCH.format(fold=1, epoch=2, batch=2)),
        pytest.param("writing the second fold's epoch-2 backup", KILL_IN_WRITE.format(name="last-2.weights.h5", inside="fold_1/train"),
                     marks=pytest.mark.slow),  # the suite's time budget; mid-epoch and submission-write kills stay
        pytest.param("writing the second fold's final model", KILL_IN_WRITE.format(name="model.keras", inside="fold_1"),
                     marks=pytest.mark.slow),
        ("writing the submission", KILL_IN_WRITE.format(name="submission.csv", inside="")),
    ],
)
def test_killed_run_resumes_without_retraining_finished_folds(tiny, tmp_path, where, prelude):
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny, tmp_path) + ["epochs=2", f"hydra.run.dir={run_dir}"]
    killed(args, prelude)
    assert not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "fold_0" / "done.json").read_text())["fold"] == 0
    fold0 = snapshot(run_dir / "fold_0")
    state = run_dir / "fold_1" / "train" / "state.json"
    resumable = state.exists()
    if resumable:  # killed inside fold 1's epoch 2 (or its backup): epoch 1 is committed; or after epoch 2
        committed = json.loads(state.read_text())["epoch"]
        assert committed == (2 if "final model" in where else 1)

    run_cv(args)
    metrics = check_run_dir(run_dir, folds=2)
    assert snapshot(run_dir / "fold_0") == fold0  # the finished fold was not retrained
    log = (run_dir / "cv.log").read_text()
    if resumable:
        assert f"fold 1: resuming after epoch {committed}" in log
    history = (run_dir / "fold_1" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]  # each epoch once, in order
    assert [f["fold"] for f in metrics["folds"]] == [0, 1]
    assert not list(run_dir.rglob(".*.tmp*"))  # no half-written leftovers


def test_config_change_is_refused_naming_keys_and_harmless_change_allowed(tiny, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}", "fold_index=0"]
    run_cv(args)
    assert (run_dir / "fold_0" / "done.json").exists() and not (run_dir / "metrics.json").exists()
    before = snapshot(run_dir / "fold_0")

    refused = run_cv(args + ["seed=7", "model.dropout=0.3"], check=False)
    assert refused.returncode != 0
    assert "different config" in refused.stderr and "seed: 42 → 7" in refused.stderr and "model.dropout: 0.4 → 0.3" in refused.stderr

    other = tmp_path / "other.csv"
    other.write_text(tiny["train"].read_text().replace("\n5,", "\n3,", 1))  # one label changed
    refused = run_cv(args + [f"data.train={other}"], check=False)
    assert refused.returncode != 0 and "different data" in refused.stderr

    assert snapshot(run_dir / "fold_0") == before
    # Verbosity and which folds to train do not change results: the run goes on.
    run_cv(tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}", "verbose=false"])
    check_run_dir(run_dir, folds=2)
    assert snapshot(run_dir / "fold_0") == before


def test_damaged_checkpoints_are_detected_and_retrained(tiny, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny, tmp_path) + ["epochs=2", f"hydra.run.dir={run_dir}"]
    killed(args, KILL_MID_EPOCH.format(fold=1, epoch=2, batch=2))
    # A finished fold's checkpoint truncated, and the interrupted fold's backup overwritten.
    model = run_dir / "fold_0" / "model.keras"
    model.write_bytes(model.read_bytes()[:1000])
    state = json.loads((run_dir / "fold_1" / "train" / "state.json").read_text())
    (run_dir / "fold_1" / "train" / state["last_file"]).write_bytes(b"not hdf5")

    run_cv(args)
    check_run_dir(run_dir, folds=2)
    log = (run_dir / "cv.log").read_text()
    assert "fold fold_0 is damaged (model.keras" in log
    assert "fold 1: the saved training state" in log and "damaged" in log
    assert "resuming" not in log


def test_fold_jobs_in_parallel_into_one_run_dir_then_ensemble(tiny, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    run_dir = tmp_path / "run"
    base = tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"]
    # Only fold 0 first: no ensemble yet; src.ensemble builds a partial one and names the missing fold.
    run_cv(base + ["fold_index=0"])
    assert not (run_dir / "metrics.json").exists()
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "src.ensemble", f"run_dir={run_dir}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    partial = json.loads((run_dir / "metrics.json").read_text())
    assert partial["folds_missing"] == [1] and not partial["complete"] and partial["oof_rows"] == 165
    assert "missing fold(s) [1]" in (run_dir / "ensemble.log").read_text()

    # Folds 1 and 0 again, as two processes at once: fold 0 is complete and skipped.
    jobs = [subprocess.Popen([sys.executable, "-m", "src.cv", *base, f"fold_index={k}"], cwd=REPO,
                             env={**env, "HOME": str(tmp_path)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for k in (1, 0)]
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
    metrics = check_run_dir(run_dir, folds=2)
    assert metrics["complete"]

    proc = subprocess.run([sys.executable, "-m", "src.ensemble", f"run_dir={run_dir}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and json.loads((run_dir / "metrics.json").read_text()) == metrics


def test_joblib_multirun_of_fold_jobs_shares_one_run_dir(tiny, tmp_path):
    sweep = tmp_path / "sweep"
    run_cv(["-m", "fold_index=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
           + tiny_overrides(tiny, tmp_path) + [f"hydra.sweep.dir={sweep}"])
    run_dirs = {p.parent for p in sweep.rglob("run.json")}
    assert len(run_dirs) == 1
    run_dir = run_dirs.pop()
    check_run_dir(run_dir, folds=2)
    logs = "".join(p.read_text() for p in sweep.glob("*/cv.log"))
    assert "1 thread(s)" in logs  # 2 jobs on 2 cores: one thread each


FULL_DISK = (
    "import shutil, collections\n"
    "shutil.disk_usage = lambda p: collections.namedtuple('u', 'total used free')(10**9, 10**9 - 10**6, 10**6)\n"
)
READ_ONLY = (  # as root, chmod cannot make a dir unwritable: fail the write the way a read-only dir does
    "import errno, src.files, src.rundir\n"
    "def refuse(path, write):\n"
    "    raise PermissionError(errno.EACCES, 'Permission denied', str(path))\n"
    "src.rundir.atomic_write = refuse\n"
)


@pytest.mark.parametrize("prelude, message", [(FULL_DISK, "MiB free"), (READ_ONLY, "cannot write to the run dir")])
def test_full_disk_or_unwritable_run_dir_is_refused_before_training(tiny, tmp_path, prelude, message):
    run_dir = tmp_path / "run"
    proc = run_cv(tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"], prelude=prelude, check=False)
    assert proc.returncode != 0 and message in proc.stderr
    assert "fold 0 of 2 epoch" not in proc.stderr + proc.stdout
    assert not list(run_dir.glob("fold_*"))


def test_a_run_started_on_other_hardware_resumes_in_its_recorded_precision(tiny, tmp_path):
    """A run dir begun on two T4s (mixed_float16, MirroredStrategy) and resumed on this CPU: one line
    says what changed, and every fold trains and is recorded in the precision the run began with
    (loading float16 state into another policy would silently reset Adam's moments)."""
    run_dir = tmp_path / "run"
    # float16 kernels on a CPU run at ~10 images/s for the default CNN: the small MLP keeps it quick
    args = tiny_overrides(tiny, tmp_path) + ["epochs=2", "model=mlp", f"hydra.run.dir={run_dir}"]
    killed(args, KILL_MID_EPOCH.format(fold=0, epoch=2, batch=2))
    record = json.loads((run_dir / "run.json").read_text())
    assert record["runtime"]["device_kind"] == "cpu"
    record["runtime"] = {"backend": "tensorflow", "device_kind": "gpu", "device_count": 2, "precision": "mixed_float16",
                         "jit_compile": False, "distribution": "mirrored"}  # as a Kaggle T4 x2 session writes it
    (run_dir / "run.json").write_text(json.dumps(record))
    state_path = run_dir / "fold_0" / "train" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 1 and state["precision"] != "mixed_float16"
    state_path.write_text(json.dumps({**state, "precision": "mixed_float16"}))

    run_cv(args)
    log = (run_dir / "cv.log").read_text()
    assert ("started on other hardware (device_kind: gpu → cpu, device_count: 2 → 1, distribution: mirrored → none): "
            "it goes on in its recorded precision mixed_float16") in log
    assert "fold 0: resuming after epoch 1" in log and "Skipping variable loading" not in log
    for k in range(2):
        done = json.loads((run_dir / f"fold_{k}" / "done.json").read_text())
        assert done["precision"] == done["runtime"]["precision"] == "mixed_float16"
        assert done["runtime"]["device_kind"] == "cpu"
    check_run_dir(run_dir, folds=2)


@pytest.mark.slow  # the suite's time: test_a_run_started_on_other_hardware_resumes_in_its_recorded_precision runs by default
def test_a_fold_goes_on_in_the_precision_its_state_was_saved_in(tiny, tmp_path):
    """An older run dir records no runtime: a fold whose state says another precision than this
    machine's goes on in the state's, and the other folds train in this machine's."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny, tmp_path) + ["epochs=2", "precision=auto", f"hydra.run.dir={run_dir}"]
    killed(args, KILL_MID_EPOCH.format(fold=0, epoch=2, batch=2))
    record = json.loads((run_dir / "run.json").read_text())
    here = record.pop("runtime")["precision"]
    other = "float32" if here != "float32" else "mixed_bfloat16"
    (run_dir / "run.json").write_text(json.dumps(record))
    state_path = run_dir / "fold_0" / "train" / "state.json"
    state_path.write_text(json.dumps({**json.loads(state_path.read_text()), "precision": other}))

    run_cv(args)
    log = (run_dir / "cv.log").read_text()
    assert f"fold 0: its saved state was trained in {other}, so it goes on in {other}" in log
    assert "fold 0: resuming after epoch 1" in log
    assert json.loads((run_dir / "fold_0" / "done.json").read_text())["precision"] == other
    assert json.loads((run_dir / "fold_1" / "done.json").read_text())["precision"] == here
