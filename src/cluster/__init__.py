"""Where fold jobs run (`cluster=local|ray|slurm`): an engine starts a fold job's command line,
waits for it and stops it. The run dir is the only channel between the run's main process and
its fold jobs (their epochs, results and locks), so on a cluster it must be on storage every node
shares; before the first job the main process writes a token there that each job checks
(src.cluster.watch), and while it waits it beats a heartbeat there that a job without it stops on.

    local   subprocesses of the main process, `jobs` at a time (the default; what ran before)
    ray     Ray tasks on the cluster at RAY_ADDRESS (or cluster.address), one per fold
    slurm   one sbatch job per fold; the main process waits, or returns (cluster.wait=false)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig

from src.errors import UserError

ENGINES = ("local", "ray", "slurm")


@dataclass(frozen=True)
class Job:
    """A fold job to start: its fold, command line, environment (what it adds to the engine's),
    CPU threads, and where a remote engine puts its console output."""

    fold: int
    argv: list[str]
    env: dict[str, str]
    threads: int
    output: Path


class Running(Protocol):
    """A started fold job."""

    ident: str  # the engine's id for it: a process id, a Ray task id, a Slurm job id
    reason: str  # after wait(): why it ended, where the engine knows better than the exit status ("" otherwise)

    def wait(self) -> int:
        """Block until it ends; its exit status (negative: killed by that signal)."""

    def stop(self) -> None:
        """Ask it to end (its finished epochs are committed)."""


class Engine(Protocol):
    name: str
    remote: bool  # jobs may run on other machines: the run dir must be shared, and all folds go at once

    def start(self, job: Job) -> Running:
        """Submit `job`; returns at once."""

    def close(self) -> None:
        """Release what the engine holds (a Ray connection)."""


def engine(cfg: DictConfig) -> Engine:
    """The engine `cfg.cluster` names, connected."""
    name = cfg.cluster.engine
    if name == "local":
        from src.cluster.local import LocalEngine

        return LocalEngine()
    if name == "slurm":
        from src.cluster.slurm import SlurmEngine

        return SlurmEngine(cfg.cluster)
    if name == "ray":
        from src.cluster.ray_engine import RayEngine

        return RayEngine(cfg.cluster)
    raise UserError(f"cluster.engine={name!r} is not one of {ENGINES}: choose cluster=local, cluster=ray or cluster=slurm")
