"""Pictures of a finished run (matplotlib, written to the run dir)."""
from __future__ import annotations

from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from src import models  # noqa: E402,F401  (registers the custom layers that saved models use)
from src.files import atomic_write  # noqa: E402


def reconstructions(model: keras.Model, images: np.ndarray, path: Path, shown: int = 10) -> float | None:
    """For a model with an autoencoder (a layer named `reconstruction`): save `shown` images above
    their reconstructions as a PNG and return the reconstruction's mean squared error over
    `images` (pixels scaled to 0-1). None, and no picture, for other models."""
    try:
        layer = model.get_layer("reconstruction")
    except ValueError:
        return None
    autoencoder = keras.Model(model.inputs, layer.output)
    recon = autoencoder.predict(images.astype(np.float32), batch_size=256, verbose=0)
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    mse = float(np.mean((recon - pixels) ** 2))
    h, w = images.shape[1:3]
    fig, axes = plt.subplots(2, shown, figsize=(shown, 2.3))
    for i in range(shown):
        for row, picture in enumerate((pixels[i], recon[i])):
            axes[row, i].imshow(picture.reshape(h, w), cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("input", fontsize=8, loc="left")
    axes[1, 0].set_title(f"reconstruction (MSE {mse:.4f})", fontsize=8, loc="left")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return mse
