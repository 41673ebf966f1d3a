"""app/web/health.py: GET /healthz and GET /readyz fail when the worker is not detecting."""

from __future__ import annotations

import time
from types import SimpleNamespace

import aiohttp
import pytest

from app.detection.lists import ListBook
from app.detection.rules import SEED_RULE
from app.web import (
    health,
)
from app.web.consumer import ConsumerWatch, PartitionLag
from app.worker.failures import Failures
from app.worker.stats import WorkerStats
from tests.unit.web.fakes import fake_rulebook, get, loaded_listbook, patch_web, run


def test_healthz_is_200_when_agents_run_and_503_when_one_does_not(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["status"] == "ok"
        patch_web(monkeypatch, "agent_states", lambda: {"detect": "crashed"})
        status, body = await get(session, f"{base}/healthz/")
        assert status == 503 and body["checks"]["agents"]["states"] == {"detect": "crashed"}

    run(check)


def test_healthz_is_503_when_the_consumer_stalls_past_the_limit(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = [PartitionLag("payments.raw", 1, highwater=100, committed=10, read=9, lag=90)]
    patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})
    patch_web(monkeypatch, "consumer_lag", lambda app, broker=None: stuck)
    health.watch.observe(stuck, time.monotonic() - health.STALL_LIMIT_S - 5)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/healthz")
        assert status == 503
        consumer = body["checks"]["consumer"]
        assert consumer["stalled_s"] > health.STALL_LIMIT_S
        (stalled,) = consumer["stalled_partitions"]
        assert (stalled["topic"], stalled["partition"], stalled["lag"]) == ("payments.raw", 1, 90)

    run(check)


@pytest.mark.parametrize("pause", ["in_recovery", "rebalancing"])
def test_healthz_is_503_when_a_recovery_or_rebalance_outlasts_the_stall_limit(
    pause: str, worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Records wait in a partition held up by a recovery or a rebalance: a short one is
    # fine, one that lasts longer than the stall limit is not (it used to count as progress).
    waiting = [PartitionLag("payments.raw", 2, highwater=50, committed=40, read=39, lag=10)]
    monkeypatch.setattr(health, "app", SimpleNamespace(**{pause: True}))
    patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})
    patch_web(monkeypatch, "consumer_lag", lambda app, broker=None: waiting)

    def held_up_since(seconds_ago: float) -> None:
        patch_web(monkeypatch, "watch", ConsumerWatch())
        health.watch.observe(waiting, time.monotonic() - seconds_ago)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        held_up_since(3.0)
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["checks"]["consumer"][pause] is True
        held_up_since(health.STALL_LIMIT_S + 1)
        status, body = await get(session, f"{base}/healthz")
        assert status == 503 and body["checks"]["consumer"]["ok"] is False
        assert body["checks"]["consumer"][pause] is True

    run(check)


def test_healthz_is_503_while_batches_wait_for_rules_and_payments_wait(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Never committed (a new group), nothing read: the broker's log start says what waits.
    waiting = [PartitionLag("payments.raw", 0, highwater=3, committed=None, read=None, lag=3)]
    patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})
    patch_web(monkeypatch, "consumer_lag", lambda app, broker=None: waiting)
    patch_web(monkeypatch, "rulebook", fake_rulebook([], loaded_at_start=False))
    health.watch.observe(waiting, time.monotonic() - health.STALL_LIMIT_S - 1)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/healthz")
        assert status == 503
        assert body["checks"]["consumer"]["rules_topic_read"] is False
        assert body["checks"]["rules_follower"]["ok"] is True, "the follower itself is fine"

    run(check)


