"""K-fold CV runner: `python -m src.cv fold=15 epochs=45` → submission.csv.

Reads and checks the data (src.inputs), splits it into folds, trains the folds that are not
complete (src.training), and once every fold is complete builds the ensemble, the report and the
run's record (src.results). Everything goes to Hydra's run dir; src.rundir lists its files.

Running the same command with the same run dir resumes: complete folds are skipped, an
interrupted fold continues from its last finished epoch. `fold_index=k` (or a list) trains only
those folds, so fold jobs can run in parallel into one run dir; whichever finishes the last fold
builds the ensemble. The task function returns the mean CV accuracy, so a sweeper can maximise it.
"""
from __future__ import annotations

import time

STARTED = time.time()  # a time_limit counts from here, before Keras's import

import hashlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

import joblib

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import recipe, request, rundir
from src.cli import check_command_line, command, preset_overrides, recipe_for_files
from src.errors import UserError
from src.inputs import dataset  # noqa: F401  (registers the data_dir resolver that conf/data names; no Keras)
from src.runtime import backend
from src.schema import check_keys, override_key
from src.training.fold_job import REGROUP_EXIT, Regroup, quiet_fold_job

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path, **command):
    """Check the request and read the data (src.request: a bad one is refused before Keras's
    import), choose the Keras backend (`backend`, src.runtime.backend), then run the K-fold stages
    (src.kfold.run, which imports Keras; `command`: the fields of src.kfold.Command); returns the
    ensemble, or None while folds are missing."""
    checked = request.prepare(cfg)
    backend.select(cfg.get("backend", "auto"))
    from src import kfold

    return kfold.run(cfg, run_dir, checked, kfold.Command(started=STARTED, **command))


def auto_candidates(cfg: DictConfig, hc) -> dict[str, DictConfig]:
    """For recipe=auto on a new run: each of recipe.candidates composed as this command with
    `recipe=<candidate>` instead (src.kfold.choose_recipe compares them); {} otherwise."""
    if cfg.recipe.name != "auto":
        return {}
    task = [o for o in hc.overrides.task if override_key(o) != "recipe"]
    found = {}
    for name in cfg.recipe.get("candidates") or []:
        found[name] = hydra.compose(config_name=hc.job.config_name, overrides=[*task, f"recipe={name}"])
        check_keys(found[name])
    return found


def planned_keys(cfg: DictConfig, hc) -> frozenset[str]:
    """Which of the keys a time_limit may plan (`epochs`, `fold`) the command set: named on its
    command line, or, for `fold`, changed from conf/'s default by a group it chose (an
    experiment's own fold count)."""
    named = {override_key(o) for o in hc.overrides.task}
    given = {k for k in ("epochs", "fold") if k in named}
    if "fold" not in given and cfg.get("time_limit") is not None:
        if hydra.compose(config_name=hc.job.config_name).fold != cfg.fold:
            given.add("fold")
    return frozenset(given)


def run_dir_of(hc) -> Path:
    """This job's run dir. In a multirun of fold jobs (`fold_index` swept), the jobs that differ only
    in fold_index share one run dir under the sweep dir, named by their other overrides."""
    own = Path(hc.runtime.output_dir)
    if hc.mode != RunMode.MULTIRUN:
        return own
    task = list(hc.overrides.task)
    if not any(override_key(o) == "fold_index" for o in task):
        return own
    rest = sorted(o for o in task if override_key(o) != "fold_index")
    if not rest:
        return Path(hc.sweep.dir)
    return Path(hc.sweep.dir) / safe_name(",".join(rest))


def safe_name(text: str, limit: int = 80) -> str:
    """`text` (overrides) as one folder name: no slashes or odd characters, long ones shortened
    with a hash so that different texts stay different."""
    name = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", text)
    if len(name) > limit:
        name = name[: limit - 10] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)  # conf/hparams_search/optuna.yaml


