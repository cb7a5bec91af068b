"""`python -m src.blend "runs=[DIR1,DIR2]" [weights=oof]`: blend finished runs (e.g. the members of
a sweep) into one submission, in a new run dir (src.results.blend says how)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.cli import check_command_line, command
from src.results import blend

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="blend")
@command
def main(cfg: DictConfig) -> float:
    """Write the blend of `cfg.runs` to Hydra's run dir; returns its out-of-fold accuracy."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    ens, metrics = blend.blend([Path(d) for d in cfg.runs], cfg.weights)
    blend.write_blend(out_dir, ens)
    log.info("blend written to %s\n%s", out_dir, blend.summary(metrics))
    return metrics["oof_accuracy"]


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "blend", __doc__)
    main()
