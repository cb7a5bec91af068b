"""Pseudo-labels: a finished run's confident test predictions join every fold's training rows."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import check_run_dir, compose_config, run_cv, tiny_overrides

from src.errors import UserError
from src.files import sha256
from src.inputs import dataset as data_mod
from src.inputs import pseudo
from src.inputs.folds import fold_data, make_folds


def source_probs(run_dir):
    return pd.read_csv(run_dir / "test_probs.csv").filter(regex=r"^p\d+$").to_numpy()


def middle(run_dir) -> float:
    """A threshold that takes about half the source's test rows (its 2 epochs leave it unsure)."""
    return round(float(np.median(source_probs(run_dir).max(1))), 4)


def test_only_test_rows_join_and_only_the_training_rows(tiny, tmp_path, finished_run):
    threshold = middle(finished_run)
    cfg = compose_config(tiny_overrides(tiny, tmp_path) + [f"pseudo.run_dir={finished_run}", f"pseudo.threshold={threshold}"])
    dataset = data_mod.load(cfg.data)
    labels = pseudo.load(cfg.pseudo, dataset.x_test, dataset.digests["test"], dataset.num_classes)
    probs = source_probs(finished_run)
    chosen = np.flatnonzero(probs.max(1) >= threshold)
    assert 0 < len(chosen) < len(probs)  # the threshold matters on this run
    np.testing.assert_array_equal(labels.index, chosen)
    np.testing.assert_array_equal(labels.labels, probs[chosen].argmax(1))
    folds = make_folds(dataset.y_train, cfg.fold, cfg.split, cfg.seed, cfg.val_fraction)
    for k in range(2):
        plain, with_pseudo = fold_data(dataset, folds, k), fold_data(dataset, folds, k, labels)
        n = len(plain.x_train)
        np.testing.assert_array_equal(with_pseudo.x_train[:n], plain.x_train)
        np.testing.assert_array_equal(with_pseudo.x_train[n:], dataset.x_test[chosen])  # test images, nothing else
        np.testing.assert_array_equal(with_pseudo.y_train[n:], probs[chosen].argmax(1))
        np.testing.assert_array_equal(with_pseudo.x_val, plain.x_val)  # validation rows untouched
        np.testing.assert_array_equal(with_pseudo.val_index, plain.val_index)


def test_a_second_stage_records_its_source_and_refuses_another_threshold(tiny, tmp_path, finished_run):
    run_dir = tmp_path / "run"
    threshold = middle(finished_run)
    args = tiny_overrides(tiny, tmp_path) + [f"pseudo.run_dir={finished_run}", f"pseudo.threshold={threshold}",
                                             f"hydra.run.dir={run_dir}"]
    run_cv(args)
    metrics = check_run_dir(run_dir, folds=2)
    probs = source_probs(finished_run)
    expected = {"test_probs_sha256": sha256(finished_run / "test_probs.csv"), "threshold": threshold,
                "rows": int((probs.max(1) >= threshold).sum())}
    assert 0 < expected["rows"] < len(probs)
    assert metrics["pseudo"] == expected
    assert json.loads((run_dir / "run.json").read_text())["pseudo"] == expected
    assert f"pseudo-labels: {expected['rows']} test images" in (run_dir / "cv.log").read_text()

    for change in (f"pseudo.threshold={threshold + 0.01}", "pseudo.run_dir=null"):
        proc = run_cv([a for a in args if not a.startswith(change.split("=")[0])] + [change], check=False)
        assert proc.returncode == 1 and "was trained with other pseudo-labels" in proc.stderr.strip().splitlines()[-1]


def test_a_source_on_another_test_file_or_unfinished_is_refused(tiny, tmp_path, finished_run):
    cfg = compose_config(tiny_overrides(tiny, tmp_path) + [f"pseudo.run_dir={finished_run}"])
    dataset = data_mod.load(cfg.data)
    with pytest.raises(UserError, match="predicted another test file"):
        pseudo.load(cfg.pseudo, dataset.x_test, "0" * 64, dataset.num_classes)
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("fold_1"))
    with pytest.raises(UserError, match=r"fold\(s\) \[1\] of 2 are not complete"):
        pseudo.load(compose_config([f"pseudo.run_dir={copy}"]).pseudo, dataset.x_test, dataset.digests["test"], 10)
