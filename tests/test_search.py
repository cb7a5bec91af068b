"""hparams_search=optuna: the space in Hydra's override syntax, the ask-launch-tell loop with a
stand-in launcher, a real two-trial search that continues a killed one, and the one line a search
without Optuna ends with."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import REPO, compose_config, run_cv, tiny_overrides
from hydra_plugins.kfold_search._study import own_keys, search, search_space
from src import schema  # noqa: F401  (registers the schemas that conf/*.yaml name, as src.cv's import does)
from src.errors import UserError

SPACE = {"model.dropout": (0.2, 0.5, False), "optimizer.learning_rate": (3e-4, 3e-3, True), "schedule.decay": (0.85, 0.98, False)}
COMPLETE, FAIL = TrialState.COMPLETE, TrialState.FAIL


def test_search_config_composes_with_its_space():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.kfold_search.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction.name == "maximize" and sweeper.sampler.seed == 42
    assert search_space(own_keys(sweeper.params, cfg))[0] == {
        name: FloatDistribution(low, high, log=log) for name, (low, high, log) in SPACE.items()}
    assert compose_config(["hparams_search=optuna"]).model.dropout == 0.4  # the search leaves the defaults alone


@pytest.mark.parametrize("choice, own", [("schedule=exponential", {"schedule.decay"}), ("schedule=cosine", {"schedule.warmup"}),
                                         ("experiment=cnn_cosine_ema", {"schedule.warmup"}), ("schedule=constant", {"schedule.decay"})])
def test_the_space_searches_what_the_chosen_schedule_has(choice, own):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hparams_search=optuna", choice], return_hydra_config=True)
    space = search_space(own_keys(cfg.hydra.sweeper.params, cfg))[0]
    assert set(space) == {"model.dropout", "optimizer.learning_rate"} | own


def test_the_space_is_written_in_hydras_override_syntax():
    space, fixed = search_space([
        "model.dropout=interval(0.2, 0.5)",
        "optimizer.learning_rate=tag(log, interval(3e-4, 3e-3))",
        "model.filters=int(interval(16, 64))",
        "model.dense=tag(log, int(interval(64, 1024)))",
        "batch_size=choice(32, 64)",
        "model.activation=relu,gelu",
        "epochs=range(2, 9, 3)",  # 2, 5, 8: the values a plain sweep runs
        "augment.zoom=range(0.5, 2.0, 0.5)",
        "fold=5",
        "schedule.decay=interval(0.85, 0.98)", "schedule.decay=0.9",  # the last one given wins
        "seed=1", "seed=choice(1, 2)",
    ])
    assert space == {
        "model.dropout": FloatDistribution(0.2, 0.5),
        "optimizer.learning_rate": FloatDistribution(3e-4, 3e-3, log=True),
        "model.filters": IntDistribution(16, 64),
        "model.dense": IntDistribution(64, 1024, log=True),
        "batch_size": CategoricalDistribution([32, 64]),
        "model.activation": CategoricalDistribution(["relu", "gelu"]),
        "epochs": IntDistribution(2, 8, step=3),
        "augment.zoom": FloatDistribution(0.5, 1.5, step=0.5),
        "seed": CategoricalDistribution([1, 2]),
    }
    assert fixed == ["fold=5", "schedule.decay=0.9"]


@pytest.mark.parametrize("overrides, message", [
    (["optimizer.learning_rate=tag(log, interval(0, 1))"], r"optimizer.learning_rate=tag\(log, interval\(0, 1\)\): .*low"),
    (["epochs=range(5, 1)"], "range is empty"),
    (["fold=5"], "search space is empty"),
])
def test_a_space_optuna_cannot_sample_is_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        search_space(overrides)


class Launcher:
    """Hydra's launcher, standing in: each job returns the next of `outcomes` (an exception: it raised)."""

    def __init__(self, outcomes: list):
        self.outcomes, self.batches = list(outcomes), []

    def launch(self, job_overrides, initial_job_idx):
        self.batches.append((initial_job_idx, [list(o) for o in job_overrides]))
        returns = []
        for overrides in job_overrides:
            outcome = self.outcomes.pop(0)
            ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED if isinstance(outcome, Exception) else JobStatus.COMPLETED)
            ret.return_value = outcome
            returns.append(ret)
        return returns


