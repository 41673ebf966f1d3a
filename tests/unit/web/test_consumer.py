"""app/web/consumer.py: consumer lag from the broker's end offsets, and the stall watch."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from app.web.consumer import ConsumerWatch, PartitionLag, consumer_lag


def test_consumer_lag_reads_source_partitions_only() -> None:
    payments, changelog = "payments.raw", "fraud-card-state-changelog"
    leader = "fraud-__assignor-__leader"
    consumer = SimpleNamespace(
        assignment=lambda: {TP(payments, 0), TP(payments, 1), TP(changelog, 0), TP(leader, 0)},
        highwater=lambda tp: {0: 120, 1: 7}[tp.partition],
        _committed_offset={TP(payments, 1): 5},  # committed before this assignment
    )
    fake_app = SimpleNamespace(
        consumer=consumer,
        tables=SimpleNamespace(changelog_topics={changelog}),
        monitor=SimpleNamespace(
            tp_committed_offsets={TP(payments, 0): 100}, tp_read_offsets={TP(payments, 0): 109}
        ),
    )
    assert consumer_lag(fake_app) == [
        PartitionLag(payments, 0, highwater=120, committed=100, read=109, lag=20),
        PartitionLag(payments, 1, highwater=7, committed=5, read=None, lag=2),
    ]
    not_started = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: 1 / 0))
    assert consumer_lag(not_started) == []


def test_a_partition_the_consumer_never_fetches_is_a_stall_not_idle() -> None:
    payments = "payments.raw"
    consumer = SimpleNamespace(
        assignment=lambda: {TP(payments, 0)},
        highwater=lambda tp: None,  # never fetched: the consumer knows no highwater
        _committed_offset={TP(payments, 0): 40},
    )
    fake_app = SimpleNamespace(
        consumer=consumer,
        tables=SimpleNamespace(changelog_topics=set()),
        monitor=SimpleNamespace(tp_committed_offsets={}, tp_read_offsets={}),
    )
    assert consumer_lag(fake_app)[0].lag is None  # looks idle on its own
    (lag,) = consumer_lag(fake_app, {TP(payments, 0): 75})
    assert lag.highwater == 75 and lag.lag == 35
    watch = ConsumerWatch()
    assert watch.observe([lag], now=0.0) == 0.0
    assert watch.observe([lag], now=61.0) == 61.0


def test_consumer_watch_counts_only_waiting_without_reading() -> None:
    watch = ConsumerWatch()

    def lag(read: int, highwater: int = 100) -> list[PartitionLag]:
        return [PartitionLag("t", 0, highwater, read + 1, read, highwater - read - 1)]

    assert watch.observe(lag(10), now=0.0) == 0.0
    assert watch.observe(lag(10), now=30.0) == 30.0  # records wait, nothing read
    assert watch.observe(lag(11), now=31.0) == 0.0  # it moved
    assert watch.observe(lag(11), now=200.0, paused=True) == 0.0  # recovery/rebalance
    assert watch.observe(lag(99), now=300.0) == 0.0
    assert watch.observe(lag(99), now=900.0) == 0.0  # caught up: idle, not stalled
    assert watch.observe([], now=901.0) == 0.0  # revoked


def test_consumer_watch_sees_records_read_but_never_acknowledged() -> None:
    # Everything was read (read + 1 == highwater) but the commit is stuck far behind:
    # the worker is not idle, it is stalled.
    watch = ConsumerWatch()
    stuck = [PartitionLag("t", 2, highwater=3345, committed=2413, read=3344, lag=932)]
    assert watch.observe(stuck, now=0.0) == 0.0
    assert watch.observe(stuck, now=61.0) == 61.0
    moving = [PartitionLag("t", 2, highwater=3345, committed=3000, read=3344, lag=345)]
    assert watch.observe(moving, now=62.0) == 0.0
