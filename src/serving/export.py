"""A finished run's fold ensemble as ONE SavedModel for serving (`python -m src.export run_dir=DIR`).

Writes `DIR/export/<version>/` (version = the next integer, as TensorFlow Serving expects), with
two endpoints, both taking raw 0-255 pixels and returning the class probabilities averaged over
the folds (`labels.json` beside them names the label of each output):

    serve          (serving_default)  float32 [N, H*W*C]: rows of a competition CSV
    serve_images                      float32 [N, H, W, C]

Models that chain several parts (the autoencoder_classifier recipe) are exported whole.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from src import models  # noqa: F401  (registers the custom layers the fold models use)
from src import rundir
from src.errors import UserError
from src.files import write_json
from src.models import load_model
from src.runtime.backend import require

log = logging.getLogger(__name__)

def load_folds(run_dir: Path) -> tuple[list[keras.Model], dict]:
    """Every fold's best model of a finished run, and the run's recorded config."""
    config = rundir.finished_config(run_dir)
    folds = int(config["fold"])
    loaded = []
    for k in range(folds):
        model = load_model(rundir.fold_dir(run_dir, k) / rundir.MODEL, compile=False)
        loaded.append(keras.Model(model.inputs[0], model.outputs[0], name=f"fold_{k}"))  # unique names in the ensemble
    return loaded, config


def ensemble_model(folds: list[keras.Model], image_shape: tuple[int, int, int]) -> keras.Model:
    """One model: images in, the folds' mean class probabilities out."""
    images = keras.Input(shape=image_shape, name="images")
    outputs = [m(images) for m in folds]
    probs = keras.layers.Average(name="mean_probs")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(images, probs, name="fold_ensemble")


def export(run_dir: Path, version: int | None = None) -> Path:
    """Write the run's ensemble to run_dir/export/<version>/ (atomically: a temp dir renamed)."""
    require("tensorflow", "a SavedModel export")
    import tensorflow as tf

    folds, config = load_folds(run_dir)
    shape = tuple(int(s) for s in config["data"]["image_shape"])
    model = ensemble_model(folds, shape)
    root = run_dir / rundir.EXPORT
    version = version if version is not None else max(rundir.exports(run_dir), default=0) + 1
    target = root / str(version)
    if target.exists():
        raise UserError(f"{target} already exists: choose another version= or leave it out for the next one")
    flat = int(tf.reduce_prod(shape))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda pixels: model(tf.reshape(pixels, (-1, *shape)), training=False),
        input_signature=[tf.TensorSpec([None, flat], tf.float32, name="pixels")],
    )
    archive.add_endpoint(
        "serve_images",
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec([None, *shape], tf.float32, name="images")],
    )
    tmp = root / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    classes = rundir.read_submission_format(run_dir).labels(np.arange(int(config["data"]["num_classes"])))
    try:
        archive.write_out(str(tmp), verbose=False)
        write_json(tmp / rundir.LABELS, {"classes": [c.item() if isinstance(c, np.generic) else c for c in classes],
                                  "image_shape": list(shape)})
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported the ensemble of %d fold(s) to %s (serving_default: float32 [N, %d] pixels 0-255 → "
             "class probabilities)", len(folds), target, flat)
    return target
