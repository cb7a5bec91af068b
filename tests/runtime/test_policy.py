"""The runtime's decision table, from hand-written hardware: no GPU or TPU is needed to test it."""
from __future__ import annotations

import pytest

from src.errors import UserError
from src.runtime import Gpu, Hardware, Request, decide
from src.runtime.probe import cpu_flags

T4X2 = Hardware.with_gpus(2, "Tesla T4", (7, 5))  # Kaggle's default GPU
H100 = Hardware.with_gpus(1, "NVIDIA H100 80GB HBM3", (9, 0))
A100X8 = Hardware.with_gpus(8, "NVIDIA A100-SXM4-40GB", (8, 0))
V100 = Hardware.with_gpus(1, "Tesla V100-SXM2-16GB", (7, 0))
P100 = Hardware.with_gpus(1, "Tesla P100-PCIE-16GB", (6, 0))
AMX = Hardware.cpu(2, amx=True)
NO_BF16 = Hardware.cpu(4)
TPU = Hardware(cores=96, tpu_cores=8)


def row(hw, **asked):
    rt = decide(hw, Request(**asked))
    return (rt.backend, rt.device_kind, rt.device_count, rt.distribution, rt.replicas, rt.precision, rt.loss_scaling,
            rt.jit_compile, rt.batch_norm)


@pytest.mark.parametrize("hw, expected", [
    (T4X2, ("tensorflow", "gpu", 2, "mirrored", 2, "mixed_float16", True, False, "synchronized")),
    (H100, ("tensorflow", "gpu", 1, "none", 1, "mixed_bfloat16", False, "auto", "fused")),
    (A100X8, ("tensorflow", "gpu", 8, "mirrored", 8, "mixed_bfloat16", False, False, "synchronized")),
    (V100, ("tensorflow", "gpu", 1, "none", 1, "mixed_float16", True, "auto", "fused")),
    (P100, ("tensorflow", "gpu", 1, "none", 1, "float32", False, "auto", "fused")),
    (AMX, ("tensorflow", "cpu", 1, "none", 1, "mixed_bfloat16", False, False, "fused")),
    (Hardware.cpu(2, bf16=True), ("tensorflow", "cpu", 1, "none", 1, "mixed_bfloat16", False, False, "fused")),
    (NO_BF16, ("tensorflow", "cpu", 1, "none", 1, "float32", False, False, "fused")),
    # A TPU trains through Keras 3 on JAX with DataParallel (issue 23), never TensorFlow's TPUStrategy.
    (TPU, ("jax", "tpu", 8, "data_parallel", 8, "mixed_bfloat16", False, True, "keras")),
], ids=["2xT4", "1xH100", "8xA100", "1xV100", "1xP100", "cpu-amx", "cpu-avx512bf16", "cpu-no-bf16", "tpu-v5e-8"])
def test_decision_table(hw, expected):
    assert row(hw) == expected


def test_an_explicit_choice_wins():
    assert decide(T4X2, Request(precision="float32")).precision == "float32"
    assert not decide(T4X2, Request(precision="float32")).loss_scaling
    assert decide(AMX, Request(precision="float32")).precision == "float32"
    assert decide(NO_BF16, Request(precision="mixed_float16")).loss_scaling
    assert decide(T4X2, Request(jit_compile=True)).jit_compile is True  # on under MirroredStrategy only when asked
    assert decide(H100, Request(jit_compile=False)).jit_compile is False
    assert decide(AMX, Request(jit_compile=True)).jit_compile is True
    one = decide(T4X2, Request(strategy="default"))  # one of the two GPUs, no strategy
    assert (one.distribution, one.replicas, one.batch_norm, one.jit_compile) == ("none", 1, "fused", "auto")
    picked = decide(A100X8, Request(strategy="mirrored", devices=2))
    assert (picked.replicas, picked.device_count) == (2, 2)


def test_mixed_gpus_take_the_weakest():
    hw = Hardware(cores=8, gpus=(Gpu("NVIDIA A100", (8, 0)), Gpu("Tesla T4", (7, 5))))
    assert decide(hw, Request()).precision == "mixed_float16"


def test_multi_worker_and_refusals():
    mw = decide(Hardware(cores=2, workers=3), Request(strategy="multi_worker"))
    assert (mw.distribution, mw.replicas, mw.device_count, mw.batch_norm, mw.jit_compile) == ("multi_worker", 3, 1, "synchronized", False)
    assert mw.fold_jobs == 1 and mw.accelerated
    with pytest.raises(UserError, match="strategy=tpu: this machine shows no TPU"):
        decide(AMX, Request(strategy="tpu"))
    for bad, match in [({"strategy": "gpu"}, "not one of"), ({"precision": "fp8"}, "not one of"),
                       ({"jit_compile": "yes"}, "give auto, true or false"), ({"threads": 0}, "threads=0"),
                       ({"jobs": 0}, "jobs=0")]:
        with pytest.raises(UserError, match=match):
            decide(AMX, Request(**bad))
    with pytest.raises(UserError, match="jobs=2 trains folds in separate processes"):
        decide(T4X2, Request(jobs=2, folds=5))


def test_fold_jobs_and_threads():
    cpu = decide(AMX, Request(jobs="auto", folds=5))
    assert (cpu.fold_jobs, cpu.threads, cpu.job_threads) == (2, 1, 1)  # the main process measures as one job runs
    assert decide(AMX, Request(jobs="auto", folds=1)).fold_jobs == 1
    assert decide(AMX, Request(jobs=1)).threads is None  # one process: TensorFlow's own choice
    assert decide(AMX, Request(jobs=1, deterministic=True)).threads == 1
    assert decide(AMX, Request(jobs=1, launcher_jobs=2)).threads == 1
    assert decide(Hardware.cpu(8), Request(jobs="auto", folds=3, threads=2)).job_threads == 2
    assert decide(H100, Request(jobs="auto", folds=5)).fold_jobs == 1  # a GPU trains one fold at a time
    assert decide(H100, Request(jobs=2, folds=5)).fold_jobs == 2  # asked: one replica each, so allowed


def test_record_and_what_changed():
    rt = decide(T4X2, Request())
    assert rt.record() == {"backend": "tensorflow", "device_kind": "gpu", "device_count": 2,
                           "precision": "mixed_float16", "jit_compile": False, "distribution": "mirrored"}
    on_cpu = decide(AMX, Request(precision=rt.precision))  # a resume keeps the recorded precision
    assert on_cpu.changes_from(rt.record()) == ["device_kind: gpu → cpu", "device_count: 2 → 1", "distribution: mirrored → none"]
    assert "2 x Tesla T4 (compute capability 7.5)" in rt.summary() and "loss scaling" in rt.summary()


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile sse\nprocessor\t: 1\n")
    assert cpu_flags(str(info)) == {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "none")) == frozenset()
