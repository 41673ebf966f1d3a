"""What a rule would have caught: archived payments replayed through the workers' engine.

Synchronous and free of Faust: ``backtest(archive, rule, since, until)`` reads the archived
payments whose event time falls in ``[since, until)``, replays them through
``app.detection.engine.evaluate`` with the worker's allowed lateness, and reports the alerts
the rule would have raised beside those the active rules did raise in the same range.

Order: a live worker decides each partition's payments in offset order, and a card's
payments all live in one partition, so the replay keeps each partition's offset order
exactly (partitions are merged by Kafka timestamp). For a card rule that reproduces the
live alerts, ids included. State starts empty at ``since``: a burst that began before it
is seen only in part, as a worker started at ``since`` would have seen it.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from app.detection.engine import MAX_KEY_EVENTS, KeyState, evaluate
from app.detection.models import Alert, Payment, iso_from_ms
from app.detection.rules import Rule
from app.history.files import Archive, ArchiveError
from app.history.schema import ALERTS, PAYMENTS, TIME

_PAYMENT_COLUMNS = [f.name for f in PAYMENTS if f.name not in {"kafka_timestamp"}]


class BacktestError(ValueError):
    """A backtest that cannot run: a bad range or an unreadable archive."""


def parse_moment(text: str, name: str) -> datetime:
    """``2026-11-20`` (midnight UTC) or an ISO 8601 time with a zone; ``name`` is the
    option, for the error."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BacktestError(f"{name} {text!r} is not a date (2026-11-20) or an ISO time") from None
    if moment.tzinfo is None:
        if len(text) > 10:
            raise BacktestError(f"{name} {text!r} has no time zone (add Z or +00:00)")
        moment = moment.replace(tzinfo=UTC)
    return moment


def check_range(since: datetime, until: datetime) -> None:
    if until <= since:
        raise BacktestError(
            f"--until ({until.isoformat()}) must be after --since ({since.isoformat()})"
        )


@dataclass
class Report:
    rule_id: str
    rule_version: int
    since: str
    until: str
    payments: int = 0
    alerts: list[Alert] = field(default_factory=list)
    late: int = 0
    live_alerts: int = 0  # alerts of active rules archived in the range
    overlapping: int = 0  # backtest alerts sharing a payment with a live alert
    same_ids: int = 0  # backtest alerts whose id a live alert has (same rule and version)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        per_day = Counter(a.last_event_ts[:10] for a in self.alerts)
        return {
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "since": self.since,
            "until": self.until,
            "payments_replayed": self.payments,
            "late_payments": self.late,
            "alerts": len(self.alerts),
            "alerts_per_day": dict(sorted(per_day.items())),
            "alerts_per_severity": dict(Counter(a.severity for a in self.alerts)),
            "distinct_keys": len({a.group_key for a in self.alerts}),
            "live_alerts_in_range": self.live_alerts,
            "overlapping_live_alerts": self.overlapping,
            "same_alert_ids_as_live": self.same_ids,
            "alert_ids": [a.alert_id for a in self.alerts],
            "alert_txn_ids": [list(a.txn_ids) for a in self.alerts],
            "seconds": round(self.seconds, 3),
            "payments_per_second": round(self.payments / self.seconds) if self.seconds else None,
        }


def _days(since: datetime, until: datetime) -> list[str]:
    first, last = since.date(), (until - timedelta(milliseconds=1)).date()
    return [str(first + timedelta(days=n)) for n in range((last - first).days + 1)]


def _read(
    archive: Archive,
    kind: str,
    schema: pa.Schema,
    since: datetime,
    until: datetime,
    columns: list[str],
    time_column: str,
    arrived_since: datetime | None = None,
) -> pa.Table:
    """Rows of ``kind`` whose ``time_column`` is in [since, until), from the date
    directories that can hold them (Hive partition pruning)."""
    days: list[date] = [date.fromisoformat(d) for d in _days(since, until)]
    directories = pa.schema([("event_date", pa.string()), ("event_hour", pa.int32())])
    try:
        dataset = ds.dataset(
            archive.path(kind),
            filesystem=archive.filesystem,
            format="parquet",
            schema=pa.unify_schemas([schema, directories]),
            partitioning=ds.partitioning(directories, flavor="hive"),
            exclude_invalid_files=False,
        )
    except (FileNotFoundError, OSError) as exc:
        raise ArchiveError(f"cannot read the archive at {archive.url}: {exc}") from None
    wanted = (
        (ds.field("event_date").isin([str(d) for d in days]))
        & (ds.field(time_column) >= pa.scalar(since, type=schema.field(time_column).type))
        & (ds.field(time_column) < pa.scalar(until, type=schema.field(time_column).type))
    )
    if arrived_since is not None:
        wanted = wanted & (ds.field("kafka_timestamp") >= pa.scalar(arrived_since, type=TIME))
    try:
        return dataset.to_table(columns=columns, filter=wanted)
    except OSError as exc:
        raise ArchiveError(f"cannot read the archive at {archive.url}: {exc}") from None


