"""The runtime: every hardware decision of a process in one frozen object.

`Hardware` describes the machine (a test writes one by hand; `probe()` reads the real one),
`decide(hardware, request)` turns it and the config's wishes into a `Runtime` (device, replicas,
distribution, dtype policy, loss scaling, XLA, BatchNorm kernel, threads), and `activate` makes
it the process's own, which the model builders and the training stage then ask instead of
re-asking TensorFlow or re-reading /proc/cpuinfo. docs/hardware.md has the table.
"""
from src.runtime.hardware import Gpu, Hardware
from src.runtime.policy import PRECISIONS, Request, Runtime, decide
from src.runtime.active import activate, current

__all__ = ["Gpu", "Hardware", "PRECISIONS", "Request", "Runtime", "decide", "activate", "current"]
