"""The benchmarks' smoke modes: each script runs end to end in seconds on this machine's CPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow  # the JAX route's speed is the device check's; this one runs with -m slow
def test_bench_backends_smoke(tmp_path):
    out = tmp_path / "backends.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_backends.py", "--smoke", "--cache", str(tmp_path / "cache"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tensorflow"]["backend"] == "tensorflow" and result["jax"]["backend"] == "jax"
    assert result["tensorflow"]["images_per_s"] > 0 and result["jax"]["images_per_s"] > 0
    assert "JAX / TensorFlow:" in proc.stdout and result["machine"] in proc.stdout


def test_device_check_smoke(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs")}
    (tmp_path / "out").mkdir()
    proc = subprocess.run(["bash", "benchmarks/device_check.sh", "--smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    found = json.loads((tmp_path / "out" / "device_check.json").read_text())["smoke"]
    assert (found["backend"], found["device"], found["fold"], found["epochs"]) == ("jax", "cpu: cpu x 1", 2, 2)
    assert all(len(epochs) == 2 and min(epochs) > 0 for epochs in found["images_per_s_per_epoch"])
    assert 0 <= found["cv_mean"] <= 1 and found["wall_s"] > 0  # 12 steps of training: plumbing, not accuracy
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["device_check.json", "smoke.cv.log", "smoke.log"]


def test_bench_read_smoke(tmp_path):
    out = tmp_path / "read.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_read.py", "--smoke", "--dir", str(tmp_path), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rows"] == 2000 and result["parse"]["mb_per_s"] > 0 and result["predict"]["rows_written"] == 2000
    assert result["cache"]["read_seconds"] >= 0 and result["predict"]["peak_gib"] > 0
    assert result["wide"]["said"][0].startswith("refused: ") and result["wide"]["said"][1] == "(1000, 1, 2000, 1)"
    assert list(tmp_path.iterdir()) == [out]  # its files go with it


def test_bench_serve_smoke(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    out = tmp_path / "serve.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_serve.py", "--smoke", str(run_dir), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["requests"] > 0 and result["failures"] == 0 and result["healthy_after"]
    slow = result["slow_clients"]
    assert slow["connections"] == slow["dropped"] == 10 and slow["ok"]
    assert "slow clients: 10 of 10" in proc.stdout
