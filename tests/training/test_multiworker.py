"""strategy=multi_worker: one CV run spread over two worker processes on loopback ports."""
from __future__ import annotations

import pytest

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pandas as pd

import src.models  # noqa: F401  (registers the custom layers)

from conftest import N_TEST, N_TRAIN, REPO, run_cv, tiny_overrides


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # 36 s: two TensorFlow workers; under -m slow for the suite's time
def test_two_workers_train_one_run(tiny, tmp_path):
    run_dir = tmp_path / "run"
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    args = tiny_overrides(tiny, tmp_path) + ["strategy=multi_worker", "epochs=2", f"hydra.run.dir={run_dir}"]
    workers = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-m", "src.cv", *args], cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [w.communicate(timeout=400)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["folds"]) == 2 and metrics["oof_rows"] == N_TRAIN
    for k in range(2):  # it learns (a few hundred rows are too few for a meaningful accuracy)...
        history = pd.read_csv(run_dir / f"fold_{k}" / "history.csv")
        assert history["loss"].iloc[-1] < history["loss"].iloc[0]
        # ...and both workers hold the same weights: gradients were all-reduced
        chief, other = (keras.models.load_model(d / f"fold_{k}" / "model.keras", compile=False).get_weights()
                        for d in (run_dir, run_dir / ".worker_1"))
        assert all(np.array_equal(a, b) for a, b in zip(chief, other))
    sub = pd.read_csv(run_dir / "submission.csv")
    assert len(sub) == N_TEST and sub["ImageId"].tolist() == list(range(1, N_TEST + 1))
    assert "16 per replica × 2 replica(s), MultiWorkerMirroredStrategy" in (run_dir / "cv.log").read_text()
    # the second worker trained the same steps but wrote only into its own folder
    assert (run_dir / ".worker_1" / "metrics.json").exists()
    assert json.loads((run_dir / ".worker_1" / "metrics.json").read_text())["folds"][0]["accuracy"] == metrics["folds"][0]["accuracy"]


def test_multi_worker_without_tf_config_is_refused(tiny, tmp_path):
    env_backup = os.environ.pop("TF_CONFIG", None)
    try:
        proc = run_cv(tiny_overrides(tiny, tmp_path) + ["strategy=multi_worker", f"hydra.run.dir={tmp_path / 'run'}"], check=False)
    finally:
        if env_backup is not None:
            os.environ["TF_CONFIG"] = env_backup
    assert proc.returncode != 0 and "needs TF_CONFIG" in proc.stderr
