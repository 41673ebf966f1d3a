"""app.history: payments archived to Parquet and backtested through the workers' engine."""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from app.detection.engine import KeyState, evaluate
from app.detection.kinds import absence
from app.detection.models import Payment, iso_from_ms
from app.detection.rules import SEED_RULE, Rule, parse_rule
from app.generator import PaymentGenerator
from app.history import backtest as history_backtest
from app.history.backtest import (
    BacktestError,
    archived_payments,
    archived_payments_of_partitions,
    backtest,
    files_in_range,
    parse_moment,
)
from app.history.files import Archive, ArchiveError
from app.history.rolling import PartitionBuffer
from app.rules_admin.topic import load_rule_file
from tests.docs import REPO
from tests.oracle import oracle

LATENESS_MS = 60_000
# One rule of each kind (examples/rules/kinds.yaml).
KIND_EXAMPLES = load_rule_file(REPO / "examples/rules/kinds.yaml")
START_MS = int(datetime(2026, 11, 20, 22, 0, tzinfo=UTC).timestamp() * 1000)


def stream(count: int = 6000) -> list[Payment]:
    generator = PaymentGenerator(seed=11, cards=200, fraud_ratio=0.02, high_value_share=0.02)
    return [p for p, _ in generator.stream(count, start_ms=START_MS, step_ms=1200)]


def archive_of(payments: list[Payment], root: Path, partitions: int = 3) -> Archive:
    archive = Archive.at(str(root))
    write_payments(archive, payments, partitions)
    return archive


def write_payments(archive: Archive, payments: list[Payment], partitions: int = 3) -> None:
    """The payments as the archive agent writes them, into any archive: partition by card,
    offsets in order, rolled every 1 000 records."""
    buffers = {
        p: PartitionBuffer("payments", 10**9, 1e9, time.monotonic, partition=p)
        for p in range(partitions)
    }
    offsets = dict.fromkeys(buffers, 0)
    for payment in payments:
        partition = hash(payment.card_id) % partitions
        raw = payment.to_json()
        key = payment.card_id.encode()
        buffers[partition].add(offsets[partition], payment.ts_ms + 5, key, raw)
        offsets[partition] += 1
        if offsets[partition] % 1000 == 0:
            roll(archive, partition, buffers[partition])
    for partition, buffer in buffers.items():
        if not buffer.empty:
            roll(archive, partition, buffer)


def roll(archive: Archive, partition: int, buffer: PartitionBuffer) -> None:
    files, _ = buffer.roll()
    for f in files:
        path = archive.file_path(f.kind, f.date, f.hour, "payments.raw", partition, f.first, f.last)
        archive.write(path, f.table)


def live(payments: list[Payment], rule: Rule = SEED_RULE, partitions: int = 3) -> set[str]:
    """What a worker raises deciding the same payments in order: each card on its partition
    (``write_payments``), whose event-time progress passes absence rules' deadlines."""
    states: dict[str, KeyState] = {}
    clocks: dict[int, absence.Timers] = {}
    ids: set[str] = set()
    for p in payments:
        key = rule.group_key(p)  # the card, or the account of a rule grouped by it
        # The clock of the partition the payment was archived in (``write_payments``).
        timers = clocks.setdefault(hash(p.card_id) % partitions, absence.Timers())
        # A worker decides on a card rule's table only the events that have a card.
        if all(getattr(p, f) for f in rule.group_by) and timers.advance(p.ts_ms):
            assert timers.clock is not None
            for card in timers.pop_due():
                fired = absence.fire_due(
                    states[card], card, [rule], timers.clock, LATENESS_MS, 0, 0
                )
                ids.update(alert.alert_id for alert in fired)
                timers.schedule(card, absence.next_due(states[card], [rule], LATENESS_MS))
        state = states.setdefault(key, KeyState())
        for alert in evaluate(state, p, key, [rule], LATENESS_MS, 0, 0).alerts:
            ids.add(alert.alert_id)
        timers.schedule(key, absence.next_due(state, [rule], LATENESS_MS))
    return ids


