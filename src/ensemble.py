"""`python -m src.ensemble run_dir=DIR`: (re)build a run's submission.csv and metrics.json from its
complete folds, and say which are missing: the last step after fold jobs trained in parallel
(src.cv builds it itself when it finishes the last fold). Blending several runs is src.blend.
"""
from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src import rundir
from src.cli import check_command_line, command
from src.inputs.dataset import of_run, read_labels
from src.results.ensemble import build, summary

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="ensemble")
@command
def main(cfg: DictConfig) -> float:
    """Rebuild the ensemble of the run in `cfg.run_dir`; returns its mean CV accuracy."""
    run_dir = Path(cfg.run_dir)
    record = rundir.read_record(run_dir)
    config, rows = record["resolved_config"], record["rows"]
    data = of_run(run_dir, record, cfg.data, roles=())
    y_test = None
    if data.test_labels and data.get("format", "csv") == "csv":
        classes = rundir.read_submission_format(run_dir).labels(np.arange(int(config["data"]["num_classes"])))
        y_test = read_labels(data.test_labels, rows["test"], classes)
    ens, _ = build(run_dir, int(config["fold"]), rows["train"], y_test)
    log.info("results in %s\n%s", run_dir, summary(ens))
    return ens.metrics["cv_mean"]


def blend_pointer(argv: list[str]) -> str | None:
    """The one-line answer to the blend form this command had (`runs=[...]`), else None."""
    if not any(arg.split("=", 1)[0].lstrip("+~") == "runs" for arg in argv):
        return None
    return f"blending is its own command now: python -m src.blend {shlex.join(argv)}"


if __name__ == "__main__":
    if pointer := blend_pointer(sys.argv[1:]):
        sys.exit(f"error: {pointer}")
    check_command_line(sys.argv[1:], "ensemble", __doc__, run_dir=True)
    main()
