"""Chaos (slow, `make test-slow`): workers killed, rebalanced, the broker and DynamoDB down.

Each test feeds a generated stream with injected bursts at about 1 000 payments/s while
something fails, then checks the alerts on the topic (or the rows in DynamoDB) against the
brute-force oracle: every burst alerted, no alert invented, no alert id twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.detection.models import Alert, Payment
from app.detection.rules import SEED_RULE, parse_rule
from app.generator import PaymentGenerator
from infra.local.stack import LocalStack
from tests.integration.harness import Pipeline, Worker, alerts_on, keyed, produce, run, wait_until
from tests.integration.test_pipeline import generated_stream
from tests.oracle import oracle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 1000.0


class Feed:
    """Produces ``payments`` at ``RATE`` in a thread; ``join`` re-raises a producer failure."""

    def __init__(self, pipeline: Pipeline, payments: list[Payment]) -> None:
        self.failures: list[BaseException] = []
        self.thread = threading.Thread(target=self._send, args=(pipeline, payments))
        self.thread.start()

    def _send(self, pipeline: Pipeline, payments: list[Payment]) -> None:
        try:
            run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments), rate=RATE))
        except BaseException as exc:  # surfaced by join()
            self.failures.append(exc)

    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self) -> None:
        self.thread.join(300)
        assert not self.thread.is_alive(), "the producer finished"
        assert self.failures == [], f"the producer gave up: {self.failures}"


def stream(seconds: float, seed: int) -> tuple[list[Payment], set[tuple[str, tuple[str, ...]]]]:
    payments, _ = generated_stream(int(RATE * seconds), seed=seed)
    return payments, oracle(payments, SEED_RULE)


def assert_exactly_the_oracle(alerts: list[Alert], expected: set[Any]) -> None:
    found = {(a.group_key, a.txn_ids) for a in alerts}
    assert expected - found == set(), "no burst missed"
    assert found - expected == set(), "no alert invented"
    repeated = [i for i, n in Counter(a.alert_id for a in alerts).items() if n > 1]
    assert repeated == [], "no alert id twice"


class Workers:
    """Makes the test's workers and stops them all at the end."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.started: list[Worker] = []

    def __call__(self, name: str) -> Worker:
        worker = self.pipeline.worker(name)
        self.started.append(worker)
        return worker


@pytest.fixture
def workers(pipeline: Pipeline) -> Iterator[Workers]:
    made = Workers(pipeline)
    yield made
    for worker in made.started:
        if worker.process is not None and worker.process.poll() is None:
            os.killpg(worker.process.pid, signal.SIGCONT)  # a frozen one cannot stop
        worker.stop()


def fed_through_ten_sigkills(
    pipeline: Pipeline, workers: Workers, payments: list[Payment]
) -> list[Worker]:
    """Two workers; ``payments`` fed at ``RATE`` while one of them is SIGKILLed and
    restarted every 3 s, ten times in turn; the pair once the feed is done."""
    pair = [workers("k1").start(), workers("k2").start()]
    feed = Feed(pipeline, payments)
    for kill in range(10):
        time.sleep(3)
        victim = pair[kill % 2]
        victim.kill()
        victim.start()
    feed.join()
    return pair


def test_ten_sigkills_under_load_lose_and_repeat_no_alert(
    pipeline: Pipeline, workers: Workers
) -> None:
    payments, expected = stream(120, seed=31)
    pair = fed_through_ten_sigkills(pipeline, workers, payments)
    alerts = alerts_on(pipeline, len(expected), idle_s=5.0, timeout_s=300.0)
    assert_exactly_the_oracle(alerts, expected)
    assert all(w.process is not None and w.process.poll() is None for w in pair)


DEVICE_RULE = parse_rule(
    {
        "rule_id": "shared-device",
        "version": 1,
        "status": "active",
        "severity": "high",
        "group_by": ["device_id"],
        "aggregate": "distinct_count(card_id)",
        "window": 10,
        "filter": [{"field": "mcc", "op": "in", "value": ["7995"]}],
        "threshold": {"op": ">=", "value": 3},
    }
)


