"""Fold jobs on real cluster engines (no mocks): a two-node Ray cluster on this machine
(ray.cluster_utils), and a one-node Slurm (munged, slurmctld and slurmd from Debian's packages,
started here with a generated slurm.conf). Outside CI a test whose engine cannot start skips
with the reason; with CI=true it fails. Also the parts that need no engine: the heartbeat and
the token a fold job watches its run by."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, check_run_dir, data_only, run_cv, snapshot, tiny_overrides

from src.cluster import watch

IN_CI = os.environ.get("CI") == "true"
pytestmark = pytest.mark.cluster  # python -m pytest -m cluster (.ci/run runs them after the default suite)


def unavailable(why: str):
    """Fail in CI (its engines are installed there), skip elsewhere."""
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def cluster_overrides(tiny, tmp_path, engine: str, *more: str) -> list[str]:
    args = [a for a in tiny_overrides(tiny, tmp_path) if not a.startswith("jobs=")]
    return args + [f"cluster={engine}", "cluster.heartbeat_s=1", "cluster.poll_s=0.5", "tensorboard=false", *more]


def done(run_dir: Path, k: int) -> dict:
    return json.loads((run_dir / f"fold_{k}" / "done.json").read_text())


# --- no engine ---------------------------------------------------------------------------------

def test_a_watched_fold_job_stops_when_the_heartbeat_stops_and_an_unwatched_one_never(tmp_path):
    beat = watch.Heartbeat(tmp_path, every_s=0.2, left=lambda: {0: 100.0})
    beat.start()
    code = ("import os, time\nfrom src.cluster import watch\n"
            "watch.watch_parent(lambda why: (print(why, flush=True), os._exit(3)))\ntime.sleep(8)\nprint('never stopped')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), watch.WATCH: "heartbeat",
           watch.HEARTBEAT_FILE: str(beat.path), watch.STALE: "1.5"}
    watched = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    unwatched = subprocess.Popen([sys.executable, "-c", code], env={**env, watch.WATCH: ""}, stdout=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL)
    time.sleep(3)
    assert watched.poll() is None  # beating: it goes on
    beat.stop()
    out, _ = watched.communicate(timeout=10)
    assert watched.returncode == 3 and "has not changed for 2 s: its main process is gone" in out
    assert json.loads(beat.path.read_text())["left_s"] == {"0": 100.0}
    out, _ = unwatched.communicate(timeout=15)
    assert unwatched.returncode == 0 and "never stopped" in out  # stdin at EOF and no heartbeat: not watched


def test_a_fold_job_that_cannot_read_its_token_ends_with_one_line(tmp_path):
    token, value = watch.write_token(tmp_path)
    code = "from src.cluster import watch\nwatch.check_token(1.0)\nprint('token read')\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), watch.TOKEN_FILE: str(token), watch.TOKEN_VALUE: value}
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "token read" in ok.stdout
    bad = subprocess.run([sys.executable, "-c", code], env={**env, watch.TOKEN_VALUE: "another run's"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == watch.NOT_SHARED_EXIT and "not on storage shared with this node" in bad.stderr


# --- Ray -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real Ray cluster of two nodes (1 CPU each) on this machine; its address."""
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        unavailable("Ray is not installed: pip install -e '.[ray]'")
    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    try:
        cluster = Cluster(initialize_head=True, connect=False,
                          head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 << 20})
        cluster.add_node(num_cpus=1, object_store_memory=80 << 20)
        cluster.wait_for_nodes(timeout=60)
    except Exception as e:  # noqa: BLE001 - any way Ray fails to start is reported the same way
        unavailable(f"a local Ray cluster did not start: {type(e).__name__}: {e}")
    yield cluster.address
    cluster.shutdown()