@pytest.mark.parametrize("rule", KIND_EXAMPLES, ids=lambda r: r.rule_id)
def test_a_backtest_of_each_kind_raises_exactly_the_live_alerts(tmp_path: Path, rule: Rule) -> None:
    generator = PaymentGenerator(
        seed=11, cards=200, fraud_ratio=0.02, high_value_share=0.02, pattern_ratio=0.005
    )
    payments = [p for p, _ in generator.stream(6000, start_ms=START_MS, step_ms=1200)]
    archive = archive_of(payments, tmp_path / "archive")
    since = datetime(2026, 11, 20, tzinfo=UTC)
    report = backtest(archive, rule, since, since + timedelta(days=7), LATENESS_MS)
    assert report.payments == len(payments)
    assert {a.alert_id for a in report.alerts} == live(payments, rule)
    assert len(report.alerts) >= 3


def test_a_backtest_of_a_rule_on_the_bin_sees_the_archived_bins(tmp_path: Path) -> None:
    # The generator gives every card a BIN (app.generator.BINS): a rule reading it alerts
    # in the backtest exactly as live, which it cannot if the archive drops the BIN.
    rule = parse_rule(
        {
            "rule_id": "visa-test-bins",
            "version": 1,
            "filter": [{"field": "bin", "op": "in", "value": ["411111", "41111122"]}],
            "aggregate": "count",
            "window": 3600,
            "threshold": {"op": ">=", "value": 3},
        }
    )
    payments = stream()
    assert {p.bin for p in payments} >= {"411111", "41111122"}
    archive = archive_of(payments, tmp_path / "archive")
    since = datetime(2026, 11, 20, tzinfo=UTC)
    report = backtest(archive, rule, since, since + timedelta(days=7), LATENESS_MS)
    assert {a.alert_id for a in report.alerts} == live(payments, rule)
    assert len(report.alerts) >= 3


def test_a_backtest_raises_exactly_the_alerts_a_worker_raised_on_the_same_payments(
    tmp_path: Path,
) -> None:
    payments = stream()
    archive = archive_of(payments, tmp_path / "archive")
    since = datetime(2026, 11, 20, tzinfo=UTC)
    report = backtest(archive, SEED_RULE, since, since + timedelta(days=7), LATENESS_MS)

    assert report.payments == len(payments)
    assert {a.alert_id for a in report.alerts} == live(payments)
    assert {(a.group_key, a.txn_ids) for a in report.alerts} == oracle(payments, SEED_RULE)
    body = report.to_json()
    assert body["alerts"] == len(report.alerts) > 5
    # The stream crosses midnight: alerts are counted on both days.
    assert set(body["alerts_per_day"]) == {"2026-11-20", "2026-11-21"}
    assert body["alerts_per_severity"] == {SEED_RULE.severity: len(report.alerts)}


def test_a_backtest_reads_only_the_range_asked_for(tmp_path: Path) -> None:
    payments = stream()
    archive = archive_of(payments, tmp_path / "archive")
    since = datetime(2026, 11, 21, tzinfo=UTC)
    report = backtest(archive, SEED_RULE, since, since + timedelta(days=1), LATENESS_MS)
    assert report.payments == sum(1 for p in payments if p.ts_ms >= since.timestamp() * 1000)


