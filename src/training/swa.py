"""Stochastic weight averaging (`callbacks=swa`, conf/callbacks/swa.yaml).

The average of the weights at the end of each of a fold's last epochs (Izmailov et al. 2018)
sits in a wider optimum than any one of them. Its running average is part of the fold's
checkpoint (FoldCheckpoint saves it beside the weights each epoch), so a resumed fold continues
it. When the fold's training ends the averaged weights replace the trained ones, BatchNorm's
statistics are computed again for them over the training images (the ones kept from training
belong to other weights), and that model is the fold's: it predicts, it is saved as the fold's
model.keras, and done.json says `"model": "swa"`.
"""
from __future__ import annotations

import logging
import math

import keras
import numpy as np

log = logging.getLogger(__name__)


class SWA(keras.callbacks.Callback):
    """Average the trainable weights over the epochs after the first `start` share of the fold's epochs."""

    checkpoint_name = "swa"  # FoldCheckpoint keeps `state_arrays()` in the fold's checkpoint

    def __init__(self, start: float = 0.75, bn_batch_size: int = 256) -> None:
        super().__init__()
        if not 0 <= start < 1:
            raise ValueError(f"SWA start={start}: give the share of epochs before averaging starts, from 0 up to 1")
        self.start, self.bn_batch_size = start, bn_batch_size
        self.count, self.average = 0, None

    def first_epoch(self, epochs: int) -> int:
        """The 0-based first epoch whose weights join the average."""
        return min(epochs - 1, math.floor(self.start * epochs))

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.first_epoch(self.params["epochs"]):
            return
        weights = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in self.model.trainable_variables]
        if self.average is None:
            self.average = weights
        else:
            self.average = [a + (w - a) / (self.count + 1) for a, w in zip(self.average, weights)]
        self.count += 1

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The running average, for the fold's checkpoint."""
        arrays = {"count": np.asarray(self.count)}
        return arrays | {f"w{i}": a for i, a in enumerate(self.average or [])}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue the running average a checkpoint kept."""
        self.count = int(arrays["count"])
        self.average = [arrays[f"w{i}"] for i in range(len(arrays) - 1)] if self.count else None

    def finish(self, model: keras.Model, images: np.ndarray) -> dict | None:
        """Put the average into `model` and recompute its BatchNorm statistics over `images`
        (the fold's training rows); what done.json says of it, or None when no epoch was
        averaged (the model is left alone)."""
        if not self.count:
            return None
        if len(self.average) != len(model.trainable_variables):
            raise ValueError(f"SWA: the average holds {len(self.average)} arrays, the model {len(model.trainable_variables)}")
        for variable, value in zip(model.trainable_variables, self.average):
            variable.assign(value.astype(variable.dtype))
        recompute_batch_norm(model, images, self.bn_batch_size)
        log.info("SWA: the fold's model is the average of its last %d epoch(s), BatchNorm statistics recomputed", self.count)
        return {"model": "swa", "averaged_epochs": self.count}


def recompute_batch_norm(model: keras.Model, images: np.ndarray, batch_size: int) -> None:
    """Set every BatchNorm layer's moving statistics to their plain average over `images`, one
    forward pass in training mode (no weight changes): momentum n / (n + 1) at the n-th batch."""
    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, layer.moving_mean.dtype))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, layer.moving_variance.dtype))
    starts = range(0, max(len(images) - batch_size, 0) + 1, batch_size)  # full batches (one short one if that is all)
    try:
        for n, start in enumerate(starts):
            for layer in layers:
                layer.momentum = n / (n + 1)
            model(images[start:start + batch_size].astype("float32"), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
