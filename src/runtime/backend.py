"""Which Keras backend a process runs on, chosen before Keras's first import.

Keras fixes its backend when it is first imported (from `KERAS_BACKEND`), so the choice is made
here, from the config's `backend` and what is installed, without importing Keras, TensorFlow or
JAX. `select` sets `KERAS_BACKEND`, which fold jobs and launcher jobs inherit.

`auto` is `KERAS_BACKEND` when it is set, else JAX where TensorFlow is not installed or JAX has
an accelerator plugin (CUDA or TPU: TensorFlow's TPU route is gone from Kaggle's and Colab's TPU
images), else TensorFlow (faster on CPUs: docs/hardware.md).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
import sys

from src.errors import UserError

BACKENDS = ("auto", "tensorflow", "jax")
ACCELERATOR_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin", "libtpu")
INSTALL = {"tensorflow": "pip install -e '.[tf]'", "jax": "pip install -e '.[jax]' (docs/hardware.md: the CUDA or TPU wheel)"}


def installed(name: str) -> bool:
    """Whether `name` can be imported (looked up, not imported; a blocked import counts as missing)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def choose(asked: str = "auto") -> str:
    """`tensorflow` or `jax` for `backend=asked`; UserError when it is not installed."""
    if asked not in BACKENDS:
        raise UserError(f"backend={asked!r} is not one of {BACKENDS}")
    now = running()
    if asked == "auto":
        asked = now or _auto()
    if now and now != asked:
        raise UserError(f"backend={asked}: Keras already runs on {now} in this process (it fixes its backend at its "
                        f"first import): start a new process, or set KERAS_BACKEND={asked}")
    if not installed(asked):
        if not (installed("tensorflow") or installed("jax")):
            raise UserError("no Keras backend is installed here: pip install -e '.[tf]' (CPUs, GPUs) or "
                            "pip install -e '.[jax]' (TPUs, GPUs; docs/hardware.md)")
        raise UserError(f"backend={asked}: {asked} is not installed here: {INSTALL[asked]}")
    return asked


def select(asked: str = "auto") -> str:
    """Choose the backend and make it the process's (and its children's) before Keras is imported."""
    chosen = choose(asked)
    os.environ["KERAS_BACKEND"] = chosen
    if chosen == "jax":  # its INFO line on every machine without a TPU: "Unable to initialize backend 'tpu'"
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    return chosen


def require(name: str, what: str) -> None:
    """UserError naming `what` needs `name` and how to install it, where it is not installed."""
    if not installed(name):
        fix = "pip install tensorflow-cpu (or tensorflow for its GPU kernels)" if name == "tensorflow" else INSTALL[name]
        raise UserError(f"{what} needs {name}, which is not installed here: {fix}")


def default() -> None:
    """Set `KERAS_BACKEND` to auto's choice unless it is set, so that a command importing Keras
    gets a backend that is installed; quietly does nothing when neither is."""
    if "KERAS_BACKEND" not in os.environ and running() is None:
        chosen = _auto()
        if installed(chosen):
            os.environ["KERAS_BACKEND"] = chosen


def cpu_kernels() -> None:
    """TensorFlow's oneDNN kernels on every x86-64 CPU, unless `TF_ENABLE_ONEDNN_OPTS` is set.

    TensorFlow turns them on by itself only where the CPU has AVX512_VNNI, AVX512_BF16 or AMX; on
    an AVX2 CPU (a 2-core Zen 3 EPYC) they train the default CNN about 1.5x as fast as its Eigen
    kernels (docs/performance.md). Read once, at TensorFlow's import: set before it.
    """
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def onednn() -> bool:
    """Whether this process's TensorFlow CPU ops run on oneDNN (as far as the environment says)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("1", "true")


def running() -> str | None:
    """The backend of the Keras already imported in this process, if any."""
    keras = sys.modules.get("keras")
    if keras is None or not hasattr(keras, "backend"):
        return None
    return keras.backend.backend()


def _auto() -> str:
    env = os.environ.get("KERAS_BACKEND")
    if env in ("tensorflow", "jax"):
        return env
    if not installed("tensorflow"):
        return "jax"
    if installed("jax") and any(installed(p) for p in ACCELERATOR_PLUGINS):
        return "jax"
    return "tensorflow"
