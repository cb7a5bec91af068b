"""Fold assignment with scikit-learn splitters, and one fold's arrays."""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from src.errors import UserError
from src.inputs.dataset import Dataset
from src.inputs.pseudo import PseudoLabels

SPLITS = ("kfold", "stratified")


def make_folds(labels: np.ndarray, fold: int, split: str, seed: int, val_fraction: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (train_index, val_index) per fold; fold=1 is one holdout split of `val_fraction`."""
    if split not in SPLITS:
        raise UserError(f"split={split!r} is not one of {SPLITS}: set split=kfold or split=stratified")
    if isinstance(fold, bool) or not isinstance(fold, numbers.Integral) or fold < 1:
        raise UserError(f"fold={fold!r}: need a whole number, at least 1 (1 = one holdout split)")
    n = len(labels)
    stratify = split == "stratified"
    if fold == 1:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
            raise UserError(f"val_fraction={val_fraction!r} must be a number between 0 and 1 (exclusive) when fold=1")
        idx = np.arange(n)
        try:
            tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, shuffle=True,
                                      stratify=labels if stratify else None)
        except ValueError as e:
            hint = "change val_fraction" + (" or use split=kfold" if stratify else "")
            raise UserError(f"fold=1 cannot hold out val_fraction={val_fraction} of the {n} training rows"
                            f"{' by class' if stratify else ''} ({' '.join(str(e).split())}): {hint}") from None
        return [(np.sort(tr), np.sort(va))]
    if fold > n:
        raise UserError(f"fold={fold} is more than the {n} training rows: lower fold")
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=fold, shuffle=True, random_state=seed)
    try:
        return list(splitter.split(np.zeros(n), labels))
    except ValueError as e:  # stratified: a class with fewer rows than folds
        largest = int(np.unique(labels, return_counts=True)[1].max()) if n else 0
        raise UserError(f"fold={fold} split={split} cannot split the {n} training rows ({' '.join(str(e).split())}): "
                        f"lower fold to at most {largest} or use split=kfold") from None


@dataclass(frozen=True)
class FoldData:
    """What fold `fold` (0-based) trains on, validates on and predicts."""

    fold: int
    x_train: np.ndarray  # (n, H, W, C) uint8
    y_train: np.ndarray  # (n,) int64
    x_val: np.ndarray
    y_val: np.ndarray
    val_index: np.ndarray  # the validation rows' positions in the training file
    x_test: np.ndarray
    num_classes: int


def fold_data(dataset: Dataset, folds: list[tuple[np.ndarray, np.ndarray]], k: int,
              pseudo: PseudoLabels | None = None) -> FoldData:
    """Fold k's arrays, cut from the dataset by `make_folds`' indices; `pseudo`'s test rows are
    added to its training rows."""
    tr, va = folds[k]
    x_train, y_train = dataset.x_train[tr], dataset.y_train[tr]
    if pseudo is not None:
        x_train = np.concatenate([x_train, dataset.x_test[pseudo.index]])
        y_train = np.concatenate([y_train, pseudo.labels.astype(y_train.dtype)])
    return FoldData(k, x_train, y_train, dataset.x_train[va], dataset.y_train[va], va, dataset.x_test, dataset.num_classes)
