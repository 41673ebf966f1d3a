"""Faust CLI commands of the app (``faust -A app --help`` lists them).

A mistake the user can fix (a bad flag or value, a missing argument or option, a file that
cannot be read, a rule that is refused, an unreachable broker) prints one line on stderr,
``Error: <the problem>``, and exits 2 for usage or 1 for a refusal: see :class:`FraudCommand`.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import IO, Any, ClassVar, NoReturn

import click
from aiokafka.errors import KafkaConnectionError, KafkaError
from botocore.exceptions import BotoCoreError, ClientError
from faust.cli import AppCommand, argument, option
from faust.cli.base import cli
from mode.worker import exiting

from app.cases.labels import LabelFileError, disposition_label, parse_chargebacks, publish_labels
from app.cases.model import (
    DISPOSITIONS,
    STATUSES,
    Case,
    CaseError,
    CaseFilter,
    parse_case_id,
    parse_closing,
)
from app.cases.store import CaseStore, table_problem
from app.delivery.alert_writer import make_client
from app.detection.conditions import list_names
from app.detection.lists import LIST, SUPPRESSION, Entry, ListError, listbook
from app.detection.models import iso_from_ms
from app.detection.pan import contains_pan
from app.detection.rulebook import RuleBook
from app.detection.rules import Rule, RuleError, check_retention, parse_rule
from app.generator import PaymentGenerator, produce
from app.history.evidence import EVIDENCE_DAYS, rules_outcomes, run_backtest, shadow_evidence
from app.history.outcomes import outcome_line
from app.lists.topic import load_entry_file, new_entry, over_bound
from app.lists.topic import read_all as read_all_lists
from app.rules_admin.topic import (
    TopicUnreadable,
    bootstrap_servers,
    load_rule_file,
    publish,
    read_all,
    with_status,
)
from app.worker.faust_app import app, settings
from app.worker.settings import state_retention_ms


def one_line(text: str) -> str:
    """``text`` with its lines joined by spaces (click lists a choice's values one a line)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class UsageLine(click.ClickException):
    """A usage error shown as ``Error: <problem>`` alone; it exits 2, as click's do."""

    exit_code = 2


class OneLineUsage(click.Command):
    """A click command whose usage errors (unknown flag, bad value, missing argument) print
    one line and exit 2, without click's usage text and help hint."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise UsageLine(one_line(exc.format_message())) from None


def user_error(exc: BaseException) -> click.ClickException | None:
    """The one-line error to report ``exc`` as, or None when it is a bug (the traceback
    stays). Usage errors keep click's exit code 2; the others exit 1."""
    if isinstance(exc, click.ClickException):
        return exc
    bootstrap = bootstrap_servers(settings.broker)
    if isinstance(exc, KafkaConnectionError):
        return click.ClickException(f"cannot reach Kafka at {bootstrap} (FRAUD_BROKER)")
    if isinstance(exc, KafkaError):  # its text starts with its class name
        return click.ClickException(f"Kafka at {bootstrap}: {exc}")
    if isinstance(exc, TopicUnreadable):
        return click.ClickException(f"{exc} (Kafka at {bootstrap})")
    if isinstance(exc, ClientError | BotoCoreError):
        return click.ClickException(
            table_problem(exc, settings.cases_table, settings.dynamodb_endpoint)
        )
    if isinstance(exc, CaseError):
        return click.ClickException(str(exc))
    return None


class FraudCommand(AppCommand):
    """Faust's AppCommand, reporting a mistake the user can fix in one line.

    Faust runs a command's coroutine inside a :class:`mode.Worker`, which logs whatever it
    raises with two tracebacks before exiting 1. Here :meth:`execute` keeps an error
    :func:`user_error` knows instead of raising it, so the worker stops cleanly, and
    :meth:`__call__` then prints ``Error: <message>`` and exits with its code. Errors click
    finds while parsing the command line are shortened by :class:`OneLineUsage`.
    """

    abstract: ClassVar[bool] = True
    failure: click.ClickException | None = None

    @classmethod
    def as_click_command(cls) -> Callable[..., Any]:
        """What Faust's ``Command.as_click_command`` registers, with :class:`OneLineUsage`
        as the click command class."""

        @click.pass_context
        @wraps(cls)
        def command(ctx: click.Context, *args: Any, **kwargs: Any) -> None:
            with exiting(print_exception=True, file=sys.stderr):
                cls(ctx, *args, **kwargs)()

        registered: click.Command = cli.command(cls=OneLineUsage, help=cls.__doc__)(command)
        for decorate in cls.options or ():
            registered = decorate(registered)
        return registered

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        if self.loglevel.upper() not in ("INFO", "DEBUG"):
            # The Kafka client logs each failed connection at ERROR; the one line below
            # reports it. ``-l info`` shows them.
            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        try:
            return await super().execute(*args, **kwargs)
        except Exception as exc:
            self.failure = user_error(exc)
            if self.failure is None:
                raise
            return None

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        try:
            self.run_using_worker(*args, **kwargs)
        except SystemExit:
            failure = self.failure
            if failure is None:
                raise
            click.echo(f"Error: {one_line(failure.format_message())}", err=True)
            raise SystemExit(failure.exit_code) from None


@app.command(
    option(
        "--rate",
        type=click.FloatRange(min=0.1),
        default=100.0,
        show_default=True,
        help="Payments per second.",
    ),
    option(
        "--duration",
        type=click.FloatRange(min=0.1),
        default=60.0,
        show_default=True,
        help="Seconds to run.",
    ),
    option(
        "--fraud-ratio",
        type=click.FloatRange(0.0, 1.0),
        default=0.01,
        show_default=True,
        help="Share of payments that start an injected fraud burst.",
    ),
    option(
        "--patterns",
        type=click.FloatRange(0.0, 0.1),
        default=0.0,
        show_default=True,
        help="Share of payments that start each other injected pattern (the fraud the rules"
        " of examples/rules/kinds.yaml catch).",
    ),
    option("--seed", type=int, default=1, show_default=True, help="Random seed."),
    option(
        "--cards",
        type=click.IntRange(min=1),
        default=5000,
        show_default=True,
        help="Number of distinct cards.",
    ),
    option(
        "--truth",
        # Opened while the command line is parsed: a path that cannot be written is a usage
        # error before anything is produced.
        type=click.File("w", encoding="utf-8", lazy=False),
        default=None,
        help="Write the injected bursts and patterns (JSON lines) to this file.",
    ),
    base=FraudCommand,
)
async def generate(
    self: object,
    rate: float,
    duration: float,
    fraud_ratio: float,
    patterns: float,
    seed: int,
    cards: int,
    truth: IO[str] | None,
) -> None:
    """Produce synthetic payments (with fraud bursts) to the payments topic."""
    generator = PaymentGenerator(
        seed=seed, cards=cards, fraud_ratio=fraud_ratio, pattern_ratio=patterns
    )
    if truth is not None and hasattr(truth, "reconfigure"):
        # A line at a time, so a reader can follow it (the demo's stand-in analyst does).
        truth.reconfigure(line_buffering=True)
    try:
        await produce(
            bootstrap_servers(settings.broker),
            settings.topic_payments,
            rate,
            duration,
            generator,
            truth,
        )
    finally:
        if truth is not None:
            truth.close()
    await asyncio.sleep(0)


RULE_ACTIONS = ("put", "list", "show", "pause", "activate", "delete", "backtest")


def over_limits(new_rules: list[Rule], book: RuleBook) -> str | None:
    """Why the workers would refuse these rules (size, window or count), or None."""
    for rule in new_rules:
        size = len(rule.to_bytes())
        if size > settings.max_rule_bytes:
            return (
                f"rule: {rule.rule_id} is {size} bytes, more than the limit of"
                f" {settings.max_rule_bytes} (FRAUD_MAX_RULE_BYTES)"
            )
    for rule in new_rules:
        try:
            check_retention(
                rule, state_retention_ms(settings), int(settings.allowed_lateness_s * 1000)
            )
        except RuleError as exc:
            return f"{rule.rule_id}: {exc}"
    ids = set(book.rules) | {rule.rule_id for rule in new_rules}
    if len(ids) > settings.max_rules:
        return (
            f"rule: {len(ids)} rules would be in force, more than the limit of"
            f" {settings.max_rules} (FRAUD_MAX_RULES)"
        )
    return None


def rules_from_file(path: str) -> list[Rule]:
    """The rules of a JSON or YAML file; exit 2 naming a file that cannot be read, 1 naming
    the field of a rule that is refused."""
    try:
        return load_rule_file(path)
    except OSError as exc:
        raise click.UsageError(f"cannot read {path}: {exc.strerror}") from None
    except RuleError as exc:
        raise click.ClickException(f"rule refused: {exc}") from None


def backtest_file(path: str, since: str | None, until: str | None) -> None:
    """``rules backtest FILE --since --until``: print the report as JSON; exit 1 naming the
    problem (unreadable file, invalid rule, bad range, missing archive)."""
    if since is None or until is None:
        raise click.UsageError("'rules backtest' needs --since and --until (e.g. 2026-11-20)")
    rules = rules_from_file(path)
    if len(rules) != 1:
        raise click.ClickException(f"{path} holds {len(rules)} rules; backtest one at a time")
    try:
        report = run_backtest(settings, rules[0], since, until)
    except ValueError as exc:  # BacktestError, ArchiveError
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, indent=2))
    click.echo(
        f"{report['rule_id']} v{report['rule_version']}: {report['alerts']} alerts on"
        f" {report['payments_replayed']} payments in {report['seconds']} s"
        f" ({report['payments_per_second']} payments/s)",
        err=True,
    )
    click.echo(f"labels say: {outcome_line(report['outcomes'])}", err=True)


