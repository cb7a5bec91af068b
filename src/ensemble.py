"""Combine folds: out-of-fold predictions, the averaged test prediction, the submission and metrics."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.files import write_csv, write_json
from src.train import FoldResult

log = logging.getLogger(__name__)

SUBMISSION = "submission.csv"
METRICS = "metrics.json"
OOF = "oof.csv"
TEST_PROBS = "test_probs.csv"


@dataclass
class Ensemble:
    """The run's result: OOF and test probabilities, the submission and the scores."""

    oof_probs: np.ndarray  # (N, classes); NaN rows were in no validation fold
    oof_fold: np.ndarray  # (N,) 1-based fold of each row, 0 if none
    test_probs: np.ndarray  # (M, classes), mean over folds
    submission: pd.DataFrame
    metrics: dict


def combine(folds: list[FoldResult], y_train: np.ndarray, y_test: np.ndarray | None = None) -> Ensemble:
    """Average the folds' test probabilities and gather their validation predictions."""
    classes = folds[0].test_probs.shape[1]
    oof = np.full((len(y_train), classes), np.nan, np.float32)
    oof_fold = np.zeros(len(y_train), np.int64)
    for f in folds:
        oof[f.val_index] = f.val_probs
        oof_fold[f.val_index] = f.fold
    test_probs = np.mean([f.test_probs for f in folds], axis=0)
    submission = make_submission(test_probs.argmax(1), classes)
    covered = oof_fold > 0
    scores = [f.accuracy for f in folds]
    metrics = {
        "folds": [
            {"fold": f.fold, "accuracy": f.accuracy, "best_epoch": f.best_epoch, "seconds": round(f.seconds, 1)}
            for f in folds
        ],
        "cv_mean": float(np.mean(scores)),
        "cv_std": float(np.std(scores)),
        "oof_accuracy": float(np.mean(oof[covered].argmax(1) == y_train[covered])),
        "oof_rows": int(covered.sum()),
    }
    if y_test is not None:
        metrics["test_accuracy"] = float(np.mean(submission["Label"].to_numpy() == y_test))
    return Ensemble(oof, oof_fold, test_probs, submission, metrics)


def make_submission(labels: np.ndarray, num_classes: int) -> pd.DataFrame:
    """`ImageId` 1..N and `Label`, checked before anything is written."""
    frame = pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels.astype(np.int64)})
    check_submission(frame, len(labels), num_classes)
    return frame


def check_submission(frame: pd.DataFrame, n_test: int, num_classes: int) -> None:
    """Raise if a submission is not `ImageId,Label` with ids 1..n_test and labels in range."""
    problems = []
    if list(frame.columns) != ["ImageId", "Label"]:
        problems.append(f"columns are {list(frame.columns)}, expected ['ImageId', 'Label']")
    elif len(frame) != n_test:
        problems.append(f"{len(frame)} rows for {n_test} test images")
    else:
        if not np.array_equal(frame["ImageId"].to_numpy(), np.arange(1, n_test + 1)):
            problems.append("ImageId is not 1..N in order")
        labels = frame["Label"].to_numpy()
        if labels.min() < 0 or labels.max() >= num_classes:
            problems.append(f"labels outside 0..{num_classes - 1}")
    if problems:
        raise RuntimeError("invalid submission: " + "; ".join(problems))


def write(run_dir: Path, ens: Ensemble, y_train: np.ndarray) -> None:
    """Write oof.csv, test_probs.csv, submission.csv and metrics.json (metrics last: it marks done)."""
    classes = ens.test_probs.shape[1]
    prob_cols = [f"p{c}" for c in range(classes)]
    oof = pd.DataFrame(ens.oof_probs, columns=prob_cols)
    oof.insert(0, "row", np.arange(len(y_train)))
    oof.insert(1, "label", y_train)
    oof.insert(2, "fold", ens.oof_fold)
    write_csv(run_dir / OOF, oof)
    test = pd.DataFrame(ens.test_probs, columns=prob_cols)
    test.insert(0, "ImageId", np.arange(1, len(test) + 1))
    write_csv(run_dir / TEST_PROBS, test)
    write_csv(run_dir / SUBMISSION, ens.submission)
    write_json(run_dir / METRICS, ens.metrics)


def summary(ens: Ensemble) -> str:
    """The per-fold table and the CV score, for the end of the console log."""
    lines = ["fold  accuracy  best_epoch  seconds"]
    for f in ens.metrics["folds"]:
        lines.append(f"{f['fold']:>4}  {f['accuracy']:.4f}    {f['best_epoch']:>10}  {f['seconds']:>7.1f}")
    m = ens.metrics
    lines.append(f"mean CV accuracy {m['cv_mean']:.4f} ± {m['cv_std']:.4f}; out-of-fold accuracy {m['oof_accuracy']:.4f}")
    if "test_accuracy" in m:
        lines.append(f"test accuracy (ensemble) {m['test_accuracy']:.4f}")
    return "\n".join(lines)
