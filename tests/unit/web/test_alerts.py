"""app/web/alerts.py: GET /alerts, newest first, filters and limits."""

from __future__ import annotations

import aiohttp
import pytest

from app.worker.stats import WorkerStats
from tests.unit.web.fakes import alert, get, run


def test_alerts_newest_first_filtered_and_limited(worker: WorkerStats) -> None:
    for n in range(5):
        worker.recent_alerts.append(alert("tok_a" if n % 2 else "tok_b", n=n).to_dict())
    worker.recent_alerts.append(alert("tok_a", rule="other-rule", n=9, status="shadow").to_dict())

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/alerts")
        assert status == 200 and body["count"] == 6 and body["limit"] == 50
        assert [a["alert_id"] for a in body["alerts"]][:2] == [
            "a-tok_a-other-rule-9",
            "a-tok_b-high-value-burst-4",
        ]
        first = body["alerts"][1]
        assert first["latency_ms"] == 42 and first["total_amount"] == "4500.50"
        status, body = await get(session, f"{base}/alerts/?card=tok_a&rule=high-value-burst")
        assert [a["alert_id"] for a in body["alerts"]] == [
            "a-tok_a-high-value-burst-3",
            "a-tok_a-high-value-burst-1",
        ]
        status, body = await get(session, f"{base}/alerts?limit=2")
        assert body["count"] == 2 and body["limit"] == 2
        status, body = await get(session, f"{base}/alerts?card=&rule=&limit=3")
        assert status == 200 and body["count"] == 3, "empty filters filter nothing"

    run(check)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=1&limit=2", "limit"),
        ("limit=", "limit"),
        ("card=4111111111111111", "card"),
        ("rule=Not%20A%20Rule", "rule"),
        ("cards=tok_a", "cards"),
    ],
)
def test_bad_alert_parameters_are_400_naming_the_parameter(
    worker: WorkerStats, query: str, parameter: str
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/alerts?{query}")
        assert status == 400
        assert body["parameter"] == parameter and repr(parameter) in body["error"]

    run(check)


def test_alert_limit_bounds_are_inclusive(worker: WorkerStats) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for limit in (1, 500):
            status, body = await get(session, f"{base}/alerts?limit={limit}")
            assert status == 200 and body["limit"] == limit

    run(check)
