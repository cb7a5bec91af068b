"""`backend=auto|tensorflow|jax`: what auto picks from what is installed, and the refusals."""
from __future__ import annotations

import os

import pytest

from src.errors import UserError
from src.runtime import Hardware, Request, backend, decide


@pytest.fixture
def fresh(monkeypatch):
    """A process where Keras is not imported yet, with `have` the importable packages."""
    def setup(*have: str, env: str | None = None) -> None:
        monkeypatch.setattr(backend, "running", lambda: None)
        monkeypatch.setattr(backend, "installed", lambda name: name in have)
        if env:
            monkeypatch.setenv("KERAS_BACKEND", env)
        else:
            monkeypatch.delenv("KERAS_BACKEND", raising=False)
    return setup


@pytest.mark.parametrize("have, env, picked", [
    (("tensorflow", "jax"), None, "tensorflow"),  # a CPU machine with both: TensorFlow is faster there
    (("tensorflow",), None, "tensorflow"),
    (("jax",), None, "jax"),  # a TPU VM or a JAX GPU image: no TensorFlow
    (("tensorflow", "jax", "jax_cuda12_plugin"), None, "jax"),  # JAX's CUDA wheel: the GPU route verified here
    (("tensorflow", "jax", "libtpu"), None, "jax"),
    (("tensorflow", "jax"), "jax", "jax"),  # KERAS_BACKEND, as Keras itself reads it
], ids=["both-cpu", "tf-only", "jax-only", "jax-cuda", "jax-tpu", "env"])
def test_auto_picks(fresh, have, env, picked):
    fresh(*have, env=env)
    assert backend.choose("auto") == picked


def test_refusals_name_the_fix(fresh):
    fresh("tensorflow")
    with pytest.raises(UserError, match=r"backend=jax: jax is not installed here: pip install -e '.\[jax\]'"):
        backend.choose("jax")
    with pytest.raises(UserError, match="backend='torch' is not one of"):
        backend.choose("torch")
    fresh()
    with pytest.raises(UserError, match=r"no Keras backend is installed here: pip install -e '.\[tf\]'"):
        backend.choose("auto")
    with pytest.raises(UserError, match="a SavedModel export needs tensorflow, which is not installed here"):
        backend.require("tensorflow", "a SavedModel export")


def test_a_process_whose_keras_runs_keeps_its_backend(monkeypatch):
    monkeypatch.setattr(backend, "running", lambda: "tensorflow")
    assert backend.choose("auto") == "tensorflow"
    with pytest.raises(UserError, match="Keras already runs on tensorflow in this process"):
        backend.choose("jax")


def test_select_sets_keras_backend_for_the_children(fresh, monkeypatch):
    fresh("tensorflow", "jax")
    assert backend.select("jax") == "jax"
    assert os.environ["KERAS_BACKEND"] == "jax"


@pytest.mark.parametrize("hardware, asked, expected", [
    (Hardware.cpu(2, amx=True), "jax", ("jax", "cpu", "none", 1, True, "keras")),
    (Hardware(cores=2, cpu_devices=2), "jax", ("jax", "cpu", "data_parallel", 2, True, "keras")),
    (Hardware.with_gpus(2, "Tesla T4", (7, 5)), "jax", ("jax", "gpu", "data_parallel", 2, True, "keras")),
    (Hardware.with_gpus(1, "NVIDIA H100 80GB HBM3", (9, 0)), "jax", ("jax", "gpu", "none", 1, True, "keras")),
    (Hardware(cores=96, tpu_cores=8), "auto", ("jax", "tpu", "data_parallel", 8, True, "keras")),
    (Hardware.with_gpus(2, "Tesla T4", (7, 5)), "tensorflow", ("tensorflow", "gpu", "mirrored", 2, False, "synchronized")),
], ids=["jax-cpu", "jax-2-host-devices", "jax-2xT4", "jax-H100", "tpu", "tf-2xT4"])
def test_the_runtime_on_each_backend(hardware, asked, expected):
    rt = decide(hardware, Request(backend=asked))
    assert (rt.backend, rt.device_kind, rt.distribution, rt.replicas, rt.jit_compile, rt.batch_norm) == expected


def test_jax_refuses_what_only_tensorflow_does():
    with pytest.raises(UserError, match="strategy=multi_worker is TensorFlow's"):
        decide(Hardware.cpu(2), Request(backend="jax", strategy="multi_worker"))
    with pytest.raises(UserError, match="a TPU trains through Keras 3 on JAX, not TensorFlow: use backend=jax"):
        decide(Hardware(cores=96, tpu_cores=8), Request(backend="tensorflow"))


@pytest.mark.parametrize("machine, env, expected", [
    ("x86_64", None, "1"),  # TensorFlow left alone turns oneDNN on only with AVX512_VNNI, AVX512_BF16 or AMX
    ("x86_64", "0", "0"),  # the user's choice stays
    ("aarch64", None, None),  # Arm: TensorFlow's own default
])
def test_cpu_kernels_turn_onednn_on_on_x86(monkeypatch, machine, env, expected):
    monkeypatch.setattr(backend.platform, "machine", lambda: machine)
    if env is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", env)
    backend.cpu_kernels()
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == expected
    assert backend.onednn() == (expected == "1")


def test_a_process_importing_src_runs_tensorflow_on_onednn():
    """The real import order: `import src` sets the variable before TensorFlow reads it, and the
    run's summary line names the kernels."""
    import subprocess
    import sys

    code = ("import src, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port as port\n"
            "from src.runtime import Hardware, Request, decide\n"
            "print(port.IsMklEnabled(), decide(Hardware.cpu(2), Request(backend='tensorflow')).summary())")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.startswith("True ") and "tensorflow, oneDNN," in out, out
