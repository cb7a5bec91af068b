"""What every command shares: bad input ends the command with one line and exit status 1."""
from __future__ import annotations

import difflib
import functools
import logging
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from src import rundir
from src.errors import UserError
from src.inputs import dataset  # noqa: F401  (registers the data_dir resolver conf/data/ uses)
from src.schema import check_keys, override_key  # also registers the configs' schemas before Hydra composes

log = logging.getLogger(__name__)
T = TypeVar("T")


def command(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command's task function: a config key that no schema names (added with
    `+key=value`) is refused, and a UserError is logged and ends the process with
    `error: <message>` on stderr and exit status 1, never a traceback; Ctrl-C ends it with
    exit status 130, also without one."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> T:
        fresh_log = _log_is_fresh()
        try:
            if args and isinstance(args[0], DictConfig):
                check_keys(args[0])
            return main(*args, **kwargs)
        except UserError as e:
            log.error("%s", e)
            _remove_litter(fresh_log)
            sys.exit(f"error: {e}")
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


CONF = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config",
                   checked: bool = True) -> DictConfig:
    """conf/`config_name`.yaml with `overrides`, composed and checked as the command would compose
    it (schemas, resolvers, unknown keys refused): for benchmarks, tests and notebooks, which run
    the stages without a command's Hydra run."""
    if config_name == "config":
        overrides = recipe_for_files(overrides)
    cfg = _compose(list(overrides), config_name)
    if checked:
        check_keys(cfg)
    return cfg


FILE_KEYS = {"data.train", "data.dir"}  # a competition given by its files' path
CHOSEN = {"recipe", "experiment", "model"}  # a recipe, or a part of one, the user chose


def recipe_for_files(overrides: Sequence[str]) -> list[str]:
    """`overrides` with the recipe their competition gets, where they choose none (no recipe=,
    experiment= or model=): the preset's (`data=PRESET`, else the default one) `data.recipe`, or
    with a `time_limit=` its `data.timed_recipe` where it names one; the generic recipe for files
    given by path (`data.train=` or `data.dir=`) with no preset. The digit presets' seed recipe was
    chosen for digits without a budget, the generic one across competitions and for digits within
    one (docs/recipes.md)."""
    keys = {override_key(o) for o in overrides if not o.startswith("-")}
    if keys & CHOSEN:
        return list(overrides)
    preset = [o for o in overrides if override_key(o) == "data"]
    timed = any(override_key(o) == "time_limit" and o.partition("=")[2] not in ("", "null") for o in overrides)
    if keys & FILE_KEYS and not preset:
        name = "generic"
    elif preset or timed:
        data = _compose(preset).data
        name = (data.get("timed_recipe") if timed else None) or data.get("recipe", "seed")
    else:
        name = "seed"
    return list(overrides) if name == "seed" else [*overrides, f"recipe={name}"]


def preset_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the overrides that choose the competition's preset and the recipe it brings, what a
    command's given keys are measured from; the overrides the user gave): `data=`, and the
    `recipe=` that recipe_for_files adds, which is no choice of the user's."""
    others = [o for o in overrides if override_key(o) != "recipe"]
    auto = recipe_for_files(others)[len(others):]
    base = [o for o in others if override_key(o) == "data"] + auto
    return base, others + [o for o in overrides if override_key(o) == "recipe" and o not in auto]


