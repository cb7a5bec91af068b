"""`python -m src.serve run_dir=DIR`: a local web page to draw a digit on and watch the run's fold
ensemble read it as you draw (src.serving.app)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.cli import check_command_line, command
from src.errors import UserError
from src.extras import require

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
@command
def main(cfg: DictConfig) -> None:
    require("serve", "python -m src.serve", "fastapi", "uvicorn")
    import uvicorn

    from src.serving.app import export_dir, load_export, load_folds, make_app
    from src.serving.protocol import HostCheck, allowed_hosts, timed_h11

    run_dir = Path(cfg.run_dir)
    if cfg.export:
        path = export_dir(run_dir, cfg.version)
        log.warning("serving the SavedModel %s: a SavedModel is code (a crafted one can read and write files): "
                    "serve only exports you made", path)
        served = load_export(path)
    elif cfg.version is not None:
        raise UserError(f"version={cfg.version} names a SavedModel export: add export=true to serve one")
    else:
        served = load_folds(run_dir)
    hosts = allowed_hosts(cfg.host, cfg.allowed_hosts)
    app = HostCheck(make_app(served, cfg.max_batch, cfg.max_body, docs=bool(cfg.docs)), hosts)
    log.info("serving the %s of %s at http://%s:%d/ (Host: %s)", served.what(), run_dir, cfg.host, cfg.port, ", ".join(hosts))
    # log_config=None: uvicorn's messages go through Hydra's logging like everything else
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_config=None, access_log=bool(cfg.access_log),
                http=timed_h11(cfg.header_timeout, cfg.body_timeout))


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "serve", __doc__, run_dir=True)
    main()