def print_evidence(rule: Rule, published_ms: int | None) -> None:
    try:
        evidence = shadow_evidence(settings, rule, published_ms)
    except ValueError as exc:
        click.echo(f"(no evidence from the archive: {exc})", err=True)
        return
    click.echo(
        f"shadow since {evidence['published']}: {evidence['live_alerts']} live alerts,"
        f" {evidence['backtest_alerts']} in a backtest of the same"
        f" {evidence['payments_replayed']} payments"
    )
    click.echo(f"  backtest: {outcome_line(evidence['outcomes'])}")
    click.echo(f"  live:     {outcome_line(evidence['live_outcomes'])}")
    for active in evidence["active_outcomes"]:
        click.echo(f"  active:   {outcome_line(active)}")


def print_outcomes(rule: Rule) -> None:
    """Each version of ``rule`` with alerts in the archive's last week, judged by the labels."""
    try:
        found = rules_outcomes(settings, EVIDENCE_DAYS, rule.rule_id)
    except ValueError as exc:
        click.echo(f"(no outcomes from the archive: {exc})", err=True)
        return
    click.echo(
        f"outcomes, last {EVIDENCE_DAYS} days: {found['labels']} labels,"
        f" {found['fraud_payments']} labelled-fraud payments"
    )
    for outcome in found["rules"] or []:
        click.echo(f"  {outcome_line(outcome)}")
    if not found["rules"]:
        click.echo("  no archived alerts of this rule")