def test_healthz_is_503_for_a_minute_after_a_dlq_send_is_refused(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    lost = Failures(clock=lambda: clock[0])
    patch_web(monkeypatch, "failures", lost)
    patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["checks"]["dlq_sends"]["send_failures"] == 0
        lost.dlq_send_failed("dead letter (unparseable) for payments.raw[0]@7", TimeoutError())
        clock[0] += 30
        status, body = await get(session, f"{base}/healthz")
        assert status == 503 and body["checks"]["dlq_sends"]["ok"] is False
        assert body["checks"]["dlq_sends"]["last_failure_s_ago"] == 30.0
        clock[0] += 31
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["checks"]["dlq_sends"]["send_failures"] == 1

    run(check)


def test_readyz_needs_recovered_tables_and_the_rules_topic_read_but_no_rule(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/readyz")
        assert status == 200 and body["status"] == "ready"
        patch_web(monkeypatch, "tables_recovered", lambda: False)
        status, body = await get(session, f"{base}/readyz")
        assert status == 503 and body["checks"]["tables_recovered"] is False
        patch_web(monkeypatch, "tables_recovered", lambda: True)
        # A fresh deployment, or the last rule deleted: zero rules is ready.
        patch_web(monkeypatch, "rulebook", fake_rulebook([]))
        status, body = await get(session, f"{base}/readyz/")
        assert status == 200 and body["checks"]["rules_loaded"] == 0
        # Rules in force but the topic not read to its end yet: not ready.
        book = fake_rulebook([SEED_RULE], loaded_at_start=False, unread={1: (3, 7)})
        patch_web(monkeypatch, "rulebook", book)
        status, body = await get(session, f"{base}/readyz")
        assert status == 503 and body["checks"]["rules_topic_read"] is False
        # ... and says where it waits.
        assert body["checks"]["rules_topic_unread"] == {"1": {"position": 3, "end_offset": 7}}

    run(check)


def test_readyz_waits_for_the_lists_topics_read(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        patch_web(monkeypatch, "listbook", ListBook())  # not read yet
        status, body = await get(session, f"{base}/readyz")
        assert status == 503 and body["checks"]["lists_topics_read"] is False
        patch_web(monkeypatch, "listbook", loaded_listbook())
        status, body = await get(session, f"{base}/readyz")
        assert status == 200 and body["checks"]["lists_topics_read"] is True

    run(check)


def test_healthz_is_503_for_a_minute_after_an_agent_crash(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    crashes = Failures(clock=lambda: clock[0])
    patch_web(monkeypatch, "failures", crashes)
    patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        crashes.agent_crashed("detect", KeyError("x"))
        status, body = await get(session, f"{base}/healthz")
        assert status == 503 and body["checks"]["agents"]["last_crash"] == "detect: KeyError"
        clock[0] += 61
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["checks"]["agents"]["crashes"] == {"detect": 1}

    run(check)


def test_healthz_is_503_while_internal_errors_pass_the_limit_per_minute(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    errors = Failures(max_internal_errors_per_minute=3, clock=lambda: clock[0])
    patch_web(monkeypatch, "failures", errors)
    patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for _ in range(3):
            errors.internal_error("detect", ValueError("boom"), "payments.raw[0]@1")
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["checks"]["internal_errors"]["last_minute"] == 3
        errors.internal_error("detect", ValueError("boom"), "payments.raw[0]@2")
        status, body = await get(session, f"{base}/healthz")
        assert status == 503 and body["checks"]["internal_errors"]["ok"] is False
        clock[0] += 61
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["checks"]["internal_errors"]["total"] == 4

    run(check)


def test_healthz_is_503_when_the_rules_follower_keeps_failing(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch_web(monkeypatch, "agent_states", lambda: {"detect": "running"})

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        worker.rules_follower_failing_since = time.monotonic() - 5
        status, _ = await get(session, f"{base}/healthz")
        assert status == 200
        worker.rules_follower_failing_since = time.monotonic() - health.RULES_FOLLOWER_LIMIT_S - 1
        status, body = await get(session, f"{base}/healthz")
        assert status == 503 and body["checks"]["rules_follower"]["ok"] is False

    run(check)
