"""app.delivery.alert_writer: conditional puts retried with backoff until written, replays
counted as duplicates, and the sink's health (a fake DynamoDB client; no table)."""

from __future__ import annotations

import asyncio

from app.delivery.alert_writer import AlertWriter, SinkStats
from app.delivery.dynamodb import ErrorKind
from tests import factories
from tests.factories import FakeDynamoDB


def writer_for(client: FakeDynamoDB, stats: SinkStats, sleeps: list[float]) -> AlertWriter:
    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    return AlertWriter("t", lambda: client, stats=stats, threads=4, sleep=sleep)


def test_writer_retries_throttling_until_written_and_counts() -> None:
    def script(alert_id: str, n: int) -> BaseException | None:
        if alert_id.endswith("1") and n <= 2:
            return factories.client_error("ProvisionedThroughputExceededException")
        return None

    client, stats, sleeps = FakeDynamoDB(script), SinkStats(), list[float]()
    writer = writer_for(client, stats, sleeps)
    alerts = [factories.alert(n) for n in range(3)]
    asyncio.run(writer.write(alerts))
    writer.close()
    assert set(client.rows) == {a.alert_id for a in alerts}
    assert client.calls == {alerts[0].alert_id: 1, alerts[1].alert_id: 3, alerts[2].alert_id: 1}
    assert (stats.written, stats.failures, stats.throttled, stats.retries) == (3, 2, 2, 2)
    assert len(sleeps) == 2 and all(0 <= s <= 10.0 for s in sleeps)
    assert stats.failing_since is None and stats.healthy()
    assert stats.last_error == "ProvisionedThroughputExceededException"
    assert stats.alert_latency.get_total_count() == 3


def test_writer_counts_replays_as_duplicates_and_rewrites_nothing() -> None:
    client, stats, sleeps = FakeDynamoDB(lambda _id, _n: None), SinkStats(), list[float]()
    writer = writer_for(client, stats, sleeps)
    alerts = [factories.alert(n) for n in range(5)]
    asyncio.run(writer.write(alerts))
    first = dict(client.rows)
    asyncio.run(writer.write([*alerts, alerts[0]]))  # a replay, with one twice in a batch
    writer.close()
    assert client.rows == first
    assert (stats.written, stats.duplicates_skipped, stats.failures) == (5, 6, 0)
    assert sleeps == []


def test_health_turns_false_after_30_s_of_failures_or_at_once_when_blocked() -> None:
    stats = SinkStats()
    assert stats.healthy()
    stats.record_failure("ThrottlingException", ErrorKind.THROTTLED, now_monotonic=100.0)
    assert stats.healthy(now_monotonic=129.0)
    assert not stats.healthy(now_monotonic=131.0)
    stats.failing_since, stats.blocked = None, True
    assert not stats.healthy()
    snap = SinkStats().snapshot()
    assert snap["healthy"] is True and snap["alert_latency_ms"]["count"] == 0
    assert {"written", "duplicates_skipped", "failures", "retries", "last_error_at"} <= set(snap)


def test_non_retryable_errors_are_retried_and_mark_the_sink_unhealthy() -> None:
    seen_health: list[bool] = []
    stats = SinkStats()

    def script(_alert_id: str, n: int) -> BaseException | None:
        return factories.client_error("ResourceNotFoundException") if n <= 3 else None

    async def sleep(_delay: float) -> None:
        seen_health.append(stats.healthy())

    client = FakeDynamoDB(script)
    writer = AlertWriter("t", lambda: client, stats=stats, threads=2, sleep=sleep)
    asyncio.run(writer.write([factories.alert(1)]))
    writer.close()
    assert seen_health == [False, False, False]
    assert stats.healthy() and stats.written == 1 and stats.retries == 3
