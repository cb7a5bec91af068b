"""Run dirs written by older code keep working with today's.

tests/legacy/<commit>.tar.gz is src/ and conf/ as they were at that commit
(`git archive --format=tar <commit> src conf | gzip -9`). That code writes a run dir on the tiny
data and is killed in the second fold's second epoch; today's code must resume it (without
retraining the finished fold), rebuild its ensemble, blend it, predict with it, export it and
serve it. Add an archive here before a change that could break older run dirs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import KILL_MID_EPOCH, REPO, check_run_dir, compose_config, run_cv, run_old_cv, snapshot, tiny_overrides

LEGACY = Path(__file__).parent / "legacy"
WRITTEN = ("53efd56", "b43fd07", "d8945dd", "bea3d63", "aca87b2", "eb64d63", "aa07387")  # the archives' commits, oldest first: list a new one here
# The suite's time: the newest (the code before the latest change) runs by default, the older ones under -m slow.
ARCHIVES = [LEGACY / f"{c}.tar.gz" if c == WRITTEN[-1] else pytest.param(LEGACY / f"{c}.tar.gz", marks=pytest.mark.slow)
            for c in WRITTEN]


def test_every_archive_is_listed():
    assert sorted(p.name.split(".")[0] for p in LEGACY.glob("*.tar.gz")) == sorted(WRITTEN)


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda p: p.name.split(".")[0])
def test_an_older_run_dir_resumes_ensembles_blends_predicts_exports_and_serves(archive, tiny, finished_run, tmp_path):
    code_dir = tmp_path / "old"
    with tarfile.open(archive) as tar:
        tar.extractall(code_dir, filter="data")
    run_dir = tmp_path / "run"
    # the files by path and no recipe named, as before recipes: today's code would give them the generic recipe
    args = [a for a in tiny_overrides(tiny, tmp_path) if a != "recipe=seed"] + ["epochs=2", f"hydra.run.dir={run_dir}"]
    knows_jobs = "\njobs:" in (code_dir / "conf" / "config.yaml").read_text()
    old_args = args if knows_jobs else [a for a in args if not a.startswith("jobs=")]  # jobs=1: the kill prelude is in-process
    old = run_old_cv(code_dir, old_args, KILL_MID_EPOCH.format(fold=1, epoch=2, batch=2))
    assert old.returncode == -9, f"the old code was to be killed mid-fold:\n{old.stderr[-3000:]}"
    assert json.loads((run_dir / "fold_1" / "train" / "state.json").read_text())["epoch"] == 1
    fold0 = snapshot(run_dir / "fold_0")

    run_cv(args)  # today's code, the same command: resume
    log = (run_dir / "cv.log").read_text()
    assert "fold 1: resuming after epoch 1" in log and "different config" not in log
    metrics = check_run_dir(run_dir, folds=2)
    assert snapshot(run_dir / "fold_0") == fold0

    # src.ensemble rebuilds the same results; an older run.json has no SHA-256 of the test labels,
    # so they are read only when given by path (a newer one reads them by their recorded path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    hashed = "test_labels" in json.loads((run_dir / "run.json").read_text()).get("files", {})  # newer records have it
    for given in ([], [f"data.test_labels={tiny['test_labels']}"]):
        (run_dir / "metrics.json").unlink()
        proc = subprocess.run([sys.executable, "-m", "src.ensemble", f"run_dir={run_dir}", *given], cwd=REPO,
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rebuilt = json.loads((run_dir / "metrics.json").read_text())
        assert rebuilt == (metrics if given or hashed else {k: v for k, v in metrics.items() if k != "test_accuracy"})
    assert hashed or "give data.test_labels=PATH for the test accuracy" in (run_dir / "ensemble.log").read_text()
    proc = subprocess.run([sys.executable, "-m", "src.report", f"run_dir={run_dir}"], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=300)  # its data files are unchanged: read by their recorded paths
    assert proc.returncode == 0, proc.stderr[-3000:]
    named = (code_dir / "conf" / "recipe").is_dir()  # code with recipes records the one it ran
    assert ("Recipe: **generic**" if named else "Recipe: **not named**: recorded before recipes were named.") in (
        run_dir / "report.md").read_text()

    from src.results.blend import blend
    from src.serving.app import export_dir, load_export
    from src.serving.export import load_folds

    ens, blended = blend([run_dir, finished_run], "oof")  # same data and folds as the shared run
    assert blended["blend"]["same_folds"] and len(ens.submission) == len(pd.read_csv(run_dir / "submission.csv"))

    test_probs = pd.read_csv(run_dir / "test_probs.csv").filter(regex=r"^p\d+$").to_numpy()
    images = pd.read_csv(tiny["test"]).to_numpy().astype(np.uint8)
    folds, config = load_folds(run_dir)  # the old .keras files, custom layers included
    assert [m.name for m in folds] == ["fold_0", "fold_1"] and config["model"]["_target_"] == "src.models.kfold_cnn"
    from src.predict import ensemble_predict

    np.testing.assert_allclose(ensemble_predict(folds, images.reshape(-1, 28, 28, 1)), test_probs, atol=2e-3)

    exported = export_dir(run_dir)  # the page serves an export, made first when the run has none
    assert exported == run_dir / "export" / "1"
    served = load_export(exported)
    assert served.folds == 2
    np.testing.assert_allclose(served.predict(images.astype(np.float32)), test_probs, atol=2e-3)
    shutil.rmtree(code_dir)


def test_an_older_time_limited_run_dir_resumes_on_its_whole_epochs(tiny, tmp_path):
    """A run dir planned by the code before epochs of part of a pass (its plan.json has no
    epoch_fraction) resumes on its plan of whole epochs, and reports it."""
    code_dir = tmp_path / "old"
    with tarfile.open(LEGACY / f"{WRITTEN[-1]}.tar.gz") as tar:
        tar.extractall(code_dir, filter="data")
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny, tmp_path) + ["epochs=2", "time_limit=10m", f"hydra.run.dir={run_dir}"]
    old = run_old_cv(code_dir, args, KILL_MID_EPOCH.format(fold=2, epoch=2, batch=2))  # fit calls: the calibration, fold 0, fold 1
    assert old.returncode == -9, f"the old code was to be killed mid-fold:\n{old.stderr[-3000:]}"
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["epochs"] == 2 and "epoch_fraction" not in plan

    run_cv(args)
    log = (run_dir / "cv.log").read_text()
    assert "keeping the plan of 2 epoch(s) per fold" in log and "fold 1: resuming after epoch 1" in log
    metrics = check_run_dir(run_dir, folds=2)
    assert metrics["time_limit"]["epochs"] == 2 and metrics["time_limit"]["epoch_fraction"] == 1.0
    assert json.loads((run_dir / "plan.json").read_text()) == plan  # read, never rewritten
    assert "of a pass over the fold's training rows" not in (run_dir / "report.md").read_text()


def test_a_kannada_run_dir_recorded_on_the_seed_recipe_resumes_on_it(tiny, tmp_path):
    """data=kannada_mnist named the seed recipe before its own CV chose the generic one: a run dir
    the older code started resumes on the seed recipe, its finished fold untouched."""
    data = tmp_path / "kannada"
    data.mkdir()
    shutil.copy(tiny["train"], data / "train.csv")  # label, pixel0..: the competition's layout
    test = pd.read_csv(tiny["test"])
    test = pd.concat([pd.DataFrame({"id": np.arange(len(test))}), test], axis=1)
    test.to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "label": 0}).to_csv(data / "sample_submission.csv", index=False)
    code_dir = tmp_path / "old"
    with tarfile.open(LEGACY / f"{WRITTEN[-1]}.tar.gz") as tar:
        tar.extractall(code_dir, filter="data")
    run_dir = tmp_path / "run"
    args = ["data=kannada_mnist", f"data.dir={data}", f"data.cache_dir={tmp_path / 'cache'}", "fold=2", "epochs=1", "jobs=1",
            f"hydra.run.dir={run_dir}"]
    old = run_old_cv(code_dir, [*args, "fold_index=0"])
    assert old.returncode == 0, old.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["resolved_config"]["recipe"]["name"] == "seed"
    fold0 = snapshot(run_dir / "fold_0")

    run_cv(args)  # today's code, the same command: data=kannada_mnist now names the generic recipe
    log = (run_dir / "cv.log").read_text()
    assert log.count("recipe seed: ") == 2 and "different config" not in log
    assert snapshot(run_dir / "fold_0") == fold0
    submission = pd.read_csv(run_dir / "submission.csv")
    assert list(submission.columns) == ["id", "label"] and len(submission) == len(test)
    assert "Recipe: **seed**" in (run_dir / "report.md").read_text()
    assert compose_config(["data=kannada_mnist"]).recipe.name == "generic"  # a new run gets the new one
