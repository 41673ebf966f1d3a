"""One fetched partition batch, decided together: the detect agent's payments and the
grouped agent's forwarded payments.

Faust's per-message path costs more than the decision itself, so the consumer hands each
partition's fetched records to these agents at once (``app.worker.transport``). Per batch:
every payment is decoded (a bad one dead-lettered); a payment from ``payments.raw`` that
one of its other groups' rules counts is set aside to forward, and one whose Kafka key is
not its card to re-key by card; each key's state is read once and its payments evaluated
in offset order; every alert of the batch is published and acknowledged together; then
each changed state is written once, straight after the acknowledgements, and sent to its
changelog together with the forwarded payments (a few repartition records per batch,
``app.detection.forwarding``), one produce batch per partition. An alert is thus acknowledged by
Kafka before the state that consumed its events is written, and the batch's offsets are
acknowledged (by the consumer) only once Kafka has also acknowledged the state's changelog
sends and the forwarded payments: a crash replays the batch, repeats no alert already on
the topic (``agents.decisions.recent_alert_ids``) and loses none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import rocksdict
from faust.stores.base import SerializedStore
from faust.streams import _current_event
from faust.types import TP

from agents.decisions import (
    LATENESS_MS,
    LIMITS,
    RawRecord,
    Sent,
    forwarded_records,
    partition_count,
    produce,
    publish_alerts,
    recent_alert_ids,
    remember_alerts,
)
from agents.delivery import dead_letter, guarded
from app.detection.engine import KeyState, Verdict, evaluate, fit, pools_nowhere
from app.detection.forwarding import FORWARDED_BATCH_KEY, Forwarded, decode_forwarded
from app.detection.keys import (
    card_partition,
    group_record_key,
    key_partition,
    split_group_record_key,
)
from app.detection.models import Alert, Payment
from app.detection.rulebook import CARD_GROUP, rulebook
from app.detection.rules import Rule
from app.detection.validation import InvalidPayment, parse_keyed_payment, parse_payment
from app.worker.faust_app import app, settings
from app.worker.liveness import liveness
from app.worker.stats import stats
from app.worker.transport import Consumer
from tables import WINDOW_S, card_state, current_event_time, group_state, high_value_counts

# A batch reads state, awaits its alerts' acknowledgements, then writes state. The
# consumer decides the batches of one partition one after another, and those of different
# partitions side by side; Faust's own streams (a record that reaches an agent's stream)
# run beside them. A table keeps each partition's keys in a store of its own, shared by the
# co-partitioned topics: a card's payments come from payments.raw and, re-keyed, from the
# repartition topic, both to its partition. So one lock per partition number (not per
# topic) keeps two batches that may touch the same state from interleaving.
state_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)


log = logging.getLogger(__name__)


async def _tick_liveness() -> None:
    liveness.tick()


app.timer(0.5, name="worker.liveness_tick")(_tick_liveness)


def _flowing() -> bool:
    # ``flow_active`` is on Faust's Consumer but not on its ConsumerT interface; a rebalance
    # clears it before the new generation is known.
    return bool(getattr(app.consumer, "flow_active", False))


# The tables' key and value serializer is Faust's "json" codec. A RocksDB store holds what
# it encodes. A key must be the very bytes it encodes (stores look keys up by bytes): for
# the str keys here the standard library's encoder gives them without Faust's codec
# registry (which builds an encoder per call). A value need only be JSON the codec reads
# back: msgspec writes and reads the plain JSON states ~4x faster (compact, UTF-8 rather
# than \u escapes). Each is encoded once for the store and the changelog instead of twice.
# The in-memory store (FRAUD_STORE=memory://) holds objects: it goes through the table's API.


def _encode_key(key: str) -> bytes:
    return json.dumps(key).encode()


_encode_value = msgspec.json.Encoder().encode
_decode_value = msgspec.json.Decoder().decode


@dataclass
class _StateWrites:
    """A batch's state writes: made to the local store at once, then sent to the changelogs.

    On a RocksDB store the sends go straight to the producer Faust's own table writes use
    (the transaction manager under exactly-once), and the store's persisted changelog
    offset is set once per partition when Kafka has acknowledged them, instead of through a
    FutureMessage, the producer buffer's task and a RocksDB write per record.
    """

    raw: list[tuple[Any, int, bytes, bytes | None]] = field(default_factory=list)
    sends: list[Awaitable[Any]] = field(default_factory=list)  # the in-memory store's
    # (id(store), partition) -> the store, the partition, the RocksDB puts not yet written
    batches: dict[tuple[int, int], tuple[Any, int, Any]] = field(default_factory=dict)

    def write(self, table: Any, key: str, value: Any, encoded: bytes | None = None) -> bytes | None:
        """``table[key] = value`` (None deletes it) in the local store (a RocksDB put once
        ``flush`` runs); sent to the changelog by ``send``. The bytes stored, on a RocksDB
        store.

        What Faust's ``Table.__setitem__`` does for a table without expiry (local store,
        then changelog to the current event's partition), minus its sensors.
        """
        partition = table.partition_for_key(key)
        store = table.data
        if not isinstance(store, SerializedStore):
            if value is None:
                del store[key]
                self.sends.append(
                    table.send_changelog(partition, key, None, value_serializer="raw")
                )
            else:
                store[key] = value
                self.sends.append(table.send_changelog(partition, key, value))
            return None
        if partition is None:  # only a table built with use_partitioner=True: none here
            raise TypeError(f"table {table.name} picks changelog partitions by key")
        raw_key = _encode_key(key)
        raw_value = None if value is None else encoded or _encode_value(value)
        if raw_value is None:
            store._del(raw_key)
        elif getattr(store, "use_rocksdict", False):
            rocks: Any = store  # faust.stores.rocksdb.Store
            # What Store._set does, into one RocksDB WriteBatch per store and partition
            # (written by ``flush``): a put each costs ~3x more.
            found = self.batches.get((id(rocks), partition))
            if found is None:
                found = self.batches[(id(rocks), partition)] = (
                    rocks,
                    partition,
                    rocksdict.WriteBatch(raw_mode=True),
                )
            found[2].put(raw_key, raw_value)
            rocks._key_index[raw_key] = partition
        else:
            store._set(raw_key, raw_value)
        self.raw.append((table, partition, raw_key, raw_value))
        return raw_value

    def flush(self) -> None:
        """Write the batched puts to their stores."""
        for store, partition, batch in self.batches.values():
            store._db_for_partition(partition).write(batch)
        self.batches.clear()

    async def send(self, others: list[RawRecord]) -> tuple[list[tuple[Any, Sent]], list[Sent]]:
        """Hand the RocksDB stores' writes and ``others`` to the producer together: the
        changelog batches with their tables, and the others' batches."""
        tables: dict[str, Any] = {}
        records: list[RawRecord] = []
        for table, partition, raw_key, raw_value in self.raw:
            topic = table.changelog_topic.get_topic_name()
            tables[topic] = table
            records.append((topic, raw_key, raw_value, partition))
        if not records and not others:
            return [], []
        sent = await produce([*records, *others])
        changelog = [(tables[batch.topic], batch) for batch in sent if batch.topic in tables]
        return changelog, [batch for batch in sent if batch.topic not in tables]