def sweeper(tmp_path, outcomes: list, n_trials: int = 4, n_jobs: int = 2) -> SimpleNamespace:
    """What search() reads of the OptunaSweeper, with a study in a dir that does not exist yet."""
    sweep = tmp_path / "search"
    return SimpleNamespace(storage=f"sqlite:///{sweep / 'study.db'}", study_name="cv", direction="maximize",
                           n_trials=n_trials, n_jobs=n_jobs, sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0},
                           params={"model.dropout": "interval(0.2, 0.5)"}, launcher=Launcher(outcomes),
                           validate_batch_is_legal=lambda batch: None,
                           config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "hydra_logging": {"root": None}, "verbose": False},
                                                    "model": {"dropout": 0.4}}))


def test_failed_trials_are_told_and_the_same_command_asks_for_the_missing_ones(tmp_path):
    first = sweeper(tmp_path, [0.5, RuntimeError("boom"), None, math.nan])
    search(first, ["fold=2"])  # n_jobs trials at a time; a failure does not stop the search
    assert [(idx, len(batch)) for idx, batch in first.launcher.batches] == [(0, 2), (2, 2)]
    for _, batch in first.launcher.batches:
        assert all(o[0].startswith("model.dropout=") and o[1:] == ["fold=2"] for o in batch)
    trials = optuna.load_study(study_name="cv", storage=first.storage).get_trials()
    assert [t.state for t in trials] == [COMPLETE, FAIL, FAIL, FAIL] and trials[0].value == 0.5

    again = sweeper(tmp_path, [0.7, 0.6, 0.4])
    search(again, ["fold=2"])  # 1 of 4 complete: three more
    trials = optuna.load_study(study_name="cv", storage=first.storage).get_trials()
    assert [t.state for t in trials].count(COMPLETE) == 4 and len(trials) == 7
    assert len({t.params["model.dropout"] for t in trials}) == 7  # a resumed seeded sampler draws new values
    best = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    assert best == {"name": "optuna", "best_params": trials[4].params, "best_value": 0.7}

    finished = sweeper(tmp_path, [])
    search(finished, ["fold=2"])
    assert finished.launcher.batches == []


@pytest.mark.parametrize("outcome, error", [(RuntimeError("boom"), RuntimeError), (None, UserError)])
def test_a_search_stops_when_every_trial_failed(tmp_path, outcome, error):
    failing = sweeper(tmp_path, [outcome, outcome])
    with pytest.raises(error):
        search(failing, [])
    assert len(failing.launcher.batches) == 1
    trials = optuna.load_study(study_name="cv", storage=failing.storage).get_trials()
    assert [t.state for t in trials] == [FAIL, FAIL]


@pytest.mark.slow  # 31 s: under -m slow for the suite's time
def test_killed_search_continues_with_the_same_command(tiny, tmp_path):
    sweep = tmp_path / "search"
    storage = f"sqlite:///{sweep / 'study.db'}"
    # What a search killed during its first trial leaves: a trial asked, its settings drawn, never told.
    sweep.mkdir()
    killed = optuna.create_study(study_name="cv", storage=storage, direction="maximize").ask()
    for name, (low, high, log) in SPACE.items():
        killed.suggest_float(name, low, high, log=log)

    command = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"] + tiny_overrides(tiny, tmp_path)
    run_cv(command)  # the same command again: the killed trial is asked again, then one new trial
    trials = optuna.load_study(study_name="cv", storage=storage).get_trials()
    assert [t.state for t in trials] == [FAIL, COMPLETE, COMPLETE]
    assert trials[1].params == killed.params and trials[2].params != killed.params

    runs = {}  # each trial is a run in the sweep dir, named by its settings; its value is the run's mean CV
    for run_json in sweep.glob("*/run.json"):
        config = json.loads(run_json.read_text())["resolved_config"]
        assert "batch_size=32,epochs=1,fold=2,model.dropout=" in run_json.parent.name  # no data paths in it
        runs[config["model"]["dropout"]] = json.loads((run_json.parent / "metrics.json").read_text())["cv_mean"]
    assert runs == pytest.approx({t.params["model.dropout"]: t.value for t in trials[1:]})
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(runs.values()))

    run_cv(command)  # finished: nothing more runs
    assert len(optuna.load_study(study_name="cv", storage=storage).get_trials()) == 3


def test_a_search_without_optuna_is_one_line_naming_the_install(tmp_path):
    sweep = tmp_path / "search"
    proc = run_cv(["-m", "hparams_search=optuna", f"hydra.sweep.dir={sweep}"],
                  prelude="import sys\nsys.modules['optuna'] = None  # as if not installed", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "pip install -e '.[search]'" in last
    assert "Traceback" not in proc.stderr and "Hydra plugins scanner" not in proc.stderr  # no plugin-import warning
    assert not sweep.exists()