@app.command(
    argument("action", type=click.Choice(RULE_ACTIONS), metavar="ACTION"),
    argument("target", required=False),
    option("--since", default=None, help="backtest: first event time (2026-11-20 or ISO time)."),
    option("--until", default=None, help="backtest: end of the range, exclusive."),
    base=FraudCommand,
)
async def rules(
    self: object, action: str, target: str | None, since: str | None, until: str | None
) -> None:
    """Manage fraud rules: put FILE | list | show ID | pause ID | activate ID | delete ID |
    backtest FILE --since DATE --until DATE.

    Every change is published to the rules topic; workers apply it without a restart.
    A backtest replays the archived payments (FRAUD_ARCHIVE_URL) through the engine.
    """
    if action == "backtest":
        if target is None:
            raise click.UsageError("'rules backtest' needs FILE")
        if since is not None and until is not None:  # else backtest_file says what is missing
            await lists_for_backtest(await asyncio.to_thread(rules_from_file, target))
        await asyncio.to_thread(backtest_file, target, since, until)
        return
    bootstrap, topic = bootstrap_servers(settings.broker), settings.topic_rules
    if action == "list":
        book = await read_all(bootstrap, topic)
        for rule in book.all():
            click.echo(f"{rule.rule_id}\tv{rule.version}\t{rule.status}\t{rule.description}")
        return
    if target is None:
        raise click.UsageError(f"'rules {action}' needs {'FILE' if action == 'put' else 'ID'}")
    if action == "put":
        await put_rules(bootstrap, topic, target)
    else:
        await change_rule(bootstrap, topic, action, target)


