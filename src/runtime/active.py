"""The process's runtime: set once by the command that decides it, read by whatever builds or
trains a model (the BatchNorm kernel, the dtype policy, XLA)."""
from __future__ import annotations

from src.runtime.hardware import Hardware
from src.runtime.policy import Request, Runtime, decide

_ACTIVE: list[Runtime] = []


def activate(runtime: Runtime) -> Runtime:
    """Make `runtime` the process's own (a later call replaces it: a test, or a new config)."""
    _ACTIVE[:] = [runtime]
    return runtime


def current() -> Runtime:
    """The process's runtime; outside a command (a builder called from a notebook or a test), one
    replica on the CPU in float32 on the Keras backend running (TensorFlow when none is yet),
    which is how a model is built and saved anywhere."""
    if not _ACTIVE:
        from src.runtime.backend import running

        return decide(Hardware(), Request(precision="float32", backend=running() or "tensorflow"))
    return _ACTIVE[0]
