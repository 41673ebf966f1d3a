"""Absence rules on real Kafka: a large payment not followed by a tiny one alerts once the
card's partition has moved past its deadline and the lateness, whether or not the card
receives anything more, and a worker that restarts in between still alerts it."""

from __future__ import annotations

import time

import pytest
from aiokafka.partitioner import murmur2

from app.detection.models import Payment
from tests import factories
from tests.integration.harness import Pipeline, alerts_on, http, produce, run
from tests.unit.detection.test_absence import absence_rule

pytestmark = pytest.mark.integration

WINDOW_S = 2
# A: a payment of 500 or more; B: one under 1 on the same card, within 2 s.
TOKEN = "test-token-not-a-secret"
RULE = absence_rule("large-not-confirmed", window=WINDOW_S)


def cards_on_one_partition(partitions: int, count: int) -> list[str]:
    """``count`` card tokens the payments topic's partitioner puts on one partition."""
    cards: list[str] = []
    index = 0
    while len(cards) < count:
        card = f"tok_absence_{index}"
        if (murmur2(card.encode()) & 0x7FFFFFFF) % partitions == 0:
            cards.append(card)
        index += 1
    return cards


def send(pipeline: Pipeline, payments: list[Payment]) -> None:
    records = [(p.card_id.encode(), p.to_json()) for p in payments]
    run(produce(pipeline.stack.bootstrap, pipeline.payments, records))


def test_an_absence_alerts_by_the_partitions_progress_and_after_a_restart(
    pipeline: Pipeline,
) -> None:
    silent, confirmed, other, restarted = cards_on_one_partition(pipeline.partitions, 4)
    pipeline.put_rules([RULE])
    now = int(time.time() * 1000)
    first = pipeline.worker("w1").start()
    try:
        send(
            pipeline,
            [
                # Never followed; the card receives nothing more.
                factories.payment(silent, "a-silent", "600", now - 300_000),
                # Followed by a tiny payment within the window: no alert.
                factories.payment(confirmed, "a-confirmed", "700", now - 300_000),
                factories.payment(confirmed, "b-confirmed", "0.50", now - 299_000),
                # Another card moves the partition past the deadlines and the lateness.
                factories.payment(other, "tick-1", "10", now - 200_000),
                # Pending when the worker stops: its deadline and lateness are still ahead.
                factories.payment(restarted, "a-restarted", "800", now - 250_000),
            ],
        )
        (alert,) = alerts_on(pipeline, 1, idle_s=3.0, timeout_s=60.0)
        base = f"http://127.0.0.1:{first.web_port}"
        status, card = http("GET", f"{base}/cards/{restarted}")
    finally:
        first.stop()
    assert (alert.rule_id, alert.group_key, alert.txn_ids) == (RULE.rule_id, silent, ("a-silent",))
    assert alert.kind == "absence"
    explanation = dict(alert.explanation)
    assert explanation["a_txn_id"] == "a-silent"
    assert explanation["deadline"] == factories.payment(ts_ms=now - 300_000 + 2_000).ts
    assert '"op":"<"' in explanation["not_followed_by"]
    assert status == 200
    (pending,) = card["rules"][RULE.rule_id]["pending"]
    assert pending["txn_id"] == "a-restarted" and pending["role"].startswith("A, pending")

    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    second = pipeline.worker("w2").start()
    try:
        bad = {**RULE.to_json(), "version": 2, "not_followed_by": [{"field": "amount"}]}
        url = f"http://127.0.0.1:{second.web_port}/rules/{RULE.rule_id}/"
        refused = http("PUT", url, bad, token=TOKEN)
        # The new worker rebuilt the deadlines from the state it restored; the partition's
        # next payment moves its clock past the pending A's deadline and lateness.
        send(pipeline, [factories.payment(other, "tick-2", "10", now - 100_000)])
        alerts = alerts_on(pipeline, 2, idle_s=3.0, timeout_s=60.0)
        log = second.log_text()
    finally:
        second.stop()
    assert sorted(a.txn_ids[0] for a in alerts) == ["a-restarted", "a-silent"]
    assert "absence deadlines of" in log and "rebuilt: 1 keys pending" in log
    assert refused[0] == 400 and refused[1]["field"].startswith("not_followed_by[0]")