def parallel_jobs_of(hc) -> int:
    """How many jobs of this sweep run at once on this machine (joblib launcher), else 1."""
    if hc.mode != RunMode.MULTIRUN or "n_jobs" not in hc.launcher:
        return 1
    n, cores = int(hc.launcher.n_jobs), joblib.cpu_count()
    return max(1, cores + 1 + n if n < 0 else n)


def fold_job_command(hc, run_dir: Path) -> Callable[[int, int], list[str]]:
    """`(k, threads) -> argv`: this run's own command line, narrowed to fold k in `run_dir`."""
    own = {"fold_index", "jobs", "threads", "verbose"}
    task = [o for o in hc.overrides.task if override_key(o) not in own]
    hydra_overrides = [o for o in hc.overrides.hydra if override_key(o) not in {"hydra.run.dir", "hydra.output_subdir", "hydra.mode"}]
    sources = [f"--config-dir={s.path}" for s in hc.runtime.config_sources if s.provider == "command-line"]
    name = [f"--config-name={hc.job.config_name}"] if hc.job.config_name != "config" else []

    def argv(k: int, threads: int) -> list[str]:
        return [sys.executable, "-m", "src.cv", *sources, *name, *task, f"fold_index={k}", "jobs=1",
                f"threads={threads}", "verbose=false", f"hydra.run.dir={run_dir}", "hydra.output_subdir=null",
                *hydra_overrides]

    return argv


def with_recipe(cfg: DictConfig, hc, run_dir: Path) -> DictConfig:
    """On a run dir with a run.json, the recipe it recorded with this command's given keys over
    it (src.recipe), `recipe=auto` not among them; a recorded `_target_` outside the registry and
    conf/ is refused first."""
    if not (run_dir / rundir.RUN).exists():
        return cfg
    record = rundir.read_record(run_dir)
    task = list(hc.overrides.task)
    if cfg.recipe.name == "auto":  # the run dir holds the recipe recipe=auto chose: that one runs
        task = recipe_for_files([o for o in task if override_key(o) != "recipe"])
        cfg = hydra.compose(config_name=hc.job.config_name, overrides=task)
    base, given = preset_overrides(task)
    defaults = hydra.compose(config_name=hc.job.config_name, overrides=base)
    mine = OmegaConf.to_container(cfg, resolve=True)
    dirs = [Path(s.path) for s in hc.runtime.config_sources if s.schema == "file"]
    allowed = recipe.conf_targets(dirs) | {t for _, t in recipe.targets(mine)}
    recipe.check_targets(record["resolved_config"], allowed, f"{run_dir / rundir.RUN}: ")
    before = hydra.compose(config_name=hc.job.config_name, overrides=[o for o in base if not o.startswith("recipe=")])
    return recipe.recorded(cfg, record, recipe.given_keys(cfg, defaults, given), before)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@command
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the mean CV accuracy (the value a sweeper optimises)."""
    quiet_fold_job()
    hc = HydraConfig.get()
    run_dir = run_dir_of(hc)
    fresh = rundir.holds_nothing(run_dir)
    in_sweep = hc.mode == RunMode.MULTIRUN  # a launcher's job: no second layer of processes
    try:
        cfg = with_recipe(cfg, hc, run_dir)
        ens = run(cfg, run_dir, parallel_jobs=parallel_jobs_of(hc), fold_job=None if in_sweep else fold_job_command(hc, run_dir),
                  given=planned_keys(cfg, hc), recipes=auto_candidates(cfg, hc))
    except UserError:
        if fresh and rundir.holds_nothing(run_dir) and run_dir == Path(hc.runtime.output_dir):  # leave no trace
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        log.error("interrupted: run the same command again to resume (finished epochs are kept)")
        raise
    except Regroup as e:  # a fold job asked to stop: its run starts it again with more threads
        log.info("%s", e)
        logging.shutdown()
        os._exit(REGROUP_EXIT)  # its epoch is committed; TensorFlow's own teardown took up to 30 s here
    return ens.metrics["cv_mean"] if ens else None


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "config", __doc__)
    sys.argv[1:] = recipe_for_files(sys.argv[1:])
    main()
