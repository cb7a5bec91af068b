"""The decision table: from a `Hardware` and the config's `Request` to a `Runtime`.

Pure Python (no TensorFlow), so every row is tested from hand-written hardware on any machine.
docs/hardware.md has the table and the reasons.
"""
from __future__ import annotations

from dataclasses import dataclass

from src.errors import UserError
from src.runtime.backend import BACKENDS, onednn
from src.runtime.hardware import Hardware

STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker", "default")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
NO_TPU = "strategy=tpu: this machine shows no TPU (no TPU_NAME, TPU_ACCELERATOR_TYPE or /dev/accel*): use strategy=auto"
RECORDED = ("backend", "device_kind", "device_count", "precision", "jit_compile", "distribution")


@dataclass(frozen=True)
class Request:
    """What the config asks of the hardware (`strategy.name`, `precision`, `jit_compile`, `threads`)."""

    strategy: str = "auto"
    backend: str = "auto"  # the Keras backend src.runtime.backend chose; auto: JAX on a TPU, else TensorFlow
    devices: int | None = None  # strategy.devices: how many the user named; None = every visible GPU
    precision: str = "auto"
    jit_compile: bool | str = "auto"
    threads: int | str | None = "auto"
    deterministic: bool = False
    jobs: int | str = 1  # folds at once, each in a process of its own: a number or auto
    folds: int = 1  # folds to train here
    launcher_jobs: int = 1  # jobs of a launcher's sweep sharing this machine


@dataclass(frozen=True)
class Runtime:
    """Every hardware answer a process needs, decided once (`decide`)."""

    hardware: Hardware
    backend: str  # tensorflow | jax
    device_kind: str  # cpu | gpu | tpu
    device_count: int  # devices one fold trains on
    distribution: str  # none | mirrored | multi_worker | data_parallel
    replicas: int  # replicas a global batch is split over
    precision: str  # a Keras dtype policy name
    jit_compile: bool | str  # what model.compile gets: "auto" lets Keras decide (one GPU)
    batch_norm: str  # fused | synchronized | keras
    fold_jobs: int  # folds trained at once, each in a process of its own
    threads: int | None  # TensorFlow CPU threads of this process; None = TensorFlow's own choice
    job_threads: int  # TensorFlow CPU threads of each fold job

    @property
    def loss_scaling(self) -> bool:
        """float16 gradients underflow without it; Keras wraps the optimizer in a LossScaleOptimizer."""
        return self.precision == "mixed_float16"

    @property
    def accelerated(self) -> bool:
        return self.device_kind != "cpu" or self.distribution == "multi_worker"

    def record(self) -> dict:
        """The backend-neutral fields that run.json and done.json keep."""
        return {key: getattr(self, key) for key in RECORDED}

    def changes_from(self, recorded: dict) -> list[str]:
        """`key: recorded → now` for each recorded field that differs (a resume on other hardware)."""
        return [f"{k}: {recorded[k]} → {getattr(self, k)}" for k in RECORDED if k in recorded and recorded[k] != getattr(self, k)]

    def summary(self) -> str:
        jit = {True: "XLA", False: "no XLA", "auto": "XLA as Keras decides"}[self.jit_compile]
        kernels = (", oneDNN" if onednn() else ", Eigen kernels") if (self.backend, self.device_kind) == ("tensorflow", "cpu") else ""
        return (f"{self.hardware.summary()}: {self.backend}{kernels}, distribution {self.distribution}, "
                f"{self.precision}{', loss scaling' if self.loss_scaling else ''}, {jit}, {self.batch_norm} BatchNorm")


def decide(hardware: Hardware, request: Request) -> Runtime:
    """The runtime for `request` on `hardware`; UserError for a request the hardware cannot meet."""
    if request.strategy not in STRATEGIES:
        raise UserError(f"strategy={request.strategy!r} is not one of {STRATEGIES}")
    if request.precision not in PRECISIONS:
        raise UserError(f"precision={request.precision!r} is not one of {PRECISIONS}")
    backend = _backend(hardware, request.backend)
    distribution, device_kind, replicas = (_jax_distribution if backend == "jax" else _distribution)(hardware, request)
    precision = request.precision if request.precision != "auto" else _precision(hardware, device_kind)
    jobs = _fold_jobs(request, hardware.cores, device_kind == "cpu" and distribution == "none", replicas == 1)
    return Runtime(
        hardware=hardware, backend=backend, device_kind=device_kind,
        device_count=replicas // hardware.workers if distribution == "multi_worker" else replicas,
        distribution=distribution, replicas=replicas, precision=precision,
        jit_compile=_jit_compile(request.jit_compile, backend, device_kind, distribution),
        batch_norm="keras" if backend == "jax" else "synchronized" if replicas > 1 else "fused",
        fold_jobs=jobs, threads=_threads(request, hardware.cores, max(request.launcher_jobs, jobs)),
        job_threads=_job_threads(request, hardware.cores, jobs),
    )


