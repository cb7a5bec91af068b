"""The project's config and data as its commands get them, for the benchmarks that run its stages
directly: one way to compose the config (src.cli's, with its schemas and resolvers)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from src.cli import compose_config  # noqa: E402
from src.inputs import dataset  # noqa: E402


def timed(argv: list[str], what: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run `argv` in the repository (the project importable), its wall seconds and the finished
    process; a failure ends the benchmark naming `what`, with the tail of its stderr."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """conf/config.yaml with `overrides`, as `python -m src.cv` composes it."""
    return compose_config(overrides)


def train_arrays(cfg: DictConfig, path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training images (N, H, W, C) uint8 and class indices of `cfg.data` (the embedded sample is
    written when it is the data), or of the labelled CSV at `path`, read through the parse cache."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if path is not None:
        data.update(train=str(path), test=str(path), test_labels=None, image_shape=None)
        data.pop("sample", None)
    for role in ("train", "test", "test_labels", "cache_dir"):
        if data.get(role):
            data[role] = str(REPO / data[role])  # an absolute path stays as it is
    found = dataset.load(OmegaConf.create(data))
    return found.x_train, found.y_train


def tiny_csvs(out: Path, rows: int = 300) -> tuple[Path, Path]:
    """A labelled train.csv and an unlabelled test.csv of `rows` digits each (the embedded sample's
    first rows) under `out`, for the benchmarks' smoke modes."""
    import pandas as pd

    sample = compose(["data=sample"]).data
    train_arrays(compose(["data=sample"]))  # writes the sample when it is missing
    frame = pd.read_csv(REPO / sample.train, nrows=2 * rows)
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "train.csv", out / "test.csv"
    frame.iloc[:rows].to_csv(train, index=False)
    frame.iloc[rows:].drop(columns="label").to_csv(test, index=False)
    return train, test