async def _all_acknowledged(sent: list[tuple[Any, Sent]], others: list[Awaitable[Any]]) -> None:
    """Wait for every send of a batch; then record, per store and partition, the newest
    changelog offset the store holds (what Faust's ``Table._on_changelog_sent`` records
    per record), so that a restart recovers only the changelog past it."""
    results = await asyncio.gather(*(batch.acknowledged for _, batch in sent), *others)
    newest: dict[tuple[int, TP], tuple[Any, int]] = {}
    for (table, batch), metadata in zip(sent, results, strict=False):
        tp = TP(batch.topic, batch.partition)
        last = metadata.offset + batch.records - 1  # the batch's first record's offset + n - 1
        known = newest.get((id(table), tp))
        if known is None or last > known[1]:
            newest[(id(table), tp)] = (table, last)
    for (_, tp), (table, offset) in newest.items():
        if app.in_transaction:  # exactly-once: written when the partition commits
            app.tables.persist_offset_on_commit(table.data, tp, offset)
        else:
            table.data.set_persisted_offset(tp, offset)


def _stored(table: Any, key: str) -> tuple[bytes | None, Any]:
    """The table's value for ``key`` (None if it has none) read from its store in one
    lookup (the table's own ``get`` asks the store twice: ``in``, then the value), and on a
    RocksDB store the bytes it holds, not yet decoded (``_UNREAD``)."""
    store = table.data
    if not isinstance(store, SerializedStore):
        return None, store.get(key)
    raw = store._get(_encode_key(key))
    return raw, (None if raw is None else _UNREAD)