def _compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    """conf/ composed with `overrides`: inside a command's Hydra run with its search path, else from CONF."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


GAVE_WAY = {  # routes that gave way to cluster=, and what to run instead (docs/cluster.md)
    "hydra/launcher=slurm": "cluster=slurm (one Slurm job per fold, watched and retried; no -m or fold_index needed)",
    "hydra/launcher=ray": "cluster=ray for a run's folds, or hydra/launcher=kfold_ray for a sweep of runs",
}


def check_command_line(argv: list[str], config_name: str, doc: str, run_dir: bool = False) -> None:
    """What every command does before Hydra starts: `--help`, a route that gave way refused, the
    overrides checked against the configs, and (a command on a finished run) a `run_dir=` that
    is no folder refused."""
    help_or_go_on(argv, config_name, " ".join(doc.split("\n\n")[0].split()))
    for old in set(argv) & GAVE_WAY.keys():
        sys.exit(f"error: {old} gave way to {GAVE_WAY[old]}: see docs/cluster.md")
    refuse_bad_overrides(argv, config_name)
    if run_dir:
        refuse_missing_run_dir(argv)


def help_or_go_on(argv: list[str], config_name: str = "config", what: str = "") -> None:
    """`--help` (or `-h`), optionally followed by a group: one screen of the command's keys and
    groups with their descriptions (the schema's field metadata), or the group's options, then
    exit 0. Hydra's own help stays at `--hydra-help`."""
    flags = [i for i, a in enumerate(argv) if a in ("--help", "-h")]
    if not flags:
        return
    rest = argv[flags[0] + 1:]
    print(group_help(rest[0]) if rest and (CONF / rest[0]).is_dir() else command_help(config_name, what))
    sys.exit(0)


def command_help(config_name: str, what: str = "") -> str:
    """The command's top-level keys (value, description) and config groups (options)."""
    from dataclasses import fields

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True)
    chosen = {str(k) for k in cfg.hydra.runtime.choices if not str(k).startswith("hydra")}
    schema = OmegaConf.get_type(cfg)
    about = {f.name: f.metadata.get("help", "") for f in fields(schema)} if schema not in (None, dict) else {}
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
    name = "cv" if config_name == "config" else config_name
    groups = [k for k in values if k in chosen and (CONF / k).is_dir()]
    lines = [f"python -m src.{name} [key=value ...]" + (" [group=option ...]" if groups else ""), *([what] if what else []), ""]
    lines += ["groups (--help GROUP lists its options):"] if groups else []
    for group in groups:
        lines.append(f"  {group + '=':<14} {about.get(group, '')}".rstrip())
        lines.append(f"  {'':<14} options: {', '.join(_options(group))}")
    lines += ["", "keys:"] if groups else ["keys:"]
    for key, value in values.items():
        if key in groups:
            continue
        shown = "{...}" if isinstance(value, dict) else str(value)
        lines.append(f"  {key + '=' + shown:<28} {about.get(key, '')}".rstrip())
    lines += ["", "Every key and group: docs/configuration.md. Hydra's own options: --hydra-help."]
    return "\n".join(lines)


def group_help(group: str) -> str:
    """A config group's options, each with the first line of its file's leading comment."""
    lines = [f"{group}= one of:"]
    for option in _options(group):
        text = (CONF / group / f"{option}.yaml").read_text().splitlines()
        first = next((t.lstrip("# ").strip() for t in text if t.startswith("#") and not t.startswith("# @package")), "")
        lines.append(f"  {option:<24} {first}".rstrip())
    return "\n".join(lines)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def refuse_bad_overrides(argv: list[str], config_name: str = "config") -> None:
    """Before Hydra: a key that no config or schema has (with or without `+`) or a group option
    that does not exist ends the command with one line naming the nearest one, and nothing is
    created. Command lines this cannot judge alone (a sweep, another config dir) and Hydra's own
    keys are left to Hydra."""
    if any(a.startswith(("-cd", "-cp", "-cn", "--config", "-m", "--multirun", "--help", "-h", "--hydra-help",
                         "--info", "-i", "--cfg", "-c", "--shell-completion")) for a in argv):
        return
    given = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except HydraException as e:
        sys.exit(f"error: {_one_line(e)}")
    if any(o.is_sweep_override() for o in parsed):
        return
    parsed = [o for o in parsed if not o.key_or_group.startswith("hydra")]  # Hydra checks its own
    given = [o.input_line for o in parsed]
    try:
        compose_config(given, config_name)
    except UserError as e:
        sys.exit(f"error: {e}")
    except MissingConfigException as e:
        sys.exit(f"error: {_missing_option(parsed, e)}")
    except HydraException as e:
        generic = config_name == "config" and len(recipe_for_files(given)) > len(given)
        sys.exit(f"error: {_unknown_key(parsed, config_name, e)}"
                 + (" (files given by path get recipe=generic: add recipe=seed for the seed recipe and its keys)" if generic else ""))


