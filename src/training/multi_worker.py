"""MultiWorkerMirroredStrategy with Keras 3: one fold's training spread over several machines.

Keras 3's `fit` does not run under this strategy as released (keras-team/keras#20585): it
reduces the first batch eagerly to build the model, and reduces scalar logs along axis 0, and
both raise. The two workarounds here are applied only under this strategy: the model is built
from one local batch before `fit`, and scalar logs are averaged over workers with axis=None.
"""
from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

from src.errors import UserError

log = logging.getLogger(__name__)

_keras_reduce_per_replica = tf_trainer.reduce_per_replica


def make_strategy() -> tf.distribute.Strategy:
    """The strategy over the cluster that TF_CONFIG describes (one process per machine)."""
    try:
        spec = json.loads(os.environ["TF_CONFIG"])
        task = spec["task"]["type"], int(spec["task"]["index"])
        workers = sum(len(v) for v in spec["cluster"].values())
    except KeyError:
        raise UserError(
            "strategy=multi_worker needs TF_CONFIG, e.g. "
            '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\' '
            "set on every machine with its own index"
        ) from None
    except (ValueError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not valid JSON with cluster and task ({e})") from None
    log.info("multi-worker: %s %d of %d worker(s)", *task, workers)
    tf_trainer.reduce_per_replica = _reduce_per_replica
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def prepare(model: keras.Model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> None:
    """Build `model` (weights, optimizer, metrics) from one local batch of `dataset` before `fit`."""
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(dataset)))
    model._maybe_symbolic_build = lambda *args, **kwargs: None


def _reduce_per_replica(values, strategy, reduction):
    if is_multi_worker(strategy) and reduction in ("auto", "mean"):
        return tf.nest.map_structure(
            lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues) else v,
            values,
        )
    return _keras_reduce_per_replica(values, strategy, reduction)