_UNREAD = object()  # a stored value whose bytes are not decoded yet


class _DecodedStates:
    """The decoded states of keys whose stored value is large (a busy key near its bound),
    kept between batches: decoding and rebuilding 2 000 events for every batch cost a busy
    key more than its payments did. A state is found only while the store holds exactly the
    bytes it was written as (a restore or another writer makes it a miss). A batch takes
    it out and puts it back only once it has written it, so a batch that fails half-way
    leaves nothing half-updated behind. Bounded by the bytes of the values it stands for."""

    MIN_BYTES = 16 * 1024
    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._states: OrderedDict[tuple[str, str], tuple[bytes, KeyState]] = OrderedDict()
        self._bytes = 0

    def take(self, where: tuple[str, str], raw: bytes | None) -> KeyState | None:
        found = self._states.pop(where, None)
        if found is None:
            return None
        self._bytes -= len(found[0])
        return found[1] if found[0] == raw else None

    def put(self, where: tuple[str, str], raw: bytes, state: KeyState) -> None:
        if len(raw) < self.MIN_BYTES:
            return
        self.take(where, None)  # a state put twice counts once
        self._states[where] = (raw, state)
        self._bytes += len(raw)
        while self._bytes > self.MAX_BYTES:
            _, (evicted, _) = self._states.popitem(last=False)
            self._bytes -= len(evicted)


decoded_states = _DecodedStates()


@dataclass
class _Key:
    """One key's state while its batch is evaluated."""

    table: Any
    stored: Any  # the stored value (None: none), or _UNREAD while only ``raw`` is read
    state: KeyState
    raw: bytes | None = None
    changed: bool = False
    # The batch's payments already applied, to rebuild the state if one of them trips a bug.
    applied: list[tuple[Any, Payment]] = field(default_factory=list)

    def stored_value(self) -> Any:
        if self.stored is _UNREAD:
            self.stored = _decode_value(self.raw or b"null")
        return self.stored


