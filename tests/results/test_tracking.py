"""Tracking: TensorBoard logs per fold, and logger=mlflow's record of a finished run."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import compose_config
from src import rundir
from src.results import tracking


def scalars(log_dir) -> dict[str, list[float]]:
    """Every scalar in a TensorBoard log dir, by tag, in step order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(str(log_dir / name)):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return {tag: [v for _, v in sorted(points)] for tag, points in out.items()}


def test_tensorboard_logs_every_fold_epoch(finished_run):
    for k in range(2):
        history = pd.read_csv(finished_run / f"fold_{k}" / "history.csv")
        val = scalars(finished_run / "tensorboard" / f"fold_{k}" / "validation")
        np.testing.assert_allclose(val["epoch_accuracy"], history["val_accuracy"], rtol=1e-6)
        train = scalars(finished_run / "tensorboard" / f"fold_{k}" / "train")
        np.testing.assert_allclose(train["epoch_loss"], history["loss"], rtol=1e-6)
        assert len(train["epoch_learning_rate"]) == len(history)


def test_mlflow_records_params_fold_metrics_and_the_submission(finished_run):
    from mlflow.tracking import MlflowClient

    record = json.loads((finished_run / rundir.MLFLOW).read_text())
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert run.data.params["fold"] == "2" and run.data.params["model.dropout"] == "0.1"  # the generic recipe
    assert run.data.params["recipe.name"] == "generic"
    assert run.data.metrics["cv_mean"] == pytest.approx(metrics["cv_mean"])
    assert run.data.metrics["oof_accuracy"] == pytest.approx(metrics["oof_accuracy"])
    per_fold = client.get_metric_history(run.info.run_id, "fold_accuracy")
    assert [m.value for m in sorted(per_fold, key=lambda m: m.step)] == pytest.approx([f["accuracy"] for f in metrics["folds"]])
    assert len(client.get_metric_history(run.info.run_id, "fold_1/val_accuracy")) == 2  # one per epoch
    local = client.download_artifacts(run.info.run_id, "submission.csv", str(finished_run.parent / "artifacts"))
    assert open(local).read() == (finished_run / "submission.csv").read_text()


def test_no_logger_logs_nothing(tmp_path):
    assert tracking.log_run(compose_config(), tmp_path, {}) is None
    assert not list(tmp_path.iterdir())
