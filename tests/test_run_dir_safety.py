"""A run dir from a stranger is data: opening it with report, predict or ensemble runs none of
what it holds, reads no file it names unless the file is the one the run recorded, and a refused
command leaves nothing behind."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from src.files import sha256


def command(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"src.{name}", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def one_line_error(proc: subprocess.CompletedProcess, *parts: str) -> str:
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for part in parts:
        assert part in last, f"{part!r} not in {last!r}"
    return last


class Payload:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def edit_record(run_dir: Path, edit) -> None:
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def test_a_crafted_run_dir_runs_none_of_what_it_holds(finished_run, tiny, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "shared")
    marker = tmp_path / "pwned"
    cache = run_dir / "cache" / "joblib" / "src" / "inputs" / "dataset" / "parse_csv" / ("0" * 32)
    cache.mkdir(parents=True)
    (cache / "output.pkl").write_bytes(pickle.dumps(Payload(marker)))  # what the old joblib cache would have loaded

    def interpolated(record):
        data = record["resolved_config"]["data"]
        data.update(cache_dir="${hydra:runtime.output_dir}/cache", train="${oc.env:HOME}/../" + data["train"])

    edit_record(run_dir, interpolated)
    out = tmp_path / "pred.csv"
    for proc in (command("report", f"run_dir={run_dir}"), command("ensemble", f"run_dir={run_dir}"),
                 command("predict", f"run_dir={run_dir}", f"input={tiny['test']}", f"output={out}")):
        one_line_error(proc, "resolved_config.data.", "holds an interpolation", "refused, nothing was read")
    assert not marker.exists() and not out.exists()


def test_recorded_data_is_read_again_only_when_its_sha256_matches(finished_run, tiny, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "shared")
    secret = tmp_path / "secret.csv"
    secret.write_text("token,value\nabc,123\n")

    def elsewhere(record):
        record["resolved_config"]["data"]["train"] = str(secret)

    edit_record(run_dir, elsewhere)
    line = one_line_error(command("report", f"run_dir={run_dir}"), f"the run's train file {secret} is not the file the run was "
                          "trained on", "give the file it was trained on with data.train=PATH")
    assert "token" not in line  # nothing of the file it named was read into the message
    assert not (run_dir / "report.log").exists()  # a refused command leaves no log it started
    proc = command("report", f"run_dir={run_dir}", f"data.train={tiny['train']}")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_test_labels_are_read_by_their_recorded_sha256(finished_run, tiny, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "shared")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["files"] == {"test_labels": sha256(tiny["test_labels"])}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert command("ensemble", f"run_dir={run_dir}").returncode == 0
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    changed = tmp_path / "labels.csv"
    changed.write_text(tiny["test_labels"].read_text() + "\n")  # another SHA-256
    edit_record(run_dir, lambda r: r["resolved_config"]["data"].update(test_labels=str(changed)))
    assert command("ensemble", f"run_dir={run_dir}").returncode == 0
    assert "test_accuracy" not in json.loads((run_dir / "metrics.json").read_text())
    assert "give data.test_labels=PATH for the test accuracy" in (run_dir / "ensemble.log").read_text()


@pytest.mark.parametrize("name, extra", [("report", []), ("ensemble", []), ("export", []), ("serve", []),
                                         ("predict", ["input=x.csv", "output=y.csv"])])
def test_a_mistyped_run_dir_is_refused_and_nothing_is_created(name, extra, tmp_path):
    missing = tmp_path / "no" / "such" / "run"
    one_line_error(command(name, f"run_dir={missing}", *extra), str(missing))
    assert not (tmp_path / "no").exists()


def test_a_fold_model_keras_cannot_load_is_one_line(finished_run, tiny, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "shared")
    model = run_dir / "fold_0" / "model.keras"
    model.write_bytes(b"PK\x03\x04 not really a zip")
    done = json.loads((run_dir / "fold_0" / "done.json").read_text())
    done["sha256"]["model.keras"] = sha256(model)  # whoever crafted it updated the hash too
    (run_dir / "fold_0" / "done.json").write_text(json.dumps(done))
    one_line_error(command("predict", f"run_dir={run_dir}", f"input={tiny['test']}",
                           f"output={tmp_path / 'p.csv'}"), f"{model} cannot be loaded as a Keras model")
