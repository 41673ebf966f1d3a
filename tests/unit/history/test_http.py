"""app/history/http.py: the backtest and evidence routes on a real aiohttp server, the
archive computation faked (a thread that waits until the test lets it finish)."""

from __future__ import annotations

import asyncio
import operator
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from functools import partial
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from app.detection.rules import SEED_RULE, Rule
from app.history import http as history_http
from app.rules_admin import http as rules_http
from app.worker.settings import Settings
from tests.unit.web.fakes import served

TOKEN = "evidence-test-token"
SHADOW = replace(SEED_RULE, rule_id="burst-shadow", status="shadow")
OTHER = replace(SEED_RULE, rule_id="other-shadow", status="shadow")


class FakeComputation:
    """``shadow_evidence`` and ``run_backtest`` as the child would run them, each call
    held until ``release``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.rules = {r.rule_id: r for r in (SEED_RULE, SHADOW, OTHER)}
        self.started = threading.Event()
        self.go = threading.Event()

    def evidence(self, settings: Settings, rule: Rule, published_ms: int | None) -> dict[str, Any]:
        self.calls.append((rule.rule_id, rule.version))
        self.started.set()
        assert self.go.wait(10), "the test never released the computation"
        return {"rule_id": rule.rule_id, "rule_version": rule.version, "live_alerts": 3}

    def backtest(self, settings: Settings, rule: Rule, since: str, until: str) -> dict[str, Any]:
        self.calls.append((rule.rule_id, rule.version))
        return {"rule_id": rule.rule_id, "alerts": 0}

    def outcomes(self, settings: Settings, days: int, rule_id: str | None) -> dict[str, Any]:
        self.calls.append((rule_id or "*", days))
        return {"labels": 4, "rules": []}


@pytest.fixture
def computation(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeComputation]:
    fake = FakeComputation()
    pool = ThreadPoolExecutor(max_workers=1)
    token = replace(Settings(), api_token=TOKEN)
    monkeypatch.setattr(rules_http, "settings", token)
    monkeypatch.setattr(history_http, "settings", token)
    monkeypatch.setattr(history_http, "shadow_evidence", fake.evidence)
    monkeypatch.setattr(history_http, "run_backtest", fake.backtest)
    monkeypatch.setattr(history_http, "rules_outcomes", fake.outcomes)
    monkeypatch.setattr(history_http, "_outcomes", {})
    monkeypatch.setattr(history_http, "work", history_http.OneAtATime(lambda: pool))
    monkeypatch.setattr(history_http, "_evidence", {})
    book = SimpleNamespace(rules=fake.rules, published_ms={})
    monkeypatch.setattr(history_http, "rulebook", book)
    try:
        yield fake
    finally:
        fake.go.set()
        pool.shutdown(wait=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    session: aiohttp.ClientSession, method: str, url: str, token: str | None = TOKEN
) -> tuple[int, dict[str, Any], Any]:
    headers = bearer(token) if token else {}
    body = {"since": "2026-11-20", "until": "2026-11-21"} if method == "POST" else None
    async with session.request(method, url, headers=headers, json=body) as response:
        return response.status, dict(response.headers), await response.json()


def run(check: Any) -> None:
    async def main() -> None:
        async with served() as (session, base):
            await check(session, base)

    asyncio.run(main())


def test_evidence_and_backtests_need_the_bearer_token(
    computation: FakeComputation, monkeypatch: pytest.MonkeyPatch
) -> None:
    computation.go.set()

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for method, path in (("GET", "evidence"), ("POST", "backtest")):
            url = f"{base}/rules/{SHADOW.rule_id}/{path}"
            # Missing or wrong: 401, as for rule writes.
            status, headers, body = await call(session, method, url, token=None)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert body == {"error": "missing or wrong bearer token"}
            status, _, _ = await call(session, method, url, token="not-" + TOKEN)
            assert status == 401
        assert computation.calls == []  # nothing was read for them

        status, _, body = await call(session, "GET", f"{base}/rules/{SHADOW.rule_id}/evidence")
        assert status == 200 and body["live_alerts"] == 3

        # No token set on the worker: the routes are off (403), whatever the caller sends.
        monkeypatch.setattr(rules_http, "settings", Settings())
        status, _, body = await call(session, "GET", f"{base}/rules/{SHADOW.rule_id}/evidence")
        assert status == 403 and "FRAUD_API_TOKEN is not set" in body["error"]

    run(check)


def test_a_second_computation_while_one_runs_is_429_with_retry_after(
    computation: FakeComputation,
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        first = asyncio.create_task(call(session, "GET", f"{base}/rules/{SHADOW.rule_id}/evidence"))
        assert await asyncio.to_thread(computation.started.wait, 10)
        for method, url in (
            ("GET", f"{base}/rules/{OTHER.rule_id}/evidence"),
            ("GET", f"{base}/rules/{SHADOW.rule_id}/evidence"),  # the same one: no queue
            ("POST", f"{base}/rules/{SEED_RULE.rule_id}/backtest"),
        ):
            status, headers, body = await call(session, method, url)
            assert status == 429, url
            assert int(headers["Retry-After"]) >= 1
            assert body["retry_after_s"] == int(headers["Retry-After"])
        computation.go.set()
        status, _, body = await first
        assert status == 200 and body["rule_id"] == SHADOW.rule_id
        # The slot is free again.
        status, _, _ = await call(session, "POST", f"{base}/rules/{SEED_RULE.rule_id}/backtest")
        assert status == 200
        assert computation.calls == [(SHADOW.rule_id, 1), (SEED_RULE.rule_id, 1)]

    run(check)


def test_a_request_that_goes_away_holds_the_slot_until_its_computation_ends(
    computation: FakeComputation,
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        url = f"{base}/rules/{SHADOW.rule_id}/evidence"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await call(session, "GET", url)
        assert computation.started.is_set()
        # The child is still at work: a new request must not queue a second computation.
        status, _, _ = await call(session, "GET", f"{base}/rules/{OTHER.rule_id}/evidence")
        assert status == 429
        computation.go.set()
        for _ in range(100):
            if history_http.work.running is None:
                break
            await asyncio.sleep(0.05)
        # What the abandoned request asked for was kept: served without computing again.
        status, _, body = await call(session, "GET", url)
        assert status == 200 and body["live_alerts"] == 3
        assert computation.calls == [(SHADOW.rule_id, 1)]

    run(check)


def test_evidence_is_kept_per_rule_version_for_a_while(
    computation: FakeComputation, monkeypatch: pytest.MonkeyPatch
) -> None:
    computation.go.set()

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        url = f"{base}/rules/{SHADOW.rule_id}/evidence"
        for _ in range(3):
            status, _, _ = await call(session, "GET", url)
            assert status == 200
        assert computation.calls == [(SHADOW.rule_id, 1)]
        # A new version is new evidence.
        computation.rules[SHADOW.rule_id] = replace(SHADOW, version=2)
        status, _, body = await call(session, "GET", url)
        assert status == 200 and body["rule_version"] == 2
        # Past its time, evidence is computed again.
        monkeypatch.setattr(history_http, "EVIDENCE_TTL_S", 0.0)
        status, _, _ = await call(session, "GET", url)
        assert status == 200
        assert computation.calls == [(SHADOW.rule_id, 1), (SHADOW.rule_id, 2), (SHADOW.rule_id, 2)]
        # Expired entries are dropped as new ones come: version 1's is gone.
        assert set(history_http._evidence) == {(SHADOW.rule_id, 2)}

    run(check)


def test_a_child_that_dies_is_replaced_by_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_http, "_pool", None)
    work = history_http.OneAtATime()  # the real child process

    async def main() -> None:
        with pytest.raises(BrokenProcessPool):
            await work.start(partial(os._exit, 9))  # as the kernel's OOM killer would
        assert work.running is None and history_http._pool is None
        assert await work.start(partial(operator.add, 2, 3)) == 5

    try:
        asyncio.run(main())
    finally:
        history_http._drop_pool()


def test_a_computation_whose_child_died_is_a_503_to_retry(
    computation: FakeComputation, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies(*args: Any) -> dict[str, Any]:
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(history_http, "shadow_evidence", dies)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, headers, body = await call(
            session, "GET", f"{base}/rules/{SHADOW.rule_id}/evidence"
        )
        assert status == 503 and headers["Retry-After"] == "1"
        assert "try again" in body["error"]

    run(check)


def test_outcomes_need_the_token_refuse_a_bad_parameter_and_are_kept_a_while(
    computation: FakeComputation,
) -> None:
    computation.go.set()

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, _, _ = await call(session, "GET", f"{base}/outcomes", token=None)
        assert status == 401
        for query, parameter in (
            ("days=0", "days"),
            ("days=x", "days"),
            ("rule=A!", "rule"),
            ("dayz=1", "dayz"),
        ):
            status, _, body = await call(session, "GET", f"{base}/outcomes?{query}")
            assert (status, body["parameter"]) == (400, parameter), query
        assert computation.calls == []
        for _ in range(2):
            status, _, body = await call(session, "GET", f"{base}/outcomes")
            assert status == 200 and body["labels"] == 4
        status, _, _ = await call(session, "GET", f"{base}/outcomes?days=1&rule=high-value-burst")
        assert status == 200
        assert computation.calls == [("*", 7), ("high-value-burst", 1)]

    run(check)
