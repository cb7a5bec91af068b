"""Pseudo-labels (`pseudo.run_dir=DIR`): the test images a finished run's ensemble predicts with
probability ≥ `pseudo.threshold`, labelled with its prediction, join every fold's training rows
(never its validation rows). The standard second stage of a Kaggle image competition.

The source is identified by the SHA-256 of its test_probs.csv and the number of rows taken; the
run records both (run.json, metrics.json), and a resume that would take other rows is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from src import rundir
from src.errors import UserError
from src.files import sha256


@dataclass(frozen=True)
class PseudoLabels:
    """Test rows chosen by a finished run, with its labels for them."""

    index: np.ndarray  # positions in the test file
    labels: np.ndarray
    record: dict  # what run.json and metrics.json keep: the source's hash, the threshold, the count


def load(cfg: DictConfig, x_test: np.ndarray, test_digest: str, num_classes: int) -> PseudoLabels | None:
    """The pseudo-labels `cfg` (the `pseudo` group) asks for; None when `cfg.run_dir` is unset."""
    if cfg is None or not cfg.get("run_dir"):
        return None
    source = Path(cfg.run_dir)
    threshold = cfg.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise UserError(f"pseudo.threshold={threshold!r}: give the least probability to take a test image, in (0, 1]")
    rundir.finished_config(source)
    record = rundir.read_record(source)
    if record.get("data", {}).get("test") != test_digest:
        raise UserError(f"pseudo.run_dir={source} predicted another test file than data.test: "
                        "pseudo-labels need the run's own test set")
    path = source / rundir.TEST_PROBS
    try:
        probs = rundir.probabilities(pd.read_csv(path), 1)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e}): rebuild it with `python -m src.ensemble run_dir={source}`") from None
    if probs.shape != (len(x_test), num_classes):
        raise UserError(f"{path} holds {probs.shape[0]} rows × {probs.shape[1]} classes, but data.test has "
                        f"{len(x_test)} images and {num_classes} classes")
    index = np.flatnonzero(probs.max(axis=1) >= threshold)
    return PseudoLabels(index, probs[index].argmax(axis=1).astype(np.int64),
                        {"test_probs_sha256": sha256(path), "threshold": float(threshold), "rows": int(len(index))})
