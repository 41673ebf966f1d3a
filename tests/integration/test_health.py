"""A worker that is not detecting says so; one whose rules topic lost records still detects.

Real Kafka: a rules topic whose partitions were emptied by retention or ``DeleteRecords``
(log start offset == end offset > 0), or hold nothing a consumer is handed (a transaction
marker), must not keep a worker from loading its rules; and a worker whose batch cannot
finish while payments wait fails ``/healthz`` within ``FRAUD_STALL_TIMEOUT``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.detection.rules import SEED_RULE, parse_rule
from app.rules_admin.topic import read_all as read_rules
from infra.local.stack import LocalStack, Topic
from tests import factories
from tests.integration.harness import Pipeline, Worker, alerts_on, produce, run, wait_until

pytestmark = pytest.mark.integration


def http_json(worker: Worker, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def now_ms() -> int:
    return int(time.time() * 1000)


async def publish_to(
    bootstrap: str, topic: str, partition: int, key: str, value: bytes, *, transactional: bool
) -> None:
    """One rules record on ``partition``; in a transaction, Kafka writes a commit marker after
    it (an offset no consumer is ever handed)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=transactional,
        transactional_id=f"rules-writer-{topic}" if transactional else None,
    )
    await producer.start()
    try:
        if transactional:
            async with producer.transaction():
                await producer.send_and_wait(topic, value, key=key.encode(), partition=partition)
        else:
            await producer.send_and_wait(topic, value, key=key.encode(), partition=partition)
    finally:
        await producer.stop()


async def delete_before(bootstrap: str, topic: str, offsets: dict[int, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(offset) for p, offset in offsets.items()}
        )
    finally:
        await admin.close()


