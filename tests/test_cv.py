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
    assert len(oof) == N_TRAIN and set(oof["fold"]) == set(range(folds))
    assert sorted(oof["row"]) == list(range(N_TRAIN))
    probs = oof[[f"p{c}" for c in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    recomputed = float(np.mean(probs.argmax(1) == oof["label"].to_numpy()))
    assert recomputed == metrics["oof_accuracy"]
    per_fold = [float(np.mean(g[[f"p{c}" for c in range(10)]].to_numpy().argmax(1) == g["label"])) for _, g in oof.groupby("fold")]
    np.testing.assert_allclose(per_fold, [f["accuracy"] for f in metrics["folds"]])
    np.testing.assert_allclose(metrics["cv_mean"], np.mean(per_fold))

    test_probs = pd.read_csv(run_dir / "test_probs.csv")
    assert (test_probs[[f"p{c}" for c in range(10)]].to_numpy().argmax(1) == sub["Label"].to_numpy()).all()
    for k in range(folds):
        fold_dir = run_dir / f"fold_{k}"
        assert (fold_dir / "model.keras").stat().st_size > 0
        history = pd.read_csv(fold_dir / "history.csv")
        assert len(history) >= 1
        # The checkpoint's val_accuracy (padded batches) equals the accuracy of the reloaded best weights
        # (without test-time augmentation, which only the fold's reported accuracy includes).
        done = json.loads((fold_dir / "done.json").read_text())
        assert abs(history["val_accuracy"].max() - done["accuracy_plain"]) < 1e-6
        assert done["accuracy"] == metrics["folds"][k]["accuracy"]
        assert {"val_index", "val_labels", "val_probs", "test_probs"} <= set(np.load(fold_dir / "predictions.npz").files)
        assert done["fold"] == k
        assert not (fold_dir / "train").exists()  # the resume state goes once the fold is complete
    assert metrics["complete"] and metrics["folds_missing"] == []
    run = json.loads((run_dir / "run.json").read_text())
    assert set(run["data"]) == {"train", "test"} and run["versions"]["tensorflow"]
    return metrics


def hydra_config(run_dir) -> dict:
    """The resolved config Hydra saved for the (latest) invocation in run_dir."""
    return yaml.safe_load(sorted((run_dir / ".hydra").glob("*/config.yaml"))[-1].read_text())


def test_full_run_writes_consistent_results(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_cv(tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"])
    metrics = check_run_dir(run_dir, folds=2)
    labels = pd.read_csv(tiny["test_labels"])["Label"].to_numpy()
    sub = pd.read_csv(run_dir / "submission.csv")
    assert metrics["test_accuracy"] == float(np.mean(sub["Label"].to_numpy() == labels))
    log = (run_dir / "cv.log").read_text()
    assert "fold 1 of 2 epoch 1/1" in log and "val_accuracy" in log and "img/s" in log and "ETA" in log
    assert "mean CV accuracy" in log
    config = hydra_config(run_dir)
    assert config["fold"] == 2 and config["batch_size"] == 32

    # The same command again finds the run finished: nothing is retrained or rewritten.
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".log"}
    run_cv(tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"])
    assert "already holds this ensemble of 2 fold(s)" in (run_dir / "cv.log").read_text()
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before}
    assert after == before


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
