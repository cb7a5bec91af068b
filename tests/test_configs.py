"""Every config group composes and instantiates; unknown keys are rejected."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from conftest import REPO, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def test_defaults_match_the_recipe():
    cfg = compose_config()
    assert (cfg.fold, cfg.epochs, cfg.batch_size, cfg.split) == (15, 45, 128, "kfold")
    assert cfg.optimizer.learning_rate == 1e-3 and cfg.schedule.decay == 0.95
    assert cfg.augment.rotation == 10 and cfg.augment.zoom == 0.1
    assert cfg.strategy.name == "auto"
    assert (cfg.data.train, cfg.data.test) == ("data/train.csv", "data/test.csv")


@pytest.mark.parametrize("group", ["data", "model", "augment", "optimizer", "schedule", "strategy", "debug"])
def test_every_option_composes(group):
    for name in options(group):
        cfg = compose_config([f"{group}={name}"])
        if group == "model":
            model = instantiate(cfg.model)(input_shape=(28, 28, 1), num_classes=10)
            assert model.output_shape == (None, 10)
        if group == "optimizer":
            assert instantiate(cfg.optimizer)().learning_rate is not None


def test_sample_data_suggests_its_own_batch_and_cli_wins():
    assert compose_config(["data=sample"]).batch_size == 32
    assert compose_config(["data=sample", "batch_size=64"]).batch_size == 64


@pytest.mark.parametrize("bad", ["epoch=3", "model.dropuot=0.3", "augment.rotate=5", "data.path=x"])
def test_unknown_keys_are_rejected(bad):
    with pytest.raises(ConfigCompositionException):
        compose_config([bad])


@pytest.mark.parametrize("launcher, target", [("parallel", "JoblibLauncher"), ("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_shipped_launcher_configs_compose(launcher, target):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