def _backend(hw: Hardware, asked: str) -> str:
    """The Keras backend: a TPU trains only through JAX (TensorFlow's TPUStrategy is gone from
    Kaggle's and Colab's TPU images)."""
    if asked == "auto":
        return "jax" if hw.tpu_cores else "tensorflow"
    if asked not in BACKENDS:
        raise UserError(f"backend={asked!r} is not one of {BACKENDS}")
    if asked == "tensorflow" and hw.tpu_cores:
        raise UserError(f"{hw.summary()}: a TPU trains through Keras 3 on JAX, not TensorFlow: use backend=jax or backend=auto")
    return asked


def _jax_distribution(hw: Hardware, request: Request) -> tuple[str, str, int]:
    """(distribution, device kind, replicas) on JAX: one fold's batches split over every visible
    device of the accelerator (keras.distribution.DataParallel), or one device."""
    name = request.strategy
    if name == "multi_worker":
        raise UserError("strategy=multi_worker is TensorFlow's: use backend=tensorflow, or train one machine's devices on JAX")
    if name == "tpu" and not hw.tpu_cores:
        raise UserError(NO_TPU)
    kind, count = ("tpu", hw.tpu_cores) if hw.tpu_cores else ("gpu", len(hw.gpus)) if hw.gpus else ("cpu", hw.cpu_devices)
    if name != "default" and count > 1:
        return "data_parallel", kind, min(count, request.devices or count)
    return "none", kind, 1


def _distribution(hw: Hardware, request: Request) -> tuple[str, str, int]:
    """(distribution, device kind, replicas) on TensorFlow."""
    name, gpu = request.strategy, "gpu" if hw.gpus else "cpu"
    if name == "multi_worker":
        return "multi_worker", gpu, hw.workers * max(1, len(hw.gpus))
    if name == "tpu":  # a TPU machine is never here (_backend)
        raise UserError(NO_TPU)
    if name == "mirrored" or (name == "auto" and len(hw.gpus) > 1):
        count = request.devices or len(hw.gpus)
        return "mirrored", gpu, max(1, count)
    return "none", gpu, 1


def _precision(hw: Hardware, device_kind: str) -> str:
    """bfloat16 where the units have it (TPU, compute capability ≥ 8.0, AVX512_BF16/AMX CPUs),
    float16 with loss scaling on compute capability 7.x (T4, V100: tensor cores, no bf16), else float32."""
    if device_kind == "tpu":
        return "mixed_bfloat16"
    if device_kind == "gpu":
        cc = hw.min_compute_capability
        return "mixed_bfloat16" if cc >= (8, 0) else "mixed_float16" if cc >= (7, 0) else "float32"
    return "mixed_bfloat16" if hw.cpu_bf16 else "float32"


def _jit_compile(asked: bool | str, backend: str, device_kind: str, distribution: str) -> bool | str:
    """XLA: as asked when asked; JAX always compiles; on one GPU Keras's own "auto" (on); under
    tf.distribute Keras turns "auto" off and so do we; on CPUs off (4-5x slower measured here)."""
    if isinstance(asked, bool):
        return asked
    if asked != "auto":
        raise UserError(f"jit_compile={asked!r}: give auto, true or false")
    if backend == "jax":
        return True
    return "auto" if device_kind == "gpu" and distribution == "none" else False


def check_counts(jobs: object, threads: object) -> None:
    """Refuse a `jobs` or `threads` that is neither auto nor a whole number from 1 (before any
    hardware is probed: src.request)."""
    _whole("jobs", jobs, "fold processes")
    _whole("threads", threads, "threads")


def _whole(key: str, value: object, what: str) -> None:
    if value not in (None, "auto") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"{key}={value!r}: need a whole number of {what}, at least 1, or auto")


def _fold_jobs(request: Request, cores: int, cpu_only: bool, one_replica: bool) -> int:
    """Folds at once, each in its own process: `auto` is one per core on a machine without
    accelerators (the default CNN keeps one core busier than TensorFlow's threads keep two), and
    1 with a GPU, a TPU or a strategy over several devices or machines."""
    _whole("jobs", request.jobs, "fold processes")
    jobs = request.jobs
    if jobs == "auto":
        jobs = cores if cpu_only else 1
    elif jobs > 1 and not one_replica:
        raise UserError(f"jobs={jobs} trains folds in separate processes, which a strategy over several replicas "
                        "cannot share: use jobs=1 with this strategy")
    return max(1, min(jobs, request.folds))


def _threads(request: Request, cores: int, processes: int) -> int | None:
    """TensorFlow threads of this process: `auto` leaves a process alone to TensorFlow's choice and
    gives each of several an equal share (the main process of fold jobs measures a time_limit's
    step as one job runs it); under `deterministic`, one (the same bits however folds run)."""
    threads = request.threads
    _whole("threads", threads, "threads")
    if threads in (None, "auto"):
        if request.deterministic:
            return 1
        if processes <= 1:
            return None
        threads = max(1, cores // min(processes, cores))
    return threads


def _job_threads(request: Request, cores: int, jobs: int) -> int:
    """Threads of each of `jobs` fold jobs: the number given, else an equal share of the cores
    (one under `deterministic`)."""
    if isinstance(request.threads, int) and not isinstance(request.threads, bool):
        return request.threads
    return 1 if request.deterministic else max(1, cores // jobs)
