"""cluster=ray: each fold job a Ray task on the cluster at cluster.address (or RAY_ADDRESS), with
the CPUs (and GPUs) it asks for, spread over the nodes. The task runs the fold's command line in
a child process that dies with the task's worker (so a killed worker leaves no orphan training
on), from the same checkout path as here; the task itself is sent by value, so the nodes need
only Ray and this project's environment, not this module on their path."""
from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass

from omegaconf import DictConfig

from src.cluster import Job
from src.cluster import watch
from src.errors import UserError

log = logging.getLogger(__name__)


def _run_fold(argv: list[str], env: dict[str, str], cwd: str, node_key: str, job_key: str) -> int:
    """In a Ray worker: run the fold's command line to its end; its exit status. Only the
    standard library and ray: this function travels by value."""
    import ctypes
    import os
    import signal
    import subprocess

    import ray

    context = ray.get_runtime_context()
    full = {**os.environ, **env, node_key: context.get_node_id(), job_key: context.get_task_id() or ""}

    def die_with_worker() -> None:  # PR_SET_PDEATHSIG: SIGKILL when the worker that started it dies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)

    proc = subprocess.Popen(argv, env=full, cwd=cwd, preexec_fn=die_with_worker, stdin=subprocess.DEVNULL)
    return proc.wait()


@dataclass
class RayJob:
    ref: object
    ident: str
    reason: str = ""

    def wait(self) -> int:
        import ray

        try:
            return int(ray.get(self.ref))
        except ray.exceptions.TaskCancelledError:
            self.reason = "its Ray task was cancelled"
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.RayTaskError,
                ray.exceptions.RaySystemError) as e:
            self.reason = f"its Ray task failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        return -signal.SIGKILL

    def stop(self) -> None:
        import ray

        ray.cancel(self.ref, force=True)


class RayEngine:
    name, remote = "ray", True

    def __init__(self, cfg: DictConfig) -> None:
        try:
            import ray
            from ray import cloudpickle
        except ImportError:
            raise UserError("cluster=ray needs Ray in this environment: pip install -e '.[ray]'") from None
        address = cfg.get("address") or os.environ.get("RAY_ADDRESS")
        if not address:
            raise UserError("cluster=ray needs a running Ray cluster: set RAY_ADDRESS or cluster.address=HOST:PORT "
                            "(started with `ray start --head` on one node and `ray start --address=HEAD:PORT` on the others)")
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cluster=ray could not connect to the Ray cluster at {address}: {' '.join(str(e).split())[:300]}") from None
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        self.cfg, self.task = cfg, ray.remote(_run_fold)
        log.info("cluster=ray: connected to %s (%s)", address, ", ".join(f"{k} {v:g}" for k, v in sorted(ray.cluster_resources().items())
                                                                          if k in ("CPU", "GPU")))

    def start(self, job: Job) -> RayJob:
        options = {"num_cpus": job.threads, "num_gpus": self.cfg.get("gpus_per_job") or 0, "max_retries": 0,
                   "scheduling_strategy": "SPREAD", "name": f"kfold-fold-{job.fold}"}
        ref = self.task.options(**options).remote(job.argv, job.env, os.getcwd(), watch.NODE_ID, watch.JOB_ID)
        return RayJob(ref, ref.task_id().hex())

    def close(self) -> None:
        import ray

        ray.shutdown()
