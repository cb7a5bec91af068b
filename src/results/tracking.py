"""An MLflow record of each finished run (`logger=mlflow`): params, per-fold metrics, the CV
score and the submission in a local MLflow store; RUN_DIR/mlflow.json holds the MLflow run id.
(TensorBoard logs are written while training: src.training.callbacks.)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src import rundir
from src.extras import require
from src.files import write_json

log = logging.getLogger(__name__)

ARTIFACTS = (rundir.SUBMISSION, rundir.METRICS, rundir.REPORT, rundir.OOF)

def wanted(cfg: DictConfig) -> bool:
    """Whether the run is to be logged to MLflow; UserError, before any training, when MLflow is
    missing."""
    if not cfg.get("logger") or cfg.logger.get("name") != "mlflow":
        return False
    require("track", "logger=mlflow", "mlflow")
    return True


def log_run(cfg: DictConfig, run_dir: Path, metrics: dict) -> str | None:
    """Record a finished run in MLflow when `logger` asks for it; returns the MLflow run id.

    Params are the resolved config flattened to dotted keys; each fold's accuracy is a metric
    stepped by fold, its history metrics stepped by epoch, and the ensemble's scores plain
    metrics. The submission, metrics.json, report.md and oof.csv are its artifacts.
    """
    if not wanted(cfg):
        return None
    import mlflow

    uri = str(cfg.logger.tracking_uri)
    if "://" not in uri and not uri.startswith("file:"):  # a plain path: MLflow's local file store
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = Path(uri).resolve().as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(cfg.logger.experiment_name)
    params = rundir.flatten(OmegaConf.to_container(cfg, resolve=True))
    with mlflow.start_run(run_name=run_dir.name, tags={"run_dir": str(run_dir.resolve())}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for fold in metrics["folds"]:
            k = fold["fold"]
            mlflow.log_metric("fold_accuracy", fold["accuracy"], step=k)
            mlflow.log_metric("fold_best_epoch", fold["best_epoch"], step=k)
            history = rundir.fold_dir(run_dir, k) / rundir.HISTORY
            if history.exists():
                for row in pd.read_csv(history).to_dict("records"):
                    epoch = int(row.pop("epoch"))
                    mlflow.log_metrics({f"fold_{k}/{name}": float(v) for name, v in row.items() if np.isfinite(v)}, step=epoch)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for name in ARTIFACTS:
            if (run_dir / name).exists():
                mlflow.log_artifact(str(run_dir / name))
        run_id = run.info.run_id
    write_json(run_dir / rundir.MLFLOW, {"tracking_uri": uri, "experiment": cfg.logger.experiment_name, "run_id": run_id})
    log.info("logged to MLflow (%s): experiment %s, run %s", uri, cfg.logger.experiment_name, run_id)
    return run_id
