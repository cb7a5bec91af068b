"""The live side of the runtime (src.runtime): on TensorFlow the tf.distribute strategy it
decided on, the thread caps and op determinism; on JAX the keras.distribution over the devices.
Either way a placement's `strategy` has `scope()` and `num_replicas_in_sync`. TensorFlow is
imported only on the TensorFlow backend."""
from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import keras
from omegaconf import DictConfig

from src.errors import UserError
from src.runtime import Hardware, Request, Runtime, activate, decide
from src.runtime.probe import probe

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)


def request(cfg: DictConfig, jobs: int | str = 1, folds: int = 1, launcher_jobs: int = 1) -> Request:
    """What `cfg` asks of the hardware; `jobs` fold processes for `folds` folds to train here."""
    devices = cfg.strategy.get("devices")
    return Request(strategy=cfg.strategy.name, backend=keras.backend.backend(), devices=len(devices) if devices else None, precision=cfg.precision,
                   jit_compile=cfg.get("jit_compile", "auto"), threads=cfg.threads, deterministic=cfg.deterministic,
                   jobs=jobs, folds=max(1, folds), launcher_jobs=launcher_jobs)


def start(asked: Request, hardware: Hardware | None = None) -> Runtime:
    """Decide this process's runtime on the probed machine and make it the process's own; on
    TensorFlow cap its threads and, when asked, make its ops deterministic (before its first op)."""
    runtime = activate(decide(hardware or probe(asked.backend), asked))
    if runtime.backend == "tensorflow":
        apply_threads(runtime.threads)
        if asked.deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
    return runtime


class KerasDistribution:
    """A fold's devices on JAX: keras.distribution.DataParallel over `replicas` devices, or one.

    Keras keeps the distribution in its global state, which `keras.backend.clear_session()`
    (every fold's fresh model) wipes: `scope()` sets it again, and it stays set after the block,
    so fit, evaluate and predict shard their batches by it."""

    def __init__(self, replicas: int) -> None:
        self.num_replicas_in_sync = replicas
        devices = keras.distribution.list_devices()[:replicas]
        self.distribution = keras.distribution.DataParallel(devices=devices) if replicas > 1 else None

    def scope(self) -> contextlib.AbstractContextManager:
        keras.distribution.set_distribution(self.distribution)
        return contextlib.nullcontext()


def make_strategy(runtime: Runtime, cfg: DictConfig) -> Any:
    """The strategy of `runtime.distribution` (`cfg` is the strategy node: its devices)."""
    if runtime.backend == "jax":
        return KerasDistribution(runtime.replicas)
    import tensorflow as tf

    from src.training import multi_worker

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
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            log.warning("TensorFlow already started in this process: threads=%d not applied", threads)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's results (under MultiWorkerMirroredStrategy, only one does)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if strategy_name(strategy) != "MultiWorkerMirroredStrategy" or resolver is None:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The name users know a strategy by (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    if isinstance(strategy, KerasDistribution):
        return "DataParallel" if strategy.num_replicas_in_sync > 1 else "one device"
    from src.training import multi_worker

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