def _missing_option(parsed, e: Exception) -> str:
    """`data=fasion_mnist`: the group's nearest option and all of them."""
    for o in parsed:
        group = CONF / o.key_or_group
        value = o.value() if not o.is_delete() else None
        if group.is_dir() and isinstance(value, str) and not (group / f"{value}.yaml").exists():
            options = _options(o.key_or_group)
            near = difflib.get_close_matches(value, options, n=1)
            hint = f": did you mean {o.key_or_group}={near[0]}?" if near else ""
            return f"{o.key_or_group}={value} is not an option of {o.key_or_group}{hint} (options: {', '.join(options)})"
    return _one_line(e)


def _unknown_key(parsed, config_name: str, e: Exception) -> str:
    """`epoch=2`: the nearest key of the config the other overrides compose."""
    groups = [o.input_line for o in parsed if (CONF / o.key_or_group).is_dir()]
    try:
        keys = _keys(OmegaConf.to_container(compose_config(groups, config_name, checked=False), resolve=False))
    except HydraException as clash:  # e.g. recipe=generic sets model.dropout, which model=softmax has not
        return f"{_one_line(clash)}: {' '.join(groups)} do not fit together (drop one, or choose recipe=seed)"
    for o in parsed:
        if (CONF / o.key_or_group).is_dir() or o.key_or_group in keys:
            continue
        near = difflib.get_close_matches(o.key_or_group, keys, n=1)
        return f"unknown config key '{o.key_or_group}'" + (f": did you mean '{near[0]}'?" if near else "")
    return _one_line(e)


def _one_line(e: Exception) -> str:
    """Hydra's message without its `full_key:`/`object_type=` lines, on one line."""
    text = f"{e}\n{e.__cause__}" if e.__cause__ is not None else str(e)  # Hydra keeps the why in the cause
    lines = [line.strip() for line in text.strip().splitlines()
             if line.strip() and not line.strip().startswith(("full_key:", "reference_type=", "object_type="))]
    return ": ".join(lines)


def _keys(node, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        found += [f"{prefix}{key}", *_keys(value, f"{prefix}{key}.")]
    return found


def refuse_missing_run_dir(argv: list[str]) -> None:
    """Before Hydra makes the command's output dir (a run-dir command logs into its run_dir):
    a `run_dir=` that is not a folder ends the command in one line, and nothing is created."""
    given = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+") == "run_dir" and "=" in a]
    if given and "${" not in given[-1] and not Path(given[-1]).is_dir():
        sys.exit(f"error: {given[-1]} is not a run dir of src.cv (no such folder): give the hydra.run.dir of a src.cv run")


def _log_path() -> Path | None:
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.runtime.output_dir) / f"{hc.job.name}.log"


def _log_is_fresh() -> bool:
    """Whether this command's log file was made by this process (it holds nothing yet)."""
    path = _log_path()
    return path is not None and path.is_file() and path.stat().st_size == 0


def _remove_litter(fresh_log: bool) -> None:
    """A refused command leaves nothing behind: Hydra's output dir goes when it holds nothing but
    Hydra's own config record and this command's log (a mistyped run_dir= makes no folder), and a
    log this command started in an existing folder goes too."""
    path = _log_path()
    if path is None:
        return
    if rundir.holds_nothing(path.parent, path.name):
        _close_file_logs()
        shutil.rmtree(path.parent, ignore_errors=True)
    elif fresh_log:
        _close_file_logs()
        path.unlink(missing_ok=True)


def _close_file_logs() -> None:
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logging.getLogger().removeHandler(handler)
