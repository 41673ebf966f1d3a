"""Unit tests of the web endpoints, the card routing and the Prometheus collectors.

The views are served by a real aiohttp server (the routes Faust registered, copied
onto a fresh aiohttp application per test), with the worker's runtime (assignment,
tables, consumer) replaced by fakes: no broker, no RocksDB.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import TestServer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faust.types import TP
from faust.windows import TumblingWindow
from hdrh.histogram import HdrHistogram
from prometheus_client.parser import text_string_to_metric_families

from app.detection.keys import card_partition
from app.detection.models import Alert, iso_from_ms
from app.detection.rules import SEED_RULE, parse_rule
from app.web import metrics
from app.web import views as web
from app.web.metrics import ConsumerWatch, PartitionLag, Sources, hdr_buckets, new_registry
from app.worker.failures import Failures
from app.worker.faust_app import app as faust_app
from app.worker.stats import WorkerStats, new_histogram
from tables import card_state

NOW_MS = 1_764_338_587_250  # 2025-11-28T14:03:07.250Z
CARD = "tok_0123456789abcdef"

# -- helpers ------------------------------------------------------------------------------


def fresh_application() -> aioweb.Application:
    """The worker's routes (registered at import by app.web.views) on a new aiohttp app."""
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


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> WorkerStats:
    """A fresh WorkerStats and a runtime where this worker owns every card."""
    fresh = WorkerStats()
    monkeypatch.setattr(web, "stats", fresh)
    monkeypatch.setattr(web, "consumer_lag", lambda app, ends=None: [])
    monkeypatch.setattr(web, "watch", ConsumerWatch())
    monkeypatch.setattr(web, "locate_card", lambda card: web.CardOwner(2, web.my_url(), True))
    monkeypatch.setattr(web, "owns_partition", lambda partition: True)
    monkeypatch.setattr(web, "tables_recovered", lambda: True)
    monkeypatch.setattr(web, "rulebook", fake_rulebook([SEED_RULE]))
    monkeypatch.setattr(web, "sink_snapshot", lambda: None)
    monkeypatch.setattr(web, "failures", Failures())
    return fresh


def fake_rulebook(rules: list[Any], loaded_at_start: bool = True) -> Any:
    loaded = asyncio.Event()
    if loaded_at_start:
        loaded.set()
    return SimpleNamespace(all=lambda: list(rules), loaded=loaded, high_value_amount=Decimal(1000))


class FakeWindowedTable(dict[Any, int]):
    """What ``high_value_counts.table`` offers the reader: mapping + ``window``."""

    def __init__(self) -> None:
        super().__init__()
        self.window = TumblingWindow(300.0, expires=7200.0)

    def add(self, card: str, ts_s: float, count: int) -> None:
        for window_range in self.window.ranges(ts_s):
            self[(card, window_range)] = count


# -- routing ------------------------------------------------------------------------------


def test_card_partition_is_kafkas_default_partitioner_over_the_raw_card_bytes() -> None:
    partitioner = DefaultPartitioner()
    rng = random.Random(5)
    for partitions in (1, 3, 4, 8, 12):
        for _ in range(200):
            card = "tok_" + "".join(rng.choices("0123456789abcdef", k=16))
            expected = partitioner(card.encode(), list(range(partitions)), list(range(partitions)))
            assert card_partition(card, partitions) == expected


def test_faust_table_route_would_hash_the_json_key_and_pick_another_partition() -> None:
    # Faust's table_route hashes the key as the table's changelog serializes it.
    json_key = card_state.changelog_topic.prepare_key(CARD, None)[0]
    assert json_key == b'"' + CARD.encode() + b'"'
    cards = [f"tok_{i:016x}" for i in range(64)]
    differ = [
        c
        for c in cards
        if (murmur2(card_state.changelog_topic.prepare_key(c, None)[0]) & 0x7FFFFFFF) % 8
        != card_partition(c, 8)
    ]
    assert len(differ) > 32, "for most cards the JSON key lands elsewhere: table_route misroutes"


