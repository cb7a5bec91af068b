"""python -m src.export: the fold ensemble as one SavedModel that predicts what the run wrote."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import REPO, run_cv, tiny_overrides, unfinished_copy


def export(run_dir, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.export", f"run_dir={run_dir}", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "experiment", ["kfold_cnn", pytest.param("autoencoder_classifier", marks=pytest.mark.slow)]  # chains two models
)
def test_exported_ensemble_predicts_what_the_run_wrote(tiny, finished_run, tmp_path, experiment):
    run_dir = tmp_path / "run"
    if experiment == "kfold_cnn":  # the defaults
        shutil.copytree(finished_run, run_dir)
    else:
        run_cv([f"experiment={experiment}"] + tiny_overrides(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"])
    proc = export(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    target = run_dir / "export" / "1"
    assert (target / "saved_model.pb").exists()

    pixels = pd.read_csv(tiny["test"]).to_numpy().astype(np.float32)
    expected = pd.read_csv(run_dir / "test_probs.csv").drop(columns="ImageId").to_numpy()
    served = tf.saved_model.load(str(target))
    flat = served.signatures["serving_default"](pixels=tf.constant(pixels))
    probs = next(iter(flat.values())).numpy()
    np.testing.assert_allclose(probs, expected, atol=2e-3)
    submission = pd.read_csv(run_dir / "submission.csv")["Label"].to_numpy()
    assert (probs.argmax(1) == submission).mean() >= 0.98  # ties at bf16 precision may flip a row
    images = served.serve_images(tf.constant(pixels.reshape(-1, 28, 28, 1))).numpy()
    np.testing.assert_allclose(images, probs, atol=1e-6)

    # A second export is the next version; an existing version is never overwritten.
    assert export(run_dir).returncode == 0 and (run_dir / "export" / "2" / "saved_model.pb").exists()
    again = export(run_dir, "version=1")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_export_of_an_unfinished_run_is_refused(finished_run, tmp_path):
    run_dir = unfinished_copy(finished_run, tmp_path / "run")
    proc = export(run_dir)
    assert proc.returncode != 0 and "fold(s) [1] of 2 are not complete" in proc.stderr
    assert not (run_dir / "export").exists() or not any((run_dir / "export").iterdir())
