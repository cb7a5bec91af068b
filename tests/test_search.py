"""hparams_search=optuna: a real two-trial search that continues a killed one, run by the same command."""
from __future__ import annotations

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import compose_config, run_cv, tiny_overrides
from hydra_plugins.kfold_search._study import _make_sqlite_dir, resume_study

SPACE = {"model.dropout": (0.2, 0.5, False), "optimizer.learning_rate": (3e-4, 3e-3, True), "schedule.decay": (0.85, 0.98, False)}


def test_search_config_composes_with_its_space():
    from hydra import compose, initialize_config_dir
    from conftest import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("ResumableOptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == set(SPACE)
    assert compose_config(["hparams_search=optuna"]).model.dropout == 0.4  # the search leaves the defaults alone


def test_killed_search_continues_with_the_same_command(tiny, tmp_path):
    sweep = tmp_path / "search"
    storage = f"sqlite:///{sweep / 'study.db'}"
    # What a search killed during its first trial leaves: a trial asked, its settings drawn, never told.
    sweep.mkdir()
    killed = optuna.create_study(study_name="cv", storage=storage, direction="maximize").ask()
    for name, (low, high, log) in SPACE.items():
        killed.suggest_float(name, low, high, log=log)

    search = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"] + tiny_overrides(tiny, tmp_path)
    run_cv(search)  # the same command again: the killed trial is asked again, then one new trial
    trials = optuna.load_study(study_name="cv", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == killed.params and trials[2].params != killed.params

    runs = {}  # each trial is a run in the sweep dir, named by its settings; its value is the run's mean CV
    for run_json in sweep.glob("*/run.json"):
        config = json.loads(run_json.read_text())["resolved_config"]
        assert "batch_size=32,epochs=1,fold=2,model.dropout=" in run_json.parent.name  # no data paths in it
        runs[config["model"]["dropout"]] = json.loads((run_json.parent / "metrics.json").read_text())["cv_mean"]
    assert runs == pytest.approx({t.params["model.dropout"]: t.value for t in trials[1:]})
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(runs.values()))

    run_cv(search)  # finished: nothing more runs
    assert len(optuna.load_study(study_name="cv", storage=storage).get_trials()) == 3


def test_resume_study_of_a_new_storage_is_empty(tmp_path):
    storage = f"sqlite:///{tmp_path / 'deep' / 'dir' / 'study.db'}"
    _make_sqlite_dir(storage)
    assert (tmp_path / "deep" / "dir").is_dir()
    assert resume_study(storage, "nothing-yet") == 0