async def put_rules(bootstrap: str, topic: str, path: str) -> None:
    new_rules = rules_from_file(path)
    refusal = over_limits(new_rules, await read_all(bootstrap, topic))
    if refusal:
        raise click.ClickException(f"rule refused: {refusal}")
    await publish(bootstrap, topic, [(r.rule_id, r.to_bytes()) for r in new_rules])
    for new in new_rules:
        click.echo(f"published {new.rule_id} v{new.version} ({new.status})")


async def change_rule(bootstrap: str, topic: str, action: str, rule_id: str) -> None:
    """show, delete, pause or activate the rule ``rule_id``."""
    book = await read_all(bootstrap, topic)
    rule = book.rules.get(rule_id)
    if rule is None:
        raise click.ClickException(
            f"no rule {rule_id!r} (known: {', '.join(book.rules) or 'none'})"
        )
    if action == "show":
        click.echo(json.dumps(rule.to_json(), indent=2))
        await asyncio.to_thread(print_outcomes, rule)
        if rule.status == "shadow":
            await lists_for_backtest([rule])
            await asyncio.to_thread(print_evidence, rule, book.published_ms.get(rule.rule_id))
    elif action == "delete":
        await publish(bootstrap, topic, [(rule.rule_id, None)])
        click.echo(f"deleted {rule.rule_id}")
    else:
        body = with_status(rule, "paused" if action == "pause" else "active")
        await publish(bootstrap, topic, [(rule.rule_id, parse_rule(body).to_bytes())])
        click.echo(f"published {rule.rule_id} v{body['version']} ({body['status']})")


CASE_ACTIONS = ("list", "show", "close")


def case_line(case: Case) -> str:
    """One case as ``cases list`` prints it (tab-separated, like ``rules list``)."""
    return "\t".join(
        (
            case.case_id,
            case.status,
            case.disposition or "-",
            case.rule_id,
            f"{case.group_by}={case.group_key}",
            f"{case.alert_count} alert{'s' if case.alert_count != 1 else ''}",
            f"opened {case.opened_at}",
        )
    )


@app.command(
    argument("action", type=click.Choice(CASE_ACTIONS), metavar="ACTION"),
    argument("case_id", required=False),
    option("--status", type=click.Choice(STATUSES), default=None, help="list: open or closed."),
    option("--rule", default=None, help="list: one rule's cases."),
    option("--key", default=None, help="list: one key's cases (a card token, ...)."),
    option(
        "--disposition",
        type=click.Choice(DISPOSITIONS),
        default=None,
        help="list: cases closed so; close: the disposition.",
    ),
    option("--limit", type=click.IntRange(1, 500), default=50, show_default=True),
    option("--note", default=None, help="close: why (card numbers are masked)."),
    option("--by", "closed_by", default=None, help="close: who closes the case."),
    base=FraudCommand,
)
async def cases(
    self: object,
    action: str,
    case_id: str | None,
    status: str | None,
    rule: str | None,
    key: str | None,
    disposition: str | None,
    limit: int,
    note: str | None,
    closed_by: str | None,
) -> None:
    """Fraud cases: list [--status --rule --key --disposition --limit] | show ID |
    close ID --disposition fraud|not_fraud|inconclusive --note TEXT --by NAME.

    Cases are read from and closed in the cases table (FRAUD_CASES_TABLE).
    """
    if action == "list":
        if key is not None and contains_pan(key):
            raise click.UsageError("--key looks like a card number; use the card token")
        wanted = CaseFilter(
            status=status, rule_id=rule, group_key=key, disposition=disposition, limit=limit
        )
        for case in await asyncio.to_thread(lambda: _case_store().list(wanted)):
            click.echo(case_line(case))
        return
    if case_id is None:
        raise click.UsageError(f"'cases {action}' needs ID")
    try:
        parse_case_id(case_id)
    except CaseError as exc:
        raise click.UsageError(str(exc)) from None
    if action == "show":
        found = await asyncio.to_thread(lambda: _case_store().get(case_id))
        if found is None:
            raise click.ClickException(f"no case {case_id!r}")
        click.echo(json.dumps(found.to_json(), indent=2))
        return
    for name, value in (("--disposition", disposition), ("--note", note), ("--by", closed_by)):
        if value is None:
            raise click.UsageError(f"'cases close' needs {name}")
    closing = parse_closing(disposition, note, closed_by)
    closed_at = iso_from_ms(int(time.time() * 1000))
    case, now = await asyncio.to_thread(lambda: _case_store().close(case_id, closing, closed_at))
    # Published after the close, and again by the same close repeated: a lost label is
    # made good by retrying the command (the labels topic is compacted by case).
    await publish_labels(
        bootstrap_servers(settings.broker), settings.topic_labels, [disposition_label(case)]
    )
    if now:
        click.echo(f"closed {case.case_id} as {case.disposition} (by {case.closed_by})")
    else:
        click.echo(f"{case.case_id} was already closed so; its label published again")


