"""Hydra plugins of this project (Hydra only loads plugins from the `hydra_plugins` namespace):
`optuna_sweeper.py`, the sweeper behind `hparams_search=optuna`."""
