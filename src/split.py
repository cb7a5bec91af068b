"""Fold assignment with scikit-learn splitters."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from src.errors import UserError

SPLITS = ("kfold", "stratified")


def make_folds(labels: np.ndarray, fold: int, split: str, seed: int, val_fraction: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (train_index, val_index) per fold; fold=1 is one holdout split of `val_fraction`."""
    if split not in SPLITS:
        raise UserError(f"split={split!r} is not one of {SPLITS}")
    n = len(labels)
    if fold < 1:
        raise UserError(f"fold={fold}: need at least 1 (1 = one holdout split)")
    stratify = split == "stratified"
    if fold == 1:
        if not 0 < val_fraction < 1:
            raise UserError(f"val_fraction={val_fraction} must be between 0 and 1 when fold=1")
        idx = np.arange(n)
        tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, shuffle=True,
                                  stratify=labels if stratify else None)
        return [(np.sort(tr), np.sort(va))]
    if fold > n:
        raise UserError(f"fold={fold} is more than the {n} training rows")
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=fold, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(n), labels))
