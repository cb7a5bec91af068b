"""Kannada-MNIST's idx files (the data set author's repository, github.com/vinayprabhu/Kannada_MNIST,
data/output_tensors/MNIST_format/) written in the Kaggle competition's CSV layout, for
`python -m src.cv data=kannada_mnist data.dir=OUT`, to choose a recipe on CV where Kaggle's files
are not at hand:

    python benchmarks/kannada_csv.py --source .../MNIST_format --out ~/runs/kannada

train.csv (label, pixel0..pixel783) is the labelled split named by --train ("test": the 10,000
images of the original test split, when the 60,000-image training split is not there), test.csv
(id, pixel0..) is Dig-MNIST's 10,240 images without their labels, and Dig-MNIST.csv is them with
their labels, to score a run's submission.csv against (`--score RUN_DIR`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fashion_csv import write_idx  # noqa: E402
from src.inputs.idx import read_idx  # noqa: E402

PIXELS = [f"pixel{i}" for i in range(784)]


def frame(x: np.ndarray, first: str, values: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame(x.reshape(len(x), -1).astype(np.uint8), columns=PIXELS)
    out.insert(0, first, values.astype(np.int64))
    return out


def save(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)
    print(f"{path}: {len(table):,} rows")


def split(source: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return (read_idx(source / f"X_{name}-idx3-ubyte.gz", "images", 3),
            read_idx(source / f"y_{name}-idx1-ubyte.gz", "labels", 1))


def convert(source: Path, out: Path, train: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y = split(source, f"kannada_MNIST_{train}")
    save(frame(x, "label", y), out / "train.csv")
    x, y = split(source, "dig_MNIST")
    ids = np.arange(len(x))
    save(frame(x, "id", ids), out / "test.csv")
    save(pd.DataFrame({"id": ids, "label": 0}), out / "sample_submission.csv")
    save(frame(x, "label", y), out / "Dig-MNIST.csv")


def score(out: Path, run_dir: Path) -> float:
    """The accuracy of `run_dir`'s submission.csv on Dig-MNIST's labels."""
    truth = pd.read_csv(out / "Dig-MNIST.csv", usecols=["label"])["label"].to_numpy()
    sub = pd.read_csv(run_dir / "submission.csv")
    return float((sub["label"].to_numpy() == truth[sub["id"].to_numpy()]).mean())


def smoke(out: Path) -> None:
    """Seconds: made-up idx files through the CSVs and back, checked value for value, and scored."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp)
        made = {}
        for name, n in (("kannada_MNIST_test", 50), ("dig_MNIST", 30)):
            made[name] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
            write_idx(source / f"X_{name}-idx3-ubyte.gz", made[name][0])
            write_idx(source / f"y_{name}-idx1-ubyte.gz", made[name][1])
        convert(source, out, "test")
    train, test = pd.read_csv(out / "train.csv"), pd.read_csv(out / "test.csv")
    (x, y), (xd, yd) = made["kannada_MNIST_test"], made["dig_MNIST"]
    if not (np.array_equal(train["label"], y) and np.array_equal(train[PIXELS].to_numpy(), x.reshape(len(x), -1))
            and np.array_equal(test[PIXELS].to_numpy(), xd.reshape(len(xd), -1)) and "label" not in test):
        sys.exit(f"{out}: the CSVs do not hold the idx files' values")
    (out / "run").mkdir(exist_ok=True)
    pd.DataFrame({"id": np.arange(len(yd)), "label": yd}).to_csv(out / "run" / "submission.csv", index=False)
    if score(out, out / "run") != 1.0:
        sys.exit("a submission of Dig-MNIST's own labels did not score 1.0")
    print("smoke: the idx files' values came back from the CSVs, and Dig-MNIST's labels score 1.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="the folder of X_*/y_*-idx?-ubyte.gz files")
    parser.add_argument("--out", type=Path, default=Path("data/kannada_mnist"))
    parser.add_argument("--train", choices=("train", "test"), default="train", help="the labelled split written as train.csv")
    parser.add_argument("--score", type=Path, metavar="RUN_DIR", help="print RUN_DIR's submission accuracy on Dig-MNIST")
    parser.add_argument("--smoke", action="store_true", help="seconds: made-up idx files of 50 + 30 images, into --out")
    args = parser.parse_args()
    if args.smoke:
        smoke(args.out)
    elif args.score:
        print(f"{args.score}: Dig-MNIST accuracy {score(args.out, args.score):.4f}")
    elif args.source is None:
        parser.error("--source is required (or --score, or --smoke)")
    else:
        convert(args.source, args.out, args.train)


if __name__ == "__main__":
    main()