def test_the_archive_keeps_exact_amounts_zoned_times_and_kafka_positions(tmp_path: Path) -> None:
    payments = stream(3000)
    archive_of(payments, tmp_path / "archive")
    rows = duckdb.sql(
        f"""
        SELECT event_date, event_hour, count(*) AS n, sum(amount) AS total,
               min(kafka_offset) AS first, typeof(any_value(ts)) AS ts_type,
               typeof(any_value(amount)) AS amount_type
        FROM read_parquet('{tmp_path}/archive/payments/**/*.parquet', hive_partitioning = true)
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    assert sum(r[2] for r in rows) == len(payments)
    assert sum(r[3] for r in rows) == sum(p.amount for p in payments)  # exact, not float
    assert {r[5] for r in rows} == {"TIMESTAMP WITH TIME ZONE"}
    assert {r[6] for r in rows} == {"DECIMAL(38,12)"}
    assert (str(rows[0][0]), rows[0][1]) == ("2026-11-20", 22)


def test_bad_ranges_and_a_missing_archive_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match="--since"):
        parse_moment("last week", "--since")
    since = parse_moment("2026-11-20", "--since")
    with pytest.raises(BacktestError, match="must be after"):
        backtest(Archive.at(str(tmp_path)), SEED_RULE, since, since, LATENESS_MS)
    with pytest.raises(ArchiveError, match="cannot read the archive"):
        backtest(
            Archive.at(str(tmp_path / "nowhere")),
            SEED_RULE,
            since,
            since + timedelta(days=1),
            LATENESS_MS,
        )


def late_stream(count: int = 3000) -> list[Payment]:
    """Payments in arrival order where every third one happened 40 minutes before it
    arrived: a roll then holds two event hours whose offsets interleave."""
    late = []
    for n, p in enumerate(stream(count)):
        ts_ms = p.ts_ms - 2_400_000 if n % 3 == 0 else p.ts_ms
        late.append(p._replace(ts_ms=ts_ms, ts=iso_from_ms(ts_ms)))
    return late


class Recorder:
    """``scan`` of app.history.backtest, counting the batches it gives and the readers
    open at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []  # rows of each batch, in reading order
        self.open = self.most_open = 0
        self.real = history_backtest.scan
        monkeypatch.setattr(history_backtest, "scan", self.scan)

    def scan(self, *args: Any, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            for batch in self.real(*args, **kwargs):
                self.batches.append(batch.num_rows)
                yield batch
        finally:
            self.open -= 1


def test_archived_payments_are_read_a_batch_at_a_time_in_offset_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payments = late_stream()
    partitions = 3
    archive = archive_of(payments, tmp_path / "archive", partitions)
    files = archive.files("payments")
    assert len(files) >= 6  # several rolls, each of two event hours
    since = datetime(2026, 11, 20, tzinfo=UTC)
    recorder = Recorder(monkeypatch)

    replay = archived_payments(archive, since, since + timedelta(days=7), batch_rows=100)
    next(replay)
    # The first payment comes out after a batch or so per partition, not after the range.
    assert 0 < len(recorder.batches) <= 2 * partitions
    rest = list(replay)
    assert len(rest) + 1 == len(payments)
    assert len(recorder.batches) >= len(payments) // 100
    assert max(recorder.batches) <= 100
    # One reader per partition, two where a roll's hours overlap in offsets: what is held
    # at once is a batch for each of those, whatever the range.
    assert recorder.most_open <= 2 * partitions

    # The order is the old one: each partition in offset order (here: arrival order),
    # partitions merged by Kafka timestamp (written as event time + 5 ms).
    by_partition: dict[int, list[Payment]] = {}
    for p in payments:
        by_partition.setdefault(hash(p.card_id) % partitions, []).append(p)
    expected = heapq.merge(
        *(by_partition[n] for n in sorted(by_partition)), key=lambda p: p.ts_ms + 5
    )
    replayed = archived_payments(archive, since, since + timedelta(days=7), batch_rows=100)
    assert [p.txn_id for _, p in replayed] == [p.txn_id for p in expected]


def test_only_the_files_of_the_range_s_hours_are_listed(tmp_path: Path) -> None:
    archive = archive_of(stream(), tmp_path / "archive")
    since = datetime(2026, 11, 20, 22, 30, tzinfo=UTC)
    files = files_in_range(archive, "payments", since, since + timedelta(hours=1))
    assert {(f.date, f.hour) for f in files} == {("2026-11-20", 22), ("2026-11-20", 23)}
    assert len(files) < len(archive.files("payments"))


def test_a_range_in_another_zone_lists_the_utc_dates_it_covers(tmp_path: Path) -> None:
    archive = archive_of(stream(), tmp_path / "archive")
    # 00:30 on the 21st in Paris is 23:30 on the 20th in UTC.
    since = datetime.fromisoformat("2026-11-21T00:30:00+01:00")
    files = files_in_range(archive, "payments", since, since + timedelta(minutes=20))
    assert {(f.date, f.hour) for f in files} == {("2026-11-20", 23)}


def test_each_archived_payment_comes_with_its_own_partition(tmp_path: Path) -> None:
    """An absence rule's backtest follows each partition's clock: a row carrying another
    partition's number would let one partition's progress fire another's deadlines."""
    payments = stream(600)
    archive = archive_of(payments, tmp_path / "archive")
    since = datetime(2026, 11, 20, tzinfo=UTC)
    rows = list(archived_payments_of_partitions(archive, since, since + timedelta(days=7)))
    assert len(rows) == len(payments)
    assert {r[1].txn_id: r[2] for r in rows} == {p.txn_id: hash(p.card_id) % 3 for p in payments}