def _plain(amount: Decimal) -> Decimal:
    """The archive's fixed 12 decimals, without the trailing zeros (``25.100000000000`` ->
    ``25.1``), never in exponent form."""
    text = format(amount, "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)


def archived_payments(
    archive: Archive, since: datetime, until: datetime, arrived_since: datetime | None = None
) -> Iterator[tuple[int, Payment]]:
    """(Kafka timestamp in ms, payment) in replay order: each partition in offset order,
    partitions merged by Kafka timestamp."""
    table = _read(
        archive,
        "payments",
        PAYMENTS,
        since,
        until,
        [*_PAYMENT_COLUMNS, "kafka_timestamp"],
        "ts",
        arrived_since,
    )
    table = table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    partitions = columns["kafka_partition"]
    runs: list[range] = []
    start = 0
    for index in range(1, len(partitions) + 1):
        if index == len(partitions) or partitions[index] != partitions[start]:
            runs.append(range(start, index))
            start = index

    def payment(i: int) -> tuple[int, Payment]:
        ts: datetime = columns["ts"][i]
        ts_ms = int(ts.timestamp() * 1000)
        kafka_ts = columns["kafka_timestamp"][i]
        return (
            int(kafka_ts.timestamp() * 1000) if kafka_ts is not None else ts_ms,
            Payment(
                txn_id=columns["txn_id"][i],
                card_id=columns["card_id"][i],
                account_id=columns["account_id"][i],
                amount=_plain(columns["amount"][i]),
                currency=columns["currency"][i],
                merchant_id=columns["merchant_id"][i],
                mcc=columns["mcc"][i],
                country=columns["country"][i],
                device_id=columns["device_id"][i],
                ip=columns["ip"][i],
                ts=iso_from_ms(ts_ms),
                ts_ms=ts_ms,
            ),
        )

    yield from heapq.merge(*((payment(i) for i in run) for run in runs), key=lambda p: p[0])


def live_alerts(archive: Archive, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Alerts the active rules raised on payments of the range (by their last event);
    none when no alert has been archived yet."""
    if archive.filesystem.get_file_info(archive.path("alerts")).type == pafs.FileType.NotFound:
        return []
    table = _read(
        archive,
        "alerts",
        ALERTS,
        since,
        until,
        ["alert_id", "rule_id", "status", "txn_ids"],
        "last_event_ts",
    )
    return [row for row in table.to_pylist() if row["status"] == "active"]


def backtest(
    archive: Archive,
    rule: Rule,
    since: datetime,
    until: datetime,
    allowed_lateness_ms: int,
    arrived_since: datetime | None = None,
    max_key_events: int = MAX_KEY_EVENTS,
) -> Report:
    """``arrived_since``: replay only payments that reached Kafka from then on (what a
    rule published then has seen live)."""
    check_range(since, until)
    started = time.perf_counter()
    report = Report(rule.rule_id, rule.version, since.isoformat(), until.isoformat())
    if rule.status == "paused":
        # The engine skips paused rules; a backtest asks what the rule would catch.
        rule = replace(rule, status="shadow")
    states: dict[str, KeyState] = {}
    rules = [rule]
    for kafka_ts, payment in archived_payments(archive, since, until, arrived_since):
        report.payments += 1
        key = rule.group_key(payment)
        state = states.get(key)
        if state is None:
            if not rule.qualifies(payment):
                continue
            state = states[key] = KeyState()
        verdict = evaluate(
            state, payment, key, rules, allowed_lateness_ms, kafka_ts, kafka_ts, max_key_events
        )
        if verdict.late:
            report.late += 1
        report.alerts.extend(verdict.alerts)
        if not state.rules:
            del states[key]
    live = live_alerts(archive, since, until)
    report.live_alerts = len(live)
    live_txns = {t for row in live for t in row["txn_ids"]}
    live_ids = {row["alert_id"] for row in live}
    report.overlapping = sum(1 for a in report.alerts if live_txns.intersection(a.txn_ids))
    report.same_ids = sum(1 for a in report.alerts if a.alert_id in live_ids)
    report.seconds = time.perf_counter() - started
    return report
