"""What the runtime's decisions turn into under TensorFlow and Keras: the strategy, the batch
split, the dtype policy with loss scaling, XLA, and the BatchNorm a model is built with."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import compose_config
from src.errors import UserError
from src.inputs.folds import FoldData
from src.models import BatchNormalization, FusedBatchNorm, convbn, kfold_cnn, load_model
from src.runtime import Hardware, Request, activate, current, decide
from src.runtime.probe import probe
from src.training.fold import Placement, compile_model
from src.training.strategy import check_batch, make_strategy, request


def test_probe_and_strategy_on_this_cpu():
    hw = probe()
    assert not hw.gpus and not hw.tpu_cores and hw.cores >= 1
    runtime = decide(hw, request(compose_config()))
    assert runtime.precision == ("mixed_bfloat16" if hw.cpu_bf16 else "float32")
    assert make_strategy(runtime, compose_config().strategy).num_replicas_in_sync == 1
    assert decide(hw, request(compose_config(["precision=float32"]))).precision == "float32"


def test_batch_must_split_evenly_over_replicas():
    assert check_batch(128, 2) == 64
    with pytest.raises(UserError, match="does not split evenly over 2 replicas"):
        check_batch(33, 2)


def _fold(n: int = 64) -> FoldData:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, n)
    return FoldData(0, x, y, x[:32], y[:32], np.arange(32), x[:8], 10)


@pytest.mark.parametrize("hw, policy, scaled", [
    (Hardware.with_gpus(1, "Tesla T4", (7, 5)), "mixed_float16", True),
    (Hardware.with_gpus(1, "NVIDIA H100", (9, 0)), "mixed_bfloat16", False),
    (Hardware.cpu(2), "float32", False),
])
def test_compiled_model_follows_the_runtime(hw, policy, scaled):
    """Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer; the softmax stays float32."""
    runtime = decide(hw, Request())
    place = Placement(runtime, make_strategy(runtime, compose_config().strategy))
    model = compile_model(_fold(), compose_config(["batch_size=32"]), place)
    try:
        assert model.dtype_policy.name == policy
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
        assert model.layers[-1].dtype_policy.compute_dtype == "float32"
        assert model(np.zeros((2, 28, 28, 1), "float32")).dtype == "float32"
        assert model.jit_compile is False  # Keras's "auto" (one GPU) is off on a CPU-only machine: checked on a GPU in issue 23
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_one_batch_norm_owner_whatever_the_runtime(tmp_path):
    """The BatchNorm classes, and so the weight paths, are the same on one replica and on several;
    a model built synchronised saves without it and loads on any runtime."""
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    try:
        activate(decide(Hardware.with_gpus(2, "Tesla T4", (7, 5)), Request(precision="float32")))
        assert current().batch_norm == "synchronized"
        synced = convbn((28, 28, 1), 10)
        bns = [l for l in synced.layers if isinstance(l, BatchNormalization)]
        assert len(bns) == 4 and all(l.synchronized and not l.get_config()["synchronized"] for l in bns)
        cnn = kfold_cnn((28, 28, 1), 10)
        assert all(not l._fused and l.synchronized for l in cnn.layers if isinstance(l, FusedBatchNorm))
        cnn.save(tmp_path / "mirrored.keras")
        cnn.save_weights(tmp_path / "mirrored.weights.h5")
    finally:
        activate(decide(Hardware.cpu(2), Request(precision="float32")))
    loaded = load_model(tmp_path / "mirrored.keras")
    assert all(l._fused and not l.synchronized for l in loaded.layers if isinstance(l, FusedBatchNorm))
    np.testing.assert_allclose(loaded.predict(images, verbose=0), cnn.predict(images, verbose=0), atol=1e-5)
    fresh = kfold_cnn((28, 28, 1), 10)
    fresh.load_weights(tmp_path / "mirrored.weights.h5")  # a fold's state resumes on one replica
    np.testing.assert_allclose(fresh.predict(images, verbose=0), cnn.predict(images, verbose=0), atol=1e-5)
