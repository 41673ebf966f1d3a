"""The batch path (agents.batch) and its commit protocol (app.worker.checkpoint) with
in-memory fakes of the stores, the producer and the consumer: what a user of the pipeline
would notice (which alerts go out, which payments are dead-lettered, what state is
written, what is sent where) and the order that keeps at-least-once."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

import agents.batch as batch_module
from agents.batch import Batch, decide_batch
from agents.decisions import partition_count
from app.delivery.published import PublishedAlerts
from app.detection import engine
from app.detection.engine import KeyState
from app.detection.forwarding import decode_forwarded
from app.detection.keys import card_partition, group_record_key, key_partition
from app.detection.models import Alert, Payment
from app.detection.rulebook import RuleBook
from app.detection.rules import SEED_RULE, parse_rule
from app.worker import collector
from app.worker.stats import WorkerStats
from app.worker.transport import MessageRecord, Sent
from tables.store import decode_value, encode_key
from tests import factories

PARTITION = 2
NOW = int(time.time() * 1000) - 600_000  # payments dated in the future are refused
DEVICE_RULE = parse_rule(
    {
        "rule_id": "device-burst",
        "version": 1,
        "status": "active",
        "description": "3 payments on one device within 5 minutes",
        "group_by": ["device_id"],
        "filter": [],
        "aggregate": "count",
        "window": 300,
        "threshold": 3,
        "severity": "medium",
    }
)


@dataclass
class FakeStore:
    """A table's store: values by key, what each step did logged in ``log``."""

    log: list[tuple[str, Any]]
    values: dict[str, bytes] = field(default_factory=dict)
    staged: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    offsets: dict[TP, int] = field(default_factory=dict)

    def read(self, partition: int, key: str) -> bytes | None:
        return self.values.get(key)

    def stage(self, partition: int, key: str, value: bytes | None) -> None:
        self.log.append(("stage", key))
        self.staged.append((partition, key, value))

    def write_staged(self) -> None:
        for _, key, value in self.staged:
            if value is None:
                self.values.pop(key, None)
            else:
                self.values[key] = value
        self.staged.clear()

    def record_changelog_offset(self, tp: TP, offset: int) -> None:
        self.log.append(("durable", tp))
        self.offsets[tp] = offset

    def state(self, key: str) -> KeyState:
        return KeyState.from_json(decode_value(self.values[key]))


class FakeTable:
    def __init__(self, name: str, log: list[tuple[str, Any]]) -> None:
        self.name = name
        self.data = FakeStore(log)
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")


