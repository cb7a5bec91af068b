"""The Kaggle round trip, up to the network: the tests cannot reach Kaggle, so the last call into the
kaggle package is replaced by a recorder; the real package is used for its missing-credentials path."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
from conftest import REPO, compose_config

from src.download import fetch
from src.errors import UserError
from src.kaggle_client import CREDENTIALS
from src.submit import checked_submission


class Recorder:
    """Stands in for KaggleApi at the network boundary: records the calls, and 'downloads' a zip
    holding the files a preset expects."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files, self.calls = files, []

    def _zip(self, path, name):
        with zipfile.ZipFile(os.path.join(path, f"{name}.zip"), "w") as z:
            for file, text in self.files.items():
                z.writestr(file, text)

    def competition_download_files(self, competition, path=None, quiet=True, **_):
        self.calls.append(("competition", competition))
        self._zip(path, competition)

    def dataset_download_files(self, dataset, path=None, quiet=True, **_):
        self.calls.append(("dataset", dataset))
        self._zip(path, dataset.split("/")[1])


@pytest.mark.parametrize("preset, call, files", [
    ("kannada_mnist", ("competition", "Kannada-MNIST"), ["train.csv", "test.csv", "sample_submission.csv", "Dig-MNIST.csv"]),
    ("fashion_mnist", ("dataset", "zalando-research/fashionmnist"), ["fashion-mnist_train.csv", "fashion-mnist_test.csv"]),
])
def test_download_unzips_a_presets_files_where_the_preset_looks(preset, call, files, tmp_path):
    api = Recorder({name: "label,pixel0\n1,0\n" for name in files})
    cfg = compose_config([f"data={preset}"])
    out = tmp_path / "data" / preset
    written = fetch(api, cfg.data.kaggle, out)
    assert api.calls == [call]
    assert sorted(p.name for p in written) == sorted(files) and not list(out.glob(".download-*"))
    found = compose_config([f"data={preset}", f"data.dir={out}"]).data
    assert os.path.exists(found.train) and os.path.exists(found.test)


def test_without_credentials_the_real_package_gets_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env.update(HOME=str(tmp_path), KAGGLE_CONFIG_DIR=str(tmp_path / "kaggle"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "src.download", "data=kannada_mnist", f"out={tmp_path / 'out'}"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {CREDENTIALS}"
    assert "Authentication required" not in proc.stdout  # the package's own help is not printed


def test_without_the_extra_the_command_names_the_install(tmp_path):
    code = ("import sys; sys.modules['kaggle'] = None; import runpy; "
            f"sys.argv = ['src.download', 'data=kannada_mnist', 'out={tmp_path / 'out'}']; "
            "runpy.run_module('src.download', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 1 and "pip install -e '.[kaggle]'" in proc.stderr.strip().splitlines()[-1]


def test_submit_checks_the_submission_and_refuses_data_sets(finished_run, tmp_path):
    path, competition = checked_submission(finished_run)  # a Digit Recognizer run, before the presets too
    assert path == finished_run / "submission.csv" and competition == "digit-recognizer"

    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    sub = pd.read_csv(broken / "submission.csv")
    sub.iloc[:-1].to_csv(broken / "submission.csv", index=False)
    with pytest.raises(UserError, match="is not a valid submission"):
        checked_submission(broken)

    dataset = tmp_path / "dataset"
    shutil.copytree(finished_run, dataset)
    record = json.loads((dataset / "run.json").read_text())
    record["resolved_config"]["data"]["kaggle"] = {"competition": None, "dataset": "zalando-research/fashionmnist"}
    (dataset / "run.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="data sets take no submissions"):
        checked_submission(dataset)


class RawRecorder(Recorder):
    """'Downloads' an archive given as bytes, or built from (name, bytes) members, deflated."""

    def __init__(self, members=None, raw: bytes | None = None) -> None:
        super().__init__({})
        self.members, self.raw = members or [], raw

    def _zip(self, path, name):
        target = os.path.join(path, f"{name}.zip")
        if self.raw is not None:
            with open(target, "wb") as f:
                f.write(self.raw)
            return
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for member, data in self.members:
                z.writestr(member, data)


def fetch_into(api, tmp_path, **limits):
    from src.download import Limits

    cfg = compose_config(["data=kannada_mnist"])
    out = tmp_path / "data"
    return out, lambda: fetch(api, cfg.data.kaggle, out, Limits(**limits))


@pytest.mark.parametrize("members, limits, message", [
    ([("train.csv", b"0" * 3_000_000)], {"max_bytes": 1_000_000}, "unpacks to more than 1,000,000 bytes"),
    ([(f"f{i}.csv", b"x") for i in range(5)], {"max_files": 3}, "holds more than 3 files"),
    ([("a/train.csv", b"label\n1\n"), ("b/train.csv", b"label\n2\n")], {}, "two different files are both named 'train.csv'"),
])
def test_a_download_past_its_limits_or_with_clashing_names_writes_nothing(members, limits, message, tmp_path):
    out, run = fetch_into(RawRecorder(members), tmp_path, **limits)
    with pytest.raises(UserError, match=message):
        run()
    assert list(out.iterdir()) == []  # not even the temporary folder


def test_the_same_file_in_two_folders_is_one_file(tmp_path):
    out, run = fetch_into(RawRecorder([("a/train.csv", b"label\n1\n"), ("b/train.csv", b"label\n1\n")]), tmp_path)
    assert [p.name for p in run()] == ["train.csv"] and (out / "train.csv").read_bytes() == b"label\n1\n"


def test_a_damaged_archive_is_one_line(tmp_path):
    out, run = fetch_into(RawRecorder(raw=b"PK\x03\x04" + b"\x00" * 100), tmp_path)
    with pytest.raises(UserError, match=r"Kannada-MNIST.zip from Kaggle is not a readable zip archive .*download it again"):
        run()
    assert list(out.iterdir()) == []
