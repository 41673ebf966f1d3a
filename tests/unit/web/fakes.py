"""Serving the worker's web routes on a fresh aiohttp app, and fakes of its runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import TestServer
from faust.windows import TumblingWindow
from prometheus_client.parser import text_string_to_metric_families

import app.web.routes  # noqa: F401  (registers the views on the Faust app)
from app.detection.lists import ListBook
from app.detection.models import Alert, iso_from_ms
from app.web import (
    alerts,
    cards,
    cluster,
    consumer,
    dashboard,
    health,
    observability,
    params,
)
from app.worker.faust_app import app as faust_app
from app.worker.stats import WorkerStats, new_histogram

NOW_MS = 1_764_338_587_250  # 2025-11-28T14:03:07.250Z
CARD = "tok_0123456789abcdef"


def fresh_application() -> aioweb.Application:
    """The worker's routes (registered by app.web.routes) on a new aiohttp app."""
    application = aioweb.Application()
    # ``web_app`` is on Faust's aiohttp driver, not on the generic Web interface.
    routes = faust_app.web.web_app.router.routes()  # type: ignore[attr-defined]
    for route in routes:
        application.router.add_route(route.method, route.resource.canonical, route.handler)
    return application


@asynccontextmanager
async def served() -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    server = TestServer(fresh_application())
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, str(server.make_url(""))
    finally:
        await server.close()


Check = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def run(check: Check) -> None:
    async def main() -> None:
        async with served() as (session, base):
            await check(session, base)

    asyncio.run(main())


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


def alert(card: str, rule: str = "high-value-burst", n: int = 1, status: str = "active") -> Alert:
    return Alert(
        alert_id=f"a-{card}-{rule}-{n}",
        rule_id=rule,
        rule_version=1,
        status=status,
        group_by="card_id",
        group_key=card,
        txn_ids=(f"t{n}a", f"t{n}b", f"t{n}c"),
        amounts=("1000.00", "2000.50", "1500"),
        countries=("US", "US", "FR"),
        aggregate_value="3",
        first_event_ts=iso_from_ms(NOW_MS - 60_000),
        last_event_ts=iso_from_ms(NOW_MS - 1_000),
        detected_at=iso_from_ms(NOW_MS + 42),
        trigger_txn_id=f"t{n}c",
        trigger_produced_at_ms=NOW_MS,
        severity="high",
    )


def fake_rulebook(
    rules: list[Any], loaded_at_start: bool = True, unread: dict[int, tuple[int, int]] | None = None
) -> Any:
    loaded = asyncio.Event()
    if loaded_at_start:
        loaded.set()
    return SimpleNamespace(
        all=lambda: list(rules),
        loaded=loaded,
        unread=unread or {},
        high_value_amount=Decimal(1000),
    )


class FakeWindowedTable(dict[Any, int]):
    """What ``high_value_counts.table`` offers the reader: mapping + ``window``."""

    def __init__(self) -> None:
        super().__init__()
        self.window = TumblingWindow(300.0, expires=7200.0)

    def add(self, card: str, ts_s: float, count: int) -> None:
        for window_range in self.window.ranges(ts_s):
            self[(card, window_range)] = count


WEB_MODULES = (alerts, cards, cluster, consumer, dashboard, health, observability, params)


def patch_web(monkeypatch: pytest.MonkeyPatch, name: str, value: Any) -> None:
    """Replace ``name`` in every web module that holds it (the views import what they use,
    so a fake must reach each importer, not only the module defining it)."""
    holders = [module for module in WEB_MODULES if hasattr(module, name)]
    assert holders, f"no web module has {name!r}"
    for module in holders:
        monkeypatch.setattr(module, name, value)


# -- reading Prometheus text -------------------------------------------------------------


class FakeSink:
    def __init__(self) -> None:
        self.alert_latency = new_histogram()
        for value in (30_000, 40_000):
            self.alert_latency.record_value(value)

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "healthy": False,
            "written": 7,
            "failures": 2,
            "throttled": 1,
            "failing_for_s": 12.5,
            "last_error": "ProvisionedThroughputExceededException",
        }


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def recorded_stats() -> WorkerStats:
    stats = WorkerStats()
    stats.processed, stats.duplicates, stats.late = 1234, 5, 3
    stats.dlq.update({"missing_field": 4, "late_event": 3})
    stats.alerts.update({("high-value-burst", "active"): 7, ("night-owl", "shadow"): 2})
    for latency_us in [800] * 10 + [4_000] * 30 + [70_000] * 50 + [3_000_000] * 10:
        stats.decision_latency.record_value(latency_us)
    return stats


def loaded_listbook() -> ListBook:
    """An empty store of lists and suppressions whose topics have been read."""
    book = ListBook()
    book.loaded.set()
    return book
