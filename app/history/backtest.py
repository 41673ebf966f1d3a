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

Memory: the payments are streamed, a batch of rows at a time per open file (``BATCH_ROWS``),
from the files of the range's dates and hours only; a week is never held in memory.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from app.detection.engine import MAX_KEY_EVENTS, KeyState, evaluate
from app.detection.kinds import absence
from app.detection.models import BIN, PAYMENT, PAYMENT_FIELDS, Alert, Payment, iso_from_ms
from app.detection.rules import AbsenceRule, Rule
from app.history.files import Archive, ArchivedFile, ArchiveError
from app.history.schema import ALERTS, EVENT_COLUMNS, PAYMENTS, TIME


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


# Rows decoded at a time from one file. Memory follows what is open, never the range:
# per open file one batch as Python objects and pyarrow's read of the row group it comes
# from. Each partition has one file open (more only where a roll's event hours overlap in
# offsets), so a week costs what an hour does.
BATCH_ROWS = 4096
# Batches pyarrow may decode ahead of the one in use, per file; more buys no speed here
# (the replay is pure Python) and costs a batch of memory each.
_READAHEAD = 1
_READ_COLUMNS = [*PAYMENT_FIELDS, "kafka_offset", "kafka_timestamp", *EVENT_COLUMNS, BIN]
_HOUR = timedelta(hours=1)

# (Kafka offset, Kafka timestamp in ms, payment)
_Row = tuple[int, int, Payment]


def _days(since: datetime, until: datetime) -> list[str]:
    # The directories are UTC dates; a range given in another zone is converted first.
    first = since.astimezone(UTC).date()
    last = (until - timedelta(milliseconds=1)).astimezone(UTC).date()
    return [str(first + timedelta(days=n)) for n in range((last - first).days + 1)]


def _meets(file: ArchivedFile, since: datetime, until: datetime) -> bool:
    """Whether the file's event hour overlaps [since, until)."""
    start = datetime.fromisoformat(file.date).replace(hour=file.hour, tzinfo=UTC)
    return start < until and since < start + _HOUR


def files_in_range(
    archive: Archive, kind: str, since: datetime, until: datetime, *, missing_ok: bool = False
) -> list[ArchivedFile]:
    """The files of ``kind`` that can hold rows of [since, until): only the range's date
    directories are listed, and only the hours that meet it are kept. No ``kind``
    directory at all is an ArchiveError, or no files with ``missing_ok``."""
    try:
        missing = archive.filesystem.get_file_info(archive.path(kind)).type == (
            pafs.FileType.NotFound
        )
        if missing and not missing_ok:
            raise ArchiveError(f"no {kind} directory")
        listed = [] if missing else archive.files(kind, _days(since, until))
    except (OSError, ArchiveError) as exc:
        raise ArchiveError(f"cannot read the archive at {archive.url}: {exc}") from None
    return [f for f in listed if _meets(f, since, until)]


def in_range(schema: pa.Schema, column: str, since: datetime, until: datetime) -> ds.Expression:
    kind = schema.field(column).type
    return (ds.field(column) >= pa.scalar(since, type=kind)) & (
        ds.field(column) < pa.scalar(until, type=kind)
    )


