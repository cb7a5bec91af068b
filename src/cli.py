"""What every command shares: bad input ends the command with one line and exit status 1."""
from __future__ import annotations

import functools
import logging
import shutil
import sys
from pathlib import Path
from typing import Callable, TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src import rundir
from src.errors import UserError
from src.schema import check_keys  # also registers the configs' schemas before Hydra composes

log = logging.getLogger(__name__)
T = TypeVar("T")


def command(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command's task function: a config key that no schema names (added with
    `+key=value`) is refused, and a UserError is logged and ends the process with
    `error: <message>` on stderr and exit status 1, never a traceback; Ctrl-C ends it with
    exit status 130, also without one."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> T:
        try:
            if args and isinstance(args[0], DictConfig):
                try:
                    check_keys(args[0])
                except UserError:
                    _remove_output_dir_if_empty()
                    raise
            return main(*args, **kwargs)
        except UserError as e:
            log.error("%s", e)
            sys.exit(f"error: {e}")
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


def _remove_output_dir_if_empty() -> None:
    """A refused command line leaves no run dir: Hydra's output dir goes when it holds nothing but
    Hydra's own config record and this command's log."""
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    if rundir.holds_nothing(out, f"{hc.job.name}.log"):
        shutil.rmtree(out, ignore_errors=True)
