"""Fold assignment: KFold / StratifiedKFold / holdout, reproducible by seed."""
from __future__ import annotations

import numpy as np
import pytest

from src.errors import UserError
from src.split import make_folds

LABELS = np.repeat(np.arange(10), 30)  # 300 rows, 30 of each class


def test_kfold_partitions_every_row_once_and_follows_the_seed():
    folds = make_folds(LABELS, 5, "kfold", 0, 0.1)
    assert len(folds) == 5
    val = np.concatenate([va for _, va in folds])
    assert sorted(val) == list(range(300))
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 300
    again = make_folds(LABELS, 5, "kfold", 0, 0.1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = make_folds(LABELS, 5, "kfold", 1, 0.1)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_stratified_keeps_class_proportions():
    for _, va in make_folds(LABELS, 5, "stratified", 0, 0.1):
        assert np.bincount(LABELS[va], minlength=10).tolist() == [6] * 10


def test_fold_1_is_one_holdout_split():
    (tr, va), = make_folds(LABELS, 1, "kfold", 0, 0.1)
    assert len(va) == 30 and len(tr) == 270 and len(np.intersect1d(tr, va)) == 0


@pytest.mark.parametrize("fold, split, fraction", [(5, "foo", 0.1), (0, "kfold", 0.1), (301, "kfold", 0.1), (1, "kfold", 1.5)])
def test_bad_values_are_refused(fold, split, fraction):
    with pytest.raises(UserError):
        make_folds(LABELS, fold, split, 0, fraction)