def scan(
    archive: Archive,
    paths: list[str],
    schema: pa.Schema,
    columns: list[str],
    wanted: ds.Expression,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The rows of the files at ``paths`` that match ``wanted``, at most ``batch_rows`` at
    a time, file after file and each file in its row order (one thread: the order is the
    replay's, and the caller is a child process with one core's worth of work)."""
    dataset = ds.FileSystemDataset.from_paths(
        paths, schema=schema, format=ds.ParquetFileFormat(), filesystem=archive.filesystem
    )
    try:
        yield from dataset.to_batches(
            columns=columns,
            filter=wanted,
            batch_size=batch_rows,
            batch_readahead=_READAHEAD,
            fragment_readahead=1,
            use_threads=False,
        )
    except OSError as exc:
        raise ArchiveError(f"cannot read the archive at {archive.url}: {exc}") from None


def _plain(amount: Decimal) -> Decimal:
    """The archive's fixed 12 decimals, without the trailing zeros (``25.100000000000`` ->
    ``25.1``), never in exponent form."""
    text = format(amount, "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)


def _file_rows(
    archive: Archive, file: ArchivedFile, wanted: ds.Expression, batch_rows: int
) -> Iterator[_Row]:
    """One file's payments that match ``wanted``, in the file's (offset) order."""
    for batch in scan(archive, [file.path], PAYMENTS, _READ_COLUMNS, wanted, batch_rows):
        column = {name: batch.column(name).to_pylist() for name in _READ_COLUMNS[:10]}
        # Times as integer ms straight from Arrow: exact, where datetime.timestamp() is a
        # float.
        ts_ms = batch.column("ts").cast(pa.int64()).to_pylist()
        kafka_ms = batch.column("kafka_timestamp").cast(pa.int64()).to_pylist()
        offsets = batch.column("kafka_offset").to_pylist()
        kinds, lats, lons = (batch.column(name).to_pylist() for name in EVENT_COLUMNS)
        bins = batch.column(BIN).to_pylist()
        for i, ts in enumerate(ts_ms):
            payment = Payment(
                txn_id=column["txn_id"][i],
                card_id=column["card_id"][i],
                account_id=column["account_id"][i],
                amount=_plain(column["amount"][i]),
                currency=column["currency"][i],
                merchant_id=column["merchant_id"][i],
                mcc=column["mcc"][i],
                country=column["country"][i],
                device_id=column["device_id"][i],
                ip=column["ip"][i],
                ts=iso_from_ms(ts),
                ts_ms=ts,
                type=kinds[i] or PAYMENT,
                lat=lats[i],
                lon=lons[i],
                bin=bins[i] or "",
            )
            yield offsets[i], ts if kafka_ms[i] is None else kafka_ms[i], payment


def _in_offset_order(
    files: list[ArchivedFile], rows_of: Callable[[ArchivedFile], Iterator[_Row]]
) -> Iterator[_Row]:
    """One partition's rows in offset order. Each file is in offset order, and a file's
    first offset bounds all of its rows, so a file is opened only once the merge reaches
    that offset: files overlap only where one roll spans several event hours, and those
    few are merged; the others are read one after another."""
    waiting = sorted(files, key=lambda f: f.first)
    heap: list[tuple[int, int, _Row, Iterator[_Row]]] = []
    opened = 0

    def advance(rows: Iterator[_Row], order: int) -> None:
        row = next(rows, None)
        if row is not None:
            heapq.heappush(heap, (row[0], order, row, rows))

    while heap or opened < len(waiting):
        while opened < len(waiting) and (not heap or waiting[opened].first <= heap[0][0]):
            advance(rows_of(waiting[opened]), opened)
            opened += 1
        if heap:
            _, order, row, rows = heapq.heappop(heap)
            yield row
            advance(rows, order)


def archived_payments(
    archive: Archive,
    since: datetime,
    until: datetime,
    arrived_since: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[tuple[int, Payment]]:
    """(Kafka timestamp in ms, payment) in replay order: each partition in offset order,
    partitions merged by Kafka timestamp. Streamed: see BATCH_ROWS."""
    for kafka_ts, payment, _ in archived_payments_of_partitions(
        archive, since, until, arrived_since, batch_rows
    ):
        yield kafka_ts, payment


def archived_payments_of_partitions(
    archive: Archive,
    since: datetime,
    until: datetime,
    arrived_since: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[tuple[int, Payment, int]]:
    """``archived_payments`` with the source partition of each: the partition whose
    event-time progress an absence rule's deadlines follow."""
    wanted = in_range(PAYMENTS, "ts", since, until)
    if arrived_since is not None:
        wanted = wanted & (ds.field("kafka_timestamp") >= pa.scalar(arrived_since, type=TIME))
    partitions: dict[tuple[str, int], list[ArchivedFile]] = {}
    for file in files_in_range(archive, "payments", since, until):
        partitions.setdefault((file.topic, file.partition), []).append(file)

    def rows_of(file: ArchivedFile) -> Iterator[_Row]:
        return _file_rows(archive, file, wanted, batch_rows)

    def rows_with_partition(
        partition: int, files: list[ArchivedFile]
    ) -> Iterator[tuple[int, Payment, int]]:
        # A function, not a generator expression in the list below, which would read its
        # loop variable when iterated: every row would carry the last partition.
        for _, kafka_ts, payment in _in_offset_order(files, rows_of):
            yield kafka_ts, payment, partition

    streams = [rows_with_partition(key[1], files) for key, files in sorted(partitions.items())]
    yield from heapq.merge(*streams, key=lambda row: row[0])


