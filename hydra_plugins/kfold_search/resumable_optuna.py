"""The sweeper behind conf/hparams_search/optuna.yaml; its logic is in src/search.py."""
from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper, continuing a killed search where it stopped."""

    def sweep(self, arguments: list[str]) -> Any:
        from src.search import prepare  # optuna is imported only when a search runs

        prepare(self.sweeper)
        return super().sweep(arguments)
