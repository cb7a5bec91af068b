"""Combine folds: out-of-fold predictions, the averaged test prediction, the submission and metrics.

`build` reads the complete folds of a run dir and writes oof.csv, test_probs.csv, submission.csv
and metrics.json (last); src.cv calls it when the last fold is complete, and
`python -m src.ensemble run_dir=DIR` after fold jobs trained in parallel.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src import rundir
from src.errors import UserError
from src.files import remove_stale_temps, write_csv, write_json
from src.rundir import FoldResult

log = logging.getLogger(__name__)


@dataclass
class Ensemble:
    """The run's result: OOF and test probabilities, the submission and the scores."""

    oof_probs: np.ndarray  # (N, classes); NaN rows were in no validation fold
    oof_fold: np.ndarray  # (N,) fold of each row, -1 if it is in no complete fold's validation rows
    oof_label: np.ndarray  # (N,) true label of each row, -1 where oof_fold is -1
    test_probs: np.ndarray  # (M, classes), mean over folds
    submission: pd.DataFrame
    metrics: dict
    fmt: rundir.SubmissionFormat = rundir.SubmissionFormat()


def combine(folds: list[FoldResult], n_train: int, y_test: np.ndarray | None = None, missing: list[int] = (),
            fmt: rundir.SubmissionFormat = rundir.SubmissionFormat()) -> Ensemble:
    """Average the folds' test probabilities and gather their validation predictions.

    `missing` names folds of the run that are not complete yet: the ensemble is then partial.
    `y_test` holds class indices; the submission is written in `fmt`.
    """
    classes = folds[0].test_probs.shape[1]
    oof = np.full((n_train, classes), np.nan, np.float32)
    oof_fold = np.full(n_train, -1, np.int64)
    oof_label = np.full(n_train, -1, np.int64)
    for f in folds:
        oof[f.val_index] = f.val_probs
        oof_fold[f.val_index] = f.fold
        oof_label[f.val_index] = f.val_labels
    test_probs = np.mean([f.test_probs for f in folds], axis=0)
    submission = make_submission(test_probs.argmax(1), classes, fmt)
    covered = oof_fold >= 0
    scores = [f.accuracy for f in folds]
    metrics = {
        "folds": [
            {"fold": f.fold, "accuracy": f.accuracy, "best_epoch": f.best_epoch, "seconds": round(f.seconds, 1),
             **({"precision": f.precision} if f.precision else {})}  # older runs did not record it
            for f in folds
        ],
        "folds_missing": sorted(missing),
        "complete": not missing,
        "cv_mean": float(np.mean(scores)),
        "cv_std": float(np.std(scores)),
        "oof_accuracy": float(np.mean(oof[covered].argmax(1) == oof_label[covered])),
        "oof_rows": int(covered.sum()),
    }
    if all(f.val_probs_plain is not None for f in folds):  # the OOF accuracy without test-time augmentation
        plain = np.full_like(oof, np.nan)
        for f in folds:
            plain[f.val_index] = f.val_probs_plain
        metrics["oof_accuracy_plain"] = float(np.mean(plain[covered].argmax(1) == oof_label[covered]))
    if y_test is not None:
        metrics["test_accuracy"] = float(np.mean(test_probs.argmax(1) == y_test))
    return Ensemble(oof, oof_fold, oof_label, test_probs, submission, metrics, fmt)


def build(run_dir: Path, folds: int, n_train: int, y_test: np.ndarray | None = None) -> tuple[Ensemble, bool]:
    """Combine the complete folds found in `run_dir` and write the results.

    When metrics.json already describes exactly these folds (a finished run run again), nothing
    is rewritten: the results are recomputed only to be shown. Returns the ensemble and whether
    it was written.
    """
    results, missing = [], []
    for k in range(folds):
        result = rundir.load_complete(run_dir, k)
        (results.append(result) if result is not None else missing.append(k))
    if not results:
        raise UserError(f"no fold of {run_dir} is complete yet: train some with `python -m src.cv hydra.run.dir={run_dir}`")
    ens = combine(results, n_train, y_test, missing, rundir.read_submission_format(run_dir))
    ens.metrics.update(_provenance(run_dir))
    if rundir.read_metrics(run_dir) == json.loads(json.dumps(ens.metrics)):
        log.info("%s already holds this ensemble of %d fold(s): results left as they are", run_dir, len(results))
        return ens, False
    remove_stale_temps(run_dir)
    write(run_dir, ens)
    if missing:
        log.warning(
            "ensemble of %d of %d folds written; missing fold(s) %s: train them with fold_index=%s, "
            "then run `python -m src.ensemble run_dir=%s`",
            len(results), folds, missing, missing, run_dir,
        )
    return ens, True


