"""The one dead-letter path: no exception escapes an agent, no card number leaves in clear."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import delivery
from app.delivery.dead_letter import DLQ_ORIGINAL_LIMIT, DeadLetter
from app.detection.pan import contains_pan
from app.worker.failures import Failures
from app.worker.stats import WorkerStats

PAN = b"4111111111111111"


@dataclass
class Message:
    topic: str = "payments.raw"
    partition: int = 2
    offset: int = 41
    key: bytes | None = PAN
    value: bytes | None = b'{"card_id": "' + PAN + b'"}'


class FakeTopic:
    """Records what was sent; the first ``refuse`` sends raise, as a down broker would."""

    def __init__(self, refuse: int = 0) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.refuse = refuse

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("broker down")
        self.sent.append((key, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@dataclass
class Counters:
    stats: WorkerStats
    failures: Failures


@pytest.fixture
def counters(monkeypatch: pytest.MonkeyPatch) -> Counters:
    fresh = Counters(WorkerStats(), Failures())
    monkeypatch.setattr(delivery, "stats", fresh.stats)
    monkeypatch.setattr(delivery, "failures", fresh.failures)
    return fresh


@pytest.fixture
def dlq(monkeypatch: pytest.MonkeyPatch, counters: Counters) -> FakeTopic:
    topic = FakeTopic()
    monkeypatch.setattr(delivery, "dlq_topic", topic)
    return topic


def test_the_dlq_record_masks_the_card_number_in_value_key_and_detail() -> None:
    record = DeadLetter.for_message(Message(), "bad_value", "field 'ip' is " + PAN.decode())
    body = json.loads(record.to_json())
    assert PAN.decode() not in json.dumps(body)
    assert base64.b64decode(body["original_key_b64"]) == b"************1111"
    assert PAN not in base64.b64decode(body["original_b64"])
    assert body["source"] == {"topic": "payments.raw", "partition": 2, "offset": 41}


def test_an_oversize_original_keeps_a_head_its_size_and_digest() -> None:
    value = b"x" * 3_000_000
    body = json.loads(DeadLetter.for_message(Message(value=value), "oversize", "big").to_json())
    assert body["original_truncated"] is True and body["original_size"] == 3_000_000
    assert len(base64.b64decode(body["original_b64"])) == DLQ_ORIGINAL_LIMIT
    assert len(body["original_sha256"]) == 64
    assert len(json.dumps(body)) < 1024 * 1024 // 2, "far below the producer's request limit"


def test_an_unforeseen_error_dead_letters_the_record_as_internal_error(
    dlq: FakeTopic, counters: Counters
) -> None:
    async def explode() -> None:
        raise ArithmeticError("overflow")

    asyncio.run(delivery.guarded("detect", Message(), explode()))
    ((key, value),) = dlq.sent
    body = json.loads(value)
    assert key == b"************1111"
    assert body["reason"] == "internal_error" and body["detail"] == "detect: ArithmeticError"
    assert counters.failures.internal_errors[("detect", "ArithmeticError")] == 1
    assert counters.stats.dlq["internal_error"] == 1


def test_cancellation_is_not_an_error(dlq: FakeTopic) -> None:
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(delivery.guarded("detect", Message(), cancelled()))
    assert dlq.sent == []


def test_a_refused_dead_letter_is_retried_not_dropped(
    dlq: FakeTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq.refuse = 3
    slept: list[float] = []

    async def no_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    asyncio.run(delivery.dead_letter(Message(), "unparseable", "not JSON"))
    assert len(dlq.sent) == 1 and len(slept) == 3
    dlq.refuse = 2
    asyncio.run(delivery.dead_letter(Message(), "alert_undecodable", "x", wait=True))
    assert len(dlq.sent) == 2 and len(slept) == 5


@settings(max_examples=200, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=64)), value=st.one_of(st.none(), st.binary()))
def test_any_record_makes_a_dlq_record_without_a_card_number(
    key: bytes | None, value: bytes | None
) -> None:
    message = Message(key=None if key is None else key + b"-" + PAN, value=value)
    body = json.loads(DeadLetter.for_message(message, "unparseable", "x").to_json())
    assert PAN not in base64.b64decode(body["original_key_b64"] or "")
    for name in ("original_b64", "original_key_b64"):
        if body[name] is not None:
            shown = base64.b64decode(body[name]).decode("latin-1")
            assert not contains_pan(shown), "no card number a scanner would find"
