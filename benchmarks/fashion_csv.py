"""Fashion-MNIST's original idx files (Debian's dataset-fashion-mnist package) written in the Kaggle
data set's CSV layout, `fashion-mnist_train.csv` and `fashion-mnist_test.csv` (label, pixel1..pixel784),
for `python -m src.cv data=fashion_mnist`:

    apt-get install dataset-fashion-mnist
    python benchmarks/fashion_csv.py                      # into data/fashion_mnist/
    python -m src.cv data=fashion_mnist fold=5 epochs=10
"""
from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from src.inputs.idx import read_idx  # noqa: E402

SOURCE = Path("/usr/share/datasets/fashion-mnist")


def write(images: Path, labels: Path, out: Path) -> None:
    x = read_idx(images, "images", 3).reshape(-1, 784)
    y = read_idx(labels, "labels", 1)
    frame = pd.DataFrame(x.astype(np.uint8), columns=[f"pixel{i}" for i in range(1, 785)])
    frame.insert(0, "label", y.astype(np.int64))
    tmp = out.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(out)
    print(f"{out}: {len(frame):,} rows")


def write_idx(path: Path, values: np.ndarray) -> None:
    """An idx file as the MNIST distributions ship it (gzipped, big-endian dimensions, uint8)."""
    header = bytes([0, 0, 8, values.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in values.shape)
    path.write_bytes(gzip.compress(header + values.astype(np.uint8).tobytes()))


def smoke(out: Path) -> None:
    """Seconds: 50 made-up images each way through idx files and back, checked value for value."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp)
        made = {}
        for split, n in (("train", 50), ("t10k", 30)):
            made[split] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
            write_idx(source / f"{split}-images-idx3-ubyte.gz", made[split][0])
            write_idx(source / f"{split}-labels-idx1-ubyte.gz", made[split][1])
        convert(source, out)
    for split, name in (("train", "fashion-mnist_train.csv"), ("t10k", "fashion-mnist_test.csv")):
        frame = pd.read_csv(out / name)
        x, y = made[split]
        if not (np.array_equal(frame["label"], y) and np.array_equal(frame.iloc[:, 1:].to_numpy(), x.reshape(len(x), -1))):
            sys.exit(f"{out / name} does not hold the idx files' values")
    print("smoke: the idx files' values came back from the CSVs")


def convert(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write(source / "train-images-idx3-ubyte.gz", source / "train-labels-idx1-ubyte.gz", out / "fashion-mnist_train.csv")
    write(source / "t10k-images-idx3-ubyte.gz", source / "t10k-labels-idx1-ubyte.gz", out / "fashion-mnist_test.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=Path("data/fashion_mnist"))
    parser.add_argument("--smoke", action="store_true", help="seconds: made-up idx files of 50 + 30 images, into --out")
    args = parser.parse_args()
    if args.smoke:
        smoke(args.out)
        return
    convert(args.source, args.out)


if __name__ == "__main__":
    main()