def _case_store() -> CaseStore:
    client = make_client(settings.aws_region, settings.dynamodb_endpoint)
    return CaseStore(settings.cases_table, settings.dynamodb_table, client)


@app.command(
    argument("action", type=click.Choice(("import",)), metavar="ACTION"),
    argument("path", metavar="FILE"),
    base=FraudCommand,
)
async def labels(self: object, action: str, path: str) -> None:
    """Labels: import FILE, a chargebacks CSV (txn_id,date,reason), to the labels topic
    (FRAUD_TOPIC_LABELS), one record per payment keyed txn:<txn_id>.

    The whole file is checked first: a bad line refuses it all, naming the line.
    """
    try:
        text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    except OSError as exc:
        raise click.UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise click.UsageError(f"cannot read {path}: not UTF-8 text") from None
    try:
        found = parse_chargebacks(text)
    except LabelFileError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    await publish_labels(bootstrap_servers(settings.broker), settings.topic_labels, found)
    click.echo(f"published {len(found)} chargeback labels to {settings.topic_labels}")


# ------------------------------------------------------------------ lists and suppressions

LIST_ACTIONS = ("add", "remove", "show", "import")
SUPPRESSION_ACTIONS = ("add", "list", "remove")


def _list_topics() -> dict[str, str]:
    return {settings.topic_lists: LIST, settings.topic_suppressions: SUPPRESSION}


def _entry_line(entry: Entry) -> str:
    """One entry as ``lists show`` and ``suppressions list`` print it (tab-separated)."""
    until = "-" if entry.until_ms is None else iso_from_ms(entry.until_ms)
    return "\t".join((entry.scope, entry.value, until, entry.by or "-", entry.reason))


def _who(by: str | None) -> str:
    if by is not None:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


async def _print_entries(kind: str, scope: str | None) -> None:
    bootstrap = bootstrap_servers(settings.broker)
    book = await read_all_lists(bootstrap, _list_topics(), settings.max_list_entries)
    for entry in book.entries(kind, scope):
        click.echo(_entry_line(entry))


async def _publish_entries(kind: str, entries: list[Entry]) -> None:
    """Publish new entries unless the workers' bound on entries would refuse them (exit 1)."""
    bootstrap = bootstrap_servers(settings.broker)
    book = await read_all_lists(bootstrap, _list_topics(), settings.max_list_entries)
    refusal = over_bound(book, entries, settings.max_list_entries)
    if refusal:
        raise click.ClickException(f"refused: {refusal}")
    topic = settings.topic_lists if kind == LIST else settings.topic_suppressions
    await publish(bootstrap, topic, [(e.record_key, e.to_bytes()) for e in entries])


async def _remove_entry(kind: str, scope: str, value: str) -> None:
    bootstrap = bootstrap_servers(settings.broker)
    book = await read_all_lists(bootstrap, _list_topics(), settings.max_list_entries)
    if value not in book.scopes(kind).get(scope, {}):
        what = "list entry" if kind == LIST else "suppression"
        raise click.ClickException(f"no {what} {scope}:{value}")
    topic = settings.topic_lists if kind == LIST else settings.topic_suppressions
    await publish(bootstrap, topic, [(f"{scope}:{value}", None)])
    click.echo(f"removed {scope}:{value}")


def _new_entry(kind: str, scope: str, value: str, **given: Any) -> Entry:
    """The entry asked for; exit 1 naming the field it is refused for."""
    try:
        return new_entry(kind, scope, value, now_ms=int(time.time() * 1000), **given)
    except ListError as exc:
        raise click.ClickException(f"refused: {exc}") from None


