"""Unit tests of the DynamoDB sink: item mapping, TTL, backoff, error classification,
the retry loop and the ack order (a fake client and a fake stream; no table, no broker)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore import exceptions as bexc
from hypothesis import given
from hypothesis import strategies as st

from agents import sink as sink_module
from agents.sink import run_sink, sink_events
from app.delivery.alert_writer import AlertWriter, SinkStats
from app.delivery.backoff import backoff_delay
from app.delivery.dynamodb import (
    CONDITION_NEW_ALERT,
    TTL_SECONDS,
    ErrorKind,
    alert_item,
    classify_error,
    error_code,
    expires_at,
    put_request,
)
from app.detection.models import Alert, iso_from_ms
from app.worker.settings import SettingsError, load_settings
from lambdas.notifier.alert import alert_from_image, classify_record

REPO = Path(__file__).resolve().parents[2]
DETECTED = "2026-11-28T14:03:07.250Z"
DETECTED_S = int(datetime(2026, 11, 28, 14, 3, 7, tzinfo=UTC).timestamp())


def make_alert(n: int = 0, **changes: Any) -> Alert:
    alert = Alert(
        alert_id=f"a{n:031d}",
        rule_id="high-value-burst",
        rule_version=3,
        status="active",
        group_by="card_id",
        group_key="card-tok-1",
        txn_ids=("t1", "t2", "t3"),
        amounts=("1000.00", "2500", "1000.01"),
        countries=("DE", "DE", "FR"),
        aggregate_value="3",
        first_event_ts="2026-11-28T14:01:00.000Z",
        last_event_ts="2026-11-28T14:03:07.000Z",
        detected_at=DETECTED,
        trigger_txn_id="t3",
        trigger_produced_at_ms=1_795_874_587_100,
        severity="high",
        description="3 payments >= 1000 within 5 min",
    )
    return replace(alert, **changes)


def client_error(code: str, status: int = 400) -> BaseException:
    error: BaseException = bexc.ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutItem",
    )
    return error


# --------------------------------------------------------------------------- item mapping


def test_item_round_trips_through_the_notifier_parser() -> None:
    alert = make_alert()
    item = alert_item(alert, written_at_ms=1_795_874_588_000)
    parsed = alert_from_image(item)
    assert parsed.alert_id == alert.alert_id
    assert parsed.rule_id == alert.rule_id
    assert parsed.rule_version == 3
    assert parsed.status == "active"
    assert parsed.group_by == "card_id"
    assert parsed.group_key == "card-tok-1"
    assert parsed.txn_ids == alert.txn_ids
    assert parsed.amounts == alert.amounts
    assert parsed.countries == alert.countries
    assert parsed.aggregate_value == "3"
    assert parsed.first_event_ts == alert.first_event_ts
    assert parsed.last_event_ts == alert.last_event_ts
    assert parsed.detected_at == DETECTED
    assert parsed.severity == "high"
    assert parsed.trigger_produced_at_ms == alert.trigger_produced_at_ms
    assert parsed.expires_at == DETECTED_S + TTL_SECONDS
    # And the stream record the table emits for a new row notifies.
    decision = classify_record({"eventName": "INSERT", "dynamodb": {"NewImage": item}})
    assert decision.notify and decision.alert == parsed


def test_item_has_exactly_the_documented_attributes_and_types() -> None:
    item = alert_item(make_alert(), written_at_ms=1_795_874_588_000)
    types = {name: next(iter(value)) for name, value in item.items()}
    assert types == {
        "alert_id": "S",
        "rule_id": "S",
        "rule_version": "N",
        "status": "S",
        "group_by": "S",
        "group_key": "S",
        "txn_ids": "L",
        "amounts": "L",
        "countries": "L",
        "aggregate_value": "S",
        "first_event_ts": "S",
        "last_event_ts": "S",
        "detected_at": "S",
        "trigger_txn_id": "S",
        "trigger_produced_at_ms": "N",
        "severity": "S",
        "description": "S",
        "expires_at": "N",
        "written_at_ms": "N",
    }
    assert item["txn_ids"] == {"L": [{"S": "t1"}, {"S": "t2"}, {"S": "t3"}]}
    assert item["written_at_ms"] == {"N": "1795874588000"}
    assert item["trigger_txn_id"] == {"S": "t3"}
    # Numbers are wire strings of integers, never floats.
    for name in ("rule_version", "trigger_produced_at_ms", "expires_at", "written_at_ms"):
        assert item[name]["N"].isdigit()


def test_shadow_alert_keeps_its_status_and_does_not_notify() -> None:
    item = alert_item(make_alert(status="shadow"), written_at_ms=0)
    decision = classify_record({"eventName": "INSERT", "dynamodb": {"NewImage": item}})
    assert not decision.notify and decision.reason == "shadow"


def test_put_request_is_conditional_on_a_new_alert_id() -> None:
    request = put_request("fraud_alerts", make_alert(), written_at_ms=5)
    assert request["TableName"] == "fraud_alerts"
    assert (
        request["ConditionExpression"] == CONDITION_NEW_ALERT == ("attribute_not_exists(alert_id)")
    )
    assert request["Item"]["written_at_ms"] == {"N": "5"}


# --------------------------------------------------------------------------- TTL


def test_expires_at_is_detected_at_plus_24_hours_in_whole_seconds() -> None:
    assert expires_at(DETECTED, fallback_ms=0) == DETECTED_S + 86400
    assert expires_at("2026-11-28T14:03:07.999Z", fallback_ms=0) == DETECTED_S + 86400
    assert expires_at("2026-11-28T15:03:07+01:00", fallback_ms=0) == DETECTED_S + 86400


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-11-28T14:03:07"])  # last: no zone
def test_expires_at_falls_back_to_the_write_time(bad: str) -> None:
    assert expires_at(bad, fallback_ms=1_000_000_999) == 1_000_000 + 86400


@given(st.integers(min_value=0, max_value=4_000_000_000_000))
def test_expires_at_matches_the_detectors_timestamps(ms: int) -> None:
    assert expires_at(iso_from_ms(ms), fallback_ms=0) == ms // 1000 + 86400


# --------------------------------------------------------------------------- backoff


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    top = [backoff_delay(n, base=0.05, cap=10.0, rand=lambda: 1.0) for n in range(1, 12)]
    assert top[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert top[-1] == 10.0 and max(top) == 10.0
    assert all(a <= b for a, b in itertools.pairwise(top))
    assert backoff_delay(0) == 0.0
    assert backoff_delay(10_000, cap=10.0, rand=lambda: 1.0) == 10.0  # no overflow


@given(st.integers(min_value=1, max_value=200))
def test_backoff_is_full_jitter_within_bounds(attempt: int) -> None:
    delay = backoff_delay(attempt, base=0.05, cap=10.0)
    assert 0.0 <= delay <= min(10.0, 0.05 * 2 ** (attempt - 1))


def test_backoff_is_jittered() -> None:
    draws = {backoff_delay(8) for _ in range(50)}
    assert len(draws) > 40  # full jitter: spread over [0, ceiling], not a fixed step
    assert min(draws) < 3.2 / 2 < max(draws)


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("ConditionalCheckFailedException"), ErrorKind.DUPLICATE),
        (client_error("ProvisionedThroughputExceededException"), ErrorKind.THROTTLED),
        (client_error("ThrottlingException"), ErrorKind.THROTTLED),
        (client_error("RequestLimitExceeded"), ErrorKind.THROTTLED),
        (client_error("InternalServerError", 500), ErrorKind.TRANSIENT),
        (client_error("ServiceUnavailable", 503), ErrorKind.TRANSIENT),
        (client_error("SomethingNew", 502), ErrorKind.TRANSIENT),
        (client_error("TransactionConflictException"), ErrorKind.TRANSIENT),
        (bexc.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), ErrorKind.TRANSIENT),
        (bexc.ConnectTimeoutError(endpoint_url="http://x"), ErrorKind.TRANSIENT),
        (bexc.ReadTimeoutError(endpoint_url="http://x"), ErrorKind.TRANSIENT),
        (bexc.ConnectionClosedError(endpoint_url="http://x"), ErrorKind.TRANSIENT),
        (ConnectionResetError(), ErrorKind.TRANSIENT),
        (TimeoutError(), ErrorKind.TRANSIENT),
        (client_error("ValidationException"), ErrorKind.NON_RETRYABLE),
        (client_error("ResourceNotFoundException"), ErrorKind.NON_RETRYABLE),
        (client_error("AccessDeniedException"), ErrorKind.NON_RETRYABLE),
        (client_error("UnrecognizedClientException"), ErrorKind.NON_RETRYABLE),
        (bexc.NoCredentialsError(), ErrorKind.NON_RETRYABLE),
        (ValueError("bug"), ErrorKind.NON_RETRYABLE),
    ],
)
def test_errors_are_classified(exc: BaseException, kind: ErrorKind) -> None:
    assert classify_error(exc) is kind
    assert kind.retryable == (kind in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT))


def test_error_code_names_the_aws_code_or_the_class() -> None:
    assert error_code(client_error("ThrottlingException")) == "ThrottlingException"
    assert error_code(bexc.EndpointConnectionError(endpoint_url="u")) == ("EndpointConnectionError")


# --------------------------------------------------------------------------- setting


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("1", True),
        ("YES", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" False ", False),
        ("", True),
    ],
)
def test_sink_enabled_setting(raw: str, value: bool) -> None:
    assert load_settings({"FRAUD_SINK_ENABLED": raw}).sink_enabled is value
    assert load_settings({}).sink_enabled is True


def test_bad_sink_enabled_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="FRAUD_SINK_ENABLED='maybe'"):
        load_settings({"FRAUD_SINK_ENABLED": "maybe"})


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


# --------------------------------------------------------------------------- retry loop


class FakeClient:
    """put_item raises the scripted errors for an alert id, then succeeds (and stores)."""

    def __init__(self, script: Callable[[str, int], BaseException | None]) -> None:
        self.script = script
        self.calls: dict[str, int] = {}
        self.rows: dict[str, dict[str, Any]] = {}

    def put_item(self, **request: Any) -> dict[str, Any]:
        assert request["ConditionExpression"] == CONDITION_NEW_ALERT
        alert_id = request["Item"]["alert_id"]["S"]
        n = self.calls[alert_id] = self.calls.get(alert_id, 0) + 1
        failure = self.script(alert_id, n)
        if failure is not None:
            raise failure
        if alert_id in self.rows:
            raise client_error("ConditionalCheckFailedException")
        self.rows[alert_id] = request["Item"]
        return {}


def writer_for(client: FakeClient, stats: SinkStats, sleeps: list[float]) -> AlertWriter:
    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    return AlertWriter("t", lambda: client, stats=stats, threads=4, sleep=sleep)


def test_writer_retries_throttling_until_written_and_counts() -> None:
    def script(alert_id: str, n: int) -> BaseException | None:
        if alert_id.endswith("1") and n <= 2:
            return client_error("ProvisionedThroughputExceededException")
        return None

    client, stats, sleeps = FakeClient(script), SinkStats(), list[float]()
    writer = writer_for(client, stats, sleeps)
    alerts = [make_alert(n) for n in range(3)]
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
    client, stats, sleeps = FakeClient(lambda _id, _n: None), SinkStats(), list[float]()
    writer = writer_for(client, stats, sleeps)
    alerts = [make_alert(n) for n in range(5)]
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
        return client_error("ResourceNotFoundException") if n <= 3 else None

    async def sleep(_delay: float) -> None:
        seen_health.append(stats.healthy())

    client = FakeClient(script)
    writer = AlertWriter("t", lambda: client, stats=stats, threads=2, sleep=sleep)
    asyncio.run(writer.write([make_alert(1)]))
    writer.close()
    assert seen_health == [False, False, False]
    assert stats.healthy() and stats.written == 1 and stats.retries == 3


# --------------------------------------------------------------------------- acking


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class FakeEvent:
    message: FakeMessage

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
        FakeEvent(FakeMessage("fraud.alerts", 0, start + i, a.alert_id.encode(), a.to_json()))
        for i, a in enumerate(alerts)
    ]


def test_events_are_acked_only_after_their_whole_batch_is_in_the_table() -> None:
    journal: list[str] = []

    class JournalClient(FakeClient):
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

    alerts = [make_alert(n) for n in range(4)]
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
    good = events_for([make_alert(7)])
    bad = [
        FakeEvent(FakeMessage("fraud.alerts", 0, 1, b"k", b"{not json")),
        FakeEvent(FakeMessage("fraud.alerts", 0, 2, b"k", b'{"alert_id": "x"}')),
        FakeEvent(FakeMessage("fraud.alerts", 0, 3, b"k", b"[" * 50_000 + b"]" * 50_000)),
    ]
    client, stats = FakeClient(lambda _i, _n: None), SinkStats()
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
    assert list(client.rows) == [make_alert(7).alert_id]


def test_sink_events_writes_decoded_alerts() -> None:
    client, stats = FakeClient(lambda _i, _n: None), SinkStats()
    writer = AlertWriter("t", lambda: client, stats=stats, threads=2)
    asyncio.run(sink_events(events_for([make_alert(1), make_alert(2)]), writer))
    writer.close()
    assert stats.written == 2 and len(client.rows) == 2
