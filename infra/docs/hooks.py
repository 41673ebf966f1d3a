"""MkDocs hooks of the docs site (``hooks:`` in mkdocs.yml).

The settings reference is generated: ``docs/reference/settings.md`` holds a marker line for
each table, and the tables are built here, when the site is built, from the one declaration
of each variable (``app.worker.settings.DECLARED`` with the defaults of ``Settings``, and the
notifier's ``lambdas.notifier.models.env.VARIABLES``), so the page cannot drift from the code.

MkDocs loads this file by its path, so it imports only what the installed project provides
(``app``, ``lambdas``), never ``infra``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from mkdocs.exceptions import PluginError

from app.worker.settings import DECLARED, HIDDEN, PREFIX, Settings
from lambdas.notifier.models.env import VARIABLES as NOTIFIER_VARIABLES
from lambdas.notifier.models.env import NotifierConfig

if TYPE_CHECKING:
    from mkdocs.structure.pages import Page

SETTINGS_PAGE = "reference/settings.md"
WORKER_MARKER = "<!-- generated: worker settings -->"
NOTIFIER_MARKER = "<!-- generated: notifier variables -->"


def default_cell(value: object) -> str:
    """A default as the environment would spell it, as code; ``unset`` for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, float | int | Decimal | str | PurePath):
        return f"`{value}`"
    raise TypeError(f"no spelling for a default of type {type(value).__name__}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def worker_settings_table() -> str:
    """One row per ``FRAUD_*`` variable of the worker: name, default, meaning."""
    defaults = Settings()
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for variable in DECLARED:
        meaning = variable.description
        if variable.attr in HIDDEN:
            meaning += " Never printed, not even in the message about a bad value."
        default = default_cell(getattr(defaults, variable.attr))
        rows.append(f"| `{PREFIX}{variable.name}` | {default} | {_cell(meaning)} |")
    return "\n".join(rows)


def notifier_variables_table() -> str:
    """One row per variable the notifier Lambda reads: name, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for variable in NOTIFIER_VARIABLES:
        if variable.required:
            default = "required"
        else:
            default = default_cell(NotifierConfig.__dataclass_fields__[variable.attr].default)
        name = f"`{variable.name}`"
        if variable.fallback is not None:
            name += f" (or `{variable.fallback}`)"
        meaning = variable.description[:1].upper() + variable.description[1:] + "."
        rows.append(f"| {name} | {default} | {_cell(meaning)} |")
    return "\n".join(rows)


def expand(markdown: str, src_uri: str) -> str:
    """The page's markdown with its generated tables in place of their markers."""
    if src_uri != SETTINGS_PAGE:
        return markdown
    for marker, table in (
        (WORKER_MARKER, worker_settings_table),
        (NOTIFIER_MARKER, notifier_variables_table),
    ):
        if markdown.count(marker) != 1:
            raise PluginError(f"{SETTINGS_PAGE} must hold the line {marker!r} exactly once")
        markdown = markdown.replace(marker, table())
    return markdown


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    return expand(markdown, page.file.src_uri)