def device_stream(
    seconds: float, seed: int
) -> tuple[list[Payment], set[tuple[str, tuple[str, ...]]]]:
    """The generator's stream (event time = produce time, so a killed worker's partitions
    trail by seconds, far within the allowed lateness) with the device rule's traffic: a
    fifth of the payments qualify on a device of their card's own (never 3 cards: forwarded,
    pooled, written, never an alert), and every 250th payment starts a burst of 3 on a
    shared device, the same device again only 50 s later (window 10 s). Whatever order the
    burst's cards reach the device's partition in, its alert is those 3 payments."""
    generator = PaymentGenerator(seed=seed, cards=300, fraud_ratio=0.02, high_value_share=0.02)
    now_ms = int(time.time() * 1000)
    payments = [
        p._replace(
            mcc="7995" if i % 5 == 0 else "5411",
            device_id=f"solo-{p.card_id}",
        )
        for i, (p, _) in enumerate(generator.history(int(RATE * seconds), now_ms, step_ms=1))
    ]
    bursts: set[tuple[str, tuple[str, ...]]] = set()
    for index in range(0, len(payments) - 2, 250):
        trio = payments[index : index + 3]
        if len({p.card_id for p in trio}) < 3:
            continue
        device = f"shared-{len(bursts) % 200}"
        for offset, payment in enumerate(trio):
            payments[index + offset] = payment._replace(mcc="7995", device_id=device)
        bursts.add((device, tuple(p.txn_id for p in trio)))
    return payments, bursts


def test_ten_sigkills_with_a_device_rule_lose_and_repeat_no_alert(
    pipeline: Pipeline, workers: Workers
) -> None:
    """The repartition path under the same ten SIGKILLs: a fifth of the payments forwarded
    by device, across partitions, in batch records."""
    pipeline.put_rules([DEVICE_RULE])
    payments, bursts = device_stream(120, seed=43)
    card_bursts = oracle(payments, SEED_RULE)
    assert len(bursts) > 400 and len(card_bursts) > 50
    pair = fed_through_ten_sigkills(pipeline, workers, payments)
    alerts = alerts_on(pipeline, len(bursts) + len(card_bursts), idle_s=5.0, timeout_s=300.0)
    assert_exactly_the_oracle([a for a in alerts if a.rule_id == SEED_RULE.rule_id], card_bursts)
    assert_exactly_the_oracle([a for a in alerts if a.rule_id == DEVICE_RULE.rule_id], bursts)
    assert all(w.process is not None and w.process.poll() is None for w in pair)


def test_rebalance_one_two_one_two_workers_under_load(pipeline: Pipeline, workers: Workers) -> None:
    payments, expected = stream(60, seed=37)
    first = workers("r1").start()
    feed = Feed(pipeline, payments)
    second = workers("r2")
    for step in range(3):
        time.sleep(8)
        if step % 2 == 0:
            second.start()
        else:
            second.stop()
    feed.join()
    alerts = alerts_on(pipeline, len(expected), idle_s=5.0, timeout_s=300.0)
    assert_exactly_the_oracle(alerts, expected)
    assert first.process is not None and first.process.poll() is None


def test_broker_restart_mid_stream_loses_no_alert(pipeline: Pipeline, workers: Workers) -> None:
    payments, expected = stream(30, seed=23)
    worker = workers("b1").start()
    feed = Feed(pipeline, payments)
    time.sleep(6)
    pipeline.stack.kill_kafka()
    time.sleep(5)
    pipeline.stack.restart_kafka()
    feed.join()
    alerts = alerts_on(pipeline, len(expected), idle_s=5.0, timeout_s=300.0)
    assert worker.process is not None and worker.process.poll() is None, "worker survived"
    assert_exactly_the_oracle(alerts, expected)


