"""Pictures and a report.md of a finished run: `python -m src.report run_dir=DIR` (also run by src.cv).

    curves_loss.png, curves_accuracy.png   training and validation per epoch, every fold overlaid
    test_label_counts.png                  how often each label is predicted on the test set
    test_samples.png                       50 test digits with their predicted labels
    confusion.png                          the out-of-fold confusion matrix
    most_wrong.png                         the 30 most confidently wrong out-of-fold digits
    report.md                              the pictures and the per-fold metrics table
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from src import runstate  # noqa: E402
from src.errors import UserError  # noqa: E402
from src.files import atomic_write  # noqa: E402

log = logging.getLogger(__name__)


def curves(histories: dict[int, pd.DataFrame], metric: str, path: Path) -> None:
    """`metric` and `val_<metric>` per epoch, one colour per fold."""
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(histories), 1)))
    for colour, (k, h) in zip(colours, sorted(histories.items())):
        ax.plot(h["epoch"], h[metric], color=colour, alpha=0.6, label=f"fold {k} train")
        ax.plot(h["epoch"], h[f"val_{metric}"], color=colour, linestyle="--", label=f"fold {k} val")
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch (solid: training, dashed: validation)")
    if len(histories) <= 5:
        ax.legend(fontsize=7)
    _save(fig, path)


def label_counts(labels: np.ndarray, num_classes: int, path: Path) -> None:
    counts = np.bincount(labels, minlength=num_classes)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(num_classes), counts)
    ax.set(xticks=range(num_classes), xlabel="predicted label", ylabel="test images",
           title=f"predicted labels on the {len(labels):,} test images")
    _save(fig, path)


def digit_grid(images: np.ndarray, titles: list[str], columns: int, path: Path, suptitle: str) -> None:
    """Digits in rows of `columns`, each under its title. Drawn as one montage in one axes: a
    subplot per digit made every run's report several seconds slower."""
    rows = max(1, -(-len(images) // columns))
    h, w = images.shape[1:3]
    top, side = 12, 2  # montage pixels above each digit for its title, and beside it
    cell_h, cell_w = h + top, w + 2 * side
    canvas = np.zeros((rows * cell_h, columns * cell_w), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * cell_h + top:(r + 1) * cell_h, c * cell_w + side:c * cell_w + side + w] = image[..., 0]
    fig, ax = plt.subplots(figsize=(columns * 1.1, rows * 1.35))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    for i, title in enumerate(titles[:len(images)]):
        r, c = divmod(i, columns)
        ax.text(c * cell_w + cell_w / 2, r * cell_h + top - 1, title, ha="center", va="bottom", fontsize=7)
    ax.axis("off")
    fig.suptitle(suptitle, fontsize=9)
    _save(fig, path)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    matrix = confusion_matrix(y_true, y_pred, labels=range(num_classes))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=6, color="white" if i == j else "black")
    ax.set(xticks=range(num_classes), yticks=range(num_classes), xlabel="predicted", ylabel="true",
           title=f"out-of-fold confusion ({len(y_true):,} rows)")
    _save(fig, path)
    return matrix


def build(run_dir: Path, x_train: np.ndarray, x_test: np.ndarray) -> Path:
    """Write every picture and report.md for the finished run in `run_dir`; returns report.md."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise UserError(f"{run_dir} has no metrics.json: the run is not finished (python -m src.ensemble run_dir={run_dir})")
    metrics = json.loads(metrics_path.read_text())
    oof = pd.read_csv(run_dir / "oof.csv")
    probs = oof.filter(regex=r"^p\d+$").to_numpy()
    num_classes = probs.shape[1]
    submission = pd.read_csv(run_dir / "submission.csv")

    histories = {}
    for f in metrics["folds"]:
        path = runstate.fold_dir(run_dir, f["fold"]) / runstate.HISTORY
        if path.exists():
            histories[f["fold"]] = pd.read_csv(path)
    for metric in ("loss", "accuracy"):
        curves(histories, metric, run_dir / f"curves_{metric}.png")
    label_counts(submission["Label"].to_numpy(), num_classes, run_dir / "test_label_counts.png")
    shown = min(50, len(x_test))
    digit_grid(x_test[:shown], [f"{label}" for label in submission["Label"][:shown]], 10,
               run_dir / "test_samples.png", f"the first {shown} test digits and their predicted labels")
    predicted = probs.argmax(1)
    truth = oof["label"].to_numpy()
    confusion(truth, predicted, num_classes, run_dir / "confusion.png")
    wrong = np.flatnonzero(predicted != truth)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:30]
    digit_grid(x_train[oof["row"].to_numpy()[worst]],
               [f"true {truth[i]} → {predicted[i]}\n{probs[i, predicted[i]]:.2f}" for i in worst], 10,
               run_dir / "most_wrong.png", f"the {len(worst)} most confidently wrong out-of-fold digits (of {len(wrong):,} wrong)")

    lines = ["# Run report", "", f"Run dir: `{run_dir}`", "",
             "| fold | accuracy | best epoch | seconds |", "|---:|---:|---:|---:|"]
    lines += [f"| {f['fold']} | {f['accuracy']:.4f} | {f['best_epoch']} | {f['seconds']:.1f} |" for f in metrics["folds"]]
    lines += ["", f"Mean CV accuracy **{metrics['cv_mean']:.4f}** ± {metrics['cv_std']:.4f}; "
              f"out-of-fold accuracy {metrics['oof_accuracy']:.4f} on {metrics['oof_rows']:,} rows."]
    if "test_accuracy" in metrics:
        lines.append(f"Test accuracy of the ensemble: {metrics['test_accuracy']:.4f}.")
    if metrics.get("folds_missing"):
        lines.append(f"Partial ensemble: fold(s) {metrics['folds_missing']} not complete.")
    for title, name in (("Loss", "curves_loss"), ("Accuracy", "curves_accuracy"), ("Predicted test labels", "test_label_counts"),
                        ("Test digits", "test_samples"), ("Out-of-fold confusion matrix", "confusion"),
                        ("Most confidently wrong", "most_wrong")):
        lines += ["", f"## {title}", "", f"![{title}]({name}.png)"]
    report = run_dir / "report.md"
    atomic_write(report, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return report


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    from omegaconf import OmegaConf

    from src import data as data_mod

    run_dir = Path(cfg.run_dir)
    try:
        try:
            recorded = json.loads((run_dir / runstate.RUN).read_text())["resolved_config"]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{run_dir} is not a run dir of src.cv (no readable {runstate.RUN}: {e})") from None
        dataset = data_mod.load(OmegaConf.create(recorded["data"]))
        log.info("report written: %s", build(run_dir, dataset.x_train, dataset.x_test))
    except UserError as e:
        log.error("%s", e)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
