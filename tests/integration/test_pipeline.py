"""The real worker on real Kafka: exact alerts, the DLQ, and a SIGKILL mid-stream."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.detection.models import Payment, iso_from_ms
from app.detection.rules import SEED_RULE
from app.generator import PaymentGenerator
from tests.integration.harness import (
    Pipeline,
    alerts_on,
    keyed,
    produce,
    read_all,
    run,
    wait_until,
)
from tests.oracle import assert_properties, oracle

pytestmark = pytest.mark.integration


def generated_stream(count: int, seed: int) -> tuple[list[Payment], list[Any]]:
    """A generated backlog whose newest payment is dated now."""
    generator = PaymentGenerator(seed=seed, cards=300, fraud_ratio=0.02, high_value_share=0.02)
    payments, bursts = [], []
    for payment, burst in generator.history(count, int(time.time() * 1000), step_ms=40):
        payments.append(payment)
        if burst is not None:
            bursts.append(burst)
    return payments, bursts


def test_alerts_equal_the_oracle_for_a_generated_stream(pipeline: Pipeline) -> None:
    payments, bursts = generated_stream(4000, seed=7)
    expected = oracle(payments, SEED_RULE)
    assert len(bursts) > 40, "the generator injected bursts"
    worker = pipeline.worker().start()
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments)))
        alerts = alerts_on(pipeline, len(expected))
    finally:
        worker.stop()

    assert {(a.group_key, a.txn_ids) for a in alerts} == expected
    assert len(alerts) == len(expected), "no alert emitted twice"
    found = {t for a in alerts for t in a.txn_ids}
    assert all(set(b.txn_ids) & found for b in bursts), "every injected burst alerted"
    by_txn = {p.txn_id: p for p in payments}
    for alert in alerts:
        assert alert.rule_id == SEED_RULE.rule_id and alert.status == "active"
        assert all(by_txn[t].amount >= 1000 for t in alert.txn_ids)
        assert alert.trigger_produced_at_ms > 0


def test_half_the_payments_not_keyed_by_card_keep_the_rule_semantics(pipeline: Pipeline) -> None:
    # Every other payment has no Kafka key: it is re-keyed through the repartition topic to
    # its card's partition, where batches of both topics update the same card states (side
    # by side with the other partitions' batches). A re-keyed payment arrives after its
    # neighbours, so the alerts are those of another arrival order than the oracle's: the
    # semantics must hold all the same (sound, disjoint, no missed burst). Sent at 500/s
    # (6 s of wall clock for 120 s of event time) so that the hop stays within the allowed
    # lateness: from a backlog, a re-keyed payment can trail its card's others by a whole
    # fetch (80 s of event time here) and be dead-lettered as late, as it should.
    payments, bursts = generated_stream(3000, seed=11)
    records = [
        (key if index % 2 else None, value) for index, (key, value) in enumerate(keyed(payments))
    ]
    worker = pipeline.worker().start()
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, records, rate=500))
        wait_until(
            lambda: worker.stats()["processed"] >= len(payments), 120, "every payment decided"
        )
        stats = worker.stats()
        alerts = alerts_on(pipeline, 1)
    finally:
        worker.stop()

    assert stats["processed"] == len(payments) and stats["dlq_total"] == 0
    assert stats["rekeyed"] == len(payments) // 2
    assert_properties(alerts, payments, SEED_RULE)
    assert len({a.alert_id for a in alerts}) == len(alerts), "no alert emitted twice"
    found = {t for a in alerts for t in a.txn_ids}
    assert all(set(b.txn_ids) & found for b in bursts), "every injected burst alerted"


def test_malformed_payments_go_to_the_dlq_and_good_ones_keep_flowing(pipeline: Pipeline) -> None:
    now = int(time.time() * 1000)
    template = json.loads(
        Payment(
            txn_id="x",
            card_id="tok_dlq",
            account_id="a",
            amount=Decimal("5"),
            currency="USD",
            merchant_id="m",
            mcc="5411",
            country="US",
            device_id="d",
            ip="1.2.3.4",
            ts=iso_from_ms(now),
            ts_ms=now,
        ).to_json()
    )

    def variant(**changes: Any) -> bytes:
        body = {**template, **changes}
        return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()

    bad: list[tuple[bytes, str]] = [
        (b"{not json", "unparseable"),
        (b"[]", "not_an_object"),
        (variant(card_id=...), "missing_field"),
        (variant(amount="-10"), "negative_amount"),
        (variant(amount="abc"), "bad_amount"),
        (variant(currency="ABC"), "unknown_currency"),
        (variant(country="QQ"), "unknown_country"),
        (variant(ts="2026-13-45"), "bad_timestamp"),
        (variant(ts="2199-01-01T00:00:00Z"), "ts_in_future"),
        (variant(card_id="4111111111111111"), "pan_in_card_id"),
        (variant(note="x" * 20_000), "oversize"),
        (variant(ts=iso_from_ms(now - 3_600_000), txn_id="late-1"), "late_event"),
    ]
    # A fraud burst around the bad records: it must still alert.
    burst = [
        Payment(
            **{
                **_payment_kwargs(template),
                "txn_id": f"good-{i}",
                "ts": iso_from_ms(now + i),
                "ts_ms": now + i,
                "amount": Decimal("1500"),
            }
        )
        for i in range(3)
    ]
    records = [(b"tok_dlq", burst[0].to_json())] + [(b"tok_dlq", raw) for raw, _ in bad]
    records += [(b"tok_dlq", p.to_json()) for p in burst[1:]]

    worker = pipeline.worker().start()
    try:
        sent = run(produce(pipeline.stack.bootstrap, pipeline.payments, records))
        dead = run(
            read_all(
                pipeline.stack.bootstrap,
                pipeline.dlq,
                pipeline.partitions,
                until=len(bad),
                idle_s=2.0,
            )
        )
        alerts = alerts_on(pipeline, 1)
        assert worker.process is not None and worker.process.poll() is None, "worker still running"
    finally:
        worker.stop()

    letters = [json.loads(r.value) for r in dead]
    assert [(d["reason"]) for d in letters] == [reason for _, reason in bad]
    for letter, (raw, _), meta in zip(letters, bad, sent[1 : 1 + len(bad)], strict=True):
        assert letter["detail"]
        assert letter["source"] == {
            "topic": pipeline.payments,
            "partition": meta.partition,
            "offset": meta.offset,
        }
        original = base64.b64decode(letter["original_b64"])
        if letter["reason"] == "pan_in_card_id":
            assert b"4111111111111111" not in original and b"************1111" in original
        else:
            assert original == raw
    assert [a.txn_ids for a in alerts] == [("good-0", "good-1", "good-2")]


def _payment_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "amount": Decimal(body["amount"]), "ts_ms": 0}


def test_sigkill_mid_stream_loses_no_alert_and_repeats_none(pipeline: Pipeline) -> None:
    payments, _ = generated_stream(12_000, seed=11)
    expected = oracle(payments, SEED_RULE)
    worker = pipeline.worker().start()
    producer = threading.Thread(
        target=lambda: run(
            produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments), rate=2000)
        )
    )
    producer.start()
    try:
        wait_until(
            lambda: len(alerts_on_now(pipeline)) >= len(expected) // 4,
            60,
            "the first quarter of the alerts",
        )
        worker.kill()
        producer.join(60)
        worker.start()
        alerts = alerts_on(pipeline, len(expected))
    finally:
        producer.join(60)
        worker.stop()

    counts = Counter(a.alert_id for a in alerts)
    assert {(a.group_key, a.txn_ids) for a in alerts} == expected, "no alert lost or invented"
    assert [i for i, n in counts.items() if n > 1] == [], "no alert id emitted twice"


def alerts_on_now(pipeline: Pipeline) -> list[Any]:
    return list(
        run(
            read_all(
                pipeline.stack.bootstrap,
                pipeline.alerts,
                pipeline.partitions,
                idle_s=0.3,
                timeout_s=5,
            )
        )
    )


def committed_offsets(pipeline: Pipeline, group: str) -> int:
    """The payments topic's committed offsets of ``group``, summed over partitions."""

    async def read() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.stack.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == pipeline.payments)

    return int(run(read()))


