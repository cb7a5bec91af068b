"""Optional features install with extras (pyproject.toml): `[serve]`, `[search]`, `[track]`,
`[kaggle]`, `[all]`. A feature whose extra is missing says so in one line, with the fix."""
from __future__ import annotations

import importlib.util

from src.errors import UserError


def require(extra: str, feature: str, *modules: str) -> None:
    """UserError naming `pip install -e '.[extra]'` unless every one of `modules` can be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{feature} needs {', '.join(missing)}, which the [{extra}] extra installs: "
                        f"pip install -e '.[{extra}]'")
