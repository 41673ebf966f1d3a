"""app/web/observability.py: GET /stats and GET /metrics."""

from __future__ import annotations

import time

import aiohttp
import pytest

from app.detection.rules import SEED_RULE, parse_rule
from app.web.consumer import PartitionLag
from app.web.metrics import Sources, new_registry
from app.worker.stats import WorkerStats
from tests.unit.web.fakes import (
    fake_rulebook,
    families,
    get,
    patch_web,
    recorded_stats,
    run,
    samples,
)


def test_stats_has_the_old_fields_and_the_new_ones(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker.processed = 10
    worker.dlq["missing_field"] += 2
    worker.alerts[("high-value-burst", "active")] += 3
    for latency_us in (1_000, 2_000, 3_000):
        worker.decision_latency.record_value(latency_us)
    worker.tick(now=time.time())
    lag = PartitionLag("payments.raw", 0, highwater=20, committed=15, read=17, lag=5)
    patch_web(monkeypatch, "consumer_lag", lambda app, broker=None: [lag])

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/stats?history=5")
        assert status == 200
        # What bench/pipeline.py and older clients read.
        assert body["processed"] == 10 and body["dlq_total"] == 2
        assert body["decision_latency_ms"]["count"] == 3
        assert body["dlq"] == {"missing_field": 2}
        assert body["alerts_by_rule"] == {"high-value-burst": {"active": 3}}
        assert body["alerts_total"] == 3
        assert body["consumer"] == {"partitions": [lag.to_json()], "total_lag": 5}
        assert [r["rule_id"] for r in body["rules"]] == ["high-value-burst"]
        assert len(body["history"]) == 1 and body["history"][0]["processed"] == 10
        assert set(body["throughput"]) == {"last_1s", "last_10s", "last_60s", "mean"}
        status, body = await get(session, f"{base}/stats/?history=0")
        assert status == 200 and body["history"] == []
        for query, parameter in (("history=601", "history"), ("histroy=5", "histroy")):
            status, body = await get(session, f"{base}/stats?{query}")
            assert status == 400 and body["parameter"] == parameter

    run(check)


def test_stats_describe_each_kind_of_rule(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    sequence = parse_rule(
        {
            "rule_id": "testing-then-cash-out",
            "version": 1,
            "kind": "sequence",
            "steps": [{"filter": []}, {"filter": []}],
            "window": 600,
        }
    )
    first_seen = parse_rule(
        {
            "rule_id": "new-device",
            "version": 1,
            "kind": "first_seen",
            "field": "device_id",
            "window": 86400,
        }
    )
    history = parse_rule(
        {
            "rule_id": "ten-times",
            "version": 1,
            "kind": "history",
            "statistic": "avg(amount)",
            "op": ">",
            "factor": "10",
            "min_earlier": 5,
            "window": 86400,
        }
    )
    rules = [SEED_RULE, sequence, first_seen, history]
    patch_web(monkeypatch, "rulebook", fake_rulebook(rules))

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/stats?history=0")
        assert status == 200
        by_id = {r["rule_id"]: r for r in body["rules"]}
        assert by_id["high-value-burst"]["kind"] == "aggregate"
        assert by_id["high-value-burst"]["aggregate"] == "count"
        assert by_id["high-value-burst"]["threshold"] == ">= 3"
        assert by_id["testing-then-cash-out"]["kind"] == "sequence"
        assert by_id["testing-then-cash-out"]["aggregate"] == "sequence of 2 steps"
        assert by_id["testing-then-cash-out"]["window_s"] == 600
        assert (by_id["new-device"]["kind"], by_id["new-device"]["aggregate"]) == (
            "first_seen",
            "first device_id",
        )
        assert (by_id["ten-times"]["aggregate"], by_id["ten-times"]["threshold"]) == (
            "amount > 10 * avg(amount)",
            "after 5",
        )

    run(check)


def test_metrics_endpoint_serves_prometheus_text(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = recorded_stats()
    registry = new_registry(Sources(stats=stats, rules=lambda: [SEED_RULE], lag=list))
    patch_web(monkeypatch, "registry", registry)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            found = families(await response.text())
        assert samples(found["fraud_payments_processed"]) == {
            ("fraud_payments_processed_total", ()): 1234
        }
        assert "fraud_worker_process_cpu_seconds" in found

    run(check)