def test_ray_runs_each_fold_on_its_own_node_and_retries_a_killed_one(ray_cluster, tiny, tmp_path):
    """Two folds, two nodes of one CPU each: the folds' done.json name two Ray nodes. Fold 1's
    job is killed (SIGKILL) in its first epoch once: it is retried from its last commit, and the
    run ends with a valid submission that says so."""
    run_dir = tmp_path / "run"
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "killed-once"
    (site / "sitecustomize.py").write_text(f"""
import os, signal, sys
if os.environ.get("KFOLD_FOLD_JOB") == "1" and "fold_index=1" in sys.argv and not os.path.exists({str(marker)!r}):
    import keras
    _fit = keras.Model.fit
    class _Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                open({str(marker)!r}, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
    def fit(self, *a, callbacks=(), **k):
        return _fit(self, *a, callbacks=[*callbacks, _Kill()], **k)
    keras.Model.fit = fit
""")
    proc = run_cv(cluster_overrides(tiny, tmp_path, "ray", "cluster.retries=1", f"hydra.run.dir={run_dir}"),
                  site=site, env={"RAY_ADDRESS": ray_cluster})
    check_run_dir(run_dir, folds=2)
    runs = [done(run_dir, k)["cluster"] for k in range(2)]
    assert {r["engine"] for r in runs} == {"ray"} and runs[0]["node_id"] != runs[1]["node_id"]
    assert marker.exists() and runs[1]["attempt"] == 2 and runs[0]["attempt"] == 1
    log = (run_dir / "cv.log").read_text()
    assert "fold 1: its process was killed by SIGKILL" in log and "retry 1 of 1" in log
    assert "fold(s) retried after their job failed: fold 1 (1x)" in proc.stderr + log


def test_a_run_begun_here_resumes_on_ray(ray_cluster, tiny, finished_run, tmp_path):
    """A local run killed after its fold 0 resumes with cluster=ray (cluster can never change
    results): only fold 1 goes to the cluster, fold 0's files stay as they were."""
    from conftest import unfinished_copy

    run_dir = unfinished_copy(finished_run, tmp_path / "run")
    before = snapshot(run_dir / "fold_0")
    run_cv(data_only(tiny, tmp_path) + ["cluster=ray", "cluster.heartbeat_s=1", f"hydra.run.dir={run_dir}"],
           env={"RAY_ADDRESS": ray_cluster})
    check_run_dir(run_dir, folds=2)
    assert snapshot(run_dir / "fold_0") == before and done(run_dir, 0)["cluster"]["engine"] == "local"
    assert done(run_dir, 1)["cluster"]["engine"] == "ray"


def test_a_sweep_of_runs_goes_to_ray_through_the_kfold_ray_launcher(ray_cluster, tiny, tmp_path):
    """hydra/launcher=kfold_ray: each job of a multirun is a Ray task running its own src.cv; both
    runs end with a submission, and the sweep's values are their CV scores."""
    sweep = tmp_path / "sweep"
    args = [a for a in tiny_overrides(tiny, tmp_path) if not a.startswith("batch_size=")]
    run_cv(["-m", "hydra/launcher=kfold_ray", *args, "batch_size=16,32", "tensorboard=false", f"hydra.sweep.dir={sweep}"],
           env={"RAY_ADDRESS": ray_cluster})
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [p.name for p in runs] == ["0", "1"]
    for run_dir in runs:
        check_run_dir(run_dir, folds=2)
    sizes = sorted(json.loads((p / "run.json").read_text())["resolved_config"]["batch_size"] for p in runs)
    assert sizes == [16, 32]


