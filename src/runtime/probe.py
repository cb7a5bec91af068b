"""Fill a `Hardware` from the real machine: cheap (nothing compiled), and the only place that asks
TensorFlow or JAX for devices or reads /proc/cpuinfo."""
from __future__ import annotations

import glob
import json
import os
import re

import joblib

from src.runtime.hardware import Gpu, Hardware

# Set on Colab, Kaggle and Cloud TPU VMs; looking for a TPU without one of these can hang on a
# metadata-server lookup, so a TPU is only counted when there is a hint.
TPU_HINTS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "KAGGLE_TPU")
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx512_fp16")


def probe(backend: str = "tensorflow") -> Hardware:
    """This machine: cores (affinity and cgroup quotas respected), the CPU flags that matter, the
    GPUs the backend sees with their compute capability, TPU cores, and TF_CONFIG's workers."""
    if backend == "jax":
        return jax_hardware(joblib.cpu_count(), cpu_flags())
    return Hardware(cores=joblib.cpu_count(), cpu_flags=cpu_flags(), gpus=gpus(), tpu_cores=tpu_cores(),
                    workers=workers())


def jax_hardware(cores: int, flags: frozenset[str]) -> Hardware:
    """What JAX sees: its default platform's devices (TPU cores, GPUs, or the host's CPU devices)."""
    import jax

    devices = jax.devices()
    platform = devices[0].platform
    found = tuple(Gpu(d.device_kind, _capability(d)) for d in devices) if platform == "gpu" else ()
    return Hardware(cores=cores, cpu_flags=flags, gpus=found, tpu_cores=len(devices) if platform == "tpu" else 0,
                    cpu_devices=len(devices) if platform == "cpu" else 1)


def _capability(device) -> tuple[int, int]:
    """A JAX CUDA device's compute capability ("9.0" → (9, 0)); (0, 0) where it does not say."""
    match = re.match(r"(\d+)\.(\d+)", str(getattr(device, "compute_capability", "")))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU flags of `CPU_FLAGS` that the first processor lists (none where there is no /proc)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split()) & frozenset(CPU_FLAGS)
    except OSError:
        pass
    return frozenset()


def gpus() -> tuple[Gpu, ...]:
    """The GPUs TensorFlow sees (physical devices: listing them initialises none)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        cc = details.get("compute_capability") or (0, 0)
        found.append(Gpu(details.get("device_name", device.name), (int(cc[0]), int(cc[1]))))
    return tuple(found)


def tpu_cores() -> int:
    """TPU devices where a TPU is hinted at: the accelerator type's count (`v5litepod-8`), else
    one per /dev/accel* chip, else the 8 of a Kaggle or Colab TPU."""
    if not (any(os.environ.get(k) for k in TPU_HINTS) or glob.glob("/dev/accel*")):
        return 0
    kind = re.search(r"-(\d+)$", os.environ.get("TPU_ACCELERATOR_TYPE", ""))
    return int(kind.group(1)) if kind else len(glob.glob("/dev/accel*")) or 8


def workers() -> int:
    """The machines of TF_CONFIG's cluster (1 without one; a bad TF_CONFIG is refused where it is used)."""
    try:
        return max(1, sum(len(v) for v in json.loads(os.environ["TF_CONFIG"])["cluster"].values()))
    except (KeyError, ValueError, TypeError, AttributeError):
        return 1