_ENTRY_OPTIONS = (
    option("--until", default=None, help="add: the end, an ISO time with its zone."),
    option("--for", "lasting", default=None, help="add: the end as a duration: 30m, 2h, 7d."),
    option("--reason", default=None, help="add: why (required)."),
    option("--by", default=None, help="add, import: who (default: the OS user)."),
)


@app.command(
    argument("action", type=click.Choice(LIST_ACTIONS), metavar="ACTION"),
    argument("name", metavar="LIST", required=False),
    argument("value", metavar="VALUE|FILE", required=False),
    *_ENTRY_OPTIONS,
    base=FraudCommand,
)
async def lists(
    self: object,
    action: str,
    name: str | None,
    value: str | None,
    until: str | None,
    lasting: str | None,
    reason: str | None,
    by: str | None,
) -> None:
    """Named lists: add LIST VALUE --reason TEXT [--until TIME | --for 7d] [--by NAME] |
    remove LIST VALUE | show [LIST] | import LIST FILE [--by NAME].

    Rules read them as {field: device_id, op: in, value: "@LIST"}. Entries are published to
    the lists topic (FRAUD_TOPIC_LISTS); workers apply them from their next payment on.
    An import FILE is a CSV with the header value,until,reason.
    """
    if action == "show":
        await _print_entries(LIST, name)
        return
    if name is None or value is None:
        raise click.UsageError(
            f"'lists {action}' needs LIST and {'FILE' if action == 'import' else 'VALUE'}"
        )
    if action == "remove":
        await _remove_entry(LIST, name, value)
        return
    if action == "import":
        try:
            entries = load_entry_file(value, name, _who(by), int(time.time() * 1000))
        except ListError as exc:
            if exc.field == "file":
                raise click.UsageError(exc.problem) from None
            raise click.ClickException(f"{value} refused: {exc}") from None
        await _publish_entries(LIST, entries)
        click.echo(f"published {len(entries)} entries of {name} to {settings.topic_lists}")
        return
    entry = _new_entry(LIST, name, value, until=until, lasting=lasting, reason=reason, by=_who(by))
    await _publish_entries(LIST, [entry])
    click.echo(f"published {entry.record_key} ({entry.describe()})")


@app.command(
    argument("action", type=click.Choice(SUPPRESSION_ACTIONS), metavar="ACTION"),
    argument("rule_id", metavar="RULE", required=False),
    argument("key", metavar="KEY", required=False),
    *_ENTRY_OPTIONS,
    base=FraudCommand,
)
async def suppressions(
    self: object,
    action: str,
    rule_id: str | None,
    key: str | None,
    until: str | None,
    lasting: str | None,
    reason: str | None,
    by: str | None,
) -> None:
    """Snooze a rule for a key: add RULE KEY --reason TEXT (--until TIME | --for 2h)
    [--by NAME] | list [RULE] | remove RULE KEY.

    KEY is an alert's group key (a card token, a merchant id ...) or @LIST (every key on
    that list: an allowlist, which may stand without an end). The rule still evaluates; its
    alert is recorded as suppressed, not notified and not made a case. Published to
    FRAUD_TOPIC_SUPPRESSIONS; workers apply it from their next payment on.
    """
    if action == "list":
        await _print_entries(SUPPRESSION, rule_id)
        return
    if rule_id is None or key is None:
        raise click.UsageError(f"'suppressions {action}' needs RULE and KEY")
    if action == "remove":
        await _remove_entry(SUPPRESSION, rule_id, key)
        return
    entry = _new_entry(
        SUPPRESSION, rule_id, key, until=until, lasting=lasting, reason=reason, by=_who(by)
    )
    await _publish_entries(SUPPRESSION, [entry])
    click.echo(f"published {entry.record_key} ({entry.describe()})")


async def lists_for_backtest(rules: list[Rule]) -> None:
    """The lists the rules read, as the workers hold them now, into this process's listbook
    (a backtest decides with them, by event time); no broker needed for rules without."""
    names = set().union(*(list_names(rule.to_json()) for rule in rules))
    if not names:
        return
    bootstrap = bootstrap_servers(settings.broker)
    book = await read_all_lists(bootstrap, _list_topics(), settings.max_list_entries)
    for name in names:
        listbook.install(name, book.snapshot(name))
