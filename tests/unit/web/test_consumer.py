"""app/web/consumer.py: consumer lag from the broker's end offsets, and the stall watch."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from app.web.consumer import ConsumerWatch, Offsets, PartitionLag, consumer_lag


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
    (lag,) = consumer_lag(fake_app, Offsets(ends={TP(payments, 0): 75}))
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


def test_a_partition_whose_group_never_committed_waits_from_its_log_start() -> None:
    # A new consumer group whose first batch never finishes: no committed offset anywhere
    # and nothing acknowledged. Under "earliest" the partition starts at its log start.
    payments = "payments.raw"
    tp = TP(payments, 3)
    consumer = SimpleNamespace(
        assignment=lambda: {tp}, highwater=lambda tp: 120, _committed_offset={}
    )
    fake_app = SimpleNamespace(
        consumer=consumer,
        conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
        tables=SimpleNamespace(changelog_topics=set()),
        monitor=SimpleNamespace(tp_committed_offsets={}, tp_read_offsets={}),
    )
    assert consumer_lag(fake_app)[0].lag is None  # without the broker: unknown
    (lag,) = consumer_lag(fake_app, Offsets(ends={tp: 120}, starts={tp: 20}))
    assert (lag.committed, lag.lag) == (None, 100)
    # The group's offset on the broker counts, the newest of every source wins.
    (lag,) = consumer_lag(fake_app, Offsets(ends={tp: 120}, starts={tp: 20}, committed={tp: 90}))
    assert (lag.committed, lag.lag) == (90, 30)
    fake_app.monitor.tp_committed_offsets = {tp: 110}
    (lag,) = consumer_lag(fake_app, Offsets(ends={tp: 120}, starts={tp: 20}, committed={tp: 90}))
    assert (lag.committed, lag.lag) == (110, 10)
    # Under "latest" it would start at the end offset at assignment: not known here.
    fake_app.monitor.tp_committed_offsets = {}
    fake_app.conf.consumer_auto_offset_reset = "latest"
    assert consumer_lag(fake_app, Offsets(ends={tp: 120}, starts={tp: 20}))[0].lag is None


def test_only_progress_resets_the_stall_clock_not_a_pause_nor_not_knowing() -> None:
    watch = ConsumerWatch()

    def reading(committed: int | None, lag: int | None) -> list[PartitionLag]:
        return [PartitionLag("t", 0, None, committed, None, lag)]

    # Assigned; the broker's offsets not read yet. Not judged, but the clock starts.
    assert watch.observe(reading(None, None), now=0.0) == 0.0
    assert watch.observe(reading(None, None), now=4.0) == 0.0
    # Records wait and none was ever committed: stalled since the assignment.
    assert watch.observe(reading(None, 3), now=6.0) == 6.0
    assert watch.stalled == {("t", 0): 6.0}
    # A recovery or rebalance holding the partition up changes nothing: same readings.
    assert watch.observe(reading(None, 3), now=100.0) == 100.0
    assert watch.observe(reading(5, 3), now=101.0) == 0.0  # the first commit is progress
    assert watch.observe(reading(5, 0), now=200.0) == 0.0 and watch.stalled == {}
