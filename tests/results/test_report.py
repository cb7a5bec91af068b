"""Run report: the pictures exist and are real images, report.md shows them, src.report rebuilds them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import matplotlib.image as mpimg
import pandas as pd

from conftest import REPO, unfinished_copy

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
