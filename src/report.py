"""`python -m src.report run_dir=DIR`: (re)draw a finished run's pictures and report.md (src.cv
writes them itself at the end of every run)."""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src import rundir
from src.cli import command
from src.inputs import dataset as data_mod
from src.results import report

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@command
def main(cfg: DictConfig) -> None:
    run_dir = Path(cfg.run_dir)
    recorded = rundir.read_record(run_dir)["resolved_config"]
    dataset = data_mod.load(OmegaConf.create(recorded["data"]))
    log.info("report written: %s", report.build(run_dir, dataset.x_train, dataset.x_test))


if __name__ == "__main__":
    main()
