"""`python -m src.predict run_dir=DIR input=FILE.csv output=OUT.csv`: a finished run's fold
ensemble applied to new images in the competition's test format.

Writes the run's submission columns (`ImageId,Label` for Digit Recognizer): the input's own id
column when it has one, else ids 1..N in its row order, and the run's labels; with
`probabilities=true`, the averaged class probabilities p<label> beside them. The input gets the same checks as training
data; an existing output file is refused unless `overwrite=true`.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import keras
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src import rundir
from src.cli import check_command_line, command
from src.errors import UserError
from src.files import write_csv
from src.inputs.dataset import read_test_format
from src.models.inference import predict
from src.results.ensemble import make_submission
from src.serving.export import load_folds

log = logging.getLogger(__name__)


def ensemble_predict(folds: list[keras.Model], images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for `images` (N, H, W, C) uint8, averaged over the fold models."""
    return np.mean([predict(model, images, batch_size) for model in folds], axis=0)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@command
def main(cfg: DictConfig) -> None:
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise UserError(f"{output} already exists: choose another output= or set overwrite=true")
    folds, recorded = load_folds(Path(cfg.run_dir))
    table = read_test_format(cfg.input, OmegaConf.create({**recorded["data"], "cache_dir": cfg.data.cache_dir}))
    probs = ensemble_predict(folds, table.images)
    run_fmt = rundir.read_submission_format(Path(cfg.run_dir))
    columns = (table.id_column, run_fmt.columns[1]) if table.id_column else run_fmt.columns
    ids = tuple(v.item() if isinstance(v, np.generic) else v for v in table.ids) if table.ids is not None else None
    fmt = rundir.SubmissionFormat(columns, ids, run_fmt.classes)
    frame = make_submission(probs.argmax(1), probs.shape[1], fmt)
    if cfg.probabilities:
        frame = pd.concat([frame, pd.DataFrame(probs, columns=fmt.prob_columns(probs.shape[1]))], axis=1)
    write_csv(output, frame)
    log.info("%d predictions written to %s", len(frame), output)


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "predict", __doc__, run_dir=True)
    main()