def test_dynamodb_frozen_for_20_s_loses_and_duplicates_no_row(
    pipeline: Pipeline, stack: LocalStack, workers: Workers
) -> None:
    pipeline.enable_sink()
    table = pipeline.alerts_table
    payments, expected = stream(45, seed=41)
    worker = workers("d1").start()
    feed = Feed(pipeline, payments)

    def rows() -> dict[str, Any]:
        found: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        while True:
            page = stack.client().scan(**kwargs)
            found.update({item["alert_id"]["S"]: item for item in page["Items"]})
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    try:
        wait_until(lambda: len(rows()) >= 5, 60, "the first rows")
        stack.freeze_dynamodb()
        time.sleep(20)
    finally:
        stack.thaw_dynamodb()
    feed.join()
    alerts = alerts_on(pipeline, len(expected), idle_s=5.0, timeout_s=300.0)
    assert_exactly_the_oracle(alerts, expected)
    wait_until(lambda: len(rows()) >= len(expected), 120, "every alert in the table")
    assert set(rows()) == {a.alert_id for a in alerts}
    assert worker.process is not None and worker.process.poll() is None


def restored_from_changelogs(
    pipeline: Pipeline, workers: Workers, rest: list[Payment], name: str
) -> None:
    """Every worker stopped, then one with an empty data directory (its tables restored
    from the changelogs alone) decides ``rest``: a stale or missing changelog write shows
    as a burst missed or an event paired twice."""
    for worker in workers.started:
        worker.stop()
    workers(name).start()
    feed = Feed(pipeline, rest)
    feed.join()


def changelog_topics(pipeline: Pipeline) -> list[str]:
    async def names() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.stack.bootstrap)
        await admin.start()
        try:
            return [n for n in await admin.list_topics() if pipeline.uid in n and "changelog" in n]
        finally:
            await admin.close()

    found: list[str] = run(names())
    return found


def set_max_message_bytes(pipeline: Pipeline, topics: list[str], value: int | None) -> None:
    async def alter() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.stack.bootstrap)
        await admin.start()
        try:
            # AlterConfigs (the only alter aiokafka has) replaces a topic's whole set of
            # overrides: the changelogs' cleanup policy and retention, which the worker
            # checks at start-up, are sent again as they are, or a restore would find them
            # reset to the broker's defaults and the worker would refuse to start.
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
            )
            kept: dict[str, dict[str, str]] = {
                str(name): {
                    str(entry[0]): str(entry[1])
                    for entry in entries
                    if entry[0] in ("cleanup.policy", "retention.ms")
                }
                for response in described
                for _, _, _, name, entries in response.resources
            }
            limit = {"max.message.bytes": str(value if value is not None else 1048588)}
            await admin.alter_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, t, configs={**kept[t], **limit})
                    for t in topics
                ]
            )
        finally:
            await admin.close()

    run(alter())


def assert_no_event_paired_twice(alerts: list[Alert]) -> None:
    unique = {a.alert_id: a for a in alerts}.values()
    by_txn = Counter(t for alert in unique for t in alert.txn_ids)
    assert [t for t, n in by_txn.items() if n > 1] == [], "no two alert ids share a txn id"


def test_a_worker_frozen_past_its_session_writes_no_stale_state_after_its_successor(
    pipeline: Pipeline, workers: Workers
) -> None:
    """SIGSTOP one of two workers for 10 s under 1 000/s (its partitions move to the other),
    then SIGCONT, three times in turn: whatever it was deciding must not land in the
    changelogs after its successor's writes. A worker restored from the changelogs alone
    then decides the rest."""
    payments, expected = stream(60, seed=47)
    half = len(payments) // 2
    pair = [workers("s1").start(), workers("s2").start()]
    feed = Feed(pipeline, payments[:half])
    for frozen in (pair[0], pair[1], pair[0]):
        time.sleep(5)
        assert frozen.process is not None
        os.killpg(frozen.process.pid, signal.SIGSTOP)
        time.sleep(10)
        os.killpg(frozen.process.pid, signal.SIGCONT)
    feed.join()
    time.sleep(10)  # the thawed worker rejoins; its stale batch (if any) lands now
    restored_from_changelogs(pipeline, workers, payments[half:], "s3")
    alerts = alerts_on(pipeline, len(expected), idle_s=5.0, timeout_s=300.0)
    assert_exactly_the_oracle(alerts, expected)
    assert_no_event_paired_twice(alerts)