@dataclass
class Batch:
    """What a batch has decided, kept until its alerts are acknowledged."""

    now_ms: float
    keys: dict[tuple[str, str], _Key] = field(default_factory=dict)  # (table, table key)
    alerts: dict[str, Alert] = field(default_factory=dict)  # by id: a rebuild repeats some
    # (card, window index) -> (an event time in the window in seconds, high-value payments)
    high_value: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)
    produced_ms: list[int] = field(default_factory=list)  # card decisions, for their latency
    grouped: int = 0  # decisions for rules grouped by other fields
    # Payments to forward through the repartition topic, by its partition, in batch order.
    forwards: dict[int, list[Forwarded]] = field(default_factory=dict)
    agent: str = ""
    partitions: int = field(default_factory=partition_count)  # Faust's settings cost ~1 µs a read

    def _parse(self, message: Any) -> Payment:
        return parse_payment(message.value, int(self.now_ms), LIMITS)

    async def add_payment(self, message: Any) -> None:
        """A record of ``payments.raw``."""
        try:
            payment, rekeyed = parse_keyed_payment(
                message.key, message.value, int(self.now_ms), LIMITS
            )
        except InvalidPayment as exc:
            await dead_letter(message, exc.reason, exc.detail)
            return
        # Another group-by's rule counts it: forward it (most payments have nowhere to go).
        for record_key in rulebook.regroup_keys(payment):
            self._forward(record_key, key_partition(record_key, self.partitions), message, payment)
        if rekeyed:
            stats.rekeyed += 1
            card = payment.card_id
            record_key = group_record_key(CARD_GROUP, card)
            self._forward(record_key, card_partition(card, self.partitions), message, payment)
            return
        await self._decide_for_card(message, payment)

    def _forward(self, record_key: str, partition: int, message: Any, payment: Payment) -> None:
        forwarded = Forwarded(record_key, int(message.timestamp * 1000), payment)
        self.forwards.setdefault(partition, []).append(forwarded)

    async def add_forwarded(self, message: Any) -> None:
        """A record of the repartition topic: a batch of forwarded payments (or, from a
        version before those, one payment keyed by group or re-keyed by card)."""
        if message.key == FORWARDED_BATCH_KEY:
            try:
                items = decode_forwarded(message.value or b"")
            except ValueError as exc:
                await dead_letter(message, "bad_forwarded_record", str(exc))
                return
            for item in items:
                payment_message = _ForwardedPayment(message, item)
                group = await self._group_of(payment_message, item.record_key)
                if group is not None:
                    await guarded(
                        self.agent,
                        payment_message,
                        self._decide_forwarded(payment_message, *group, item.payment),
                    )
            return
        group = await self._group_of(message, message.key or b"")
        if group is None:
            return
        try:
            payment = self._parse(message)
        except InvalidPayment as exc:
            # Validated before forwarding; only the wall-clock age bound can have moved.
            await dead_letter(message, exc.reason, exc.detail)
            return
        await self._decide_forwarded(message, *group, payment)

    @staticmethod
    async def _group_of(
        message: Any, record_key: str | bytes
    ) -> tuple[str, tuple[str, ...], str] | None:
        """``(record key, group_by, key)`` of a forwarded payment, or None once the payment
        is dead-lettered for a record key that names no group."""
        try:
            text = record_key.decode() if isinstance(record_key, bytes) else record_key
            group_by, key = split_group_record_key(text)
        except ValueError:  # UnicodeDecodeError too
            await dead_letter(message, "bad_group_key", "repartition record without a group key")
            return None
        return text, group_by, key

    async def _decide_forwarded(
        self,
        message: Any,
        record_key: str,
        group_by: tuple[str, ...],
        key: str,
        payment: Payment,
    ) -> None:
        """A forwarded payment, validated on ``payments.raw``: not validated again (a
        payment accepted there is not dead-lettered for the age it gained on the way)."""
        rules = rulebook.rules_for(group_by)
        if group_by == CARD_GROUP:
            await self._decide_for_card(message, payment)
        elif not rules:
            return  # every rule of this group was deleted since the payment was forwarded
        elif await self._evaluate(group_state, record_key, key, rules, message, payment):
            self.grouped += 1

    async def _decide_for_card(self, message: Any, payment: Payment) -> None:
        rules = rulebook.rules_for(CARD_GROUP)
        card = payment.card_id
        if rules and not await self._evaluate(card_state, card, card, rules, message, payment):
            return
        if payment.amount >= rulebook.high_value_amount:
            window = (card, int(payment.ts_ms // (WINDOW_S * 1000)))
            _, count = self.high_value.get(window, (0.0, 0))
            self.high_value[window] = (payment.ts_ms / 1000, count + 1)
        self.produced_ms.append(int(message.timestamp * 1000))

    async def _evaluate(
        self,
        table: Any,
        table_key: str,
        key: str,
        rules: list[Rule],
        message: Any,
        payment: Payment,
    ) -> bool:
        """Apply the payment to its key's state; False when it is dead-lettered (late, or its
        txn_id reused with other content)."""
        where = (str(table.name), table_key)
        entry = self.keys.get(where)
        if entry is None:
            raw, stored = _stored(table, table_key)
            fresh = stored is None and not recent_alert_ids.used_for(key)
            if fresh and pools_nowhere(payment, rules):
                return True  # what evaluate decides on an empty state, without building one
            entry = _Key(table, stored, KeyState(), raw)
            state = decoded_states.take(where, raw) if raw is not None else None
            entry.state = state or KeyState.from_json(entry.stored_value())
            # A replay may find the state without events published alerts already used.
            recent_alert_ids.mark_used(entry.state, key, rules)
            self.keys[where] = entry
        try:
            verdict = self._apply(entry, key, rules, message, payment)
        except Exception:
            # The state may be half-updated: rebuild it from the table and this batch's
            # earlier payments, then let the caller dead-letter this one.
            self._rebuild(where, entry, key, rules)
            raise
        if verdict.late:
            stats.late += 1
            await dead_letter(
                message,
                "late_event",
                f"event time {payment.ts} is more than {settings.allowed_lateness_s:g} s older"
                f" than the newest seen for {rules[0].group_by_name} {key}",
            )
            return False
        if verdict.conflict is not None:
            held, this = verdict.conflict
            await dead_letter(
                message,
                "conflicting_txn_id",
                f"txn_id {payment.txn_id} was seen with other content on"
                f" {rules[0].group_by_name} {key}: fingerprint {held} held, {this} here",
            )
            return False
        entry.applied.append((message, payment))
        return True

    def _apply(
        self, entry: _Key, key: str, rules: list[Rule], message: Any, payment: Payment
    ) -> Verdict:
        verdict = evaluate(
            entry.state,
            payment,
            key,
            rules,
            LATENESS_MS,
            produced_at_ms=int(message.timestamp * 1000),
            detected_at_ms=int(self.now_ms),
            max_key_events=settings.max_key_events,
        )
        # A duplicate rewrites the state too. A SIGKILL between the local RocksDB write and
        # its changelog send leaves the store ahead of the changelog; the replay that
        # follows finds only duplicates, and without this write the changelog (what the
        # partition's next owner restores) would never learn the batch while its offsets
        # get committed: the next owner would pair those payments again.
        entry.changed = entry.changed or verdict.changed or verdict.duplicate
        if verdict.duplicate:
            stats.duplicates += 1
        stats.key_events_evicted += verdict.evicted
        for alert in verdict.alerts:
            self.alerts[alert.alert_id] = alert
        return verdict

    def _rebuild(self, where: tuple[str, str], entry: _Key, key: str, rules: list[Rule]) -> None:
        entry.state, entry.changed = KeyState.from_json(entry.stored_value()), False
        recent_alert_ids.mark_used(entry.state, key, rules)
        try:
            for message, payment in entry.applied:
                self._apply(entry, key, rules, message, payment)
        except Exception:
            # Not reproducible from the same input would be a second bug: leave the key's
            # stored state alone rather than write a guess.
            del self.keys[where]

    def _write_states(self) -> _StateWrites:
        """Every changed state to its local store, at once; kept decoded for the next batch
        where it is large (``decoded_states``)."""
        writes = _StateWrites()
        written: list[tuple[tuple[str, str], bytes, KeyState]] = []
        for where, entry in self.keys.items():
            if entry.changed and entry.state.rules:
                # Within Kafka's message size whatever the events' ids hold.
                encoded, shed = fit(entry.state, _encode_value)
                stats.key_events_evicted += shed
                raw = writes.write(entry.table, where[1], entry.state.to_json(), encoded)
                if raw is not None:
                    written.append((where, raw, entry.state))
            elif entry.stored is not None and not entry.state.rules:
                writes.write(entry.table, where[1], None)
        writes.flush()
        for where, raw, state in written:
            decoded_states.put(where, raw, state)
        return writes

    async def finish(self, generation: int | None) -> Awaitable[Any] | None:
        """Publish the alerts, then write the state; the changelog sends of the writes, or
        None if a rebalance came between (``generation`` None: the caller acknowledges
        whatever happens, so write anyway)."""
        alerts = tuple(self.alerts.values())
        await publish_alerts(alerts)
        if generation is not None and liveness.paused():
            # Frozen past the group session, the partition may be another worker's now:
            # write nothing until the group confirms it is still ours (app.worker.liveness).
            if not await cast(Consumer, app.consumer).still_a_member():
                return None
            liveness.confirmed()
            log.info("the group confirmed this worker's generation after a pause")
        if generation is not None and (generation != app.consumer_generation_id or not _flowing()):
            return None  # a rebalance: the partition may move, its next owner replays it
        # No await until the writes are made: they land together, right after the acks.
        writes = self._write_states()
        for (card_id, _), (ts_s, count) in self.high_value.items():
            current_event_time.set(ts_s)
            high_value_counts[card_id] += count
        by_key: dict[str, list[Alert]] = {}
        for alert in alerts:
            by_key.setdefault(alert.group_key, []).append(alert)
        for group_key, key_alerts in by_key.items():
            remember_alerts(group_key, tuple(key_alerts))
        done_ms = time.time() * 1000
        stats.record_decisions(self.produced_ms, done_ms)
        stats.processed += len(self.produced_ms)
        stats.grouped_processed += self.grouped
        # The batch is done when Kafka holds its state, not when the local store does: Faust
        # flushes its producer buffer before a commit but gives up after 100 ms without a
        # send (ProducerBuffer.flush_atmost), so a commit could pass state still in the
        # buffer, and a SIGKILL then left the next owner a changelog without it. The
        # consumer acknowledges the batch's offsets once these sends are acknowledged.
        changelog, forwarded = await writes.send(forwarded_records(self.forwards))
        return asyncio.ensure_future(
            _all_acknowledged(
                changelog, [*writes.sends, *(batch.acknowledged for batch in forwarded)]
            )
        )


class _ForwardedPayment:
    """A payment of a forwarded batch record where the agents expect a Kafka message: its
    dead letter names the batch record (topic, partition, offset) and holds the payment."""

    __slots__ = ("key", "offset", "partition", "payment", "timestamp", "topic")

    def __init__(self, record: Any, item: Forwarded) -> None:
        self.topic, self.partition, self.offset = record.topic, record.partition, record.offset
        self.key = item.record_key.encode()
        self.timestamp = item.produced_ms / 1000
        self.payment = item.payment

    @property
    def value(self) -> bytes:
        return self.payment.to_json()


async def decide_batch(
    agent: str,
    add: Callable[[Batch, Any], Awaitable[None]],
    messages: Sequence[Any],
    *,
    replayable: bool = True,
) -> Awaitable[Any] | None:
    """Decide one partition's fetched records with ``add`` (``Batch.add_payment`` or
    ``Batch.add_forwarded``); the changelog sends of its state once all of it is decided
    and its alerts acknowledged, or None if it must be fetched again.

    ``replayable``: the caller fetches the batch again on None, so a rebalance between
    the alerts and the writes leaves the state to the partition's next owner. Faust's own
    stream acknowledges its event whatever happens: there the state is written anyway.
    """
    generation = app.consumer_generation_id if replayable else None
    batch = Batch(time.time() * 1000, agent=agent)
    first = messages[0]
    # Faust's tables pick the changelog partition (and the RocksDB column) from the
    # current event: one event of this partition stands for the whole batch.
    event = app.create_event(first.key, first.value, first.headers, first)
    token = _current_event.set(weakref.ref(event))
    try:
        async with state_locks[first.partition]:
            for message in messages:
                await guarded(agent, message, add(batch, message))
            sent = await batch.finish(generation)
    finally:
        _current_event.reset(token)
    # The changelog writes wait in Faust's producer buffer; let it drain below its limit,
    # as Faust's conductor does before each record, so it never grows past one batch.
    await app.producer.buffer.wait_until_ebb()
    return sent


def batch_agent(topic: Any, name: str, add: Callable[[Batch, Any], Awaitable[None]]) -> Any:
    """An agent of ``topic`` whose records are decided in batches with ``add``.

    The consumer hands it each fetched partition batch (``app.batch_handlers``); the
    agent's own stream subscribes the topic and takes, as a batch of one, any record that
    still comes through Faust's per-message path. No exception escapes either: a record
    that cannot be handled goes to the DLQ as ``internal_error``.
    """

    async def handle_batch(tp: TP, messages: Sequence[Any]) -> Awaitable[Any] | None:
        # Deciding before the rules topic has been read would miss alerts. The rules come
        # from the follower's own consumer, so waiting here cannot hold them up.
        await rulebook.loaded.wait()
        return await decide_batch(name, add, messages)

    async def handle_one(message: Any) -> None:
        sent = await decide_batch(name, add, [message], replayable=False)
        if sent is not None:
            await sent

    async def agent(stream: Any) -> None:
        await rulebook.loaded.wait()
        async for event in stream.events():
            await guarded(name, event.message, handle_one(event.message))

    app.batch_handlers[topic.get_topic_name()] = handle_batch
    return app.agent(topic, name=name)(agent)
