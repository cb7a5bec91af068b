"""End-to-end runs of `python -m src.cv` on tiny real data with the real composed config."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml

from conftest import N_TEST, N_TRAIN, run_cv, tiny_overrides


def check_run_dir(run_dir, folds: int) -> dict:
    """Assert a finished run's files are all there and consistent; return its metrics."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sub = pd.read_csv(run_dir / "submission.csv")
    assert list(sub.columns) == ["ImageId", "Label"]
    assert len(sub) == N_TEST
    assert sub["ImageId"].tolist() == list(range(1, N_TEST + 1))
    assert sub["Label"].between(0, 9).all()

    oof = pd.read_csv(run_dir / "oof.csv")
    assert len(oof) == N_TRAIN and set(oof["fold"]) == set(range(1, folds + 1))
    probs = oof[[f"p{c}" for c in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    recomputed = float(np.mean(probs.argmax(1) == oof["label"].to_numpy()))
    assert recomputed == metrics["oof_accuracy"]
    per_fold = [float(np.mean(g[[f"p{c}" for c in range(10)]].to_numpy().argmax(1) == g["label"])) for _, g in oof.groupby("fold")]
    np.testing.assert_allclose(per_fold, [f["accuracy"] for f in metrics["folds"]])
    np.testing.assert_allclose(metrics["cv_mean"], np.mean(per_fold))

    test_probs = pd.read_csv(run_dir / "test_probs.csv")
    assert (test_probs[[f"p{c}" for c in range(10)]].to_numpy().argmax(1) == sub["Label"].to_numpy()).all()
    for k in range(1, folds + 1):
        fold_dir = run_dir / f"fold_{k}"
        assert (fold_dir / "model.keras").stat().st_size > 0
        history = pd.read_csv(fold_dir / "history.csv")
        assert len(history) >= 1
        # The checkpoint's val_accuracy (padded batches) equals the accuracy of the reloaded best weights.
        assert abs(history["val_accuracy"].max() - metrics["folds"][k - 1]["accuracy"]) < 1e-6
        assert {"val_index", "val_probs", "test_probs"} <= set(np.load(fold_dir / "predictions.npz").files)
    assert (run_dir / ".hydra" / "config.yaml").exists()
    return metrics


def test_full_run_writes_consistent_results(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_cv(tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"])
    metrics = check_run_dir(run_dir, folds=2)
    labels = pd.read_csv(tiny["test_labels"])["Label"].to_numpy()
    sub = pd.read_csv(run_dir / "submission.csv")
    assert metrics["test_accuracy"] == float(np.mean(sub["Label"].to_numpy() == labels))
    log = (run_dir / "cv.log").read_text()
    assert "fold 2/2 epoch 1/1" in log and "val_accuracy" in log and "img/s" in log and "ETA" in log
    assert "mean CV accuracy" in log
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["fold"] == 2 and config["batch_size"] == 32

    # A second run into the same dir must not overwrite the finished one.
    before = (run_dir / "submission.csv").read_bytes()
    again = run_cv(tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"], check=False)
    assert again.returncode != 0 and "already holds a finished run" in again.stderr
    assert (run_dir / "submission.csv").read_bytes() == before


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


def test_multirun_sweeps_two_settings(tiny, tmp_path):
    sweep = tmp_path / "sweep"
    run_cv(["-m", "model.dropout=0.3,0.5"] + tiny_overrides(tiny, tmp_path) + [f"hydra.sweep.dir={sweep}"])
    for job, dropout in (("0", 0.3), ("1", 0.5)):
        check_run_dir(sweep / job, folds=2)
        assert yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())["model"]["dropout"] == dropout
