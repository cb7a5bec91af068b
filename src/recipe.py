"""Run dirs that remember their recipe.

A command on a run dir that has a run.json takes every value that can change results from it, so
`python -m src.cv hydra.run.dir=DIR` resumes with the recorded recipe after the user's conf/ or
the project's defaults have changed, or on another machine. What comes from the command instead:
the keys that cannot change results (src.rundir.VOLATILE: `jobs`, `threads`, the data paths,
which run.json compares by content), the keys the command gives (its overrides, and what its
group choices change from the defaults), which src.rundir.claim then compares with the record,
and keys newer than the record (their LATER_KEYS value, or today's default).

Recorded values are data: an interpolation in one stays text, and a recorded `_target_` is built
only when it is in the registry of buildable parts or named by a YAML file of the current conf/:
a run dir from a stranger cannot make a command call anything else.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Iterable, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf

from src import rundir
from src.errors import UserError
from src.schema import override_key

# Where buildable parts live: every public function of src.models.builders, the optimizers and
# schedules of Keras (classes only), and this project's schedules.
REGISTRY_MODULES = ("src.models", "keras.optimizers", "keras.optimizers.schedules", "src.training.schedules")


def given_keys(cfg: DictConfig, defaults: DictConfig, overrides: Iterable[str]) -> set[str]:
    """The dotted keys a command gives: those its overrides name (all of a group's keys for
    `group=option`) and those where its config differs from what conf/ composes with no overrides
    (what `experiment=...` changes)."""
    now = rundir.flatten(OmegaConf.to_container(cfg, resolve=True))
    before = rundir.flatten(OmegaConf.to_container(defaults, resolve=True))
    named = {override_key(o) for o in overrides}
    given = {k for k in now if k in named or any(k.startswith(n + ".") for n in named)}
    return given | {k for k in now.keys() | before.keys() if now.get(k, "<unset>") != before.get(k, "<unset>")}


def recorded(cfg: DictConfig, record: dict, given: set[str], before: DictConfig | None = None) -> DictConfig:
    """The config a command on a run dir with run.json `record` runs: the recorded one, its
    interpolations inert, with the volatile and the given keys from `cfg`, and keys newer than
    the record at their LATER_KEYS value, else the value `before` has (conf/ as it composed for
    runs recorded before recipes: recipe=seed; `cfg` when not given), else left out: a key that
    only today's recipe adds (a cosine schedule's warm-up on a run that recorded another
    schedule) is not the recorded run's."""
    now = OmegaConf.to_container(cfg, resolve=True)
    flat_now = rundir.flatten(now)
    flat_before = flat_now if before is None else rundir.flatten(OmegaConf.to_container(before, resolve=True))
    tree = _inert(_upgraded(record["resolved_config"], flat_now.keys()))
    flat_then = rundir.flatten(tree)
    for key, value in flat_now.items():
        if key in given or rundir.is_volatile(key):
            rundir.put(tree, key, value)
        elif key not in flat_then and not _under_leaf(tree, key):
            if key in rundir.LATER_KEYS or key in flat_before:
                rundir.put(tree, key, rundir.LATER_KEYS.get(key, flat_before.get(key)))
    for key, node in now.items():  # an empty node (callbacks: {}) is kept
        tree.setdefault(key, node)
    return OmegaConf.create(tree)


def check_targets(tree, allowed: set[str], where: str = "") -> None:
    """Refuse (UserError), naming its key, any `_target_` in `tree` (at any depth, in lists too)
    that is neither in `allowed` nor in the registry of buildable parts."""
    for key, target in targets(tree, where):
        if target not in allowed and not in_registry(target):
            raise UserError(f"{key}: {target!r} is not a part this project builds (a model builder, a "
                            "keras.optimizers or keras.optimizers.schedules class, a schedule of src.training.schedules, "
                            "or a _target_ of a YAML file in conf/): refused, nothing was run. Only open run dirs you trust")


def in_registry(target: str) -> bool:
    """Whether `target` names a buildable part: a public function of src.models.builders or
    src.training.schedules, or a class of keras.optimizers / keras.optimizers.schedules."""
    if not isinstance(target, str) or "." not in target:
        return False
    module, name = target.rsplit(".", 1)
    if module not in REGISTRY_MODULES or name.startswith("_"):
        return False
    import importlib

    found = getattr(importlib.import_module(module), name, None)
    if module == "src.models":
        from src.models import builders

        return inspect.isfunction(found) and found.__module__ == builders.__name__
    if module == "src.training.schedules":
        from src.training.schedules import SCHEDULES

        return name in SCHEDULES
    import keras

    base = keras.optimizers.Optimizer if module == "keras.optimizers" else keras.optimizers.schedules.LearningRateSchedule
    return inspect.isclass(found) and issubclass(found, base)


def conf_targets(conf_dirs: Iterable[Path]) -> set[str]:
    """Every `_target_` named in the YAML files under `conf_dirs` (the user's own conf/)."""
    found = set()
    for root in conf_dirs:
        for path in sorted(Path(root).rglob("*.yaml")):
            try:
                tree = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                continue
            found |= {target for _, target in targets(tree) if isinstance(target, str)}
    return found


def targets(tree, where: str = "") -> Iterator[tuple[str, object]]:
    """Each `_target_` in a config tree (dicts and lists), with its dotted key."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "_target_":
                yield f"{where}{key}", value
            else:
                yield from targets(value, f"{where}{key}.")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from targets(value, f"{where}{i}.")


def _upgraded(config: dict, keys_now: Iterable[str]) -> dict:
    """A recorded config tree in today's keys (src.rundir.upgrade), as a tree."""
    tree = copy.deepcopy(config)
    schedule = tree.get("schedule")
    if isinstance(schedule, dict) and "_target_" not in schedule:
        upgraded = rundir.upgrade(rundir.flatten({"schedule": schedule}))
        tree["schedule"] = {k.split(".", 1)[1]: v for k, v in upgraded.items() if k.startswith("schedule.")}
    return tree


def _inert(tree):
    """`tree` with every `${` in its strings escaped, so OmegaConf keeps it as text."""
    if isinstance(tree, dict):
        return {k: _inert(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_inert(v) for v in tree]
    return tree.replace("${", "\\${") if isinstance(tree, str) else tree


def _under_leaf(tree: dict, dotted: str) -> bool:
    """Whether a parent of `dotted` is recorded as a value (a list or a scalar), not a node."""
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        node = tree
        for key in parts[:i]:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            return True
    return False