def test_a_graceful_stop_under_load_commits_everything_it_decided(pipeline: Pipeline) -> None:
    # Stopped mid-stream with batches in flight, a worker must still acknowledge what Kafka
    # holds the state of: otherwise every deploy replays thousands of records a partition.
    payments, _ = generated_stream(30_000, seed=13)
    worker = pipeline.worker().start()
    producer = threading.Thread(
        target=lambda: run(
            produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments), rate=5000)
        )
    )
    producer.start()
    decided = 0
    try:
        while decided < 10_000:
            decided = worker.stats()["processed"]
            time.sleep(0.02)
        worker.stop()  # SIGTERM while payments keep coming
    finally:
        producer.join(60)
        worker.stop()
    assert committed_offsets(pipeline, worker.env["FRAUD_APP_ID"]) >= decided
    # The state changelogs forget keys idle past any rule's reach (tables.STATE_RETENTION_MS).
    for topic, config in changelog_configs(pipeline).items():
        assert config["cleanup.policy"] == "compact,delete", topic
        assert int(config["retention.ms"]) >= (7 * 24 + 24) * 3600 * 1000, topic


def changelog_configs(pipeline: Pipeline) -> dict[str, dict[str, str]]:
    """cleanup.policy and retention.ms of the deployment's state changelogs."""

    async def describe() -> dict[str, dict[str, str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.stack.bootstrap)
        await admin.start()
        try:
            names = [
                n
                for n in await admin.list_topics()
                if pipeline.uid in n and n.endswith("-changelog") and "state" in n
            ]
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
            )
        finally:
            await admin.close()
        found: dict[str, dict[str, str]] = {}
        for response in responses:
            for _, _, _, name, entries in response.resources:
                found[name] = {entry[0]: entry[1] for entry in entries}
        return found

    configs: dict[str, dict[str, str]] = run(describe())
    assert len(configs) == 2, configs.keys()
    return configs