@dataclass
class LiveAlerts:
    """What the overlap counts need of the active rules' alerts in a range."""

    rows: int = 0
    ids: set[str] = field(default_factory=set)
    txn_ids: set[str] = field(default_factory=set)


def live_alerts(archive: Archive, since: datetime, until: datetime) -> LiveAlerts:
    """Alerts the active rules raised on payments of the range (by their last event);
    none when no alert has been archived yet. Read a batch at a time: only their ids and
    payment ids are kept."""
    found = LiveAlerts()
    files = files_in_range(archive, "alerts", since, until, missing_ok=True)
    wanted = in_range(ALERTS, "last_event_ts", since, until) & (ds.field("status") == "active")
    for batch in scan(archive, [f.path for f in files], ALERTS, ["alert_id", "txn_ids"], wanted):
        found.rows += batch.num_rows
        found.ids.update(batch.column("alert_id").to_pylist())
        found.txn_ids.update(pc.list_flatten(batch.column("txn_ids")).to_pylist())
    return found


@dataclass
class Replay:
    """A rule run over payments in replay order, as a worker runs it: its alerts as they
    are raised, so a caller can count them without keeping them."""

    rule: Rule
    allowed_lateness_ms: int
    max_key_events: int = MAX_KEY_EVENTS  # the workers' FRAUD_MAX_KEY_EVENTS
    payments: int = 0
    late: int = 0

    def __post_init__(self) -> None:
        if self.rule.status == "paused":
            # The engine skips paused rules; a backtest asks what the rule would catch.
            self.rule = replace(self.rule, status="shadow")

    def alerts(
        self, payments: Iterable[tuple[int, Payment] | tuple[int, Payment, int]]
    ) -> Iterator[Alert]:
        """The alerts, in the order a worker raises them. With each payment's source
        partition (a third item), an absence rule's deadlines follow each partition's
        event-time progress as a worker's do (``app.detection.kinds.absence``); without,
        the stream is one partition."""
        rule, rules = self.rule, [self.rule]
        states: dict[str, KeyState] = {}
        timers: dict[int, absence.Timers] | None = {} if isinstance(rule, AbsenceRule) else None
        for row in payments:
            kafka_ts, payment = row[0], row[1]
            self.payments += 1
            # A worker's clock moves with the events decided on the rule's keys: an event
            # without a card (a login) never reaches a card rule's table.
            lane = None
            if timers is not None:
                lane = timers.setdefault(row[2] if len(row) > 2 else 0, absence.Timers())
            moves = lane is not None and all(getattr(payment, f) for f in rule.group_by)
            if moves and lane is not None and lane.advance(payment.ts_ms):
                yield from self._fire(lane, states, kafka_ts)
            key = rule.group_key(payment)
            state = states.get(key)
            if state is None:
                if not rule.qualifies(payment):
                    continue
                state = states[key] = KeyState()
            verdict = evaluate(
                state,
                payment,
                key,
                rules,
                self.allowed_lateness_ms,
                kafka_ts,
                kafka_ts,
                self.max_key_events,
            )
            if verdict.late:
                self.late += 1
            yield from verdict.alerts
            if lane is not None:
                lane.schedule(key, absence.next_due(state, rules, self.allowed_lateness_ms))
            if not state.rules:
                del states[key]

    def _fire(
        self, lane: absence.Timers, states: dict[str, KeyState], kafka_ts: int
    ) -> Iterator[Alert]:
        """The alerts of the keys whose deadline the partition's clock has passed."""
        assert lane.clock is not None
        for key in lane.pop_due():
            state = states[key]
            yield from absence.fire_due(
                state, key, [self.rule], lane.clock, self.allowed_lateness_ms, kafka_ts, kafka_ts
            )
            lane.schedule(key, absence.next_due(state, [self.rule], self.allowed_lateness_ms))


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
    replay = Replay(rule, allowed_lateness_ms, max_key_events)
    report.alerts = list(
        replay.alerts(archived_payments_of_partitions(archive, since, until, arrived_since))
    )
    report.payments, report.late = replay.payments, replay.late
    live = live_alerts(archive, since, until)
    report.live_alerts = live.rows
    report.overlapping = sum(1 for a in report.alerts if live.txn_ids.intersection(a.txn_ids))
    report.same_ids = sum(1 for a in report.alerts if a.alert_id in live.ids)
    report.seconds = time.perf_counter() - started
    return report
