"""The tf.distribute strategy, the batch split over replicas, and the precision policy."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import compose_config
from src.errors import UserError
from src.training.strategy import _cpu_has_bf16, check_batch, make_strategy, resolve_precision


def test_default_strategy_on_cpu_and_unknown_name_refused():
    assert make_strategy(compose_config(["strategy=default"]).strategy).num_replicas_in_sync == 1
    assert make_strategy(compose_config().strategy).num_replicas_in_sync == 1  # auto on a CPU-only machine
    cfg = compose_config()
    cfg.strategy.name = "gpu"
    with pytest.raises(UserError, match="not one of"):
        make_strategy(cfg.strategy)


def test_batch_must_split_evenly_over_replicas():
    two = SimpleNamespace(num_replicas_in_sync=2)
    assert check_batch(128, two) == 64
    with pytest.raises(UserError, match="does not split evenly over 2 replicas"):
        check_batch(33, two)


def test_precision_auto_and_named():
    default = make_strategy(compose_config(["strategy=default"]).strategy)
    assert resolve_precision("float32", default) == "float32"
    assert resolve_precision("mixed_bfloat16", default) == "mixed_bfloat16"
    assert resolve_precision("auto", default) == ("mixed_bfloat16" if _cpu_has_bf16() else "float32")
    with pytest.raises(UserError, match="not one of"):
        resolve_precision("fp8", default)
