"""Blend several finished runs (e.g. the members of a sweep) into one submission.

Equal weights, or weights fitted on the runs' out-of-fold predictions (`weights=oof`: the
simplex weights that minimise the blend's OOF log-loss). Fitting on OOF predictions needs every
run to have used the same folds, so that each row's blended prediction still comes from models
that never saw it; runs with other folds are refused for it. All runs must be of the same data.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import softmax

from src import rundir
from src.errors import UserError
from src.results.ensemble import Ensemble, make_submission, write

log = logging.getLogger(__name__)

WEIGHTS = ("equal", "oof")


def load_run(run_dir: Path) -> dict:
    """A finished run's OOF table, test probabilities, metrics and data hashes."""
    data = rundir.read_record(run_dir).get("data")
    metrics = rundir.read_metrics(run_dir)
    if metrics is None:
        raise UserError(f"{run_dir} is not a finished run of src.cv (no readable {rundir.METRICS}): give the run dirs of finished runs")
    try:
        oof = pd.read_csv(run_dir / rundir.OOF).sort_values("row", ignore_index=True)
        test = pd.read_csv(run_dir / rundir.TEST_PROBS)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{run_dir} is not a finished run of src.cv ({e}): give the run dirs of finished runs") from None
    if not metrics.get("complete"):
        raise UserError(f"{run_dir} is not complete (fold(s) {metrics.get('folds_missing')} missing): finish it first")
    return {"dir": run_dir, "metrics": metrics, "data": data, "oof": oof, "test": test}


def fit_weights(oof_probs: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Simplex weights minimising the log-loss of the weighted mean of `oof_probs` against `labels`."""
    stacked = np.stack(oof_probs)  # (runs, rows, classes)
    picked = stacked[:, np.arange(len(labels)), labels]  # each run's probability of the true class

    def loss(z):
        return -np.mean(np.log(np.clip(softmax(z) @ picked, 1e-12, None)))

    z = minimize(loss, np.zeros(len(oof_probs)), method="L-BFGS-B").x
    return softmax(z)


def blend(run_dirs: list[Path], weights: str) -> tuple[Ensemble, dict]:
    """Blend the runs; returns the ensemble to write and a per-member summary."""
    if weights not in WEIGHTS:
        raise UserError(f"weights={weights!r} is not one of {WEIGHTS}")
    if len(run_dirs) < 2:
        raise UserError(f"runs={[str(d) for d in run_dirs]}: a blend needs at least two run dirs")
    runs = [load_run(Path(d)) for d in run_dirs]
    first = runs[0]
    for run in runs[1:]:
        if run["data"] != first["data"]:
            raise UserError(f"{run['dir']} was trained on other data than {first['dir']}: blend runs of the same data")
        if not run["oof"]["row"].equals(first["oof"]["row"]) or len(run["test"]) != len(first["test"]):
            raise UserError(f"{run['dir']} has other out-of-fold rows or test rows than {first['dir']}")
    same_folds = all(r["oof"]["fold"].equals(first["oof"]["fold"]) for r in runs)
    fmt = rundir.read_submission_format(first["dir"])
    if any(rundir.read_submission_format(r["dir"]) != fmt for r in runs[1:]):
        raise UserError(f"the runs write different submissions (columns, ids or classes) than {first['dir']}: blend runs of one competition")
    oof = [rundir.probabilities(r["oof"], 3) for r in runs]
    test = [rundir.probabilities(r["test"], 1) for r in runs]
    names = [str(v) for v in fmt.labels(np.arange(oof[0].shape[1]))]
    index = {name: k for k, name in enumerate(names)}
    labels = np.array([index[str(v)] for v in first["oof"]["label"]], np.int64)
    if weights == "oof":
        if not same_folds:
            different = [str(r["dir"]) for r in runs if not r["oof"]["fold"].equals(first["oof"]["fold"])]
            raise UserError(
                f"weights=oof needs the same folds in every run, and {different} split the rows differently from "
                f"{first['dir']} (another seed, fold count or split): blend them with weights=equal, or rerun with the same folds"
            )
        w = fit_weights(oof, labels)
    else:
        w = np.full(len(runs), 1.0 / len(runs))
    oof_blend = np.tensordot(w, np.stack(oof), axes=1).astype(np.float32)
    test_blend = np.tensordot(w, np.stack(test), axes=1).astype(np.float32)
    n_train = int(first["oof"]["row"].max()) + 1
    oof_full = np.full((n_train, oof_blend.shape[1]), np.nan, np.float32)
    fold = np.full(n_train, -1, np.int64)
    label = np.full(n_train, -1, np.int64)
    rows = first["oof"]["row"].to_numpy()
    oof_full[rows], label[rows] = oof_blend, labels
    fold[rows] = first["oof"]["fold"].to_numpy()  # the first member's folds (metrics say whether all agree)
    members = [{"run_dir": str(r["dir"]), "weight": float(wi), "oof_accuracy": r["metrics"]["oof_accuracy"],
                "cv_mean": r["metrics"]["cv_mean"]} for r, wi in zip(runs, w)]
    accuracy = float(np.mean(oof_blend.argmax(1) == labels))
    metrics = {"blend": {"weights": weights, "same_folds": same_folds, "members": members},
               "folds": [], "folds_missing": [], "complete": True, "oof_accuracy": accuracy,
               "cv_mean": accuracy, "cv_std": 0.0, "oof_rows": int(len(rows))}
    ens = Ensemble(oof_full, fold, label, test_blend,
                   make_submission(test_blend.argmax(1), test_blend.shape[1], fmt), metrics, fmt)
    return ens, metrics


def write_blend(out_dir: Path, ens: Ensemble) -> None:
    """Write the blend's files; refuses a dir that already holds results."""
    if (out_dir / rundir.METRICS).exists():
        raise UserError(f"{out_dir} already holds results: choose another hydra.run.dir")
    write(out_dir, ens)


def summary(metrics: dict) -> str:
    lines = ["member OOF accuracy  weight  run dir"]
    for m in metrics["blend"]["members"]:
        lines.append(f"       {m['oof_accuracy']:.4f}       {m['weight']:.3f}   {m['run_dir']}")
    lines.append(f"blend  {metrics['oof_accuracy']:.4f} out-of-fold accuracy ({metrics['blend']['weights']} weights)")
    return "\n".join(lines)
