"""The docs site's pages and example files, for the tests that hold them to the code."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# Example files the pages include with pymdownx.snippets.
SNIPPETS = DOCS / "snippets"


def page(path: str) -> str:
    """The markdown of a docs page, by its path under docs/."""
    return (DOCS / path).read_text(encoding="utf-8")


def section(markdown: str, heading: str) -> str:
    """The text under a heading (``## Name``), up to the next heading of any level."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == heading)
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if line.startswith("#")), len(rest))
    return "\n".join(rest[:end])


def first_column(markdown: str) -> list[str]:
    """The code spans in the first cell of every table row of ``markdown``, in order
    (header and separator rows have none)."""
    found: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            first = line.split("|")[1]
            found.extend(re.findall(r"`([^`]+)`", first))
    return found
