"""Two real workers on real Kafka: card inspection routed to the owner, /metrics totals."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.partitioner import murmur2
from prometheus_client.parser import text_string_to_metric_families

from app.detection.keys import card_partition
from app.detection.models import Payment, iso_from_ms
from app.detection.rules import SEED_RULE
from app.generator import PaymentGenerator
from tests import factories
from tests.integration.harness import Pipeline, Worker, keyed, produce, run
from tests.oracle import oracle

pytestmark = pytest.mark.integration

WINDOW_MS = 300_000


def http(worker: Worker, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw, kind = (
                response.status,
                response.read(),
                response.headers.get_content_type(),
            )
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


def actives(worker: Worker, topic: str) -> set[int]:
    status, body = http(worker, "/stats?history=0")
    assert status == 200, body
    return set(body["assignment"]["actives"].get(topic, []))


def wait_for_stable_assignment(pipeline: Pipeline, workers: list[Worker]) -> dict[int, Worker]:
    """Both workers ready, every partition active on exactly one, unchanged for 3 s."""
    everything = set(range(pipeline.partitions))
    stable_since: float | None = None
    last: list[set[int]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            now = [actives(w, pipeline.payments) for w in workers]
            ready = all(http(w, "/readyz")[0] == 200 for w in workers)
        except OSError:
            now, ready = [], False
        good = (
            ready
            and all(now)
            and set().union(*now) == everything
            and sum(len(s) for s in now) == len(everything)
        )
        if good and now == last:
            if stable_since is None:
                stable_since = time.monotonic()
            elif time.monotonic() - stable_since >= 3:
                return {p: w for w, held in zip(workers, now, strict=True) for p in held}
        else:
            stable_since = None
        last = now
        time.sleep(0.5)
    raise AssertionError(f"no stable assignment across {[w.name for w in workers]}: {last}")


def payment(card: str, n: int, amount: str, ts_ms: int) -> Payment:
    return factories.payment(card, f"web-{card}-{n:03d}", amount, ts_ms)


@dataclass
class Plan:
    """Designed cards (their patterns straddle a 5-minute window boundary) plus noise."""

    payments: list[Payment]
    designed: list[str]
    low_only: str
    malformed: list[tuple[bytes, bytes]]


# Offsets (seconds, relative to a window boundary) and amounts of each designed pattern.
PATTERNS: dict[str, list[tuple[int, str]]] = {
    # 3 high-value: one alert, all before the boundary
    "one_alert": [(-100, "1500.00"), (-95, "25.00"), (-90, "2000"), (-80, "1000.00")],
    # 2 high-value: pending, no alert
    "pending": [(-60, "1200.00"), (-55, "3.50"), (-50, "4999.99")],
    # 7 high-value across the boundary: two alerts and one pending
    "burst": [(-110 + 20 * i, f"{1000 + 111 * i}.00") for i in range(7)],
}


def plan(pipeline: Pipeline, uid: str) -> Plan:
    # A window boundary at least 30 s in the past, so no event is in the future.
    boundary_ms = ((int(time.time() * 1000) - 30_000) // WINDOW_MS) * WINDOW_MS
    designed: list[str] = []
    payments: list[Payment] = []
    # Each pattern on one card per partition, so every worker owns some of each.
    for name, pattern in PATTERNS.items():
        for partition in range(pipeline.partitions):
            index = 0
            while True:
                card = f"tok_{uid}_{name}_{index}"
                if card_partition(card, pipeline.partitions) == partition:
                    break
                index += 1
            designed.append(card)
            for n, (offset_s, amount) in enumerate(pattern):
                payments.append(payment(card, n, amount, boundary_ms + offset_s * 1000))
    low_only = f"tok_{uid}_low"
    payments += [payment(low_only, n, "12.00", boundary_ms - 70_000 + n) for n in range(3)]
    generator = PaymentGenerator(seed=11, cards=60, fraud_ratio=0.05, high_value_share=0.02)
    for generated, _ in generator.stream(400, start_ms=boundary_ms - 200_000, step_ms=250):
        payments.append(generated)
    payments.sort(key=lambda p: (p.ts_ms, p.txn_id))  # every card's events in event-time order
    good = json.loads(payments[0].to_json())
    malformed = [
        (b"tok_bad", json.dumps({k: v for k, v in good.items() if k != "amount"}).encode())
        for _ in range(3)
    ] + [(b"tok_bad", b"{not json") for _ in range(2)]
    return Plan(payments, designed, low_only, malformed)


def metric_totals(workers: list[Worker]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for worker in workers:
        status, text = http(worker, "/metrics")
        assert status == 200
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return totals


def test_either_worker_answers_for_every_card_and_metrics_add_up(pipeline: Pipeline) -> None:
    workers = [pipeline.worker("w1").start(), pipeline.worker("w2").start()]
    try:
        owner_of = wait_for_stable_assignment(pipeline, workers)
        assert set(owner_of.values()) == set(workers), "both workers own partitions"
        work = plan(pipeline, pipeline.uid)
        metadata = run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(work.payments)))
        run(produce(pipeline.stack.bootstrap, pipeline.payments, work.malformed))

        # The producer's partitioner (Kafka's default, over the raw card bytes) is ours.
        for p, meta in zip(work.payments, metadata, strict=True):
            assert meta.partition == card_partition(p.card_id, pipeline.partitions)
        # ...and Faust's table_route, hashing the JSON key, would have sent many elsewhere.
        misrouted = [
            c
            for c in work.designed
            if (murmur2(json.dumps(c).encode()) & 0x7FFFFFFF) % pipeline.partitions
            != card_partition(c, pipeline.partitions)
        ]
        assert misrouted, "the test includes cards that table_route would misroute"

        expected_alerts = oracle(work.payments, SEED_RULE)
        by_card: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        for card, txn_ids in expected_alerts:
            by_card[card].append(txn_ids)

        def totals() -> tuple[int, int, int]:
            bodies = [http(w, "/stats?history=0")[1] for w in workers]
            return (
                sum(b["processed"] for b in bodies),
                sum(b["dlq_total"] for b in bodies),
                sum(
                    b["alerts_by_rule"].get(SEED_RULE.rule_id, {}).get("active", 0) for b in bodies
                ),
            )

        wanted = (len(work.payments), len(work.malformed), len(expected_alerts))
        got = totals()
        deadline = time.monotonic() + 120
        while got != wanted and time.monotonic() < deadline:
            time.sleep(0.5)
            got = totals()
        assert got == wanted, f"(processed, dlq, alerts) {got} != {wanted}"

        for card in work.designed:
            mine = [p for p in work.payments if p.card_id == card]
            partition = card_partition(card, pipeline.partitions)
            owner = owner_of[partition]
            answers = []
            for worker in workers:
                status, body = http(worker, f"/cards/{card}")
                assert status == 200, (worker.name, card, body)
                answers.append(body)
            assert answers[0] == answers[1], f"{card}: both workers give the same answer"
            body = answers[0]
            assert body["partition"] == partition
            assert body["served_by"].endswith(f":{owner.web_port}"), "served by the owner"

            qualifying = [p for p in mine if p.amount >= 1000]
            alerted = {t for txn_ids in by_card[card] for t in txn_ids}
            rule = body["rules"][SEED_RULE.rule_id]
            assert [e["txn_id"] for e in rule["pending"]] == [
                p.txn_id for p in qualifying if p.txn_id not in alerted
            ]
            assert {e["amount"] for e in rule["pending"]} <= {str(p.amount) for p in qualifying}
            assert {e["txn_id"] for e in rule["alerted"]} == alerted
            assert body["newest_event_ts"] == iso_from_ms(max(p.ts_ms for p in mine))
            windows = Counter((p.ts_ms // WINDOW_MS) * WINDOW_MS for p in qualifying)
            assert [(w["start_ms"], w["count"]) for w in body["high_value_windows"]] == sorted(
                windows.items()
            )
            assert sorted(tuple(sorted(a["txn_ids"])) for a in body["alerts"]) == sorted(
                tuple(sorted(t)) for t in by_card[card]
            )
            # Trailing slash: same answer.
            assert http(workers[1], f"/cards/{card}/")[1] == body

        assert any(len(b) > 1 for b in by_card.values()), "a card with two alerts"
        for worker in workers:
            # A card seen only with small payments leaves no state: nothing to show.
            status, body = http(worker, f"/cards/{work.low_only}")
            assert status == 404 and body["error"] == "unknown card"
            status, body = http(worker, "/cards/tok_never_seen_anywhere")
            assert status == 404 and body["card_id"] == "tok_never_seen_anywhere"
            status, body = http(worker, "/cards/4111111111111111")
            assert status == 400 and body["parameter"] == "card_id"

        metrics = metric_totals(workers)
        assert metrics[("fraud_payments_processed_total", ())] == len(work.payments)
        assert metrics[("fraud_dlq_records_total", (("reason", "missing_field"),))] == 3
        assert metrics[("fraud_dlq_records_total", (("reason", "unparseable"),))] == 2
        alerts_key = (("rule_id", SEED_RULE.rule_id), ("status", "active"))
        assert metrics[("fraud_alerts_total", alerts_key)] == len(expected_alerts)
        assert metrics[("fraud_decision_latency_seconds_count", ())] == len(work.payments)
        version_key = (("rule_id", SEED_RULE.rule_id), ("status", "active"))
        assert metrics[("fraud_rule_version", version_key)] == 2 * SEED_RULE.version
        assert any(name == "fraud_consumer_lag_records" for name, _ in metrics)
        # These workers run without the sink (FRAUD_SINK_ENABLED=false): no sink metrics,
        # rather than zeros that would read as a sink keeping up.
        assert not any(name.startswith("fraud_sink_") for name, _ in metrics)

        # /alerts of the two workers together hold every alert, each once.
        feed = [a for w in workers for a in http(w, "/alerts?limit=500")[1]["alerts"]]
        seed_feed = [a for a in feed if a["rule_id"] == SEED_RULE.rule_id]
        assert {(a["group_key"], tuple(sorted(a["txn_ids"]))) for a in seed_feed} == {
            (card, tuple(sorted(t))) for card, t in expected_alerts
        }
        assert all(a["latency_ms"] is not None and a["latency_ms"] >= 0 for a in seed_feed)
        for worker in workers:
            assert http(worker, "/healthz")[0] == 200
    finally:
        for worker in workers:
            worker.stop()