def test_changelog_writes_refused_for_a_while_lose_nothing_after_a_restore(
    pipeline: Pipeline, workers: Workers
) -> None:
    """The changelogs refuse every write for 20 s under load (max.message.bytes lowered),
    then take them again; a worker restored from the changelogs alone decides the rest."""
    payments, expected = stream(60, seed=53)
    half = len(payments) // 2
    worker = workers("c1").start()
    feed = Feed(pipeline, payments[:half])
    wait_until(lambda: bool(changelog_topics(pipeline)), 30, "the changelog topics")
    time.sleep(5)
    topics = changelog_topics(pipeline)
    set_max_message_bytes(pipeline, topics, 64)
    time.sleep(20)
    set_max_message_bytes(pipeline, topics, None)
    feed.join()
    wait_until(lambda: worker.stats()["processed"] >= half, 120, "the first half decided")
    restored_from_changelogs(pipeline, workers, payments[half:], "c2")
    alerts = alerts_on(pipeline, len(expected), idle_s=5.0, timeout_s=300.0)
    assert_exactly_the_oracle(alerts, expected)
    assert_no_event_paired_twice(alerts)


HOT_DEVICE_RULE = parse_rule(
    {
        "rule_id": "device-many-cards",
        "version": 1,
        "status": "active",
        "severity": "high",
        "group_by": ["device_id"],
        "aggregate": "distinct_count(card_id)",
        "window": 3600,
        "filter": [{"field": "mcc", "op": "in", "value": ["7995"]}],
        "threshold": {"op": ">=", "value": 3},
    }
)


def test_a_hot_device_under_load_blinds_and_stalls_nothing(
    pipeline: Pipeline, workers: Workers
) -> None:
    """One device (a terminal's placeholder id) sees 20 000 payments of one card within the
    device rule's hour while the generator's stream flows at 1 000/s: the hot key stays at
    its bound, the card alerts equal the oracle, and /healthz answers every second."""
    pipeline.put_rules([SEED_RULE, HOT_DEVICE_RULE])
    payments, expected = stream(40, seed=59)
    hot = [
        p._replace(txn_id=f"hot_{i}", card_id="tok_hot", device_id="unknown", mcc="7995")
        for i, p in enumerate(
            payments[i % len(payments)]._replace(amount=Decimal("20.00")) for i in range(20_000)
        )
    ]
    # Spread through the stream, each at the event time of the payment it follows.
    mixed: list[Payment] = []
    every = len(payments) // 2_000
    for index, p in enumerate(payments):
        mixed.append(p)
        if index % every == 0:
            mixed.extend(h._replace(ts=p.ts, ts_ms=p.ts_ms) for h in hot[:10])
            hot = hot[10:]
    worker = workers("h1").start()
    slowest = [0.0]
    stop = threading.Event()

    def probe() -> None:
        url = f"http://127.0.0.1:{worker.web_port}/healthz"
        while not stop.is_set():
            started = time.monotonic()
            # Red is an answer too; only how long it takes counts here.
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(url, timeout=10).read()
            slowest[0] = max(slowest[0], time.monotonic() - started)
            stop.wait(0.5)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        Feed(pipeline, mixed).join()
        alerts = alerts_on(pipeline, len(expected), idle_s=5.0, timeout_s=300.0)
    finally:
        stop.set()
        prober.join(20)
    card_alerts = [a for a in alerts if a.rule_id == SEED_RULE.rule_id]
    assert_exactly_the_oracle(card_alerts, expected)
    assert [a for a in alerts if a.rule_id == HOT_DEVICE_RULE.rule_id] == []
    assert worker.stats()["key_events_evicted"] > 0, "the hot key reached its bound"
    assert slowest[0] < 5.0, f"/healthz took {slowest[0]:.1f} s to answer"
