"""`python -m src.export run_dir=DIR [version=N]`: a finished run's fold ensemble as one versioned
SavedModel in DIR/export/<version>/ (src.serving.export says what it holds)."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.cli import check_command_line, command
from src.serving.export import export


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@command
def main(cfg: DictConfig) -> None:
    export(Path(cfg.run_dir), cfg.version)


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "export", __doc__, run_dir=True)
    main()
