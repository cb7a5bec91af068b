"""Run dirs remember their recipe: a command on one takes what can change results from its
run.json, compares only what the command gives, and builds no recorded `_target_` outside the
registry or the user's conf/."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config, data_only, run_cv, run_old_cv, snapshot, tiny_overrides, unfinished_copy
from src import recipe
from src.errors import UserError


@pytest.mark.slow  # 80 s; the legacy run dirs' resume covers a recorded recipe in the default suite
def test_a_run_resumed_by_its_run_dir_alone_keeps_its_recipe_after_the_defaults_change(tiny, tmp_path):
    code = tmp_path / "repo"
    for part in ("src", "conf"):
        shutil.copytree(REPO / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    recipe_args = ["epochs=2", "model.dropout=0.3", "schedule.decay=0.8", "deterministic=true"]
    run_dir = tmp_path / "run"
    first = run_old_cv(code, tiny_overrides(tiny, tmp_path) + recipe_args + ["fold_index=0", f"hydra.run.dir={run_dir}"])
    assert first.returncode == 0, first.stderr[-3000:]

    for path, old, new in [("config.yaml", "\nepochs: 45", "\nepochs: 3"), ("config.yaml", "\nfold: 15", "\nfold: 4"),
                           ("model/kfold_cnn.yaml", "dropout: 0.4", "dropout: 0.1"),
                           ("schedule/exponential.yaml", "decay: 0.95", "decay: 0.5"),
                           ("data/digit_recognizer.yaml", "batch_size: 128", "batch_size: 16")]:
        text = (code / "conf" / path).read_text()
        assert old in text, (path, old)
        (code / "conf" / path).write_text(text.replace(old, new))
    fold0 = snapshot(run_dir / "fold_0")
    resumed = run_old_cv(code, data_only(tiny, tmp_path) + ["deterministic=true", f"hydra.run.dir={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert snapshot(run_dir / "fold_0") == fold0

    whole = tmp_path / "whole"
    run_cv(tiny_overrides(tiny, tmp_path) + recipe_args + [f"hydra.run.dir={whole}"])
    for name in ("oof.csv", "test_probs.csv"):
        np.testing.assert_allclose(pd.read_csv(run_dir / name).filter(regex=r"^p\d").to_numpy(),
                                   pd.read_csv(whole / name).filter(regex=r"^p\d").to_numpy(), atol=1e-6)
    assert json.loads((run_dir / "metrics.json").read_text())["cv_mean"] == json.loads((whole / "metrics.json").read_text())["cv_mean"]

    changed = run_old_cv(code, data_only(tiny, tmp_path) + ["epochs=3", f"hydra.run.dir={run_dir}"])
    assert changed.returncode == 1 and "epochs: 2 → 3" in changed.stderr  # what the command gives is compared


@pytest.mark.parametrize("where, target, key", [
    (("model",), "keras.saving.load_model", "model._target_"),
    (("optimizer", "_args_"), "keras.config.enable_unsafe_deserialization", "optimizer._args_.0._target_"),
    (("schedule",), "os.system", "schedule._target_"),
])
def test_a_recorded_target_outside_the_registry_is_refused_by_name_and_nothing_runs(tiny, finished_run, tmp_path,
                                                                                   where, target, key):
    run_dir = unfinished_copy(finished_run, tmp_path / "run")
    record = json.loads((run_dir / "run.json").read_text())
    node = record["resolved_config"]
    if where[-1] == "_args_":
        node[where[0]]["_args_"] = [{"_target_": target}]
    else:
        node[where[0]] = {"_target_": target, "_partial_": True, "filepath": "x.keras", "safe_mode": False}
    (run_dir / "run.json").write_text(json.dumps(record))
    files = lambda: {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "cv.log" and ".hydra" not in p.parts}
    before = files()
    proc = run_cv(data_only(tiny, tmp_path) + [f"hydra.run.dir={run_dir}"], check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and key in last and repr(target) in last and "refused" in last
    assert not (run_dir / "fold_1").exists()
    assert files() == before  # besides Hydra's record of the command


def test_the_registry_holds_the_parts_this_project_builds_and_nothing_else():
    for ok in ("src.models.kfold_cnn", "src.models.convbn", "keras.optimizers.Adam", "keras.optimizers.AdamW",
               "keras.optimizers.schedules.CosineDecay", "src.training.schedules.cosine"):
        assert recipe.in_registry(ok), ok
    for bad in ("keras.saving.load_model", "keras.config.enable_unsafe_deserialization", "src.models.load_model",
                "src.models.layers.load_model", "keras.optimizers.deserialize", "keras.optimizers.get",
                "src.training.schedules.build", "src.training.schedules.keras", "os.system", "builtins.eval", "", None, 3):
        assert not recipe.in_registry(bad), bad
    assert "src.models.mlp" in recipe.conf_targets([REPO / "conf"])


def test_recorded_interpolations_stay_text_and_given_keys_come_from_the_command():
    cfg = compose_config(["epochs=3", "model=convbn", "jobs=1"])
    record = {"resolved_config": OmegaConf.to_container(compose_config(["model.dropout=0.25"]), resolve=True)}
    record["resolved_config"]["loss"] = "${oc.env:HOME}"
    del record["resolved_config"]["label_smoothing"]  # a key newer than the record
    record["resolved_config"]["schedule"] = {"kind": "exponential", "decay": 0.9}  # as recorded before 2026-12
    given = recipe.given_keys(cfg, compose_config([]), ["epochs=3", "model=convbn", "jobs=1"])
    assert {"epochs", "model._target_", "model.dropout", "model.bn_momentum", "jobs"} <= given and "seed" not in given
    out = recipe.recorded(cfg, record, given)
    assert out.loss == "${oc.env:HOME}"  # text, not the environment's value
    assert out.epochs == 3 and out.model._target_ == "src.models.convbn" and out.model.dropout == 0.3  # given
    assert out.label_smoothing == 0.0  # LATER_KEYS
    assert OmegaConf.to_container(out.schedule) == {"_target_": "src.training.schedules.exponential", "_partial_": True,
                                                    "decay": 0.9}
    assert out.callbacks == {}
    with pytest.raises(UserError, match=re.escape("run.json: model._target_: 'keras.saving.load_model'")):
        recipe.check_targets({"model": {"_target_": "keras.saving.load_model"}}, set(), "run.json: ")


@pytest.mark.slow  # 30 s; the mechanism (a recipe the command does not give comes from run.json) is the test above's
def test_a_time_limited_digits_run_started_on_the_seed_recipe_resumes_on_it_now_that_a_limit_brings_the_generic_one(
        tiny, tmp_path):
    run_dir = tmp_path / "run"
    args = ["data=digit_recognizer", *[a for a in tiny_overrides(tiny, tmp_path) if a != "recipe=seed"], "epochs=1",
            "time_limit=10m", f"hydra.run.dir={run_dir}"]
    run_cv(args + ["recipe=seed", "fold_index=0"])  # what `time_limit=` gave a digit preset before data.timed_recipe
    assert json.loads((run_dir / "run.json").read_text())["resolved_config"]["recipe"]["name"] == "seed"
    fold0 = snapshot(run_dir / "fold_0")
    run_cv(args)  # the same command, as before: the preset now suggests the generic recipe
    assert snapshot(run_dir / "fold_0") == fold0
    record = json.loads((run_dir / "run.json").read_text())["resolved_config"]
    assert record["recipe"]["name"] == "seed" and record["batch_size"] == 32 and record["model"]["dropout"] == 0.4
    assert json.loads((run_dir / "metrics.json").read_text())["complete"]
