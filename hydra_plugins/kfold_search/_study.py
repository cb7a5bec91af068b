"""The search behind optuna_sweeper.py, on Optuna's public API: imported only when a search runs.

- The space is written in Hydra's override syntax, in `hydra.sweeper.params` and on the command
  line (the last one given for a key wins): `interval(a,b)` is a float in [a, b],
  `int(interval(a,b))` an int, `tag(log, ...)` either on a log scale; `choice(a,b)` or `a,b` one
  of the values; `range(a,b[,step])` the values a plain sweep would run (b excluded); a plain
  value is fixed.
- `n_trials` is the number of completed trials the study should end with, so the same command
  run again asks only for the ones still missing (none when the search is finished).
- A trial left running by a killed search is marked failed and asked again with the same
  parameters; its run dir is named by them (`hydra.job.override_dirname`), so src.cv resumes its
  folds from their last finished epoch instead of starting over.
- A trial that fails (an exception, or no finite value returned) is told failed and the search
  goes on; it stops only when every trial it launched has failed.

One search process per study: a trial that another live process is running would be asked again.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer, ValueType
from hydra.core.utils import JobReturn, configure_log
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from src.errors import UserError
from src.files import atomic_write

log = logging.getLogger(__name__)
RESULTS = "optimization_results.yaml"  # in the sweep dir: name, best_params, best_value


def search(sweeper: Any, arguments: list[str]) -> None:
    """Run the search: `sweeper` is the OptunaSweeper (its settings, `launcher` and `config`),
    `arguments` the command line's overrides."""
    if sweeper.n_trials < 1 or sweeper.n_jobs < 1:
        raise UserError(f"hydra.sweeper.n_trials={sweeper.n_trials}, n_jobs={sweeper.n_jobs}: need at least 1 each")
    space, fixed = search_space(own_keys(sweeper.params, sweeper.config) + list(arguments))
    study = open_study(sweeper.storage, sweeper.study_name, sweeper.direction, sweeper.sampler)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    to_ask = max(0, sweeper.n_trials - complete)
    log.info("study %s: %d of %d trials complete, %d to run, over %s", study.study_name, complete,
             sweeper.n_trials, to_ask, ", ".join(space))
    job_idx, completed, failures = 0, 0, []
    while to_ask > 0:
        trials = [study.ask(space) for _ in range(min(sweeper.n_jobs, to_ask))]
        to_ask -= len(trials)
        batch = [[f"{name}={value}" for name, value in trial.params.items()] + fixed for trial in trials]
        try:
            sweeper.validate_batch_is_legal(batch)  # a key the config lacks, before anything runs
        except Exception:
            for trial in trials:  # told failed: left running, the next run would ask them again as they are
                study.tell(trial, state=TrialState.FAIL)
            raise
        returns = sweeper.launcher.launch(batch, initial_job_idx=job_idx)
        job_idx += len(returns)
        hydra = sweeper.config.hydra  # a job run in this process left the log pointed at its run dir: back to the search's
        configure_log(hydra.hydra_logging, hydra.verbose)
        for trial, ret in zip(trials, returns):
            try:
                value = trial_value(ret, trial.number)
            except Exception as e:
                study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number, e)
                failures.append(e)
            else:
                study.tell(trial, value)
                log.info("trial %d: %s", trial.number, value)
                completed += 1
        if not completed:
            log.error("every trial of this search failed, so it stops")
            raise failures[0]  # the job's own exception, with its traceback
    write_results(study, Path(sweeper.config.hydra.sweep.dir) / RESULTS)


def own_keys(params: Any, config: Any) -> list[str]:
    """`hydra.sweeper.params` as overrides, less the keys the composed config does not have: the
    space names every schedule's keys (decay, warmup), and each run searches its own schedule's."""
    kept = []
    for key, value in params.items():
        if OmegaConf.select(config, key, default=_ABSENT) is _ABSENT:
            log.info("%s is not a key of this config (schedule=%s): left out of the search space", key,
                     OmegaConf.select(config, "hydra.runtime.choices.schedule", default="?"))
            continue
        kept.append(f"{key}={value}")
    return kept


_ABSENT = object()


def search_space(overrides: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Overrides in Hydra's syntax → the Optuna distribution of each swept key, and the overrides
    that fix a value (as given). The last override of a key wins."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise UserError(f"hydra.sweeper.params: {e}") from None
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    if not space:
        raise UserError("the search space is empty: give hydra.sweeper.params or a sweep such as 'model.dropout=interval(0.2,0.5)'")
    return space, list(fixed.values())


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (see the module's docstring)."""
    sweep = override.value()
    try:
        if override.is_interval_sweep():
            log_scale = "log" in sweep.tags
            if isinstance(sweep.start, int) and isinstance(sweep.end, int):  # int(interval(a,b))
                return IntDistribution(sweep.start, sweep.end, log=log_scale)
            return FloatDistribution(sweep.start, sweep.end, log=log_scale)
        if override.is_range_sweep():
            values = list(override.sweep_iterator())
            if not values:
                raise ValueError("the range is empty")
            if all(isinstance(v, int) for v in values):
                return IntDistribution(min(values), max(values), step=abs(int(sweep.step)))
            return FloatDistribution(min(values), max(values), step=abs(float(sweep.step)))
        if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
            raise ValueError("glob() is not supported in a search: list the choices")
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    except ValueError as e:
        raise UserError(f"{override.input_line}: {e}") from None


def open_study(storage: str | None, study_name: str | None, direction: str, sampler: Any) -> optuna.Study:
    """The study, created or loaded, with the trials a killed search left running asked again."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's schema set-up chats at INFO
    prefix = "sqlite:///"
    if storage and storage.startswith(prefix) and storage != prefix + ":memory:":
        Path(storage[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its dirs
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                sampler=instantiate(sampler) if sampler else None, load_if_exists=True)
    if study.get_trials(deepcopy=False):
        # A seeded sampler would draw again the random values of the first run's startup trials.
        study.sampler.reseed_rng()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params)
            log.warning("trial %d was left running by a killed search: asked again with %s", trial.number, trial.params)
    return study


def trial_value(ret: JobReturn, number: int) -> float:
    """The value a trial's job returned; raises the job's exception, or a UserError when it
    returned no finite number."""
    value = ret.return_value
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"trial {number} returned {value!r}, not a number") from None
    if not math.isfinite(value):
        raise UserError(f"trial {number} returned {value}")
    return value


def write_results(study: optuna.Study, path: Path) -> None:
    """Log the best trial and write it to `path` (optimization_results.yaml)."""
    best = study.best_trial
    log.info("best of %s: trial %d, %s with %s", study.study_name, best.number, best.value, best.params)
    results = OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value})
    atomic_write(path, lambda tmp: OmegaConf.save(results, tmp))
