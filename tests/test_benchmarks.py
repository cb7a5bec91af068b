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


@pytest.mark.slow  # the suite's time: test_jax runs the same JAX route; run -m slow before a device session
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


def test_bench_read_smoke(finished_run, tmp_path):
    out = tmp_path / "read.json"
    run_dir = shutil.copytree(finished_run, tmp_path / "run")  # predicting with it writes to its dir
    proc = subprocess.run([sys.executable, "benchmarks/bench_read.py", "--smoke", "--dir", str(tmp_path), "--json", str(out),
                           "--run", str(run_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rows"] == 2000 and result["parse"]["mb_per_s"] > 0 and result["predict"]["rows_written"] == 2000
    assert result["cache"]["read_seconds"] >= 0 and result["predict"]["peak_gib"] > 0
    assert result["wide"]["said"][0].startswith("refused: ") and result["wide"]["said"][1] == "(1000, 1, 2000, 1)"
    assert sorted(tmp_path.iterdir()) == [out, run_dir]  # its own files go with it


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


def _smoke(script: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"{REPO}/benchmarks/{script}", "--smoke", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_machine_smoke(tmp_path):
    _smoke("machine.py", "--json", str(tmp_path / "m.json"))
    found = json.loads((tmp_path / "m.json").read_text())
    assert found["cpu"]["cores"] >= 1 and found["software"]["tensorflow"]
    for threads in [k for k in found["limits"] if k.endswith(("thread", "threads"))]:
        assert found["limits"][threads]["bfloat16"] > 0 and found["limits"][threads]["float32"] > 0


def test_bench_train_smoke(tmp_path):
    out = tmp_path / "train.json"
    proc = _smoke("bench_train.py", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["train_images_per_s"]["median"] > 0 and result["augment_on_images_per_s"]["median"] > 0
    assert result["train_fraction_of_limit"] > 0 and result["machine"]["cpu"]["model"] in proc.stdout


@pytest.mark.slow  # -m slow for the suite's time: bench_train's smoke times the same step
def test_bench_step_smoke(tmp_path):
    out = tmp_path / "step.json"
    proc = _smoke("bench_step.py", "--json", str(out))
    result = json.loads(out.read_text())
    assert list(result["variants"]) == ["as run"] and result["variants"]["as run"] > 0
    assert result["limit_gflops"] > 0 and f"of the {result['limit_dtype']} matmul limit" in proc.stdout


@pytest.mark.slow  # -m slow for the suite's time: bench_fold's smoke runs the same harness, test_fold_jobs jobs=auto
def test_bench_parallel_smoke(tmp_path):
    out = tmp_path / "parallel.json"
    proc = _smoke("bench_parallel.py", "--json", str(out))
    result = json.loads(out.read_text())
    assert set(result["median"]) == {"jobs=auto"} and result["auto_jobs"] >= 1
    assert "jobs=auto ran" in proc.stdout


@pytest.mark.parametrize("script", ["bench_accuracy.py", pytest.param("bench_recipes.py", marks=pytest.mark.slow)])  # the same rows
def test_accuracy_benchmarks_smoke(script, tmp_path):
    proc = _smoke(script, "--out", str(tmp_path))
    record = json.loads((tmp_path / ("results.json" if script == "bench_accuracy.py" else "recipes.json")).read_text())
    (row,) = record.values()
    assert 0 <= row["cv_mean"] <= 1 and row["machine"] in proc.stdout
    if script == "bench_accuracy.py":  # judged on the 100 held-out rows, which no fold trained on
        assert 0 <= row["holdout_accuracy"] <= 1


def test_fashion_csv_smoke(tmp_path):
    proc = _smoke("fashion_csv.py", "--out", str(tmp_path))
    assert "values came back" in proc.stdout and len((tmp_path / "fashion-mnist_test.csv").read_text().splitlines()) == 31


def test_kannada_csv_smoke(tmp_path):
    proc = _smoke("kannada_csv.py", "--out", str(tmp_path))
    assert "values came back" in proc.stdout and "score 1.0" in proc.stdout
    assert (tmp_path / "test.csv").read_text().startswith("id,pixel0,") and len((tmp_path / "test.csv").read_text().splitlines()) == 31


def test_bench_fold_smoke(tmp_path):
    out = tmp_path / "fold.json"
    proc = _smoke("bench_fold.py", "--json", str(out))
    result = json.loads(out.read_text())
    assert [f["fold"] for f in result["folds"]] == [0, 1] and "fixed cost per fold" in proc.stdout
    for fold in result["folds"]:  # done.json's phases add up to its seconds, less the epochs
        assert {"build", "fit outside epochs", "final_model", "predict", "commit"} == set(fold["phases_s"])
        assert abs(sum(fold["phases_s"].values()) - fold["fixed_s"]) < 0.3
