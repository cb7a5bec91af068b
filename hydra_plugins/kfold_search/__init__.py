"""Hydra plugins of this project (Hydra only loads plugins from the `hydra_plugins` namespace)."""
