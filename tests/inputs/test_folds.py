"""Fold assignment: KFold / StratifiedKFold / one holdout split, reproducible by seed; bad values refused."""
from __future__ import annotations

import numpy as np
import pytest

from src.errors import UserError
from src.inputs.folds import make_folds

LABELS = np.repeat(np.arange(10), 30)  # 300 rows, 30 of each class, sorted by class
UNEVEN = np.concatenate([np.full(120, 0), np.full(60, 1), np.full(15, 2), np.full(5, 3)])  # 60% / 30% / 7.5% / 2.5%


def val_sets(folds):
    return [va.tolist() for _, va in folds]


@pytest.mark.parametrize("split", ["kfold", "stratified"])
@pytest.mark.parametrize("fold", [2, 5, 7])
def test_folds_partition_every_row_exactly_once(split, fold):
    folds = make_folds(LABELS, fold, split, 0, 0.1)
    assert len(folds) == fold
    val = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val), np.arange(300))  # each row validates in exactly one fold
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0
        assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(300))  # and trains in the others
        assert len(va) in (300 // fold, 300 // fold + 1)


@pytest.mark.parametrize("split", ["kfold", "stratified"])
def test_folds_follow_the_seed(split):
    folds = make_folds(LABELS, 5, split, 0, 0.1)
    assert val_sets(folds) == val_sets(make_folds(LABELS, 5, split, 0, 0.1))
    assert val_sets(folds) != val_sets(make_folds(LABELS, 5, split, 1, 0.1))
    assert val_sets(folds) != [list(range(k * 60, (k + 1) * 60)) for k in range(5)]  # shuffled, not in file order


def test_stratified_keeps_class_proportions():
    for _, va in make_folds(LABELS, 5, "stratified", 0, 0.1):
        assert np.bincount(LABELS[va], minlength=10).tolist() == [6] * 10
    for _, va in make_folds(UNEVEN, 5, "stratified", 3, 0.1):
        assert np.bincount(UNEVEN[va], minlength=4).tolist() == [24, 12, 3, 1]


@pytest.mark.parametrize("split", ["kfold", "stratified"])
def test_fold_1_is_one_holdout_split_of_val_fraction(split):
    (tr, va), = make_folds(LABELS, 1, split, 0, 0.1)
    assert len(va) == 30 and len(tr) == 270
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(300))
    assert np.array_equal(va, np.sort(va)) and np.array_equal(tr, np.sort(tr))
    if split == "stratified":
        assert np.bincount(LABELS[va], minlength=10).tolist() == [3] * 10
    (_, va25), = make_folds(LABELS, 1, split, 0, 0.25)
    assert len(va25) == 75
    assert make_folds(LABELS, 1, split, 0, 0.1)[0][1].tolist() == va.tolist()
    assert make_folds(LABELS, 1, split, 1, 0.1)[0][1].tolist() != va.tolist()


@pytest.mark.parametrize(
    "labels, fold, split, fraction, parts",
    [
        (LABELS, 5, "foo", 0.1, ["split='foo'", "split=kfold or split=stratified"]),
        (LABELS, 0, "kfold", 0.1, ["fold=0", "at least 1"]),
        (LABELS, -2, "kfold", 0.1, ["fold=-2", "at least 1"]),
        (LABELS, 2.5, "kfold", 0.1, ["fold=2.5", "whole number"]),
        (LABELS, "3", "kfold", 0.1, ["fold='3'", "whole number"]),
        (LABELS, 301, "kfold", 0.1, ["fold=301", "more than the 300 training rows", "lower fold"]),
        (LABELS, 1, "kfold", 1.5, ["val_fraction=1.5", "between 0 and 1"]),
        (LABELS, 1, "kfold", 0.0, ["val_fraction=0.0", "between 0 and 1"]),
        (LABELS, 1, "kfold", 1.0, ["val_fraction=1.0", "between 0 and 1"]),
        (LABELS, 1, "kfold", "0.1", ["val_fraction='0.1'", "between 0 and 1"]),
        (LABELS[:1], 1, "kfold", 0.1, ["val_fraction=0.1 of the 1 training rows", "change val_fraction"]),
        (LABELS[::10], 1, "stratified", 0.1, ["30 training rows by class", "or use split=kfold"]),
        (UNEVEN[-10:], 6, "stratified", 0.1, ["fold=6 split=stratified", "lower fold to at most 5", "split=kfold"]),
    ],
)
def test_bad_values_are_refused_in_one_line(labels, fold, split, fraction, parts):
    with pytest.raises(UserError) as err:
        make_folds(labels, fold, split, 0, fraction)
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"
