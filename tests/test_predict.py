"""python -m src.predict: a finished run's ensemble on new images reproduces the run's own submission."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import REPO


def predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.predict", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_predict_on_the_test_file_reproduces_the_submission(tiny, finished_run, tmp_path):
    run_dir = finished_run
    out = tmp_path / "pred.csv"
    proc = predict(f"run_dir={run_dir}", f"input={tiny['test']}", f"output={out}", "probabilities=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = pd.read_csv(out)
    sub = pd.read_csv(run_dir / "submission.csv")
    assert list(pred.columns) == ["ImageId", "Label"] + [f"p{c}" for c in range(10)]
    assert pred["ImageId"].tolist() == sub["ImageId"].tolist() and pred["Label"].tolist() == sub["Label"].tolist()
    expected = pd.read_csv(run_dir / "test_probs.csv").drop(columns="ImageId").to_numpy()
    np.testing.assert_allclose(pred.filter(regex=r"^p\d").to_numpy(), expected, atol=1e-5)

    again = predict(f"run_dir={run_dir}", f"input={tiny['test']}", f"output={out}")
    assert again.returncode != 0 and "already exists" in again.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text(tiny["test"].read_text().replace("\n0,", "\n300,", 1))
    refused = predict(f"run_dir={run_dir}", f"input={bad}", f"output={tmp_path / 'x.csv'}")
    assert refused.returncode != 0 and "pixel 300 at line 2" in refused.stderr and not (tmp_path / "x.csv").exists()
