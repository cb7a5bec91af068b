"""Run report: the pictures exist and are real images, report.md shows them, src.report rebuilds them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import matplotlib.image as mpimg
import pandas as pd

from conftest import REPO, compose_config, unfinished_copy

from src.results.measured import MEASURED, against_seed
from src.results.report import behind_lines

PICTURES = ("curves_loss", "curves_accuracy", "test_label_counts", "test_samples", "confusion", "most_wrong")


def test_every_run_writes_its_report_and_src_report_rebuilds_it(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    for name in PICTURES:
        image = mpimg.imread(run_dir / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name
        assert image.std() > 0.01, f"{name}.png is blank"
    report = (run_dir / "report.md").read_text()
    assert all(f"({name}.png)" in report for name in PICTURES)
    assert "| 0 |" in report and "| 1 |" in report and "Mean CV accuracy" in report
    assert "Recipe: **generic**: " in report and "Model `src.models." in report and ", batch 32, 2 epochs," in report
    assert "How the seed recipe did at the settings the generic recipe was measured at:" in report
    assert "generic 0.8685, the seed recipe 0.7507 (the 10,000 test images" in report  # files given by path: every figure

    for name in PICTURES:
        (run_dir / f"{name}.png").unlink()
    proc = subprocess.run([sys.executable, "-m", "src.report", f"run_dir={run_dir}"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((run_dir / f"{name}.png").stat().st_size > 1000 for name in PICTURES)


def test_report_of_an_unfinished_run_is_refused(finished_run, tmp_path):
    run_dir = unfinished_copy(finished_run, tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "src.report", f"run_dir={run_dir}"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode != 0 and "not finished" in proc.stderr


def test_the_report_names_the_folds_a_time_limits_deadline_cut_and_those_that_planned_their_own():
    plan = {"epochs": 5, "time_limit_s": 720.0}
    histories = {k: pd.DataFrame({"epoch": range(1, n + 1)}) for k, n in enumerate([4, 5, 5, 3])}
    [line] = behind_lines(plan, histories)
    assert line.startswith("Behind the plan: 2 of 4 fold(s) trained fewer epochs than planned (fold 0 4 of 5, fold 3 3 of 5)")
    assert behind_lines(plan, {0: histories[1]}) == [] and behind_lines(None, histories) == []
    replanned, behind = behind_lines(plan, histories, {2: 6, 3: 3})  # fold 2 started early, fold 3 late
    assert replanned.startswith("Re-planned at their start: 2 fold(s) laid their schedules over the epochs that fit before "
                                "their deadlines instead of the 5 planned (fold 2 6, fold 3 3)")
    assert behind.startswith("Behind the plan: 2 of 4 fold(s) trained fewer epochs than planned (fold 0 4 of 5, fold 2 5 of 6)")


def test_the_report_says_how_the_seed_recipe_did_where_the_runs_recipe_was_measured_against_it():
    from omegaconf import OmegaConf

    def lines(*overrides):
        return "\n".join(against_seed(OmegaConf.to_container(compose_config(list(overrides)), resolve=True)))

    kannada = lines("data=kannada_mnist")  # the preset's own recipe: the figures on its competition only
    assert "generic recipe was measured at:" in kannada and kannada.count("\n- Kannada-MNIST, ") == 2
    assert "generic 0.9922, the seed recipe 0.9867 (mean CV; 2-core Zen 3" in kannada and "digit-recognizer" not in kannada
    timed = lines("time_limit=12m")  # the digit preset's timed recipe
    assert timed.count("\n- digit-recognizer, fold=5 time_limit=") == 2 and "Kannada" not in timed
    fashion = lines("data=fashion_mnist")
    assert "fashion 0.9259, the seed recipe 0.8751 (the 10,000 test images" in fashion and "generic" not in fashion
    signs = lines("data=sign_mnist")  # never measured there: every figure of its recipe, saying so
    assert "(never on datamunge/sign-language-mnist itself):" in signs and signs.count("\n- ") == len(
        [m for m in MEASURED if m.recipe == "generic"])
    assert lines() == lines("experiment=kfold_cnn") == ""  # the seed recipe itself
    # every figure is the one docs/recipes.md gives, under the heading the line links to
    doc = (REPO / "docs" / "recipes.md").read_text()
    anchors = {"-".join(h.lstrip("#").strip().lower().translate({ord(c): None for c in "()`.,:'=+"}).split(" "))
               for h in doc.splitlines() if h.startswith("#")}
    for m in MEASURED:
        assert m.section in anchors, m.section
        assert f"{m.recipe_accuracy:.4f}" in doc and f"{m.seed_accuracy:.4f}" in doc, m