def test_locate_card_finds_the_owner_of_the_cards_changelog_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = card_state.changelog_topic.get_topic_name()
    me = web.my_url()
    other = "http://127.0.0.1:1"
    partition = card_partition(CARD, 4)
    mine = [partition, (partition + 1) % 4]
    theirs = [p for p in range(4) if p not in mine]
    metadata = {me: {topic: mine}, other: {topic: theirs}}
    monkeypatch.setattr(
        faust_app, "_router", SimpleNamespace(table_metadata=lambda name: metadata), raising=False
    )
    monkeypatch.setattr(type(faust_app), "router", property(lambda self: self._router))
    assert web.locate_card(CARD) == web.CardOwner(partition, me, True)
    metadata[me], metadata[other] = {topic: theirs}, {topic: mine}
    assert web.locate_card(CARD) == web.CardOwner(partition, other, False)
    metadata.clear()
    assert web.locate_card(CARD).owner is None


# -- /cards -------------------------------------------------------------------------------


def test_unknown_card_is_404_json(worker: WorkerStats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "read_card", lambda card: None)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for path in (f"/cards/{CARD}", f"/cards/{CARD}/"):
            status, body = await get(session, base + path)
            assert status == 404
            assert body["error"] == "unknown card" and body["card_id"] == CARD

    run(check)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/cards/4111111111111111", "card_id"),  # a PAN, not a token
        ("/cards/" + "x" * 129, "card_id"),
        ("/cards/%20", "card_id"),
        (f"/cards/{CARD}?window=5", "window"),
    ],
)
def test_bad_card_parameters_are_400_naming_the_parameter(
    worker: WorkerStats, path: str, parameter: str
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, base + path)
        assert status == 400
        assert body["parameter"] == parameter and parameter in body["error"]

    run(check)


