"""The TensorFlow side of the runtime (src.runtime): the tf.distribute strategy it decided on,
the thread caps it set, and the multi-worker questions only a live strategy answers."""
from __future__ import annotations

import logging

import tensorflow as tf
from omegaconf import DictConfig

from src.errors import UserError
from src.runtime import Hardware, Request, Runtime, activate, decide
from src.runtime.probe import probe
from src.training import multi_worker

log = logging.getLogger(__name__)


def request(cfg: DictConfig, jobs: int | str = 1, folds: int = 1, launcher_jobs: int = 1) -> Request:
    """What `cfg` asks of the hardware; `jobs` fold processes for `folds` folds to train here."""
    devices = cfg.strategy.get("devices")
    return Request(strategy=cfg.strategy.name, devices=len(devices) if devices else None, precision=cfg.precision,
                   jit_compile=cfg.get("jit_compile", "auto"), threads=cfg.threads, deterministic=cfg.deterministic,
                   jobs=jobs, folds=max(1, folds), launcher_jobs=launcher_jobs)


def start(asked: Request, hardware: Hardware | None = None) -> Runtime:
    """Decide this process's runtime on the probed machine, make it the process's own, and cap
    TensorFlow's threads (before its first op)."""
    runtime = activate(decide(hardware or probe(), asked))
    if runtime.backend != "tensorflow":
        raise UserError(f"{runtime.hardware.summary()} trains through Keras 3 on JAX (TensorFlow's TPUStrategy is gone from "
                        "Kaggle's and Colab's TPU images), which this version does not run yet: use a GPU or the CPU")
    apply_threads(runtime.threads)
    return runtime


def make_strategy(runtime: Runtime, cfg: DictConfig) -> tf.distribute.Strategy:
    """The tf.distribute strategy of `runtime.distribution` (`cfg` is the strategy node: its devices)."""
    if runtime.distribution == "multi_worker":
        return multi_worker.make_strategy()
    if runtime.distribution == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(cfg.devices) if cfg.devices else None)
    return tf.distribute.get_strategy()


def apply_threads(threads: int | None) -> None:
    """Cap TensorFlow's CPU threads (None leaves TensorFlow's choice). Must run before TensorFlow
    executes its first op; a reused worker process whose TensorFlow already runs keeps its setting."""
    if threads is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            log.warning("TensorFlow already started in this process: threads=%d not applied", threads)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's results (under MultiWorkerMirroredStrategy, only one does)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The name users know a strategy by (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    return "MultiWorkerMirroredStrategy" if multi_worker.is_multi_worker(strategy) else type(strategy).__name__


def worker_id(strategy: tf.distribute.Strategy) -> str:
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type}_{resolver.task_id}"


def check_batch(batch_size: int, replicas: int) -> int:
    """Return the per-replica batch; refuse a global batch that does not split evenly."""
    if batch_size < 1 or batch_size % replicas:
        raise UserError(
            f"batch_size={batch_size} does not split evenly over {replicas} replicas: "
            f"use a multiple of {replicas}, e.g. batch_size={max(1, batch_size // replicas) * replicas}"
        )
    return batch_size // replicas
