"""Hyperparameter search that survives being killed: `python -m src.cv -m hparams_search=optuna`.

hydra-optuna-sweeper keeps its study in SQLite (conf/hparams_search/optuna.yaml), but run again
it would add `n_trials` more trials and forget the ones it was running when it died. This sweeper
makes the same command continue instead:

- `n_trials` is the number of completed trials the study should end with, so a rerun asks only
  for the ones still missing (none when the search is finished);
- a trial left running by a killed search is marked failed and asked again with the same
  parameters; its run dir is named by those parameters (`hydra.job.override_dirname`), so
  src.cv resumes its folds from their last finished epoch instead of starting over.

One sweeper process per study: a trial that another live process is running would be asked again.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)


def prepare(impl: Any) -> None:
    """Before hydra-optuna-sweeper's sweep: requeue the killed trials and lower `n_trials` to
    the number of trials the study still lacks. `impl` is its OptunaSweeperImpl."""
    if not impl.storage:
        return
    logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's schema migrations chat at INFO
    _make_sqlite_dir(str(impl.storage))
    done = resume_study(str(impl.storage), impl.study_name)
    wanted = impl.n_trials
    impl.n_trials = max(0, wanted - done)
    if done:
        log.info("study %s has %d of %d trials complete: %d to run", impl.study_name, done, wanted, impl.n_trials)


def resume_study(storage: str, study_name: str | None) -> int:
    """Requeue the trials a killed search left running (same parameters) and return how many
    trials of the study are complete; 0 for a study that does not exist yet."""
    if study_name is None:
        return 0
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
        if trial.params:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.enqueue_trial(trial.params)
            log.warning("trial %d was left running by a killed search: asked again with %s", trial.number, trial.params)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _make_sqlite_dir(storage: str) -> None:
    """SQLite creates its file but not the folders above it."""
    prefix = "sqlite:///"
    if storage.startswith(prefix) and storage != prefix + ":memory:":
        Path(storage[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