def test_card_view_reads_state_windows_and_alerts(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {
        "t": NOW_MS,
        "r": {
            "high-value-burst": {
                "v": 1,
                "p": [[NOW_MS - 5_000, "t9", "1200.00", "US", ""]],
                "u": {"t1c": NOW_MS - 20_000, "t1a": NOW_MS - 60_000, "t1b": NOW_MS - 30_000},
            }
        },
    }
    windows = FakeWindowedTable()
    windows.add(CARD, NOW_MS / 1000, 4)
    windows.add(CARD, NOW_MS / 1000 - 300, 1)
    windows.add(CARD, NOW_MS / 1000 - 3 * 3600, 9)  # beyond the 2 h expiry: gone
    windows.add("tok_other", NOW_MS / 1000, 7)
    monkeypatch.setattr(web, "card_state", {CARD: state})
    monkeypatch.setattr(web, "card_alerts", {CARD: [alert(CARD).to_dict()]})
    monkeypatch.setattr(web, "high_value_counts", SimpleNamespace(table=windows))

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/cards/{CARD}")
        assert status == 200
        assert body["card_id"] == CARD and body["partition"] == 2
        assert body["served_by"] == web.my_url()
        assert body["newest_event_ts"] == iso_from_ms(NOW_MS)
        rule = body["rules"]["high-value-burst"]
        assert rule["version"] == 1
        assert rule["pending"] == [
            {
                "ts": iso_from_ms(NOW_MS - 5_000),
                "ts_ms": NOW_MS - 5_000,
                "txn_id": "t9",
                "amount": "1200.00",
                "country": "US",
            }
        ]
        assert [e["txn_id"] for e in rule["alerted"]] == ["t1a", "t1b", "t1c"]
        start = (NOW_MS // 300_000) * 300_000
        assert [(w["start_ms"], w["end_ms"], w["count"]) for w in body["high_value_windows"]] == [
            (start - 300_000, start, 1),
            (start, start + 300_000, 4),
        ]
        assert [a["alert_id"] for a in body["alerts"]] == [alert(CARD).alert_id]

    run(check)


def test_card_only_in_windows_is_known_and_card_in_nothing_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    windows = FakeWindowedTable()
    windows.add(CARD, time.time() - 3600, 2)  # an hour ago by the wall clock
    monkeypatch.setattr(web, "card_state", {})
    monkeypatch.setattr(web, "card_alerts", {})
    monkeypatch.setattr(web, "high_value_counts", SimpleNamespace(table=windows))
    monkeypatch.setattr(web, "rulebook", fake_rulebook([SEED_RULE]))
    body = web.read_card(CARD)
    assert body is not None and [w["count"] for w in body["high_value_windows"]] == [2]
    assert body["rules"] == {} and body["alerts"] == []
    assert web.read_card("tok_nobody") is None


def test_replayed_card_windows_are_found_from_the_cards_own_event_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A backlog hours behind the wall clock: the card's newest event time anchors the probe.
    old_ms = NOW_MS - 30 * 24 * 3600 * 1000
    windows = FakeWindowedTable()
    windows.add(CARD, old_ms / 1000, 3)
    monkeypatch.setattr(web, "card_state", {CARD: {"t": old_ms, "r": {}}})
    monkeypatch.setattr(web, "card_alerts", {})
    monkeypatch.setattr(web, "high_value_counts", SimpleNamespace(table=windows))
    monkeypatch.setattr(web, "rulebook", fake_rulebook([SEED_RULE]))
    body = web.read_card(CARD)
    assert body is not None and [w["count"] for w in body["high_value_windows"]] == [3]


def test_card_not_owned_is_forwarded_once_and_the_owners_answer_passed_through(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_headers: list[str | None] = []

    async def owner_handler(request: aioweb.Request) -> aioweb.Response:
        seen_headers.append(request.headers.get(web.FORWARDED_BY))
        return aioweb.json_response(
            {
                "card_id": request.match_info["card"],
                "served_by": "owner",
                "q": request.query_string,
            },
            status=200,
        )

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        owner_app = aioweb.Application()
        owner_app.router.add_get("/cards/{card}", owner_handler)
        owner = TestServer(owner_app)
        await owner.start_server()
        faust_app.http_client = aiohttp.ClientSession()
        owner_url = str(owner.make_url("")).rstrip("/")
        try:
            monkeypatch.setattr(web, "locate_card", lambda card: web.CardOwner(3, owner_url, False))
            status, body = await get(session, f"{base}/cards/{CARD}")
            assert status == 200 and body == {"card_id": CARD, "served_by": "owner", "q": ""}
            assert seen_headers == [web.my_url()]
            # Already forwarded once and still not ours: a rebalance; never forward again.
            status, body = await get(
                session, f"{base}/cards/{CARD}", headers={web.FORWARDED_BY: "http://x:1"}
            )
            assert status == 503 and "moving" in body["error"]
            assert len(seen_headers) == 1
        finally:
            await owner.close()
        # The owner is gone: 503, not a hang or a 500.
        status, body = await get(session, f"{base}/cards/{CARD}")
        assert status == 503 and body["owner"] == owner_url
        await faust_app.http_client.close()

    run(check)


def test_card_is_503_while_unassigned_or_recovering(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        monkeypatch.setattr(web, "locate_card", lambda card: web.CardOwner(1, None, False))
        status, body = await get(session, f"{base}/cards/{CARD}")
        assert status == 503 and body["partition"] == 1
        monkeypatch.setattr(web, "locate_card", lambda card: web.CardOwner(1, web.my_url(), True))
        monkeypatch.setattr(web, "tables_recovered", lambda: False)
        async with session.get(f"{base}/cards/{CARD}") as response:
            assert response.status == 503 and response.headers["Retry-After"] == "1"

    run(check)


# -- /alerts ------------------------------------------------------------------------------


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


# -- /stats -------------------------------------------------------------------------------


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
    monkeypatch.setattr(web, "consumer_lag", lambda app, ends=None: [lag])

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


def test_tick_gives_each_second_its_own_latency_percentiles() -> None:
    stats = WorkerStats(started_at=100.0)
    first = [random.Random(1).randint(500, 50_000) for _ in range(999)]
    for value in first:
        stats.decision_latency.record_value(value)
    stats.processed = len(first)
    sample = stats.tick(now=101.0)
    reference = new_histogram()
    for value in first:
        reference.record_value(value)
    assert sample.processed == 999 and sample.rate == pytest.approx(999.0)
    assert sample.p50_ms == reference.get_value_at_percentile(50) / 1000
    assert sample.p99_ms == reference.get_value_at_percentile(99) / 1000
    assert sample.max_ms == reference.get_max_value() / 1000

    second = [200_000, 210_000, 220_000]
    for value in second:
        stats.decision_latency.record_value(value)
    stats.processed += 3
    sample = stats.tick(now=103.0)
    only_second = new_histogram()
    for value in second:
        only_second.record_value(value)
    assert sample.processed == 3 and sample.rate == pytest.approx(1.5)
    assert sample.p50_ms == only_second.get_value_at_percentile(50) / 1000
    assert sample.max_ms == only_second.get_max_value() / 1000

    idle = stats.tick(now=104.0)
    assert idle.processed == 0 and idle.p50_ms is None and idle.p99_ms is None
    assert [s.t for s in stats.history] == [101.0, 103.0, 104.0]
    assert stats.throughput(2) == pytest.approx(1.0)


# -- /healthz and /readyz -----------------------------------------------------------------


def test_healthz_is_200_when_agents_run_and_503_when_one_does_not(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        monkeypatch.setattr(web, "agent_states", lambda: {"detect": "running"})
        status, body = await get(session, f"{base}/healthz")
        assert status == 200 and body["status"] == "ok"
        monkeypatch.setattr(web, "agent_states", lambda: {"detect": "crashed"})
        status, body = await get(session, f"{base}/healthz/")
        assert status == 503 and body["checks"]["agents"]["states"] == {"detect": "crashed"}

    run(check)


def test_healthz_is_503_when_the_consumer_stalls_past_the_limit(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = [PartitionLag("payments.raw", 1, highwater=100, committed=10, read=9, lag=90)]
    monkeypatch.setattr(web, "agent_states", lambda: {"detect": "running"})
    monkeypatch.setattr(web, "consumer_lag", lambda app, ends=None: stuck)
    web.watch.observe(stuck, time.monotonic() - web.STALL_LIMIT_S - 5)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/healthz")
        assert status == 503
        assert body["checks"]["consumer"]["stalled_s"] > web.STALL_LIMIT_S

    run(check)


def test_consumer_lag_reads_source_partitions_only() -> None:
    payments, changelog = "payments.raw", "fraud-card-state-changelog"
    leader = "fraud-__assignor-__leader"
    consumer = SimpleNamespace(
        assignment=lambda: {TP(payments, 0), TP(payments, 1), TP(changelog, 0), TP(leader, 0)},
        highwater=lambda tp: {0: 120, 1: 7}[tp.partition],
        _committed_offset={TP(payments, 1): 5},  # committed before this assignment
    )
    fake_app = SimpleNamespace(
        consumer=consumer,
        tables=SimpleNamespace(changelog_topics={changelog}),
        monitor=SimpleNamespace(
            tp_committed_offsets={TP(payments, 0): 100}, tp_read_offsets={TP(payments, 0): 109}
        ),
    )
    assert metrics.consumer_lag(fake_app) == [
        PartitionLag(payments, 0, highwater=120, committed=100, read=109, lag=20),
        PartitionLag(payments, 1, highwater=7, committed=5, read=None, lag=2),
    ]
    not_started = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: 1 / 0))
    assert metrics.consumer_lag(not_started) == []


def test_a_partition_the_consumer_never_fetches_is_a_stall_not_idle() -> None:
    payments = "payments.raw"
    consumer = SimpleNamespace(
        assignment=lambda: {TP(payments, 0)},
        highwater=lambda tp: None,  # never fetched: the consumer knows no highwater
        _committed_offset={TP(payments, 0): 40},
    )
    fake_app = SimpleNamespace(
        consumer=consumer,
        tables=SimpleNamespace(changelog_topics=set()),
        monitor=SimpleNamespace(tp_committed_offsets={}, tp_read_offsets={}),
    )
    assert metrics.consumer_lag(fake_app)[0].lag is None  # looks idle on its own
    (lag,) = metrics.consumer_lag(fake_app, {TP(payments, 0): 75})
    assert lag.highwater == 75 and lag.lag == 35
    watch = ConsumerWatch()
    assert watch.observe([lag], now=0.0) == 0.0
    assert watch.observe([lag], now=61.0) == 61.0


def test_consumer_watch_counts_only_waiting_without_reading() -> None:
    watch = ConsumerWatch()

    def lag(read: int, highwater: int = 100) -> list[PartitionLag]:
        return [PartitionLag("t", 0, highwater, read + 1, read, highwater - read - 1)]

    assert watch.observe(lag(10), now=0.0) == 0.0
    assert watch.observe(lag(10), now=30.0) == 30.0  # records wait, nothing read
    assert watch.observe(lag(11), now=31.0) == 0.0  # it moved
    assert watch.observe(lag(11), now=200.0, paused=True) == 0.0  # recovery/rebalance
    assert watch.observe(lag(99), now=300.0) == 0.0
    assert watch.observe(lag(99), now=900.0) == 0.0  # caught up: idle, not stalled
    assert watch.observe([], now=901.0) == 0.0  # revoked


def test_readyz_needs_recovered_tables_and_the_rules_topic_read_but_no_rule(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/readyz")
        assert status == 200 and body["status"] == "ready"
        monkeypatch.setattr(web, "tables_recovered", lambda: False)
        status, body = await get(session, f"{base}/readyz")
        assert status == 503 and body["checks"]["tables_recovered"] is False
        monkeypatch.setattr(web, "tables_recovered", lambda: True)
        # A fresh deployment, or the last rule deleted: zero rules is ready.
        monkeypatch.setattr(web, "rulebook", fake_rulebook([]))
        status, body = await get(session, f"{base}/readyz/")
        assert status == 200 and body["checks"]["rules_loaded"] == 0
        # Rules in force but the topic not read to its end yet: not ready.
        monkeypatch.setattr(web, "rulebook", fake_rulebook([SEED_RULE], loaded_at_start=False))
        status, body = await get(session, f"{base}/readyz")
        assert status == 503 and body["checks"]["rules_topic_read"] is False

    run(check)


def test_healthz_is_503_for_a_minute_after_an_agent_crash(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    crashes = Failures(clock=lambda: clock[0])
    monkeypatch.setattr(web, "failures", crashes)
    monkeypatch.setattr(web, "agent_states", lambda: {"detect": "running"})

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
    monkeypatch.setattr(web, "failures", errors)
    monkeypatch.setattr(web, "agent_states", lambda: {"detect": "running"})

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
    monkeypatch.setattr(web, "agent_states", lambda: {"detect": "running"})

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        worker.rules_follower_failing_since = time.monotonic() - 5
        status, _ = await get(session, f"{base}/healthz")
        assert status == 200
        worker.rules_follower_failing_since = time.monotonic() - web.RULES_FOLLOWER_LIMIT_S - 1
        status, body = await get(session, f"{base}/healthz")
        assert status == 503 and body["checks"]["rules_follower"]["ok"] is False

    run(check)


# -- /metrics -----------------------------------------------------------------------------


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


def test_metrics_counters_match_what_was_recorded() -> None:
    stats = recorded_stats()
    shadow = parse_rule({**SEED_RULE.to_json(), "rule_id": "night-owl", "status": "shadow"})
    lags = [
        PartitionLag("payments.raw", 0, 50, 40, 44, 10),
        PartitionLag("fraud.alerts", 0, 9, 6, 7, 3),
    ]
    registry = new_registry(
        Sources(
            stats=stats,
            rules=lambda: [SEED_RULE, shadow],
            lag=lambda: lags,
            sink_topic="fraud.alerts",
            sink=FakeSink,
        )
    )
    found = families(metrics.exposition(registry).decode())

    assert samples(found["fraud_payments_processed"]) == {
        ("fraud_payments_processed_total", ()): 1234
    }
    assert samples(found["fraud_payments_duplicate"]) == {("fraud_payments_duplicate_total", ()): 5}
    assert samples(found["fraud_payments_late"]) == {("fraud_payments_late_total", ()): 3}
    assert samples(found["fraud_dlq_records"]) == {
        ("fraud_dlq_records_total", (("reason", "late_event"),)): 3,
        ("fraud_dlq_records_total", (("reason", "missing_field"),)): 4,
    }
    assert samples(found["fraud_alerts"]) == {
        ("fraud_alerts_total", (("rule_id", "high-value-burst"), ("status", "active"))): 7,
        ("fraud_alerts_total", (("rule_id", "night-owl"), ("status", "shadow"))): 2,
    }
    assert samples(found["fraud_rule_version"]) == {
        ("fraud_rule_version", (("rule_id", "high-value-burst"), ("status", "active"))): 1,
        ("fraud_rule_version", (("rule_id", "night-owl"), ("status", "shadow"))): 1,
    }
    assert samples(found["fraud_consumer_lag_records"]) == {
        ("fraud_consumer_lag_records", (("partition", "0"), ("topic", "fraud.alerts"))): 3,
        ("fraud_consumer_lag_records", (("partition", "0"), ("topic", "payments.raw"))): 10,
    }

    latency = samples(found["fraud_decision_latency_seconds"])
    bucket = {
        dict(labels)["le"]: v for (name, labels), v in latency.items() if name.endswith("_bucket")
    }
    assert bucket["0.001"] == 10 and bucket["0.005"] == 40 and bucket["0.1"] == 90
    assert bucket["2.5"] == 90 and bucket["5.0"] == 100 and bucket["+Inf"] == 100
    assert latency[("fraud_decision_latency_seconds_count", ())] == 100
    exact_sum = (10 * 800 + 30 * 4_000 + 50 * 70_000 + 10 * 3_000_000) / 1e6
    assert latency[("fraud_decision_latency_seconds_sum", ())] == pytest.approx(exact_sum, rel=1e-3)

    assert samples(found["fraud_sink_written"]) == {("fraud_sink_written_total", ()): 7}
    assert samples(found["fraud_sink_failures"]) == {("fraud_sink_failures_total", ()): 2}
    assert samples(found["fraud_sink_lag_records"]) == {("fraud_sink_lag_records", ()): 3}
    assert samples(found["fraud_sink_healthy"]) == {("fraud_sink_healthy", ()): 0}
    assert samples(found["fraud_sink_failing_seconds"]) == {
        ("fraud_sink_failing_seconds", ()): 12.5
    }
    assert (
        samples(found["fraud_alert_latency_seconds"])[("fraud_alert_latency_seconds_count", ())]
        == 2
    )


def test_metrics_skip_the_sink_when_there_is_none() -> None:
    registry = new_registry(
        Sources(stats=WorkerStats(), rules=list, lag=list, sink=lambda: None), process=False
    )
    names = set(families(metrics.exposition(registry).decode()))
    assert "fraud_payments_processed" in names
    assert not any(name.startswith(("fraud_sink", "fraud_alert_latency")) for name in names)
    broken = SimpleNamespace(snapshot=lambda: 1 / 0)
    registry = new_registry(
        Sources(stats=WorkerStats(), rules=list, lag=list, sink=lambda: broken), process=False
    )
    assert not any(
        n.startswith("fraud_sink") for n in families(metrics.exposition(registry).decode())
    )


def test_metrics_endpoint_serves_prometheus_text(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = recorded_stats()
    registry = new_registry(Sources(stats=stats, rules=lambda: [SEED_RULE], lag=list))
    monkeypatch.setattr(web, "registry", registry)

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


def test_hdr_buckets_are_cumulative_and_end_with_the_total() -> None:
    histogram: HdrHistogram = new_histogram()
    rng = random.Random(3)
    values = [rng.randint(1, 90_000_000) for _ in range(2000)]
    for value in values:
        histogram.record_value(value)
    buckets, _ = hdr_buckets(histogram)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and buckets[-1] == ("+Inf", 2000.0)
    for le, count in buckets[:-1]:
        exact = sum(1 for v in values if v <= float(le) * 1_000_000)
        assert abs(count - exact) <= max(2, exact * 0.002), le  # 3 significant digits


# -- the dashboard ------------------------------------------------------------------------


def test_dashboard_and_its_static_files_are_served_with_a_strict_policy(
    worker: WorkerStats,
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        async with session.get(f"{base}/") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            page = await response.text()
        assert "/static/dashboard.js" in page and "http" not in page.replace("http-equiv", "")
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            async with session.get(f"{base}/static/{name}") as response:
                assert response.status == 200 and response.headers["Content-Type"].startswith(kind)
        for name in ("nope.js", ".hidden.js", "dashboard.py", "%2e%2e%2fweb.py"):
            status, _ = await get(session, f"{base}/static/{name}")
            assert status == 404, name

    run(check)


def test_consumer_watch_sees_records_read_but_never_acknowledged() -> None:
    # Everything was read (read + 1 == highwater) but the commit is stuck far behind:
    # the worker is not idle, it is stalled.
    watch = ConsumerWatch()
    stuck = [PartitionLag("t", 2, highwater=3345, committed=2413, read=3344, lag=932)]
    assert watch.observe(stuck, now=0.0) == 0.0
    assert watch.observe(stuck, now=61.0) == 61.0
    moving = [PartitionLag("t", 2, highwater=3345, committed=3000, read=3344, lag=345)]
    assert watch.observe(moving, now=62.0) == 0.0
