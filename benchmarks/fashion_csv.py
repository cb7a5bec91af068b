"""Fashion-MNIST's original idx files (Debian's dataset-fashion-mnist package) written in the Kaggle
data set's CSV layout, `fashion-mnist_train.csv` and `fashion-mnist_test.csv` (label, pixel1..pixel784),
for `python -m src.cv data=fashion_mnist`:

    apt-get install dataset-fashion-mnist
    python benchmarks/fashion_csv.py                      # into data/fashion_mnist/
    python -m src.cv data=fashion_mnist fold=5 epochs=10
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from src.inputs.idx import read_idx

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=Path("data/fashion_mnist"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.source / "train-images-idx3-ubyte.gz", args.source / "train-labels-idx1-ubyte.gz", args.out / "fashion-mnist_train.csv")
    write(args.source / "t10k-images-idx3-ubyte.gz", args.source / "t10k-labels-idx1-ubyte.gz", args.out / "fashion-mnist_test.csv")


if __name__ == "__main__":
    main()