def test_cluster_ray_without_a_cluster_says_how_to_start_one(tiny, tmp_path):
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = cluster_overrides(tiny, tmp_path, "ray", f"hydra.run.dir={tmp_path / 'run'}")
    code = (f"import runpy, sys\nsys.argv = ['src/cv.py'] + {args!r}\nrunpy.run_module('src.cv', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "cluster=ray needs a running Ray cluster: set RAY_ADDRESS" in proc.stderr.splitlines()[-1]


# --- Slurm ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """ClusterName=kfoldtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MinJobAge=600
NodeName=node1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=node1 Default=YES MaxTime=INFINITE State=UP
"""


def _start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm on this machine, from Debian's slurmctld, slurmd and munge; the
    environment its client commands need (SLURM_CONF)."""
    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if not shutil.which(c, path="/usr/sbin:/usr/bin:" + os.environ["PATH"])]
    if missing:
        unavailable(f"Slurm is not installed ({', '.join(missing)}): apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        unavailable("the one-node Slurm of these tests runs its daemons as root")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(ctld_port=_free_port(), d_port=_free_port(), root=root, host=socket.gethostname(),
                                      cpus=os.cpu_count()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started = []
    if not Path("/run/munge/munge.socket.2").exists():
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"], check=True)
        started.append(_start(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F"]))
        for _ in range(50):
            if Path("/run/munge/munge.socket.2").exists():
                break
            time.sleep(0.1)
    started.append(_start(["/usr/sbin/slurmctld", "-D", "-f", str(conf)], env))
    started.append(_start(["/usr/sbin/slurmd", "-D", "-f", str(conf)], env))
    end = time.monotonic() + 30
    while time.monotonic() < end:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().startswith("idle"):
            break
        time.sleep(0.5)
    else:
        for proc in reversed(started):
            _stop(proc)
        logs = "".join((root / n).read_text()[-500:] for n in ("slurmctld.log", "slurmd.log") if (root / n).exists())
        unavailable(f"the one-node Slurm did not come up within 30 s: {logs}")
    yield {"SLURM_CONF": str(conf)}
    subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)
    for proc in reversed(started):  # slurmd, slurmctld, then munged
        _stop(proc)


def _squeue(slurm: dict) -> list[tuple[str, str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], env={**os.environ, **slurm}, capture_output=True, text=True)
    return [tuple(line.split()) for line in out.stdout.splitlines()]


def test_slurm_runs_one_job_per_fold_and_a_cancelled_fold_resumes(slurm, tiny, tmp_path):
    """cluster=slurm: two sbatch jobs, seen in squeue while they run, and a valid submission whose
    done.json name Slurm job ids. A run with no retries whose fold 1 job is cancelled (scancel)
    ends in one line naming it; the same command trains only fold 1 and finishes."""
    run_dir = tmp_path / "run"
    args = cluster_overrides(tiny, tmp_path, "slurm", "epochs=2", "cluster.retries=0", f"hydra.run.dir={run_dir}")
    code = (f"import runpy, sys\nsys.argv = ['src/cv.py'] + {args!r}\nrunpy.run_module('src.cv', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, **slurm, "PYTHONPATH": str(REPO)}
    main = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, cancelled = {}, None
    end = time.monotonic() + 240
    while main.poll() is None and time.monotonic() < end:
        for ident, name, state in _squeue(slurm):
            seen[name] = ident
            if name == "kfold-1" and state == "RUNNING" and cancelled is None:
                subprocess.run(["scancel", ident], env=env, check=True)
                cancelled = ident
        time.sleep(0.3)
    out, err = main.communicate(timeout=60)
    assert set(seen) == {"kfold-0", "kfold-1"}, (seen, err[-2000:])
    assert cancelled and main.returncode == 1, err[-3000:]
    assert f"fold 1: its Slurm job {cancelled} was cancelled" in err.splitlines()[-1]
    first = done(run_dir, 0)
    assert first["cluster"]["engine"] == "slurm" and first["cluster"]["job_id"] == seen["kfold-0"]
    before = snapshot(run_dir / "fold_0")

    proc = run_cv(args, env=slurm)
    check_run_dir(run_dir, folds=2)
    assert snapshot(run_dir / "fold_0") == before  # only the cancelled fold trained again
    assert done(run_dir, 1)["cluster"]["job_id"] not in (seen["kfold-1"], "")
    assert "1 to train on cluster=slurm [1]" in (run_dir / "cv.log").read_text()
    assert proc.returncode == 0


def test_bench_cluster_smoke(ray_cluster, tmp_path):
    """benchmarks/bench_cluster.py --smoke: the same tiny run locally and on a two-node Ray cluster
    it starts itself (ray_cluster here only proves Ray starts on this machine)."""
    proc = subprocess.run([sys.executable, "benchmarks/bench_cluster.py", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    found = json.loads((tmp_path / "results.json").read_text())
    assert found["local"]["wall_s"] > 0 and len(found["ray"]["nodes"]) == 2
    assert "ray: wall" in proc.stdout and "overhead per fold job" in proc.stdout


def test_slurm_without_waiting_submits_returns_and_the_last_job_builds_the_ensemble(slurm, tiny, tmp_path):
    """cluster.wait=false: the command submits both fold jobs and returns at once with their ids;
    nothing watches the jobs (no heartbeat), they complete on their own, and the one that
    completes the last fold builds the ensemble; the same command then leaves it as it is."""
    run_dir = tmp_path / "run"
    args = cluster_overrides(tiny, tmp_path, "slurm", "cluster.wait=false", f"hydra.run.dir={run_dir}")
    run_cv(args, env=slurm)
    log = (run_dir / "cv.log").read_text()
    assert "submitted 2 fold job(s)" in log and "not waiting (cluster.wait=false)" in log
    assert not (run_dir / ".cluster" / "heartbeat.json").exists()
    end = time.monotonic() + 180
    while [j for j in _squeue(slurm) if j[1].startswith("kfold-")] and time.monotonic() < end:
        time.sleep(0.5)
    check_run_dir(run_dir, folds=2)
    built = lambda: {n: (run_dir / n).stat().st_mtime_ns for n in ("submission.csv", "metrics.json", "report.md")}  # noqa: E731
    before = built()
    run_cv(args, env=slurm)
    assert built() == before and (run_dir / "cv.log").read_text().count("submitted 2 fold job(s)") == 1
