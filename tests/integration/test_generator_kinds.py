"""The generator's patterns on real Kafka: the demo's backfill (``app.generator.backfill``,
what ``make demo`` sends first) through a worker running the rules the demo publishes. Each
kind's rule alerts on the fraud injected for it, with its truth, and the absence rule never
on the genuine counterpart (a large payment confirmed in time)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from app.detection.models import Alert, ms_from_iso
from app.generator import GENUINE, PATTERNS, PaymentGenerator, backfill, ring_entries
from app.rules_admin.topic import publish
from infra.local.demo import demo_rules
from tests.integration.harness import Pipeline, read_all, run, wait_until

pytestmark = pytest.mark.integration

LATENESS_MS = 60_000  # the workers' default FRAUD_ALLOWED_LATENESS


def test_each_kind_alerts_on_its_injected_pattern_and_not_on_the_genuine_one(
    pipeline: Pipeline,
) -> None:
    rules = demo_rules()
    pipeline.put_rules(rules)
    # As the demo does: the ring's devices on the list the blocked-device rule reads.
    ring: list[tuple[str, bytes | None]] = [
        (e.record_key, e.to_bytes()) for e in ring_entries(int(time.time() * 1000))
    ]
    run(publish(pipeline.stack.bootstrap, pipeline.lists, ring))
    worker = pipeline.worker().start()
    generator = PaymentGenerator(seed=5, cards=300, fraud_ratio=0.002, pattern_ratio=0.004)
    truth_file = io.StringIO()
    end_ms = int(time.time() * 1000)
    try:
        # 100 minutes of event time, a payment a second: the absence rule's 30 minutes and
        # the lateness pass many times over.
        sent, truths = run(
            backfill(
                pipeline.stack.bootstrap,
                pipeline.payments,
                generator,
                6_000,
                1.0,
                truth_file,
                log=lambda _: None,
                end_ms=end_ms,
            )
        )
        wait_until(lambda: drained(worker.stats(), pipeline.payments, sent), 240, "the backlog")
        records = run(
            read_all(pipeline.stack.bootstrap, pipeline.alerts, pipeline.partitions, idle_s=5.0)
        )
        dead = worker.stats()["dlq_total"]
    finally:
        worker.stop()
    # Nothing late: each account's events come from one partition of the payments topic.
    assert dead == 0
    alerts = [Alert.from_json(r.value) for r in records]
    by_rule: dict[str, list[set[str]]] = {}
    for alert in alerts:
        by_rule.setdefault(alert.rule_id, []).append(set(alert.txn_ids))
    # The truth the demo's analyst reads is the truth returned.
    assert [json.loads(line) for line in truth_file.getvalue().splitlines()] == [
        json.loads(t.to_json()) for t in truths
    ]
    # An absence still inside its deadline and the lateness at the end has not shown yet
    # (each partition's clock is within seconds of the end).
    shown = [t for t in truths if ms_from_iso(t.last_ts) + LATENESS_MS + 60_000 < end_ms]  # type: ignore[operator]
    frauds = [t for t in shown if t.fraud]
    genuine = [t for t in shown if not t.fraud]
    assert {t.pattern for t in frauds} == {"burst", *PATTERNS}
    assert {t.pattern for t in genuine} == set(GENUINE) and len(genuine) >= 5
    kinds = {r.rule_id: r.kind for r in rules}
    missed = [
        t for t in frauds
        if not any(set(t.txn_ids) & a for a in by_rule.get(rule_of(t.pattern), []))
    ]  # fmt: skip
    assert missed == [], f"kinds missed: {sorted({kinds[rule_of(t.pattern)] for t in missed})}"
    assert {kinds[rule_of(t.pattern)] for t in frauds} == {
        "aggregate", "sequence", "first_seen", "history", "geo_velocity", "absence",
    }  # fmt: skip
    # The list condition: each payment from a ring device alerted (among the frauds above).
    assert any(t.pattern == "blocked-device" for t in frauds)
    for truth in genuine:
        assert not any(set(truth.txn_ids) & a for a in by_rule.get(truth.pattern, [])), truth


def rule_of(pattern: str) -> str:
    return "high-value-burst" if pattern == "burst" else pattern


def drained(stats: dict[str, Any], payments: str, sent: int) -> bool:
    """The worker has committed all ``sent`` payments and everything it forwarded."""
    consumer = stats["consumer"]
    committed = sum(p["committed"] or 0 for p in consumer["partitions"] if p["topic"] == payments)
    return bool(committed >= sent and consumer["total_lag"] == 0)
