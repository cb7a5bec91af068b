"""The documentation stays true: every relative link and anchor in README.md, docs/ and
benchmarks/README.md resolves, and every `python -m src.<command> ...` they quote composes with
the real configs (no training), so a renamed key or preset breaks the build, not a reader."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import REPO
from src.cli import compose_config

PAGES = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIGS = {"cv": "config", "ensemble": "ensemble", "blend": "blend", "report": "report", "predict": "predict",
           "export": "export", "serve": "serve", "submit": "submit", "download": "download"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())  # markup; underscores stay, as in `data=fashion_mnist`
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"(?m)^#{1,6} (.+)$", text)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "mailto:"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.exists():
            broken.append(f"{target}: no such file")
        elif anchor and found.suffix == ".md" and anchor not in anchors(found):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(REPO)}: {broken}"


def quoted_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(command, its arguments) of each `python -m src.<command>` in the page's code blocks and
    inline code, lines continued with a backslash joined, comments dropped; not a `$ ` transcript
    line, which shows a mistake and its error."""
    text = page.read_text().replace("\\\n", " ")
    found = []
    for match in re.finditer(r"python -m src\.(\w+)([^`\n]*)", text):
        if text[text.rfind("\n", 0, match.start()) + 1:match.start()] == "$ ":
            continue  # a transcript of a mistake and its error: meant not to compose
        rest = match.group(2).split("  #")[0].split(" # ")[0]
        try:
            args = shlex.split(rest)
        except ValueError:
            args = rest.split()
        found.append((match.group(1), args))
    return found


def overrides_of(args: list[str]) -> list[str]:
    """The arguments Hydra would take as overrides: optional `[key=value]` unwrapped; flags,
    placeholders (`...`, `ARGS`), sweeps and Hydra's own keys left out."""
    kept = []
    for arg in args:
        arg = arg[1:-1] if arg.startswith("[") and arg.endswith("]") and "=" in arg else arg
        if arg.startswith("-") or "=" not in arg or "..." in arg or arg.startswith(("hydra.", "hydra/")):
            continue
        kept.append(arg)
    parsed = OverridesParser.create().parse_overrides(kept)
    return [o.input_line for o in parsed if not o.is_sweep_override()]


COMMANDS = [(page, command, args) for page in PAGES for command, args in quoted_commands(page)]


@pytest.mark.parametrize("page, command, args", COMMANDS,
                         ids=[f"{p.relative_to(REPO)}:{c} {' '.join(a)[:60]}" for p, c, a in COMMANDS])
def test_every_quoted_command_composes(page, command, args):
    assert command in CONFIGS, f"{page.relative_to(REPO)} quotes python -m src.{command}, which is no command"
    if "model=wide_cnn" in args:  # docs/parts.md's worked example: the reader writes that file first
        pytest.skip("a part of the reader's own (tests/training/test_user_parts.py runs one)")
    compose_config(overrides_of(args), CONFIGS[command])  # raises on a key, group option or value that does not exist
