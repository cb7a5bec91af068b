"""End-to-end runs of `python -m src.cv` on tiny real data with the real composed config."""
from __future__ import annotations


import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import check_run_dir, finished_run_args, run_cv, tiny_overrides


def hydra_config(run_dir) -> dict:
    """The resolved config Hydra saved for the (latest) invocation in run_dir."""
    return yaml.safe_load(sorted((run_dir / ".hydra").glob("*/config.yaml"))[-1].read_text())


def test_full_run_writes_consistent_results(tiny, finished_run, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "run")  # the shared run: 2 folds × 2 epochs, the generic recipe
    metrics = check_run_dir(run_dir, folds=2)
    labels = pd.read_csv(tiny["test_labels"])["Label"].to_numpy()
    sub = pd.read_csv(run_dir / "submission.csv")
    assert metrics["test_accuracy"] == float(np.mean(sub["Label"].to_numpy() == labels))
    log = (run_dir / "cv.log").read_text()
    assert "fold 1 of 2 epoch 2/2" in log and "val_accuracy" in log and "img/s" in log and "ETA" in log
    assert "recipe generic:" in log and "mean CV accuracy" in log
    config = hydra_config(run_dir)
    assert config["fold"] == 2 and config["batch_size"] == 32

    # The same command again finds the run finished: nothing is retrained or rewritten.
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".log"}
    run_cv(finished_run_args(tiny, run_dir))
    assert "already holds this ensemble of 2 fold(s)" in (run_dir / "cv.log").read_text()
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before}
    assert after == before
    assert not (tmp_path / "mlruns").exists()  # nothing logged again


@pytest.mark.slow  # 40 s; tf.distribute's replicas are the GPU route, which no CI machine has
def test_mirrored_strategy_over_two_logical_cpus(tiny, tmp_path):
    prelude = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
    )
    run_dir = tmp_path / "mirrored"
    run_cv(
        tiny_overrides(tiny, tmp_path)
        + ["strategy=mirrored", "strategy.devices=[/cpu:0,/cpu:1]", f"hydra.run.dir={run_dir}"],
        prelude=prelude,
    )
    check_run_dir(run_dir, folds=2)
    assert "16 per replica × 2 replica(s), MirroredStrategy" in (run_dir / "cv.log").read_text()
