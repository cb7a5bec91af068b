"""`python -m src.download data=kannada_mnist`: a data preset's files from Kaggle, unzipped into
`data/<preset>/` (or `out=DIR`), where the preset looks for them. Needs the `[kaggle]` extra and
Kaggle credentials."""
from __future__ import annotations

import logging
import sys
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.cli import check_command_line, command
from src.errors import UserError
from src.files import sha256
from src.kaggle_client import client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one download may write: bytes in all and files (conf/download.yaml `max_bytes`, `max_files`)."""

    max_bytes: int = 20 * 2**30
    max_files: int = 1000


def fetch(api, kaggle: DictConfig, out: Path, limits: Limits = Limits()) -> list[Path]:
    """Download a competition's or a data set's files with `api` and unzip them into `out`; the
    files written. Everything lands in a temporary dir first, so `out` never holds half a download;
    an archive that would unpack past `limits`, is damaged, or holds two different files of one
    name is refused in one line, and nothing is written."""
    competition, dataset = kaggle.get("competition"), kaggle.get("dataset")
    if not competition and not dataset:
        raise UserError("this data preset names no Kaggle competition or data set (data.kaggle): download its files by hand")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".download-") as tmp:
        got = Path(tmp) / "got"
        got.mkdir()
        if competition:
            api.competition_download_files(competition, path=str(got), quiet=False)
        else:
            api.dataset_download_files(dataset, path=str(got), quiet=False)
        files = Path(tmp) / "files"
        files.mkdir()
        budget = Budget(limits)
        for path in sorted(got.rglob("*")):
            if path.is_file() and path.suffix == ".zip":
                _unzip(path, files, budget)
            elif path.is_file():
                _place(path.name, path.open("rb"), files, budget, str(path.name))
        written = []
        for path in sorted(files.iterdir()):
            target = out / path.name  # the presets name the files without their folders
            os.replace(path, target)
            written.append(target)
    if not written:
        raise UserError(f"Kaggle sent no files for {competition or dataset}")
    return written


class Budget:
    """Bytes and files left to write in one download."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.bytes, self.files = limits, 0, 0

    def file(self, where: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise UserError(f"{where}: the download holds more than {self.limits.max_files:,} files: refused, nothing "
                            "written (raise max_files= if the competition really has that many)")

    def take(self, n: int, where: str) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise UserError(f"{where}: the download unpacks to more than {self.limits.max_bytes:,} bytes: refused, nothing "
                            "written (raise max_bytes= if the competition really is that large)")


def _unzip(archive: Path, into: Path, budget: Budget) -> None:
    """Each file of a zip archive into `into`, by its name without folders, counting every byte
    actually unpacked (not what the archive says)."""
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.infolist():
                if not member.is_dir():
                    _place(Path(member.filename).name, z.open(member), into, budget, f"{archive.name}: {member.filename}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        raise UserError(f"{archive.name} from Kaggle is not a readable zip archive ({type(e).__name__}: {e}): "
                        "download it again; nothing was written") from None


def _place(name: str, source, into: Path, budget: Budget, where: str) -> None:
    """Copy `source` (a binary stream, closed here) to into/name; the same name twice is fine when
    the contents are the same, refused when they differ."""
    if not name or name in (".", ".."):
        source.close()
        return
    budget.file(where)
    target = into / name
    fresh = target.with_name(f".{name}.new") if target.exists() else target
    with source, open(fresh, "wb") as f:
        while block := source.read(1 << 20):
            budget.take(len(block), where)
            f.write(block)
    if fresh != target:
        same = sha256(fresh) == sha256(target)
        fresh.unlink()
        if not same:
            raise UserError(f"{where}: two different files are both named {name!r} once their folders are dropped: "
                            "refused, nothing written; download the archive by hand and choose one")


@hydra.main(version_base="1.3", config_path="../conf", config_name="download")
@command
def main(cfg: DictConfig) -> None:
    kaggle = cfg.data.get("kaggle") or {}
    written = fetch(client(), kaggle, Path(cfg.out), Limits(int(cfg.max_bytes), int(cfg.max_files)))
    log.info("%d file(s) in %s: %s", len(written), cfg.out, ", ".join(p.name for p in written))


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "download", __doc__)
    main()
