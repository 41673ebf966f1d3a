"""Every mistake a user can make with ``faust -A app rules|generate`` that fails before a
broker answers prints one line on stderr naming the problem and exits 2 (usage) or 1
(refused), without a traceback. Each case is a real ``faust`` subprocess; FRAUD_BROKER
points at a loopback port where nothing listens. The cases that need a broker (a rule id
not found, a missing rules topic) are in tests/integration/test_rules.py."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from faust.cli.base import cli

from app.cli import (
    CASE_ACTIONS,
    LIST_ACTIONS,
    RULE_ACTIONS,
    SUPPRESSION_ACTIONS,
    FraudCommand,
    OneLineUsage,
    cases,
    generate,
    lists,
    rules,
    suppressions,
)
from tests.cli import assert_one_error_line, free_port, run_cli
from tests.docs import first_column, page, section
from tests.factories import rule_body

USAGE, REFUSED = 2, 1


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{dir}" stands for the directory holding the files below
    exit_code: int
    names: tuple[str, ...]  # what the line must name; "{dir}" and "{broker}" as above
    env: Mapping[str, str] = field(default_factory=dict)
    prefix: str = "Error: "


BACKTEST_RANGE = ("--since", "2026-11-20", "--until", "2026-11-21")
REACH = ("cannot reach Kafka at {broker}", "FRAUD_BROKER")

CASES = [
    # rules put
    Case("put-refused", ("rules", "put", "{dir}/bad.yaml"), REFUSED, ("rule refused", "version")),
    Case(
        "put-absence-refused",
        ("rules", "put", "{dir}/bad-absence.yaml"),
        REFUSED,
        ("rule refused", "not_followed_by"),
    ),
    Case(
        "put-not-yaml",
        ("rules", "put", "{dir}/garbled.yaml"),
        REFUSED,
        ("{dir}/garbled.yaml", "neither JSON nor YAML", "line 1"),
    ),
    Case(
        "put-missing-file",
        ("rules", "put", "{dir}/nope.yaml"),
        USAGE,
        ("{dir}/nope.yaml", "No such file"),
    ),
    Case("put-a-directory", ("rules", "put", "{dir}"), USAGE, ("{dir}", "Is a directory")),
    Case("put-no-file", ("rules", "put"), USAGE, ("FILE",)),
    Case("put-unreachable", ("rules", "put", "{dir}/good.yaml"), REFUSED, REACH),
    # rules list, show, pause, activate, delete
    Case("list-unreachable", ("rules", "list"), REFUSED, REACH),
    Case("list-bad-flag", ("rules", "list", "--bogus"), USAGE, ("--bogus",)),
    Case("no-action", ("rules",), USAGE, ("Missing argument 'ACTION'", "put")),
    Case("bad-action", ("rules", "frobnicate"), USAGE, ("'frobnicate'", "ACTION")),
    # (each action once: the four share the check for ID, then the read of the topic)
    Case("show-no-id", ("rules", "show"), USAGE, ("'rules show' needs ID",)),
    Case("delete-no-id", ("rules", "delete"), USAGE, ("'rules delete' needs ID",)),
    Case("pause-unreachable", ("rules", "pause", "high-value-burst"), REFUSED, REACH),
    Case("activate-unreachable", ("rules", "activate", "high-value-burst"), REFUSED, REACH),
    # rules backtest
    Case("backtest-no-file", ("rules", "backtest"), USAGE, ("FILE",)),
    Case(
        "backtest-no-since",
        ("rules", "backtest", "{dir}/good.yaml", "--until", "2026-11-21"),
        USAGE,
        ("--since", "--until"),
    ),
    Case(
        "backtest-missing-file",
        ("rules", "backtest", "{dir}/nope.yaml", *BACKTEST_RANGE),
        USAGE,
        ("{dir}/nope.yaml",),
    ),
    Case(
        "backtest-refused",
        ("rules", "backtest", "{dir}/bad.yaml", *BACKTEST_RANGE),
        REFUSED,
        ("version",),
    ),
    Case(
        "backtest-two-rules",
        ("rules", "backtest", "{dir}/two.yaml", *BACKTEST_RANGE),
        REFUSED,
        ("{dir}/two.yaml", "2 rules"),
    ),
    Case(
        "backtest-bad-date",
        ("rules", "backtest", "{dir}/good.yaml", "--since", "last week", "--until", "2026-11-21"),
        REFUSED,
        ("--since",),
    ),
    Case(
        "backtest-no-archive",
        ("rules", "backtest", "{dir}/good.yaml", *BACKTEST_RANGE),
        REFUSED,
        ("cannot read the archive", "{dir}/no-archive"),
    ),
    # generate
    Case("generate-bad-rate", ("generate", "--rate", "0"), USAGE, ("--rate",)),
    Case(
        "generate-truth-unwritable",
        ("generate", "--truth", "{dir}/no-such-dir/truth.jsonl"),
        USAGE,
        ("--truth", "{dir}/no-such-dir/truth.jsonl", "No such file"),
    ),
    Case("generate-unreachable", ("generate", "--duration", "1"), REFUSED, REACH),
    # lists and suppressions: an entry is checked before the topics are read
    Case("lists-add-no-value", ("lists", "add", "blocked"), USAGE, ("'lists add' needs",)),
    Case("lists-no-action", ("lists",), USAGE, ("Missing argument 'ACTION'",)),
    Case(
        "lists-add-pan",
        ("lists", "add", "cards", "4111111111111111", "--reason", "r"),
        REFUSED,
        ("refused: value", "card number"),
    ),
    Case(
        "lists-add-bad-name",
        ("lists", "add", "Blocked-Devices", "d1", "--reason", "r"),
        REFUSED,
        ("refused: list",),
    ),
    Case("lists-add-no-reason", ("lists", "add", "blocked", "d1"), REFUSED, ("refused: reason",)),
    Case(
        "lists-add-bad-bin",
        ("lists", "add", "risky_bins", "41111", "--reason", "r"),
        REFUSED,
        ("refused: value", "BIN list", "6 or 8 digits"),
    ),
    Case(
        "lists-add-bad-for",
        ("lists", "add", "blocked", "d1", "--reason", "r", "--for", "soon"),
        REFUSED,
        ("refused: for", "'soon'"),
    ),
    Case(
        "lists-add-past",
        ("lists", "add", "blocked", "d1", "--reason", "r", "--until", "2020-01-01T00:00:00Z"),
        REFUSED,
        ("refused: until", "not in the future"),
    ),
    Case(
        "lists-add-unreachable",
        ("lists", "add", "blocked", "d1", "--reason", "r", "--for", "7d"),
        REFUSED,
        REACH,
    ),
    Case("lists-show-unreachable", ("lists", "show"), REFUSED, REACH),
    Case(
        "lists-import-missing",
        ("lists", "import", "blocked", "{dir}/nope.csv"),
        USAGE,
        ("{dir}/nope.csv",),
    ),
    Case(
        "lists-import-bad-line",
        ("lists", "import", "blocked", "{dir}/bad.csv"),
        REFUSED,
        ("{dir}/bad.csv", "line 3.until"),
    ),
    Case(
        "suppressions-add-no-end",
        ("suppressions", "add", "high-value-burst", "tok_1", "--reason", "batch run"),
        REFUSED,
        ("refused: until", "required"),
    ),
    Case(
        "suppressions-add-no-key",
        ("suppressions", "add", "high-value-burst"),
        USAGE,
        ("'suppressions add' needs RULE and KEY",),
    ),
    Case("suppressions-list-unreachable", ("suppressions", "list"), REFUSED, REACH),
    # a setting every command reads (checked when the app is imported)
    Case(
        "bad-setting",
        ("rules", "list"),
        USAGE,
        ("FRAUD_MAX_RULES", "many"),
        env={"FRAUD_MAX_RULES": "many"},
        prefix="fraud-detection: bad setting: ",
    ),
]


@dataclass(frozen=True)
class Ran:
    directory: str
    broker: str
    results: dict[str, subprocess.CompletedProcess[str]]


def write_files(directory: Path) -> None:
    (directory / "good.yaml").write_text(yaml.safe_dump(rule_body()))
    (directory / "bad.yaml").write_text(yaml.safe_dump(rule_body(version=0)))
    (directory / "garbled.yaml").write_text("{{{[")
    absence = rule_body(kind="absence", aggregate=..., threshold=...)  # no not_followed_by
    (directory / "bad-absence.yaml").write_text(yaml.safe_dump(absence))
    two = [rule_body(), rule_body(rule_id="second")]
    (directory / "two.yaml").write_text(json.dumps(two))
    (directory / "bad.csv").write_text("value,until,reason\nd1,,ok\nd2,someday,bad\n")


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """All the cases, four subprocesses at a time (most wait a second for Faust's worker
    to shut down, not for the CPU)."""
    directory = tmp_path_factory.mktemp("cli")
    write_files(directory)
    broker = f"127.0.0.1:{free_port()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    base |= {
        "FRAUD_BROKER": f"kafka://{broker}",
        "FRAUD_DATADIR": str(directory / "data"),
        "FRAUD_ARCHIVE_URL": str(directory / "no-archive"),
    }

    def run(case: Case) -> subprocess.CompletedProcess[str]:
        args = [arg.replace("{dir}", str(directory)) for arg in case.args]
        return run_cli(args, {**base, **case.env})

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([c.id for c in CASES], pool.map(run, CASES), strict=True))
    return Ran(str(directory), broker, results)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_mistake_is_one_line_naming_it(ran: Ran, case: Case) -> None:
    names = [n.replace("{dir}", ran.directory).replace("{broker}", ran.broker) for n in case.names]
    assert_one_error_line(ran.results[case.id], case.exit_code, *names, prefix=case.prefix)


def test_faust_registers_the_commands_through_fraud_command() -> None:
    """FraudCommand.as_click_command stands in for Faust's own: the commands are on
    Faust's click group, as OneLineUsage commands with the options given to app.command."""
    for command, params in (
        (rules, ["action", "target", "since", "until"]),
        (generate, ["rate", "duration", "fraud_ratio", "patterns", "seed", "cards", "truth"]),
    ):
        assert issubclass(command, FraudCommand)
        registered = cli.commands[command.__name__]
        assert isinstance(registered, OneLineUsage)
        assert [p.name for p in registered.params] == params
        assert registered.help == command.__doc__


def test_the_cli_page_lists_every_rules_action_and_every_option() -> None:
    cli_page = page("reference/cli.md")
    rules_section = section(cli_page, "`faust -A app rules`")
    actions = [cell.split()[0] for cell in first_column(rules_section) if not cell.startswith("-")]
    assert actions == list(RULE_ACTIONS)
    documented = {cell for cell in first_column(cli_page) if cell.startswith("--")}
    declared = {
        name
        for command in (generate, rules, cases, lists, suppressions)
        for option in command.options or ()
        for name in getattr(option, "args", ())
        if name.startswith("--")
    }
    assert declared <= documented
    assert "| 1 | refused" in cli_page and "| 2 | usage" in cli_page
    cases_section = section(cli_page, "`faust -A app cases`")
    listed = [cell.split()[0] for cell in first_column(cases_section) if not cell.startswith("-")]
    assert listed == list(CASE_ACTIONS)
    for command, choices in (("lists", LIST_ACTIONS), ("suppressions", SUPPRESSION_ACTIONS)):
        found = section(cli_page, f"`faust -A app {command}`")
        named = [cell.split()[0] for cell in first_column(found) if not cell.startswith("-")]
        assert named == list(choices)
