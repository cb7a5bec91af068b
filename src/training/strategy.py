"""Pick the tf.distribute strategy: a TPU, several GPUs, or the default (one device)."""
from __future__ import annotations

import glob
import logging
import os

import joblib
import tensorflow as tf
from omegaconf import DictConfig

from src.training import multi_worker
from src.errors import UserError

log = logging.getLogger(__name__)

NAMES = ("auto", "tpu", "mirrored", "multi_worker", "default")
# Set on Colab, Kaggle and Cloud TPU VMs; probing for a TPU without one of these can hang on
# a metadata-server lookup, so `auto` only tries when there is a hint.
_TPU_HINTS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "KAGGLE_TPU")


def make_strategy(cfg: DictConfig) -> tf.distribute.Strategy:
    """Build the strategy named by `cfg.name`; `auto` prefers TPU, then several GPUs, then default."""
    if cfg.name not in NAMES:
        raise UserError(f"strategy={cfg.name!r} is not one of {NAMES}")
    if cfg.name == "multi_worker":
        return multi_worker.make_strategy()
    if cfg.name == "tpu" or (cfg.name == "auto" and _tpu_hinted()):
        try:
            return _tpu(cfg.tpu)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            if cfg.name == "tpu":
                raise UserError(f"strategy=tpu: no TPU could be resolved ({e}); use strategy=auto") from None
            log.warning("a TPU was hinted at but did not resolve (%s); falling back", e)
    gpus = tf.config.list_logical_devices("GPU")
    if cfg.name == "mirrored" or (cfg.name == "auto" and len(gpus) > 1):
        devices = list(cfg.devices) if cfg.devices else None
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def resolve_precision(name: str, strategy: tf.distribute.Strategy) -> str:
    """The Keras dtype policy to train under; `auto` picks bfloat16 where the hardware has it.

    On a TPU, or a CPU with AVX512_BF16 / AMX, bfloat16 matmuls run about twice as fast and
    the default CNN trains about 1.4x faster; elsewhere (GPUs included) `auto` stays float32.
    """
    if name not in PRECISIONS:
        raise UserError(f"precision={name!r} is not one of {PRECISIONS}")
    if name != "auto":
        return name
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if not tf.config.list_logical_devices("GPU") and _cpu_has_bf16():
        return "mixed_bfloat16"
    return "float32"


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _tpu_hinted() -> bool:
    return any(os.environ.get(k) for k in _TPU_HINTS) or bool(glob.glob("/dev/accel*"))


def _tpu(name: str | None) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


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


def cpu_cores() -> int:
    """The cores this process may run on (joblib's count respects CPU affinity and cgroup quotas,
    on every system)."""
    return joblib.cpu_count()


def expected_jobs(jobs: int | str, strategy: str, folds_to_train: int) -> int:
    """What `resolve_jobs` will answer, known before TensorFlow starts (so that this process's
    threads can still be set): `auto` is one per core unless a GPU, a TPU or several machines."""
    if jobs != "auto":
        return max(1, min(jobs, folds_to_train)) if isinstance(jobs, int) and not isinstance(jobs, bool) else 1
    accelerated = (strategy in ("tpu", "multi_worker") or (strategy == "auto" and _tpu_hinted())
                   or bool(tf.config.list_physical_devices("GPU")))
    return 1 if accelerated else max(1, min(cpu_cores(), folds_to_train))


def resolve_jobs(jobs: int | str, folds_to_train: int, strategy: tf.distribute.Strategy) -> int:
    """How many folds train at once, each in its own process: `auto` is one per core on a
    machine without accelerators (the default CNN keeps one core busier than TensorFlow's threads
    keep two), and 1 with a GPU, a TPU or a strategy over several devices or machines."""
    single_cpu = (strategy.num_replicas_in_sync == 1 and not multi_worker.is_multi_worker(strategy)
                  and not isinstance(strategy, tf.distribute.TPUStrategy))
    if jobs == "auto":
        jobs = cpu_cores() if single_cpu and not tf.config.list_logical_devices("GPU") else 1
    elif isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"jobs={jobs!r}: need a whole number of fold processes, at least 1, or auto")
    elif jobs > 1 and not single_cpu:
        raise UserError(f"jobs={jobs} trains folds in separate processes, which {strategy_name(strategy)} over "
                        f"{strategy.num_replicas_in_sync} replica(s) cannot share: use jobs=1 with this strategy")
    return max(1, min(jobs, folds_to_train))


def fold_job_threads(threads: int | str | None, jobs: int, deterministic: bool) -> int:
    """TensorFlow threads for each of `jobs` fold processes: an equal share of the cores (one
    under `deterministic`, as in every process then: see `configure_threads`)."""
    if isinstance(threads, int) and not isinstance(threads, bool):
        return threads
    return 1 if deterministic else max(1, cpu_cores() // jobs)


def configure_threads(threads: int | str | None, parallel_jobs: int, deterministic: bool = False) -> int | None:
    """Cap TensorFlow's CPU threads; `auto` gives each of `parallel_jobs` processes an equal share.

    Under `deterministic`, `auto` is one thread: TensorFlow's deterministic ops still give other
    bits with another thread count, and one thread per process makes the bytes the same whether
    the folds train one after another or in parallel fold jobs.
    Must run before TensorFlow executes its first op. Returns the cap, or None when left to TF.
    """
    cores = cpu_cores()
    if threads in (None, "auto"):
        if deterministic:
            threads = 1
        elif parallel_jobs <= 1:
            return None
        else:
            threads = max(1, cores // min(parallel_jobs, cores))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads={threads!r}: need a whole number of threads, at least 1, or auto")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # a reused worker process whose TensorFlow already runs: keep its setting
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            log.warning("TensorFlow already started in this process: threads=%d not applied", threads)
    return threads


def check_batch(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """Return the per-replica batch; refuse a global batch that does not split evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size < 1 or batch_size % replicas:
        raise UserError(
            f"batch_size={batch_size} does not split evenly over {replicas} replicas: "
            f"use a multiple of {replicas}, e.g. batch_size={max(1, batch_size // replicas) * replicas}"
        )
    return batch_size // replicas
