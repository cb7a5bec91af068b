"""`hydra/launcher=kfold_ray`: a multirun's jobs (a sweep, or an Optuna search's trials) as Ray
tasks on a running cluster, on Ray's public API alone (hydra-ray-launcher 1.2.2 pins cloudpickle<3
and pulls in boto3; this needs only the `ray` extra).

Each job is its command's own process, `python -m <command> <its overrides> hydra.run.dir=<its
sweep subdir>`, run by a Ray task (src.cluster.ray_engine) from this checkout's path with this
interpreter, so the sweep dir, the data, the checkout and its environment must be at the same
paths on every node. A job's value (what a sweeper optimises) is its run's `metrics.json`
`cv_mean`; a job that fails is reported failed with its exit status and the end of its log.

Hydra imports every module under hydra_plugins at every start of every command: this one imports
neither Ray nor the project at the top.
"""
# No `from __future__ import annotations`: Hydra runs this module before it is in sys.modules, where
# dataclasses look up string annotations.
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class KfoldRayLauncherConf:
    """`hydra.launcher` with `hydra/launcher=kfold_ray`."""

    _target_: str = "hydra_plugins.kfold_search.ray_launcher.KfoldRayLauncher"
    address: Optional[str] = None  # HOST:PORT of the cluster; none: RAY_ADDRESS
    num_cpus: int = 1  # each job's CPUs (give its fold jobs threads to match)
    num_gpus: int = 0


ConfigStore.instance().store(group="hydra/launcher", name="kfold_ray", node=KfoldRayLauncherConf, provider="kfold_search")


class KfoldRayLauncher(Launcher):
    """Every job of a multirun as a Ray task; all submitted at once, Ray queues what does not fit."""

    def __init__(self, address: Optional[str] = None, num_cpus: int = 1, num_gpus: int = 0) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src.cluster import ray_engine
        from src.cluster import Job
        from src.errors import UserError
        from src.extras import require

        try:
            require("ray", "hydra/launcher=kfold_ray", "ray")
            engine = ray_engine.RayEngine(OmegaConf.create({"address": self.address, "gpus_per_job": self.num_gpus}))
        except UserError as e:
            sys.exit(f"error: {e}")
        module = sys.modules["__main__"].__spec__.name if sys.modules["__main__"].__spec__ else "src.cv"
        started = []
        try:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(sweep_config):
                    sweep_config.hydra.job.num = idx
                run_dir = Path(sweep_config.hydra.sweep.dir) / str(sweep_config.hydra.sweep.subdir)
                argv = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}"]
                log.info("#%d: %s (Ray task)", idx, " ".join(overrides))
                job = engine.start(Job(idx, argv, {}, self.num_cpus, run_dir / "ray.out"))
                started.append((list(overrides), sweep_config, run_dir, job))
            return [self._result(*item) for item in started]
        finally:
            engine.close()

    @staticmethod
    def _result(overrides: list, sweep_config: DictConfig, run_dir: Path, job) -> JobReturn:
        import json

        code = job.wait()
        ret = JobReturn(overrides=overrides, cfg=None, hydra_cfg=sweep_config, working_dir=str(run_dir),
                        task_name=sweep_config.hydra.job.name)
        metrics = run_dir / "metrics.json"
        if code == 0 and metrics.exists():
            ret.status, ret.return_value = JobStatus.COMPLETED, json.loads(metrics.read_text())["cv_mean"]
            return ret
        why = job.reason or f"exit status {code}"
        ret.status, ret.return_value = JobStatus.FAILED, RuntimeError(f"{' '.join(overrides)}: {why} (see {run_dir})")
        return ret
