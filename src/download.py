"""`python -m src.download data=kannada_mnist`: a data preset's files from Kaggle, unzipped into
`data/<preset>/` (or `out=DIR`), where the preset looks for them. Needs the `[kaggle]` extra and
Kaggle credentials."""
from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.cli import command
from src.errors import UserError
from src.kaggle_client import client

log = logging.getLogger(__name__)


def fetch(api, kaggle: DictConfig, out: Path) -> list[Path]:
    """Download a competition's or a data set's files with `api` and unzip them into `out`; the
    files written. Everything lands in a temporary dir first, so `out` never holds half a download."""
    competition, dataset = kaggle.get("competition"), kaggle.get("dataset")
    if not competition and not dataset:
        raise UserError("this data preset names no Kaggle competition or data set (data.kaggle): download its files by hand")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".download-") as tmp:
        if competition:
            api.competition_download_files(competition, path=tmp, quiet=False)
        else:
            api.dataset_download_files(dataset, path=tmp, quiet=False)
        for archive in list(Path(tmp).glob("*.zip")):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
            archive.unlink()
        written = []
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                target = out / path.name  # the presets name the files without their folders
                shutil.move(str(path), target)
                written.append(target)
    if not written:
        raise UserError(f"Kaggle sent no files for {competition or dataset}")
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="download")
@command
def main(cfg: DictConfig) -> None:
    kaggle = cfg.data.get("kaggle") or {}
    written = fetch(client(), kaggle, Path(cfg.out))
    log.info("%d file(s) in %s: %s", len(written), cfg.out, ", ".join(p.name for p in written))


if __name__ == "__main__":
    main()
