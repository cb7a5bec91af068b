"""`python -m src.predict run_dir=DIR input=FILE.csv output=OUT.csv`: a finished run's fold
ensemble applied to new images in the competition's test format.

Writes `ImageId,Label` (ImageId 1..N in the input's row order) and, with `probabilities=true`,
the averaged class probabilities p0..p9 beside them. The input gets the same checks as training
data; an existing output file is refused unless `overwrite=true`.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src import augment
from src.data import read_test_format
from src.ensemble import make_submission
from src.errors import UserError
from src.export import load_folds
from src.files import write_csv

log = logging.getLogger(__name__)


def predict(run_dir: Path, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for `images` (N, H, W, C) uint8, averaged over the run's folds."""
    folds, _ = load_folds(run_dir)
    return np.mean([augment.predict(model, images, batch_size) for model in folds], axis=0)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_dir, output = Path(cfg.run_dir), Path(cfg.output)
    try:
        if output.exists() and not cfg.overwrite:
            raise UserError(f"{output} already exists: choose another output= or set overwrite=true")
        _, recorded = load_folds(run_dir)
        data_cfg = OmegaConf.create(recorded["data"])
        images = read_test_format(cfg.input, data_cfg)
        probs = predict(run_dir, images)
        frame = make_submission(probs.argmax(1), probs.shape[1])
        if cfg.probabilities:
            frame = pd.concat([frame, pd.DataFrame(probs, columns=[f"p{c}" for c in range(probs.shape[1])])], axis=1)
        write_csv(output, frame)
        log.info("%d predictions written to %s", len(frame), output)
    except UserError as e:
        log.error("%s", e)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