async def log_bounds(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """(log start offset, end offset) per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        return {tp.partition: (starts[tp], ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


def test_rules_partitions_emptied_or_holding_only_a_marker_still_load(
    stack: LocalStack, tmp_path: Path
) -> None:
    deployment = Pipeline(stack, tmp_path)
    # Kafka refuses DeleteRecords on a topic that is only compacted; compact,delete is how a
    # rules topic loses whole partitions to retention (retention.ms) in production.
    stack.create_topics(
        [Topic(deployment.rules, 3, {"cleanup.policy": "compact,delete", "retention.ms": "-1"})]
    )
    deployment.create_topics()  # the others; the rules topic exists and stays as it is
    bootstrap = stack.bootstrap
    doomed = parse_rule({**SEED_RULE.to_json(), "rule_id": "doomed", "window": 60})
    run(
        publish_to(
            bootstrap,
            deployment.rules,
            0,
            SEED_RULE.rule_id,
            SEED_RULE.to_bytes(),
            transactional=False,
        )
    )
    # Partition 1: one record, then deleted: log start == end == 1, nothing to fetch.
    run(
        publish_to(
            bootstrap, deployment.rules, 1, doomed.rule_id, doomed.to_bytes(), transactional=False
        )
    )
    # Partition 2: a transaction's record and its commit marker, the record deleted: the
    # partition ends at 2 while the last offset a consumer could be handed is below 1.
    run(
        publish_to(
            bootstrap, deployment.rules, 2, doomed.rule_id, doomed.to_bytes(), transactional=True
        )
    )
    run(delete_before(bootstrap, deployment.rules, {1: 1, 2: 1}))
    assert run(log_bounds(bootstrap, deployment.rules, 3)) == {0: (0, 1), 1: (1, 1), 2: (1, 2)}

    # What the CLI reads (rules list) comes back too, rather than timing out.
    book = run(read_rules(bootstrap, deployment.rules))
    assert [r.rule_id for r in book.all()] == [SEED_RULE.rule_id]

    worker = deployment.worker().start()
    try:
        wait_until(lambda: http_json(worker, "/readyz")[0] == 200, 30, "ready")
        burst = [
            factories.payment("tok_emptied", f"emptied-{i}", "1500", now_ms() - 3000 + i)
            for i in range(3)
        ]
        run(produce(bootstrap, deployment.payments, [(b"tok_emptied", p.to_json()) for p in burst]))
        alerts = alerts_on(deployment, 1, idle_s=2.0, timeout_s=60.0)
        _, body = http_json(worker, "/readyz")
    finally:
        worker.stop()
    assert [(a.rule_id, a.group_key) for a in alerts] == [(SEED_RULE.rule_id, "tok_emptied")]
    assert body["checks"]["rules_loaded"] == 1 and body["checks"]["rules_topic_unread"] == {}


async def set_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


def seconds_until_failing(worker: Worker, limit: float) -> tuple[float, dict[str, Any]]:
    """Seconds until /healthz answers 503 (fails past ``limit``), and that answer's body."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        status, body = http_json(worker, "/healthz")
        if status == 503:
            return time.monotonic() - started, body
        assert status == 200, body
        time.sleep(0.25)
    raise AssertionError(f"/healthz still 200 after {limit} s: {http_json(worker, '/healthz')}")


STALL_TIMEOUT_S = 5.0
# What the stall watch adds to the timeout: end offsets are read from the broker every 2 s and
# the watch samples every second; a second on top for a loaded machine.
SAMPLING_S = 4.0


def test_healthz_fails_within_the_stall_timeout_while_a_batch_waits_for_its_alerts(
    stack: LocalStack, tmp_path: Path
) -> None:
    deployment = Pipeline(stack, tmp_path, extra_env={"FRAUD_STALL_TIMEOUT": f"{STALL_TIMEOUT_S}"})
    # Records above 200 bytes refused on the alerts topic (a misconfigured topic, or one
    # Kafka refuses for any reason): every alert is refused and sent again with backoff, so
    # the batch that decided it waits for its acknowledgement and is never committed.
    stack.create_topics(
        [Topic(deployment.alerts, deployment.partitions, {"max.message.bytes": "200"})]
    )
    deployment.create_topics()
    deployment.put_rules([SEED_RULE])
    worker = deployment.worker().start()
    try:
        wait_until(lambda: http_json(worker, "/readyz")[0] == 200, 30, "ready")
        assert http_json(worker, "/healthz")[0] == 200, "nothing waits: healthy"
        # A brand-new consumer group: the partition has never committed an offset.
        burst = [
            factories.payment("tok_stuck", f"stuck-{i}", "1500", now_ms() - 3000 + i)
            for i in range(3)
        ]
        run(
            produce(
                stack.bootstrap, deployment.payments, [(b"tok_stuck", p.to_json()) for p in burst]
            )
        )
        elapsed, body = seconds_until_failing(worker, STALL_TIMEOUT_S + SAMPLING_S + 10)
        consumer = body["checks"]["consumer"]

        # The topic is fixed: the alert goes out, the offsets are committed, /healthz recovers.
        run(set_topic_config(stack.bootstrap, deployment.alerts, {"max.message.bytes": "1048588"}))
        alerts = alerts_on(deployment, 1, idle_s=1.0, timeout_s=60.0)
        wait_until(lambda: http_json(worker, "/healthz")[0] == 200, 30, "healthy again")
    finally:
        worker.stop()
    assert elapsed <= STALL_TIMEOUT_S + SAMPLING_S, f"failing after {elapsed:.1f} s"
    # The body rounds to 0.1 s: 5.04 s past a 5 s limit shows as 5.0.
    assert consumer["ok"] is False and consumer["stalled_s"] >= consumer["limit_s"]
    (stalled,) = consumer["stalled_partitions"]
    assert stalled["topic"] == deployment.payments and stalled["lag"] == 3
    assert [a.group_key for a in alerts] == ["tok_stuck"]


def test_healthz_fails_while_dead_letters_are_refused(stack: LocalStack, tmp_path: Path) -> None:
    deployment = Pipeline(stack, tmp_path)
    # A DLQ topic that refuses records above 200 bytes: every dead letter (the original bytes
    # with their reason and source) is refused after the producer has taken it, and its
    # source offset is committed all the same: the dead letter is lost.
    stack.create_topics(
        [Topic(deployment.dlq, deployment.partitions, {"max.message.bytes": "200"})]
    )
    deployment.create_topics()
    worker = deployment.worker().start()
    try:
        wait_until(lambda: http_json(worker, "/readyz")[0] == 200, 30, "ready")
        assert http_json(worker, "/healthz")[0] == 200
        run(produce(stack.bootstrap, deployment.payments, [(b"tok_bad", b"not a payment")]))
        _, body = seconds_until_failing(worker, 30.0)
    finally:
        worker.stop()
    dlq = body["checks"]["dlq_sends"]
    assert dlq["ok"] is False and dlq["send_failures"] == 1, body
    assert body["checks"]["consumer"]["ok"] is True, "the payment itself was handled"
    assert "was not written to the DLQ" in worker.log_text()
