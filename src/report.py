"""`python -m src.report run_dir=DIR`: (re)draw a finished run's pictures and report.md (src.cv
writes them itself at the end of every run)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src import rundir
from src.cli import check_command_line, command
from src.inputs import dataset as data_mod
from src.results import report

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@command
def main(cfg: DictConfig) -> None:
    run_dir = Path(cfg.run_dir)
    record = rundir.read_record(run_dir)
    dataset = data_mod.load(data_mod.of_run(run_dir, record, cfg.data, ("train", "train_labels", "test")))
    log.info("report written: %s", report.build(run_dir, dataset.x_train, dataset.x_test))


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "report", __doc__, run_dir=True)
    main()
