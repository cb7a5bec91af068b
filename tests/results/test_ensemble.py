"""Averaging folds, the out-of-fold table, and the submission check."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from src.results.ensemble import check_submission, combine, make_submission
from src.rundir import FoldResult


def one_hot(labels, classes=10):
    return np.eye(classes, dtype=np.float32)[labels]


def test_combine_averages_test_and_scores_oof():
    f0 = FoldResult(0, np.array([0, 1]), np.array([0, 1]), one_hot([0, 2]), one_hot([5, 5, 1]), 0.5, 1, 1.0)
    f1 = FoldResult(1, np.array([2, 3]), np.array([2, 3]), one_hot([2, 3]), one_hot([5, 6, 1]) * 0.5 + one_hot([5, 5, 6]) * 0.5, 1.0, 1, 1.0)
    ens = combine([f0, f1], 4, y_test=np.array([5, 6, 1]))
    assert ens.submission["Label"].tolist() == [5, 5, 1]  # row 1: 5 has 0.75 of the mean, 6 has 0.25
    assert ens.oof_fold.tolist() == [0, 0, 1, 1]
    assert ens.metrics["complete"] and ens.metrics["folds_missing"] == []
    assert ens.metrics["oof_accuracy"] == 0.75
    assert ens.metrics["cv_mean"] == 0.75
    assert ens.metrics["test_accuracy"] == pytest.approx(2 / 3)


def test_partial_ensemble_names_missing_folds():
    f1 = FoldResult(1, np.array([2, 3]), np.array([2, 3]), one_hot([2, 0]), one_hot([5, 6, 1]), 0.5, 1, 1.0)
    ens = combine([f1], 6, missing=[0, 2])
    assert ens.oof_fold.tolist() == [-1, -1, 1, 1, -1, -1]
    assert ens.metrics["oof_rows"] == 2 and ens.metrics["oof_accuracy"] == 0.5
    assert not ens.metrics["complete"] and ens.metrics["folds_missing"] == [0, 2]


def test_submission_check_rejects_bad_frames():
    good = make_submission(np.array([1, 2, 3]), 10)
    check_submission(good, 3, 10)
    with pytest.raises(ValueError, match="rows"):
        check_submission(good, 4, 10)
    with pytest.raises(ValueError, match="ImageId"):
        check_submission(pd.DataFrame({"ImageId": [0, 1, 2], "Label": [1, 2, 3]}), 3, 10)
    with pytest.raises(ValueError, match="labels outside"):
        check_submission(pd.DataFrame({"ImageId": [1, 2, 3], "Label": [1, 2, 10]}), 3, 10)
