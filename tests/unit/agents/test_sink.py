"""agents.sink: registered only when enabled; events are acked only once their whole batch
is in the table, undecodable records only once the DLQ has them (a fake DynamoDB client and
a fake stream; no table, no broker)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore import exceptions as bexc

from agents import sink as sink_module
from agents.sink import run_sink, sink_events
from app.delivery.alert_writer import AlertWriter, SinkStats
from app.delivery.dynamodb import error_code
from app.detection.models import Alert
from app.worker.failures import Failures
from tests import factories
from tests.factories import FakeDynamoDB, Message

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("flag", "registered"), [("false", False), ("true", True)])
def test_agent_is_registered_only_when_enabled(flag: str, registered: bool) -> None:
    code = (
        "import agents.sink as s\n"
        "from app.worker.faust_app import app\n"
        "names = {a.name for a in app.agents.values()}\n"
        "print(hasattr(s, 'sink_agent'), 'dynamodb-sink' in names)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "FRAUD_SINK_ENABLED": flag},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [str(registered), str(registered)]


# --------------------------------------------------------------------------- acking


@dataclass
class FakeEvent:
    message: Message

    @property
    def value(self) -> bytes | None:
        return self.message.value


class FakeStream:
    """Just enough of a Faust stream: ``noack_take`` yields batches, ``ack`` is recorded."""

    def __init__(self, batches: list[list[FakeEvent]], journal: list[str]) -> None:
        self.batches, self.journal = batches, journal

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[FakeEvent]]:
        assert max_ == 25 and within > 0
        for batch in self.batches:
            yield batch

    async def ack(self, event: FakeEvent) -> bool:
        self.journal.append(f"ack {event.message.offset}")
        return True


def events_for(alerts: list[Alert], start: int = 0) -> list[FakeEvent]:
    return [
        FakeEvent(Message("fraud.alerts", 0, start + i, a.alert_id.encode(), a.to_json()))
        for i, a in enumerate(alerts)
    ]


def test_events_are_acked_only_after_their_whole_batch_is_in_the_table() -> None:
    journal: list[str] = []

    class JournalClient(FakeDynamoDB):
        def put_item(self, **request: Any) -> dict[str, Any]:
            alert_id = request["Item"]["alert_id"]["S"]
            try:
                result = super().put_item(**request)
            except Exception as exc:
                journal.append(f"fail {alert_id[-1]} {error_code(exc)}")
                raise
            journal.append(f"put {alert_id[-1]}")
            return result

    def script(alert_id: str, n: int) -> BaseException | None:
        # Alert 2 (second batch) meets an outage for three rounds.
        if alert_id.endswith("2") and n <= 3:
            outage: BaseException = bexc.EndpointConnectionError(endpoint_url="http://x:1")
            return outage
        return None

    alerts = [factories.alert(n) for n in range(4)]
    batches = [events_for(alerts[:2]), events_for(alerts[2:], start=2)]
    client, stats, sleeps = JournalClient(script), SinkStats(), list[float]()
    writer = AlertWriter(
        "t", lambda: client, stats=stats, threads=1, sleep=lambda d: _record(sleeps, d)
    )
    asyncio.run(run_sink(FakeStream(batches, journal), writer))
    writer.close()
    fails = [i for i, line in enumerate(journal) if line.startswith("fail")]
    acks = {line: i for i, line in enumerate(journal) if line.startswith("ack")}
    assert len(fails) == 3 and len(client.rows) == 4
    # Batch 1 is acked before batch 2 starts failing; batch 2 only after its last put.
    assert acks["ack 0"] < acks["ack 1"] < fails[0]
    assert journal.index("put 2") > fails[-1]
    assert acks["ack 2"] > journal.index("put 2") and acks["ack 3"] > journal.index("put 3")
    assert stats.retries == 3 and len(sleeps) == 3


async def _record(sleeps: list[float], delay: float) -> None:
    sleeps.append(delay)


def test_undecodable_records_go_to_the_dlq_before_they_are_acked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    journal: list[str] = []

    async def fake_dead_letter(message: Any, reason: str, detail: str, *, wait: bool) -> None:
        assert reason == "alert_undecodable" and wait, "the sink acks only what the DLQ has"
        journal.append(f"dlq {message.offset} {detail.split(':', maxsplit=1)[0]}")

    monkeypatch.setattr(sink_module, "dead_letter", fake_dead_letter)
    good = events_for([factories.alert(7)])
    bad = [
        FakeEvent(Message("fraud.alerts", 0, 1, b"k", b"{not json")),
        FakeEvent(Message("fraud.alerts", 0, 2, b"k", b'{"alert_id": "x"}')),
        FakeEvent(Message("fraud.alerts", 0, 3, b"k", b"[" * 50_000 + b"]" * 50_000)),
    ]
    client, stats = FakeDynamoDB(lambda _i, _n: None), SinkStats()
    writer = AlertWriter("t", lambda: client, stats=stats, threads=1)
    asyncio.run(run_sink(FakeStream([[*good, *bad]], journal), writer))
    writer.close()
    assert journal == [
        "dlq 1 not an alert",
        "dlq 2 not an alert",
        "dlq 3 not an alert",
        *(f"ack {i}" for i in range(4)),
    ]
    assert stats.dead_lettered == 3
    assert list(client.rows) == [factories.alert(7).alert_id]


def test_sink_events_writes_decoded_alerts() -> None:
    client, stats = FakeDynamoDB(lambda _i, _n: None), SinkStats()
    writer = AlertWriter("t", lambda: client, stats=stats, threads=2)
    asyncio.run(sink_events(events_for([factories.alert(1), factories.alert(2)]), writer))
    writer.close()
    assert stats.written == 2 and len(client.rows) == 2


def test_an_unforeseen_error_retries_the_batch_and_acks_only_after_it_is_durable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    journal: list[str] = []
    counted = Failures()
    real_sink_events = sink_module.sink_events

    async def flaky_sink_events(events: list[FakeEvent], writer: AlertWriter) -> None:
        if journal.count("boom") < 2:
            journal.append("boom")
            raise RuntimeError("unforeseen")
        await real_sink_events(events, writer)
        journal.append("durable")

    async def no_sleep(_delay: float) -> None:
        journal.append("wait")

    monkeypatch.setattr(sink_module, "sink_events", flaky_sink_events)
    monkeypatch.setattr(sink_module, "failures", counted)
    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    client, stats = FakeDynamoDB(lambda _i, _n: None), SinkStats()
    writer = AlertWriter("t", lambda: client, stats=stats, threads=1)
    with caplog.at_level(logging.WARNING, logger="agents.sink"):
        asyncio.run(run_sink(FakeStream([events_for([factories.alert(1)])], journal), writer))
    writer.close()
    assert journal == ["boom", "wait", "boom", "wait", "durable", "ack 0"]
    assert counted.internal_errors[("dynamodb-sink", "RuntimeError")] == 2
    retried = [r for r in caplog.records if r.name == "agents.sink"]
    assert [r.getMessage().split(" (")[0] for r in retried] == [
        "dynamodb sink: a batch of 1 alerts not made durable"
    ] * 2