class FakeProducer:
    """Records every produce batch; Kafka's acknowledgements are the test's to give."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log
        self.records: list[tuple[str, bytes, bytes | None, int]] = []
        self.acks: list[asyncio.Future[Any]] = []
        self.buffer = SimpleNamespace(wait_until_ebb=self._nothing)

    @staticmethod
    async def _nothing() -> None:
        pass

    async def send_batches(self, records: Any) -> list[Sent]:
        sent = []
        by_partition: dict[tuple[str, int], int] = defaultdict(int)
        for topic, key, value, partition in records:
            self.log.append(("send", topic))
            self.records.append((topic, key, value, partition))
            by_partition[(topic, partition)] += 1
        for (topic, partition), count in by_partition.items():
            ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.acks.append(ack)
            sent.append(Sent(topic, partition, count, ack))
        return sent

    def acknowledge(self, error: Exception | None = None) -> None:
        for ack in self.acks:
            if ack.done():  # an earlier batch's, acknowledged then
                continue
            if error is None:
                ack.set_result(SimpleNamespace(offset=100))
            else:
                ack.set_exception(error)


class FakeConsumer:
    def __init__(self) -> None:
        self.ours = True

    def still_ours(self, generation: int) -> bool:
        return self.ours

    async def still_a_member(self) -> bool:
        return self.ours


@dataclass
class World:
    log: list[tuple[str, Any]]
    card_state: FakeTable
    group_state: FakeTable
    producer: FakeProducer
    consumer: FakeConsumer
    published: list[Alert] = field(default_factory=list)
    dead: list[tuple[str, str]] = field(default_factory=list)  # (txn or offset, reason)

    def payments_message(self, payment: Payment, offset: int, key: str | None = None) -> Any:
        return SimpleNamespace(
            topic="payments.raw",
            partition=PARTITION,
            offset=offset,
            key=(payment.card_id if key is None else key).encode(),
            value=payment.to_json(),
            timestamp=payment.ts_ms,
            headers=[],
        )

    def decide(self, payments: list[Payment], **keys: str) -> Any:
        messages = [
            self.payments_message(p, offset, keys.get(p.txn_id))
            for offset, p in enumerate(payments)
        ]
        return asyncio.run(self._decide(messages))

    async def _decide(self, messages: list[Any]) -> Any:
        durable = await decide_batch("detect", Batch.add_payment, messages)
        if durable is None:
            return None
        await asyncio.sleep(0)
        pending = not durable.done()  # type: ignore[attr-defined]
        self.producer.acknowledge()
        await durable
        return pending


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    log: list[tuple[str, Any]] = []
    w = World(
        log,
        FakeTable("card-state", log),
        FakeTable("group-state", log),
        FakeProducer(log),
        FakeConsumer(),
    )
    book = RuleBook()
    for rule in (SEED_RULE, DEVICE_RULE):
        book.apply(rule.rule_id.encode(), rule.to_bytes())
    book.loaded.set()

    async def publish(alerts: tuple[Alert, ...]) -> None:
        log.append(("publish", [a.alert_id for a in alerts]))
        w.published.extend(alerts)

    async def dead_letter(message: Any, reason: str, detail: str, **_: Any) -> None:
        w.dead.append((str(message.offset), reason))

    async def start_producer() -> FakeProducer:
        return w.producer

    app = SimpleNamespace(
        consumer_generation_id=3,
        consumer=w.consumer,
        in_transaction=False,
        maybe_start_producer=start_producer,
        producer=w.producer,
    )
    monkeypatch.setattr(batch_module, "app", app)
    monkeypatch.setattr(batch_module, "card_state", w.card_state)
    monkeypatch.setattr(batch_module, "group_state", w.group_state)
    monkeypatch.setattr(batch_module, "rulebook", book)
    monkeypatch.setattr(batch_module, "publish_alerts", publish)
    monkeypatch.setattr(batch_module, "dead_letter", dead_letter)
    monkeypatch.setattr("agents.delivery.dead_letter", dead_letter)
    monkeypatch.setattr(batch_module, "recent_alert_ids", PublishedAlerts())
    monkeypatch.setattr(batch_module, "high_value_counts", defaultdict(int))
    monkeypatch.setattr(batch_module, "remember_alerts", lambda key, alerts: None)
    monkeypatch.setattr(batch_module, "decoded_states", batch_module._DecodedStates())
    yield w


def burst(card: str, count: int, start: int = NOW, **fields: Any) -> list[Payment]:
    return [
        factories.payment(card, f"{card}-{n}", "1500", start + n * 1000, **fields)
        for n in range(count)
    ]


def test_alerts_are_acknowledged_before_state_is_written_and_offsets_wait_for_the_changelog(
    world: World,
) -> None:
    pending = world.decide(burst("tok_a", 3))
    assert [a.txn_ids for a in world.published] == [("tok_a-0", "tok_a-1", "tok_a-2")]
    steps = [step for step, _ in world.log]
    assert steps.index("publish") < steps.index("stage") < steps.index("send")
    assert pending, "the offsets waited for Kafka's acknowledgement of the changelog"
    assert steps[-1] == "durable"  # recorded only once Kafka acknowledged
    state = world.card_state.data.state("tok_a")
    assert set(state.rules[SEED_RULE.rule_id].used) == {"tok_a-0", "tok_a-1", "tok_a-2"}
    changelog = [r for r in world.producer.records if r[0] == "card-state-changelog"]
    assert [(r[1], r[3]) for r in changelog] == [(encode_key("tok_a"), PARTITION)]
    assert changelog[0][2] == world.card_state.data.values["tok_a"], "the same bytes as stored"


def test_a_late_payment_is_dead_lettered_and_the_others_are_decided(world: World) -> None:
    late = factories.payment("tok_b", "late", "1500", NOW - 3_600_000)
    world.decide([*burst("tok_b", 2), late])
    assert world.dead == [("2", "late_event")]
    pooled = [e[1] for e in world.card_state.data.state("tok_b").rules[SEED_RULE.rule_id].pool]
    assert pooled == ["tok_b-0", "tok_b-1"]


def test_a_payment_that_trips_a_bug_is_dead_lettered_and_its_key_rebuilt_without_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def evaluate(state: KeyState, payment: Payment, *args: Any, **kwargs: Any) -> Any:
        verdict = engine.evaluate(state, payment, *args, **kwargs)  # half-updates the state first
        if payment.txn_id == "boom":
            raise RuntimeError("a bug")
        return verdict

    monkeypatch.setattr(batch_module, "evaluate", evaluate)
    payments = burst("tok_c", 3)
    payments.insert(1, factories.payment("tok_c", "boom", "1500", NOW + 500))
    world.decide(payments)
    assert world.dead == [("1", "internal_error")]
    assert [a.txn_ids for a in world.published] == [("tok_c-0", "tok_c-1", "tok_c-2")]
    state = world.card_state.data.state("tok_c")
    assert "boom" not in state.rules[SEED_RULE.rule_id].used
    assert not state.rules[SEED_RULE.rule_id].pool


def test_a_rebalance_while_alerts_are_acknowledged_writes_and_sends_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def publish_then_lose_the_partition(alerts: tuple[Alert, ...]) -> None:
        world.published.extend(alerts)
        world.consumer.ours = False  # a rebalance began while Kafka acknowledged them

    monkeypatch.setattr(batch_module, "publish_alerts", publish_then_lose_the_partition)
    assert world.decide(burst("tok_d", 3)) is None, "the batch must be fetched again"
    assert len(world.published) == 1, "at least once: the alert is out"
    assert world.card_state.data.values == {} and world.producer.records == []


def test_a_changelog_send_kafka_refuses_fails_the_batch_and_records_no_offset(
    world: World,
) -> None:
    async def decide() -> None:
        message = [world.payments_message(p, n) for n, p in enumerate(burst("tok_e", 2))]
        durable = await decide_batch("detect", Batch.add_payment, message)
        assert durable is not None
        world.producer.acknowledge(RuntimeError("MessageSizeTooLarge"))
        with pytest.raises(RuntimeError):
            await durable

    asyncio.run(decide())
    assert world.card_state.data.offsets == {}, "a restart must recover the changelog again"


def test_payments_are_forwarded_to_the_partitions_of_their_groups(world: World) -> None:
    device = [
        factories.payment(f"tok_f{n}", f"f{n}", "20", NOW + n, device_id="dev-9") for n in range(2)
    ]
    miskeyed = factories.payment("tok_g", "g0", "1500", NOW)
    world.decide([*device, miskeyed], g0="not-the-card")
    forwarded = {
        item.record_key: (partition, item.payment.txn_id)
        for topic, _, value, partition in world.producer.records
        if topic.endswith("-payments-by-group")
        for item in decode_forwarded(value or b"")
    }
    partitions = partition_count()
    device_key = group_record_key(("device_id",), "dev-9")
    card_key = group_record_key(("card_id",), "tok_g")
    assert forwarded[device_key][0] == key_partition(device_key, partitions)
    assert forwarded[card_key] == (card_partition("tok_g", partitions), "g0")
    # The re-keyed payment is decided on its card's partition, not here.
    assert "tok_g" not in world.card_state.data.values


def test_decision_latency_and_alerts_count_from_the_records_kafka_timestamp(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fetched records carry Kafka's timestamp in milliseconds; a payment produced 250 ms
    # ago is decided about 250 ms after it, not decades (seconds read as milliseconds).
    fresh = WorkerStats()
    monkeypatch.setattr(batch_module, "stats", fresh)
    produced_ms = int(time.time() * 1000) - 250
    messages = [world.payments_message(p, n) for n, p in enumerate(burst("tok_t", 3))]
    for message in messages:
        message.timestamp = produced_ms
    asyncio.run(world._decide(messages))
    slowest_ms = fresh.decision_latency.get_max_value() / 1000
    assert 250 <= slowest_ms < 5_000
    assert [a.trigger_produced_at_ms for a in world.published] == [produced_ms]


def test_a_record_of_fausts_per_message_path_keeps_its_time_in_milliseconds() -> None:
    message = SimpleNamespace(
        topic="payments.raw", partition=1, offset=9, key=b"k", value=b"{}", timestamp=1.25
    )
    assert MessageRecord(message).timestamp == 1250


def test_with_the_workers_collector_settings_batches_come_and_go_between_collections(
    world: World,
) -> None:
    # Each batch keeps thousands of objects alive at once; with CPython's default young
    # threshold (700) every batch set off collections and promoted what it held, and the
    # worker spent about a tenth of its time in the collector (app.worker.collector).
    thresholds = gc.get_threshold()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    batches = [burst(f"tok_gc{n}", 1000) for n in range(8)]
    gc.collect()
    collector.tune()
    gc.callbacks.append(count)
    try:
        for payments in batches:
            world.decide(payments)
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*thresholds)
    assert len(world.published) > 8, "the batches were decided"
    assert len(collections) <= 2, f"collections of generations {collections}"
