"""The sweeper behind conf/hparams_search/optuna.yaml; its logic is in _study.py (Hydra skips
modules named with a leading underscore when it scans for plugins at every start, so Optuna is
imported only when a search runs)."""
from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper, continuing a killed search where it stopped."""

    def sweep(self, arguments: list[str]) -> Any:
        from hydra_plugins.kfold_search._study import prepare

        prepare(self.sweeper)
        return super().sweep(arguments)
