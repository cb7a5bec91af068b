"""`python -m src.serve run_dir=DIR`: a local web page to draw a digit on and watch the run's fold
ensemble read it as you draw (src.serving.app)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.cli import command, refuse_missing_run_dir
from src.extras import require

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
@command
def main(cfg: DictConfig) -> None:
    require("serve", "python -m src.serve", "fastapi", "uvicorn")
    import uvicorn

    from src.serving.app import export_dir, load_export, make_app

    path = export_dir(Path(cfg.run_dir), cfg.version)
    served = load_export(path)

    app = make_app(served, cfg.max_batch, cfg.max_body)
    log.info("serving %s (%s fold(s)) at http://%s:%d/", path, served.folds, cfg.host, cfg.port)
    # log_config=None: uvicorn's messages go through Hydra's logging like everything else
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_config=None, access_log=bool(cfg.access_log))


if __name__ == "__main__":
    refuse_missing_run_dir(sys.argv[1:])
    main()
