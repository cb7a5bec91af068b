"""`hydra/sweeper=optuna`: the sweeper behind `python -m src.cv -m hparams_search=optuna`.

It drives Optuna through its public API: a study stored in SQLite (conf/hparams_search/optuna.yaml),
trials asked in batches of `n_jobs`, each launched as an ordinary src.cv run by Hydra's launcher,
and the run's mean CV accuracy told back. The same command run again continues a killed search
(_study.py says how).

Hydra imports every module under hydra_plugins at every start of every command, so this one
imports neither Optuna nor the project: the search lives in _study.py, which Hydra's scan skips
(a leading underscore) and which is imported only when a search runs.
"""
# No `from __future__ import annotations`: Hydra runs this module before it is in sys.modules, where
# dataclasses look up string annotations.
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class Direction(enum.Enum):
    minimize = 1
    maximize = 2


@dataclass
class OptunaSweeperConf:
    """`hydra.sweeper` with `hydra/sweeper=optuna`; Hydra rejects any other key."""

    _target_: str = "hydra_plugins.kfold_search.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler is built when a search runs, after Optuna's import
    storage: Optional[str] = None  # e.g. sqlite:///outputs/search/cv/study.db; none: in memory, not resumable
    study_name: Optional[str] = None  # a stored study is continued by its name
    direction: Direction = Direction.maximize  # of the task's return value
    n_trials: int = 20  # completed trials the study ends with
    n_jobs: int = 1  # trials launched at once (in parallel with a parallel launcher)
    sampler: Optional[Dict[str, Any]] = None  # `_target_: optuna.samplers.X` and its arguments; none: Optuna's default
    params: Dict[str, Any] = field(default_factory=dict)  # the search space, in Hydra's override syntax


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="kfold_search")


class OptunaSweeper(Sweeper):
    """An Optuna search over Hydra overrides that continues where a killed one stopped."""

    def __init__(self, storage: Optional[str], study_name: Optional[str], direction: Direction, n_trials: int,
                 n_jobs: int, sampler: Optional[DictConfig], params: DictConfig) -> None:
        self.storage = storage
        self.study_name = study_name
        self.direction = direction.name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler
        self.params = params

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        """Search over `hydra.sweeper.params` and the command line's `arguments`; bad input (Optuna
        missing included) ends the command with one line, as every command of the project does."""
        from src.cli import command

        command(self._search)(arguments)

    def _search(self, arguments: list[str]) -> None:
        from src.errors import UserError
        from src.extras import require

        require("search", "hparams_search=optuna", "optuna")
        try:
            from hydra_plugins.kfold_search import _study
        except ImportError as e:  # an Optuna too old (2.x has no FloatDistribution) or broken
            raise UserError(f"hparams_search=optuna needs Optuna 4 or newer ({e}): pip install -e '.[search]'") from None
        _study.search(self, arguments)
