"""What every command shares: bad input ends the command with one line and exit status 1."""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, TypeVar

from src.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


def command(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command's task function: a UserError is logged and ends the process with
    `error: <message>` on stderr and exit status 1, never a traceback; Ctrl-C ends it with
    exit status 130, also without one."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> T:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            log.error("%s", e)
            sys.exit(f"error: {e}")
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper
