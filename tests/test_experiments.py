"""Every reference recipe is a ready experiment: its composed config, and a run of each on data=sample."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import REPO, compose_config, run_cv

EXPERIMENTS = ("kfold_cnn", "softmax", "mlp", "simple_cnn", "convbn", "autoencoder_classifier", "cnn_cosine_ema")

# (model builder, epochs, batch, optimizer, learning rate, lr decay per epoch, loss, folds, augmentation)
RECIPES = {
    "kfold_cnn": ("kfold_cnn", 45, 128, "Adam", 1e-3, 0.95, "categorical_crossentropy", 15, True),
    "softmax": ("softmax", 5, 32, "Adam", 1e-3, 1.0, "categorical_crossentropy", 1, False),
    "mlp": ("mlp", 5, 75, "Adam", 1e-3, 1.0, "categorical_crossentropy", 1, False),
    "simple_cnn": ("simple_cnn", 5, 32, "Adam", 1e-3, 1.0, "categorical_crossentropy", 1, False),
    "convbn": ("convbn", 10, 128, "Adam", 0.01, 0.6, "categorical_crossentropy", 1, False),
    "autoencoder_classifier": ("autoencoder_classifier", 150, 50, "Adadelta", 1.0, 1.0, "mean_squared_error", 1, False),
    "cnn_cosine_ema": ("kfold_cnn", 45, 128, "Adam", 2e-3, None, "categorical_crossentropy", 5, True),
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_config_is_its_recipe(name):
    cfg = compose_config([f"experiment={name}"])
    model, epochs, batch, optimizer, lr, decay, loss, folds, augment = RECIPES[name]
    assert cfg.model._target_ == f"src.models.{model}"
    assert (cfg.epochs, cfg.batch_size, cfg.fold, cfg.loss) == (epochs, batch, folds, loss)
    assert cfg.optimizer._target_ == f"keras.optimizers.{optimizer}" and cfg.optimizer.learning_rate == lr
    assert cfg.schedule.get("decay") == decay and cfg.augment.enabled == augment
    if name == "kfold_cnn":  # the seed recipe exactly: nothing of the later options
        assert (cfg.schedule._target_, cfg.label_smoothing, cfg.augment.elastic, cfg.time_limit) == ("src.training.schedules.exponential", 0.0, 0.0, None)
        assert (cfg.augment.crop, cfg.augment.erasing, cfg.augment.flip) == (0, 0.0, False)
        assert "use_ema" not in cfg.optimizer
    assert set(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")) == set(EXPERIMENTS)
    # the command line still wins over an experiment
    assert compose_config([f"experiment={name}", "epochs=1", "fold=2"]).epochs == 1


# By default the recipe with machinery of its own (EMA and cosine); the seed recipe (kfold_cnn: the
# default model, which most tests train), the autoencoder (its picture) and the plain models run
# whole under -m slow (tests/models/test_builders.py trains a step of each).
@pytest.mark.parametrize("names", [("cnn_cosine_ema",),
                                   pytest.param(("kfold_cnn", "autoencoder_classifier", "softmax", "mlp", "simple_cnn", "convbn"),
                                                marks=pytest.mark.slow)],
                         ids=["with_machinery", "plain_models"])
def test_every_experiment_runs_on_the_sample(tmp_path, names):
    sweep = tmp_path / "sweep"
    run_cv(["-m", f"experiment={','.join(names)}", "data=sample", "fold=2", "epochs=1",
            f"hydra.sweep.dir={sweep}", f"data.cache_dir={tmp_path / 'cache'}"])
    for job, name in enumerate(names):
        run_dir = sweep / str(job)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["complete"] and len(metrics["folds"]) == 2, name
        floor = 0.05 if name == "autoencoder_classifier" else 0.5  # MSE + Adadelta learns slowly: 1 epoch is near chance
        assert floor < metrics["cv_mean"] <= 1 and "test_accuracy" in metrics, name
        sub = pd.read_csv(run_dir / "submission.csv")
        assert len(sub) == 1000 and sub["Label"].between(0, 9).all()
        picture = run_dir / "autoencoder.png"
        if name == "autoencoder_classifier":
            assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 5000
            assert 0 < json.loads((run_dir / "autoencoder.json").read_text())["reconstruction_mse"] < 0.2
        else:
            assert not picture.exists()


@pytest.mark.parametrize("preset, flip", [("digit_recognizer", False), ("digits", False), ("kannada_mnist", False),
                                          ("sign_mnist", False), ("sample", False), ("idx", False), ("fashion_mnist", True)])
def test_flips_are_on_only_where_a_mirrored_image_keeps_its_class(preset, flip):
    assert compose_config([f"data={preset}"]).augment.flip is flip
