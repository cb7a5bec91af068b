"""Pictures of a run, drawn with matplotlib into PNG files (written atomically)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from src.files import atomic_write  # noqa: E402


def curves(histories: dict[int, pd.DataFrame], metric: str, path: Path) -> None:
    """`metric` and `val_<metric>` per epoch, one colour per fold."""
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(histories), 1)))
    for colour, (k, h) in zip(colours, sorted(histories.items())):
        ax.plot(h["epoch"], h[metric], color=colour, alpha=0.6, label=f"fold {k} train")
        ax.plot(h["epoch"], h[f"val_{metric}"], color=colour, linestyle="--", label=f"fold {k} val")
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch (solid: training, dashed: validation)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5, 2.5 ticks
    if len(histories) <= 5:
        ax.legend(fontsize=7)
    _save(fig, path)


def label_counts(labels: np.ndarray, names: list[str], path: Path) -> None:
    """How often each class (index into `names`) is predicted."""
    counts = np.bincount(labels, minlength=len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names)), 3.5))
    ax.bar(range(len(names)), counts)
    ax.set(xlabel="predicted label", ylabel="test images", title=f"predicted labels on the {len(labels):,} test images")
    ax.set_xticks(range(len(names)), names, rotation=90 if max(map(len, names)) > 3 else 0, fontsize=7)
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


def confusion(y_true: np.ndarray, y_pred: np.ndarray, names: list[str], path: Path) -> np.ndarray:
    """The confusion matrix of class indices, rows true, columns predicted, labelled by `names`."""
    k = len(names)
    matrix = confusion_matrix(y_true, y_pred, labels=range(k))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.3 * k), max(5, 0.3 * k)))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=6, color="white" if i == j else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"out-of-fold confusion ({len(y_true):,} rows)")
    ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 3 else 0, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    _save(fig, path)
    return matrix


def reconstructions(pixels: np.ndarray, recon: np.ndarray, image_shape: tuple[int, ...], path: Path,
                    shown: int = 10) -> float:
    """`shown` images (flat pixels scaled to 0-1) above their reconstructions; returns the
    reconstruction's mean squared error over all of `pixels`."""
    mse = float(np.mean((recon - pixels) ** 2))
    h, w = image_shape[:2]
    shown = min(shown, len(pixels))
    fig, axes = plt.subplots(2, shown, figsize=(shown, 2.3), squeeze=False)
    for i in range(shown):
        for row, picture in enumerate((pixels[i], recon[i])):
            axes[row, i].imshow(picture.reshape(h, w), cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("input", fontsize=8, loc="left")
    axes[1, 0].set_title(f"reconstruction (MSE {mse:.4f})", fontsize=8, loc="left")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return mse


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
