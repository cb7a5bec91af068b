"""The submission a competition expects (`rundir.SubmissionFormat`): from its sample_submission.csv
when there is one (`data.sample_submission`, or the file of that name beside the test file), else
from the test file's id column, else Digit Recognizer's `ImageId,Label` with ids 1..N.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from src.errors import UserError
from src.inputs.dataset import Dataset, read_frame
from src.rundir import SubmissionFormat

SAMPLE = "sample_submission.csv"


def sample_path(cfg: DictConfig) -> Path | None:
    """The sample submission to follow: `cfg.sample_submission`, or one beside the test file."""
    if cfg.get("sample_submission"):
        path = Path(cfg.sample_submission)
        if not path.is_file():
            raise UserError(f"sample submission {path} not found: give its path in data.sample_submission, or null")
        return path
    beside = Path(cfg.test).parent / SAMPLE
    return beside if beside.is_file() else None


def submission_format(cfg: DictConfig, dataset: Dataset, label_column: str = "label") -> SubmissionFormat:
    """What `dataset`'s competition expects; `cfg` is the `data` group."""
    k = dataset.num_classes
    classes = None if np.array_equal(dataset.label_values, np.arange(k)) else tuple(dataset.label_values.tolist())
    path = sample_path(cfg)
    if path is not None:
        return _from_sample(path, dataset, classes)
    if dataset.test_ids is not None:
        return SubmissionFormat((dataset.id_column, label_column), _ids(dataset.test_ids), classes)
    return SubmissionFormat(classes=classes)


def _from_sample(path: Path, dataset: Dataset, classes: tuple | None) -> SubmissionFormat:
    """The sample's two columns and its ids, in its order; checked against the test file."""
    fix = "give the competition's sample_submission.csv (data.sample_submission=), or set data.sample_submission to a file that matches data.test"
    frame = read_frame(path, "sample submission", fix)
    n = len(dataset.x_test)
    if frame.shape[1] != 2:
        raise UserError(f"sample submission {path} has {frame.shape[1]} columns {list(frame.columns)[:4]}, expected 2 (id, label): {fix}")
    if len(frame) != n:
        raise UserError(f"sample submission {path} has {len(frame)} rows, but the test file has {n} images: {fix}")
    ids = frame.iloc[:, 0].to_numpy()
    columns = (str(frame.columns[0]), str(frame.columns[1]))
    if dataset.test_ids is None:  # row i of the sample is test image i, as in Digit Recognizer
        return SubmissionFormat(columns, _ids(ids), classes)
    position = {str(v): i for i, v in enumerate(dataset.test_ids)}
    unknown = [v for v in ids if str(v) not in position]
    if unknown or len(set(map(str, ids))) != n:
        what = f"id {unknown[0]!r} is not in" if unknown else "ids repeat, unlike"
        raise UserError(f"sample submission {path}: {what} the test file's {dataset.id_column!r} column: {fix}")
    order = [position[str(v)] for v in ids]
    return SubmissionFormat(columns, _ids(dataset.test_ids), classes, None if order == list(range(n)) else tuple(order))


def _ids(ids: np.ndarray) -> tuple | None:
    """The ids to record: None when they are 1..N in order (the default)."""
    values = [v.item() if isinstance(v, np.generic) else v for v in ids]
    return None if values == list(range(1, len(values) + 1)) else tuple(values)