def _provenance(run_dir: Path) -> dict:
    """What metrics.json repeats from the run's records: the pseudo-labels' source and the time_limit's plan."""
    found = {}
    try:
        pseudo = rundir.read_record(run_dir).get("pseudo")
    except UserError:  # folds copied without their run.json still ensemble
        pseudo = None
    if pseudo:
        found["pseudo"] = pseudo
    plan = rundir.read_plan(run_dir)
    if plan:
        found["time_limit"] = {"seconds": plan["time_limit_s"], "epochs": plan["epochs"],
                               "epoch_fraction": plan.get("epoch_fraction", 1.0), "folds": plan["folds"], "rates": plan["rates"],
                               **({"fold_choice": plan["fold_choice"]} if plan.get("fold_choice") else {})}
    return found


def make_submission(indices: np.ndarray, num_classes: int,
                    fmt: rundir.SubmissionFormat = rundir.SubmissionFormat()) -> pd.DataFrame:
    """The submission for predicted class indices (in the test file's order), in the competition's
    format (by default `ImageId` 1..N and `Label`), checked before anything is written."""
    id_column, label_column = fmt.columns
    rows = fmt.rows(len(indices))
    frame = pd.DataFrame({id_column: fmt.id_values(len(indices))[rows], label_column: fmt.labels(indices[rows])})
    check_submission(frame, len(indices), num_classes, fmt)
    return frame


def check_submission(frame: pd.DataFrame, n_test: int, num_classes: int,
                     fmt: rundir.SubmissionFormat = rundir.SubmissionFormat()) -> None:
    """Raise if a submission does not have `fmt`'s columns, its ids in order (1..n_test by
    default) and labels among the classes."""
    problems = []
    if tuple(frame.columns) != tuple(fmt.columns):
        problems.append(f"columns are {list(frame.columns)}, expected {list(fmt.columns)}")
    elif len(frame) != n_test:
        problems.append(f"{len(frame)} rows for {n_test} test images")
    else:
        id_column, label_column = fmt.columns
        if not np.array_equal(frame[id_column].astype(str).to_numpy(), fmt.id_values(n_test)[fmt.rows(n_test)].astype(str)):
            expected = "the expected ids" if fmt.ids is not None else "1..N"
            problems.append(f"{id_column} is not {expected} in order")
        allowed = set(fmt.labels(np.arange(num_classes)).tolist())
        if not set(frame[label_column].tolist()) <= allowed:
            problems.append(f"labels outside the {num_classes} classes")
    if problems:
        raise ValueError("submission check failed: " + "; ".join(problems))


def write(run_dir: Path, ens: Ensemble) -> None:
    """Write oof.csv, test_probs.csv, submission.csv and metrics.json (metrics last: it marks done).

    oof.csv holds the training rows that are in a complete fold's validation rows (all of them
    for a finished K-fold run).
    """
    fmt = ens.fmt
    rundir.write_submission_format(run_dir, fmt)  # a blend's dir gets it here; a run has it from src.cv
    prob_cols = fmt.prob_columns(ens.test_probs.shape[1])
    rows = np.flatnonzero(ens.oof_fold >= 0)
    oof = pd.DataFrame(ens.oof_probs[rows], columns=prob_cols)
    oof.insert(0, "row", rows)
    oof.insert(1, "label", fmt.labels(ens.oof_label[rows]))
    oof.insert(2, "fold", ens.oof_fold[rows])
    write_csv(run_dir / rundir.OOF, oof)
    test = pd.DataFrame(ens.test_probs, columns=prob_cols)
    test.insert(0, fmt.columns[0], fmt.id_values(len(test)))
    write_csv(run_dir / rundir.TEST_PROBS, test)
    write_csv(run_dir / rundir.SUBMISSION, ens.submission)
    write_json(run_dir / rundir.METRICS, ens.metrics)


def summary(ens: Ensemble) -> str:
    """The per-fold table and the CV score, for the end of the console log."""
    lines = ["fold  accuracy  best_epoch  seconds  precision"]
    for f in ens.metrics["folds"]:
        lines.append(f"{f['fold']:>4}  {f['accuracy']:.4f}    {f['best_epoch']:>10}  {f['seconds']:>7.1f}  {f.get('precision', '?')}")
    m = ens.metrics
    lines.append(f"mean CV accuracy {m['cv_mean']:.4f} ± {m['cv_std']:.4f}; out-of-fold accuracy {m['oof_accuracy']:.4f}")
    if "oof_accuracy_plain" in m and m["oof_accuracy_plain"] != m["oof_accuracy"]:
        lines.append(f"out-of-fold accuracy without test-time augmentation {m['oof_accuracy_plain']:.4f}")
    if "test_accuracy" in m:
        lines.append(f"test accuracy (ensemble) {m['test_accuracy']:.4f}")
    if m["folds_missing"]:
        lines.append(f"partial ensemble: fold(s) {m['folds_missing']} not complete")
    return "\n".join(lines)
