"""One hint per mistake: a mistyped key or group option on the command line is one line on stderr
naming the nearest one, nothing on stdout, exit 1, and no run dir, log or output folder."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


def command(name: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"src.{name}", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("args, said", [
    (["epoch=2"], "error: unknown config key 'epoch': did you mean 'epochs'?"),
    (["+epoch=2"], "error: unknown config key 'epoch': did you mean 'epochs'?"),
    (["model.dropuot=0.3"], "error: unknown config key 'model.dropuot': did you mean 'model.dropout'?"),
    (["data=fasion_mnist"], "error: data=fasion_mnist is not an option of data: did you mean data=fashion_mnist? (options: "),
    (["model=kfold_cnm", "epochs=1"], "error: model=kfold_cnm is not an option of model: did you mean model=kfold_cnn?"),
])
def test_a_mistyped_key_or_option_is_one_hint_and_leaves_nothing(args, said, tmp_path):
    proc = command("cv", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(said), proc.stderr
    assert proc.stdout == "" and "+epoch" not in proc.stderr  # never Hydra's advice to add a key with +
    assert list(tmp_path.iterdir()) == []  # no run dir, no outputs/, no log


def test_other_commands_give_the_same_hint(tmp_path):
    proc = command("predict", "run_dir=x", "input=y", "ouput=z.csv", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == "error: unknown config key 'ouput': did you mean 'output'?"
    assert list(tmp_path.iterdir()) == []


def test_help_is_one_screen_with_descriptions_and_no_schema_group(tmp_path):
    proc = command("cv", "--help", cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and proc.stderr == "" and len(lines) <= 50  # a 50-line screen
    assert not any(line.strip().startswith("schema") for line in lines)
    assert any(line.strip().startswith("fold=15") and "number of folds" in line for line in lines)
    model = next(i for i, line in enumerate(lines) if line.strip().startswith("model="))
    assert "the network" in lines[model] and "kfold_cnn" in lines[model + 1] and "resnet" in lines[model + 1]  # the schema's words
    group = command("cv", "--help", "augment", cwd=tmp_path)
    assert group.returncode == 0 and group.stdout.splitlines()[0] == "augment= one of:" and "none" in group.stdout
    assert list(tmp_path.iterdir()) == []
