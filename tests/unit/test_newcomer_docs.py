"""The newcomer pages (quickstart, first rule, producing payments) say what the code does:
their tables list exactly the fields, operators and dead-letter reasons the code has, their
includes exist, and their commands are the ones the integration test runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.detection.models import PAYMENT_FIELDS
from app.detection.rules import (
    FILTER_FIELDS,
    FILTER_OPS,
    GROUP_FIELDS,
    RULE_KEYS,
    SEVERITIES,
    STATUSES,
    RuleError,
    parse_rule,
)
from app.worker.settings import Settings
from infra.local.demo import session_exports
from tests.journeys import FIRST_RULE, ON_PAGES, PAGES, PRODUCE, QUICKSTART, REPO

SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)
TICKED = re.compile(r"`([^`]+)`")
# Where the workers give a record a dead-letter reason: InvalidPayment("reason", ...) and
# dead_letter(message, "reason", ...).
REASON = re.compile(r'(?:InvalidPayment|dead_letter)\(\s*(?:[\w.]+,\s*)?"([a-z_]+)"')


def section(page: Path, heading: str) -> str:
    """The text of the page's ``## heading`` section."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def table(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in ``text``, as lists of cells."""
    lines = text.splitlines()

    def rule(line: str) -> bool:
        return line.startswith("|") and set(line) <= set("|- ")

    return [
        [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for line, after in zip(lines, [*lines[1:], ""], strict=True)
        if line.startswith("|") and not rule(line) and not rule(after)  # not a header
    ]


def code_lines(page: Path) -> list[str]:
    """Every line inside the page's fenced code blocks, in order."""
    lines, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.strip())
    return lines


def ticked(cell: str) -> list[str]:
    """The cell's `code` spans, each once, in order."""
    return list(dict.fromkeys(TICKED.findall(cell)))


def reasons_in_code() -> set[str]:
    sources = [*(REPO / "app").rglob("*.py"), *(REPO / "agents").glob("*.py")]
    return {m for path in sources for m in REASON.findall(path.read_text(encoding="utf-8"))}


def test_the_payment_field_table_lists_exactly_the_payment_fields_in_order() -> None:
    rows = table(section(PRODUCE, "The fields"))
    assert [ticked(row[0])[0] for row in rows] == list(PAYMENT_FIELDS)
    assert all(row[2] == "yes" for row in rows)  # every field is required


def test_the_dead_letter_reasons_listed_are_exactly_those_in_the_code() -> None:
    rows = table(section(PRODUCE, "When a payment is refused"))
    listed = [ticked(row[0])[0] for row in rows]
    assert len(listed) == len(set(listed))
    found = reasons_in_code()
    assert len(found) >= 20, found  # the pattern still finds them
    assert set(listed) == found


def ops_the_parser_takes(field: str) -> list[str]:
    ops = []
    for op in FILTER_OPS:
        scalar = "1" if field == "amount" else "x"
        value: object = [scalar] if op in ("in", "not in") else scalar
        body = {
            "rule_id": "r",
            "version": 1,
            "filter": [{"field": field, "op": op, "value": value}],
            "window": 60,
            "threshold": 1,
        }
        try:
            parse_rule(body)
        except RuleError:
            continue
        ops.append(op)
    return ops


def test_the_filter_fields_and_their_operators_are_the_parsers() -> None:
    rows = table(section(FIRST_RULE, "1. Write the rule"))
    filters = [row for row in rows if len(row) == 3]
    listed: list[str] = []
    for fields, _, ops in filters:
        for field in ticked(fields):
            listed.append(field)
            assert ticked(ops) == ops_the_parser_takes(field), field
    assert sorted(listed) == sorted(FILTER_FIELDS)


def test_the_rule_keys_table_lists_every_key_and_their_values() -> None:
    rows = table(section(FIRST_RULE, "1. Write the rule"))
    keys = {row[0].strip("`"): row[1] for row in rows if len(row) == 2}
    assert set(keys) == RULE_KEYS
    assert ticked(keys["group_by"]) == list(GROUP_FIELDS)
    assert ticked(keys["status"]) == list(STATUSES)
    assert ticked(keys["severity"]) == list(SEVERITIES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_include_names_a_file_of_the_repository(page: Path) -> None:
    for path in SNIPPET.findall(page.read_text(encoding="utf-8")):
        assert (REPO / path).is_file(), path


@pytest.mark.parametrize(
    ("page", "included"),
    [
        (PRODUCE, "examples/payment.json"),
        (PRODUCE, "examples/produce_payment.py"),
        (FIRST_RULE, "examples/rules/first-rule.yaml"),
    ],
)
def test_the_examples_are_included_as_files_not_copied(page: Path, included: str) -> None:
    assert included in SNIPPET.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_run_the_venvs_programs_and_no_fixed_broker_port(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"(?<!\.venv/bin/)\bfaust -A", text)
    assert not re.search(r"(?<!\.venv/bin/)\bpython -[mc]", text)
    assert ":9092" not in text


@pytest.mark.parametrize(
    ("command", "page"),
    [(command, page) for command, pages in ON_PAGES.items() for page in pages],
    ids=lambda value: value.name if isinstance(value, Path) else value[:40],
)
def test_the_commands_the_journey_test_runs_are_on_their_pages(command: str, page: Path) -> None:
    assert command in code_lines(page)


def test_the_quickstart_shows_the_exports_the_demo_prints() -> None:
    shown = [
        line.split("=", 1)[0].removeprefix("export ")
        for line in code_lines(QUICKSTART)
        if line.startswith("export ")
    ]
    printed = session_exports(Settings(), "kafka://h:1", "token", "http://h:2", "/archive")
    assert shown == list(printed)
