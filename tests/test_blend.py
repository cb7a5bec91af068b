"""Blending finished runs: equal or OOF-fitted weights; OOF weights refused across different folds."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import N_TEST, REPO, run_cv, tiny_overrides
from src.blend import fit_weights


def ensemble_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.ensemble", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_fit_weights_prefers_the_better_member():
    labels = np.array([0, 1, 0, 1] * 25)
    good = np.eye(2)[labels] * 0.8 + 0.1
    bad = np.full((100, 2), 0.5)
    w = fit_weights([bad, good], labels)
    assert abs(w.sum() - 1) < 1e-9
    assert w[1] > 0.9


def test_blend_of_matched_runs_is_written_and_mismatched_folds_refused(tiny, tmp_path):
    sweep = tmp_path / "sweep"
    base = tiny_overrides(tiny, tmp_path) + ["epochs=2"]
    run_cv(["-m", "model.dropout=0.4,0.2"] + base + [f"hydra.sweep.dir={sweep}"])  # same seed: same folds
    for job, dropout in (("0", 0.4), ("1", 0.2)):  # a plain multirun: one run dir per setting
        assert json.loads((sweep / job / "run.json").read_text())["resolved_config"]["model"]["dropout"] == dropout
    other = tmp_path / "seed7"
    run_cv(base + ["seed=7", f"hydra.run.dir={other}"])  # another seed: other folds

    refused = ensemble_cli(f"runs=[{sweep / '0'},{other}]", "weights=oof", f"hydra.run.dir={tmp_path / 'no'}")
    assert refused.returncode != 0 and "needs the same folds" in refused.stderr
    assert not (tmp_path / "no" / "submission.csv").exists()

    out = tmp_path / "blend"
    proc = ensemble_cli(f"runs=[{sweep / '0'},{sweep / '1'}]", "weights=oof", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    members = metrics["blend"]["members"]
    assert len(members) == 2 and abs(sum(m["weight"] for m in members) - 1) < 1e-6
    assert all(0 < m["oof_accuracy"] <= 1 for m in members) and metrics["blend"]["same_folds"]
    oof = pd.read_csv(out / "oof.csv")
    assert metrics["oof_accuracy"] == float(np.mean(oof.filter(regex=r"^p\d").to_numpy().argmax(1) == oof["label"]))
    sub = pd.read_csv(out / "submission.csv")
    assert len(sub) == N_TEST and sub["Label"].between(0, 9).all()

    equal = ensemble_cli(f"runs=[{sweep / '0'},{other}]", f"hydra.run.dir={tmp_path / 'equal'}")  # equal weights: allowed
    assert equal.returncode == 0, equal.stderr[-2000:]
    again = ensemble_cli(f"runs=[{sweep / '0'},{other}]", f"hydra.run.dir={tmp_path / 'equal'}")
    assert again.returncode != 0 and "already holds results" in again.stderr
