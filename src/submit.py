"""`python -m src.submit run_dir=DIR message="..."`: check a finished run's submission against
what its competition expects, then submit it to Kaggle. Competitions only: Kaggle data sets take no
submissions. Needs the `[kaggle]` extra and Kaggle credentials."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src import rundir
from src.cli import check_command_line, command
from src.errors import UserError
from src.inputs.submission import sample_path
from src.kaggle_client import client
from src.results.ensemble import check_submission

log = logging.getLogger(__name__)


def checked_submission(run_dir: Path) -> tuple[Path, str]:
    """The run's submission.csv, checked, and its competition; UserError when it cannot be submitted."""
    config = rundir.finished_config(run_dir)
    kaggle = config["data"].get("kaggle") or {"competition": "digit-recognizer"}  # runs before the presets: Digit Recognizer
    if not kaggle.get("competition"):
        raise UserError(f"{run_dir} was trained on the Kaggle data set {kaggle.get('dataset')}: data sets take no submissions, only competitions do")
    path = run_dir / rundir.SUBMISSION
    fmt = rundir.read_submission_format(run_dir)
    try:
        frame = pd.read_csv(path)
        check_submission(frame, int(rundir.read_record(run_dir)["rows"]["test"]), int(config["data"]["num_classes"]), fmt)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a valid submission ({e}): rebuild it with `python -m src.ensemble run_dir={run_dir}`") from None
    sample = sample_path(OmegaConf.create(config["data"]))
    if sample is not None:
        expected = pd.read_csv(sample)
        if list(expected.columns) != list(frame.columns) or not np.array_equal(expected.iloc[:, 0].astype(str), frame.iloc[:, 0].astype(str)):
            raise UserError(f"{path} does not match the competition's {sample} (columns or ids): rebuild the run's ensemble")
    return path, kaggle["competition"]


@hydra.main(version_base="1.3", config_path="../conf", config_name="submit")
@command
def main(cfg: DictConfig) -> None:
    path, competition = checked_submission(Path(cfg.run_dir))
    client().competition_submit(str(path), cfg.message, competition)
    log.info("submitted %s to %s: %s", path, competition, cfg.message)


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "submit", __doc__, run_dir=True)
    main()
