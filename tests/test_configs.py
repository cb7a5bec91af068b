"""Every config group composes and instantiates; unknown keys and values of the wrong type are rejected."""
from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import REPO, compose_config, run_cv
from src.errors import UserError
from src.schema import check_keys  # importing it registers the schemas that conf/*.yaml name


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


@pytest.mark.parametrize("bad, key, expected", [
    ("fold=abc", "fold", "Integer"), ("epochs=1.5", "epochs", "Integer"),
    ("model.dropout=high", "model.dropout", "Float"), ("augment.flip=maybe", "augment.flip", "bool"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_key_and_the_type(bad, key, expected):
    with pytest.raises(ConfigCompositionException) as refused:
        compose_config([bad])
    message = f"{refused.value}\n{refused.value.__cause__}"
    assert f"full_key: {key}\n" in message and expected in message


@pytest.mark.parametrize("overrides, message", [
    (["+epoch=3"], "unknown config key 'epoch': did you mean 'epochs'?"),
    (["+model.dropuot=0.3"], "unknown config key 'model.dropuot': did you mean 'model.dropout'?"),
    (["+pseudo.threshhold=0.5"], "unknown config key 'pseudo.threshhold': did you mean 'pseudo.threshold'?"),
    (["optimizer.learnin_rate=0.1"], "unknown config key 'optimizer.learnin_rate': did you mean 'optimizer.learning_rate'?"),
    (["logger=mlflow", "+logger.uri=x"], "unknown config key 'logger.uri'"),
    (["+optimizer.use_ema=maybe"], "optimizer.use_ema: Value 'maybe' is not a valid bool"),
])
def test_a_key_added_outside_the_schema_is_refused_naming_it(overrides, message):
    cfg = compose_config(overrides, checked=False)  # Hydra adds a key with +, and the optimizer is open to Keras' arguments
    with pytest.raises(UserError, match=re.escape(message)):
        check_keys(cfg)


def test_keras_optimizer_arguments_can_be_set():
    cfg = compose_config(["optimizer.use_ema=true", "+optimizer.ema_momentum=0.9", "optimizer.weight_decay=0.004", "optimizer.clipnorm=1"])
    check_keys(cfg)
    optimizer = instantiate(cfg.optimizer)()
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9 and optimizer.weight_decay == 0.004 and optimizer.clipnorm == 1


def _recipes() -> list[list[str]]:
    return ([[]] + [[f"experiment={name}"] for name in options("experiment")] + [[f"data={name}"] for name in options("data")]
            + [["debug=default"], ["logger=mlflow"], ["hparams_search=optuna"],
               ["experiment=cnn_cosine_ema", "data=fashion_mnist", "debug=default", "logger=mlflow"],
               ["experiment=autoencoder_classifier", "data=idx"], ["experiment=mlp", "data=sample"]])


@pytest.mark.parametrize("overrides", _recipes(), ids=lambda o: " ".join(o) or "defaults")
def test_every_recipe_and_preset_fits_the_schema_which_adds_no_key(overrides):
    cfg = compose_config(overrides)
    check_keys(cfg)
    assert "???" not in OmegaConf.to_yaml(cfg)  # the YAML files set every key the schema names: it adds none


COMMANDS = {
    "ensemble": ["run_dir=/r"], "report": ["run_dir=/r"], "export": ["run_dir=/r"], "serve": ["run_dir=/r"],
    "predict": ["run_dir=/r", "input=a.csv", "output=b.csv"], "submit": ["run_dir=/r", "message=m"],
    "blend": ["runs=[/a,/b]"], "download": ["data=sample"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_schema_and_refuses_an_added_key(name):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=COMMANDS[name])
        added = compose(config_name=name, overrides=COMMANDS[name] + ["+verbose=true"])
    assert OmegaConf.get_type(cfg).__module__ == "src.schema" and "???" not in OmegaConf.to_yaml(cfg)
    check_keys(cfg)
    with pytest.raises(UserError, match="unknown config key 'verbose'"):
        check_keys(added)


@pytest.mark.parametrize("bad, said", [
    ("+epoch=3", "error: unknown config key 'epoch': did you mean 'epochs'?"),
    ("fold=abc", "error: Error merging override fold=abc: Value 'abc' of type 'str' could not be converted to Integer\n"),
])
def test_the_command_refuses_a_bad_key_or_value_with_exit_status_1(bad, said, tmp_path):
    proc = run_cv([bad, f"hydra.run.dir={tmp_path / 'run'}"], check=False)
    assert proc.returncode == 1 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # nothing of the refused run is left


@pytest.mark.parametrize("launcher, target", [("parallel", "JoblibLauncher"), ("joblib", "JoblibLauncher"),
                                              ("submitit_slurm", "SlurmLauncher"), ("kfold_ray", "KfoldRayLauncher")])
def test_shipped_launcher_configs_compose(launcher, target):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.parametrize("old, instead", [("hydra/launcher=slurm", "cluster=slurm"), ("hydra/launcher=ray", "cluster=ray")])
def test_the_sweep_routes_that_gave_way_to_cluster_say_what_to_run(old, instead, tmp_path):
    proc = run_cv(["-m", "fold_index=0,1", old, f"hydra.sweep.dir={tmp_path / 'sweep'}"], check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]
    assert f"error: {old} gave way to {instead}" in proc.stderr and not (tmp_path / "sweep").exists()


SEED_KEYS = ("model", "augment", "optimizer", "schedule", "batch_size", "epochs", "fold", "loss", "label_smoothing", "callbacks")


def _recipe_of(cfg) -> dict:
    tree = OmegaConf.to_container(cfg, resolve=True)
    tree["augment"].pop("flip")  # the preset's suggestion, not the recipe's
    return {k: tree[k] for k in SEED_KEYS}


@pytest.mark.parametrize("data", options("data"))
def test_every_preset_brings_a_named_recipe_and_the_seed_recipe_stays_one_experiment_away(data):
    cfg = compose_config([f"data={data}"])
    assert cfg.recipe.name == cfg.data.recipe and cfg.recipe.why
    seed = compose_config([f"data={data}", "experiment=kfold_cnn"])
    assert _recipe_of(seed) == _recipe_of(compose_config([f"data={data}", "recipe=seed"]))
    assert seed.recipe.name == "kfold_cnn"


def test_the_seed_recipe_is_the_defaults_of_config_yaml():
    assert _recipe_of(compose_config(["recipe=seed"])) == _recipe_of(compose_config([]))


def test_files_given_by_path_get_the_generic_recipe_unless_a_preset_recipe_or_experiment_is_chosen():
    assert compose_config(["data.train=a.csv"]).recipe.name == "generic"
    assert compose_config(["data.dir=somewhere"]).recipe.name == "generic"
    assert compose_config(["data.train=a.csv", "data=fashion_mnist"]).recipe.name == compose_config(["data=fashion_mnist"]).recipe.name
    assert compose_config(["data.train=a.csv", "recipe=seed"]).recipe.name == "seed"
    assert compose_config(["data.train=a.csv", "experiment=cnn_cosine_ema"]).recipe.name == "cnn_cosine_ema"
    assert compose_config(["data.test=b.csv"]).recipe.name == "seed"  # the default competition's own train file
    assert compose_config(["data.train=a.csv", "model=softmax"]).recipe.name == "seed"  # a model of one's own: as before


def test_a_digit_preset_with_a_time_limit_gets_its_timed_recipe_and_without_one_the_seed_recipe():
    for preset in ([], ["data=digit_recognizer"], ["data=sample"]):
        assert compose_config(preset).recipe.name == "seed"
        assert compose_config([*preset, "time_limit=12m"]).recipe.name == "generic"
        assert compose_config([*preset, "time_limit=null"]).recipe.name == "seed"
        assert compose_config([*preset, "time_limit=12m", "experiment=kfold_cnn"]).recipe.name == "kfold_cnn"
        assert compose_config([*preset, "time_limit=12m", "recipe=seed"]).recipe.name == "seed"
    assert compose_config(["data=fashion_mnist", "time_limit=12m"]).recipe.name == "fashion"
    from src.rundir import recipe_why  # what the log and the report say

    assert recipe_why(compose_config(["time_limit=12m"])).endswith("(the preset's recipe under a time_limit: data.timed_recipe)")
    assert "timed_recipe" not in recipe_why(compose_config(["data=fashion_mnist", "time_limit=12m"]))
    from src.cli import preset_overrides  # the timed recipe is the preset's, not a key the user gave

    assert preset_overrides(["data=digits", "time_limit=12m"]) == (["data=digits", "recipe=generic"], ["data=digits", "time_limit=12m"])


def test_the_given_keys_of_a_command_on_files_by_path_are_measured_from_the_generic_recipe():
    from src.cli import preset_overrides

    given = ["data.train=a.csv", "epochs=3", "recipe=generic"]
    assert preset_overrides(given) == (["recipe=generic"], ["data.train=a.csv", "epochs=3"])
    assert preset_overrides(["data=fashion_mnist", "recipe=fashion"]) == (["data=fashion_mnist", "recipe=fashion"], ["data=fashion_mnist"])
    assert preset_overrides(["data=fashion_mnist", "recipe=seed"]) == (["data=fashion_mnist", "recipe=fashion"],
                                                                       ["data=fashion_mnist", "recipe=seed"])
    assert preset_overrides(["data=digits", "epochs=3"]) == (["data=digits"], ["data=digits", "epochs=3"])


def test_fashion_mnist_gets_its_recipe_and_a_run_recorded_on_the_generic_one_keeps_it():
    cfg = compose_config(["data=fashion_mnist"])
    assert cfg.recipe.name == "fashion" and cfg.augment.flip and cfg.augment.crop == 2 and cfg.augment.erasing == 0.25
    assert cfg.augment.rotation == cfg.augment.zoom == cfg.augment.width_shift == 0 and cfg.augment.ramp == 5
    assert cfg.batch_size == 32 and cfg.model.dropout == 0.1 and cfg.optimizer.use_ema  # the generic recipe's training
    out = resumed_on_old_recipe("fashion_mnist", "generic")
    assert out.recipe.name == "generic" and out.augment.rotation == 10 and out.augment.crop == 0 and out.augment.erasing == 0


def test_kannada_mnist_gets_the_generic_recipe_with_or_without_a_time_limit_and_a_run_recorded_on_the_seed_one_keeps_it():
    for extra in ([], ["time_limit=12m"]):
        cfg = compose_config(["data=kannada_mnist", *extra])
        assert cfg.recipe.name == "generic" and cfg.batch_size == 32 and cfg.model.dropout == 0.1 and cfg.optimizer.use_ema
        assert not cfg.augment.flip and cfg.augment.rotation == 10 and cfg.augment.ramp == 5
    assert compose_config(["data=kannada_mnist", "recipe=seed"]).recipe.name == "seed"
    assert compose_config(["data=kannada_mnist", "experiment=kfold_cnn"]).recipe.name == "kfold_cnn"
    out = resumed_on_old_recipe("kannada_mnist", "seed")
    assert out.recipe.name == "seed" and out.batch_size == 128 and out.model.dropout == 0.4 and not out.optimizer.get("use_ema")
    assert out.augment.ramp == 0 and out.schedule._target_.endswith("exponential")


def resumed_on_old_recipe(preset: str, old: str):
    """The config `python -m src.cv data=PRESET hydra.run.dir=DIR` runs on a run dir recorded when
    the preset named recipe `old` (src.cv.with_recipe): the recorded recipe, not today's."""
    from src import recipe
    from src.cli import preset_overrides

    base, given = preset_overrides([f"data={preset}"])
    cfg = compose_config(base)
    keys = recipe.given_keys(cfg, compose_config(base), given)
    record = {"resolved_config": OmegaConf.to_container(compose_config([f"data={preset}", f"recipe={old}"]), resolve=True)}
    record["resolved_config"]["data"]["recipe"] = old
    before = compose_config([*(o for o in base if not o.startswith("recipe=")), "recipe=seed"])  # conf/'s default, as src.cv composes it
    return recipe.recorded(cfg, record, keys, before)
