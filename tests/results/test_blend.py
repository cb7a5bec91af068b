"""Blending finished runs: equal or OOF-fitted weights; OOF weights refused across different folds."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import N_TEST, REPO, run_cv, tiny_overrides
from src.errors import UserError
from src.results.blend import blend, fit_weights, write_blend


def cli(command: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", command, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_fit_weights_prefers_the_better_member():
    labels = np.array([0, 1, 0, 1] * 25)
    good = np.eye(2)[labels] * 0.8 + 0.1
    bad = np.full((100, 2), 0.5)
    w = fit_weights([bad, good], labels)
    assert abs(w.sum() - 1) < 1e-9
    assert w[1] > 0.9


def test_blend_of_matched_runs_is_written_and_mismatched_folds_refused(tiny, finished_run, tmp_path):
    # A multirun beside the shared finished run (seed 42, dropout 0.4): dropout 0.2 with the same
    # seed (same folds), and with seed 7 (other folds).
    sweep = tmp_path / "sweep"
    run_cv(["-m", "model.dropout=0.2", "seed=42,7"] + tiny_overrides(tiny, tmp_path) + ["epochs=2", f"hydra.sweep.dir={sweep}"])
    matched, other = sweep / "0", sweep / "1"
    for job, seed in ((matched, 42), (other, 7)):  # a plain multirun: one run dir per setting
        assert json.loads((job / "run.json").read_text())["resolved_config"]["seed"] == seed

    refused = cli("src.blend", f"runs=[{finished_run},{other}]", "weights=oof", f"hydra.run.dir={tmp_path / 'no'}")
    assert refused.returncode != 0 and "needs the same folds" in refused.stderr
    assert not (tmp_path / "no" / "submission.csv").exists()

    out = tmp_path / "blend"
    proc = cli("src.blend", f"runs=[{finished_run},{matched}]", "weights=oof", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    members = metrics["blend"]["members"]
    assert len(members) == 2 and abs(sum(m["weight"] for m in members) - 1) < 1e-6
    assert all(0 < m["oof_accuracy"] <= 1 for m in members) and metrics["blend"]["same_folds"]
    oof = pd.read_csv(out / "oof.csv")
    assert metrics["oof_accuracy"] == float(np.mean(oof.filter(regex=r"^p\d").to_numpy().argmax(1) == oof["label"]))
    sub = pd.read_csv(out / "submission.csv")
    assert len(sub) == N_TEST and sub["Label"].between(0, 9).all()

    ens, equal = blend([finished_run, other], "equal")  # equal weights: allowed across folds
    assert not equal["blend"]["same_folds"] and [m["weight"] for m in equal["blend"]["members"]] == [0.5, 0.5]
    with pytest.raises(UserError, match="already holds results"):  # a blend never overwrites one
        write_blend(out, ens)


def test_the_old_blend_form_of_src_ensemble_points_to_src_blend(tmp_path):
    proc = cli("src.ensemble", f"runs=[{tmp_path / 'a'},{tmp_path / 'b'}]", "weights=oof")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"error: blending is its own command now: python -m src.blend 'runs=[{tmp_path / 'a'},{tmp_path / 'b'}]' weights=oof"]
