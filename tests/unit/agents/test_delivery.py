"""agents.delivery: the one dead-letter path; no exception escapes an agent, and a refused
dead letter is retried, not dropped."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from agents import delivery
from app.worker.failures import Failures
from app.worker.stats import WorkerStats
from tests.factories import Message


class FakeTopic:
    """Records what was sent; the first ``refuse`` sends raise, as a down broker would."""

    def __init__(self, refuse: int = 0) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.refuse = refuse
        self.lose = 0  # deliveries Kafka takes, then refuses after the producer's retries

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("broker down")
        self.sent.append((key, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.lose:
            self.lose -= 1
            done.set_exception(TimeoutError("delivery timed out"))
        else:
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


def test_a_dead_letter_lost_after_the_producer_took_it_is_counted_for_health(
    dlq: FakeTopic, counters: Counters
) -> None:
    dlq.lose = 1

    async def main() -> None:
        await delivery.dead_letter(Message(), "unparseable", "not JSON")
        await asyncio.sleep(0)  # the delivery's done-callbacks run

    asyncio.run(main())
    assert counters.failures.dlq_send_failures == 1
    assert counters.failures.dlq_sends_failing()
