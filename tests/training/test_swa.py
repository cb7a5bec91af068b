"""Stochastic weight averaging: the average, BatchNorm's statistics for it, and a killed fold
that continues its average from the checkpoint."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from conftest import KILL_MID_EPOCH, run_cv, tiny_overrides
from src.training.swa import SWA, recompute_batch_norm


def _model():
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(momentum=0.9)(keras.layers.Dense(4)(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_the_average_runs_over_the_last_epochs_and_survives_a_checkpoint():
    model = _model()
    swa = SWA(start=0.5)
    swa.set_model(model)
    swa.set_params({"epochs": 4})
    seen = []
    for epoch in range(4):
        for v in model.trainable_variables:
            v.assign(np.full(v.shape, epoch + 1.0, "float32"))
        swa.on_epoch_end(epoch)
        if epoch == 2:  # a fold killed here resumes with a fresh callback and the checkpoint's arrays
            saved = swa.state_arrays()
            swa = SWA(start=0.5)
            swa.set_model(model)
            swa.set_params({"epochs": 4})
            swa.load_state_arrays(saved)
        seen.append(swa.count)
    assert seen == [0, 0, 1, 2]  # epochs 3 and 4 (1-based) are averaged
    said = swa.finish(model, np.random.default_rng(0).normal(size=(64, 3)))
    assert said == {"model": "swa", "averaged_epochs": 2}
    for v in model.trainable_variables:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), 3.5)


def test_batch_norm_statistics_are_the_plain_average_over_the_images():
    inputs = keras.Input((3,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(inputs))
    images = np.random.default_rng(1).normal(loc=[1, -2, 5], scale=[1, 2, 3], size=(400, 3)).astype("float32")
    recompute_batch_norm(model, images, batch_size=100)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), images.mean(0), rtol=1e-5)
    batch_vars = np.mean([images[i:i + 100].var(0) for i in range(0, 400, 100)], axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), batch_vars, rtol=1e-4)
    assert bn.momentum == 0.99


def test_an_swa_fold_killed_mid_average_continues_it_from_the_checkpoint(tiny, tmp_path):
    args = tiny_overrides(tiny, tmp_path) + ["epochs=3", "callbacks=swa", "callbacks.swa.start=0.5", "deterministic=true"]
    broken = tmp_path / "broken"
    proc = run_cv(args + [f"hydra.run.dir={broken}"], prelude=KILL_MID_EPOCH.format(fold=0, epoch=3, batch=2), check=False)
    assert proc.returncode == -9
    state = json.loads((broken / "fold_0" / "train" / "state.json").read_text())
    assert state["epoch"] == 2 and state["parts"]["swa"]["file"] == "swa-2.npz"  # epoch 2's average is committed
    run_cv(args + [f"hydra.run.dir={broken}"])
    assert "fold 0: resuming after epoch 2" in (broken / "cv.log").read_text()
    for k in range(2):  # fold 0's average holds epoch 2 from the checkpoint and epoch 3 after the resume
        done = json.loads((broken / f"fold_{k}" / "done.json").read_text())
        assert done["model"] == "swa" and done["averaged_epochs"] == 2 and done["best_epoch"] == 3
    assert not list((broken / "fold_0").glob("train"))  # the state, the average's file included, is gone


def test_a_bad_start_is_refused():
    with pytest.raises(ValueError, match="start=1"):
        SWA(start=1)
