"""Parts a user swaps are built from config: their own model family, schedule and callback, each
one module and one YAML file outside src/ and conf/, on the real command and tiny real data."""
from __future__ import annotations

import json
import textwrap

import pytest

from conftest import compose_config, run_cv, tiny_overrides
from src.errors import UserError
from src.training import schedules

MODULE = '''
import keras

def tiny_dense(input_shape, num_classes, width=16):
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Dense(width, activation="relu")(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x))

class CountEpochs(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path
    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as f:
            f.write(f"{epoch}\\n")
'''


def _user_files(tmp_path):
    site, conf = tmp_path / "site", tmp_path / "myconf"
    site.mkdir()
    (site / "mine.py").write_text(MODULE)
    for group, text in {
        "model/tiny_dense": "_target_: mine.tiny_dense\n_partial_: true\nwidth: 8\n",
        "schedule/steps": """\
            _target_: keras.optimizers.schedules.PiecewiseConstantDecay
            boundaries: [5]
            values: [0.004, 0.0005]
            """,
        "callbacks/count": f"count:\n  _target_: mine.CountEpochs\n  path: {tmp_path / 'epochs.txt'}\n",
    }.items():
        path = conf / f"{group}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return site, conf


def test_a_users_model_schedule_and_callback_run_from_their_own_files(tiny, tmp_path):
    site, conf = _user_files(tmp_path)
    run_dir = tmp_path / "run"
    run_cv([f"--config-dir={conf}", *tiny_overrides(tiny, tmp_path), "model=tiny_dense", "schedule=steps",
            "callbacks=count", "epochs=2", f"hydra.run.dir={run_dir}"], site=site)
    record = json.loads((run_dir / "run.json").read_text())["config"]
    assert record["model._target_"] == "mine.tiny_dense" and record["model.width"] == 8
    assert record["schedule._target_"] == "keras.optimizers.schedules.PiecewiseConstantDecay"
    assert (tmp_path / "epochs.txt").read_text().split() == ["0", "1"] * 2  # two folds, two epochs each
    history = (run_dir / "fold_0" / "history.csv").read_text().splitlines()
    rates = [float(line.split(",")[history[0].split(",").index("learning_rate")]) for line in history[1:]]
    assert rates == pytest.approx([0.004, 0.0005])  # the boundary at step 5: a fold trains 5 or 6 steps per epoch


def test_a_callback_target_that_is_not_a_callback_is_refused_naming_it():
    from omegaconf import OmegaConf
    from src.training.callbacks import chosen_callbacks

    cfg = OmegaConf.create({"callbacks": {"oops": {"_target_": "builtins.dict"}}})
    with pytest.raises(UserError, match="callbacks.oops: 'builtins.dict' gave a dict"):
        chosen_callbacks(cfg)


def test_a_partial_schedule_is_finished_with_the_runs_peak_epochs_and_steps():
    cfg = compose_config(["schedule=exponential", "schedule.decay=0.5", "optimizer.learning_rate=0.01"])
    rate = schedules.build(cfg, steps_per_epoch=10)
    assert rate.learning_rate == 0.01
    assert rate.callbacks[0].schedule(3) == pytest.approx(0.01 * 0.5**3)
