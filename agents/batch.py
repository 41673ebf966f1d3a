"""One fetched partition batch, decided together: the detect agent's payments and the
grouped agent's forwarded payments.

Faust's per-message path costs more than the decision itself, so the consumer hands each
partition's fetched records to these agents at once (``app.worker.transport``). Per batch:
every payment is decoded (a bad one dead-lettered); a payment from ``payments.raw`` that
one of its other groups' rules counts is set aside to forward, and one whose Kafka key is
not its card to re-key by card; each key's state is read once from its store
(``tables.store``) and its payments evaluated in offset order (``app.detection.engine``).
What the batch decided (its alerts, each changed state once, the forwarded payments) is
then made durable by the commit protocol, ``app.worker.checkpoint``, whose numbered steps
say the order that keeps at-least-once.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from agents import deadlines
from agents.decisions import (
    LATENESS_MS,
    LIMITS,
    forwarded_records,
    partition_count,
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
from app.detection.lists import listbook
from app.detection.models import Alert, Payment
from app.detection.rulebook import CARD_GROUP, rulebook
from app.detection.rules import Rule
from app.detection.validation import InvalidPayment, parse_keyed_payment, parse_payment
from app.worker.checkpoint import StateWrite, commit
from app.worker.faust_app import app, settings
from app.worker.liveness import liveness
from app.worker.stats import stats
from app.worker.transport import MessageRecord, Record
from tables import WINDOW_S, card_state, current_event_time, group_state, high_value_counts
from tables.store import Table, deciding, encode_value, partition_locks, store_of

log = logging.getLogger(__name__)


async def _tick_liveness() -> None:
    liveness.tick()


app.timer(0.5, name="worker.liveness_tick")(_tick_liveness)


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

    table: Table
    raw: bytes | None  # the stored value's bytes (None: no value)
    state: KeyState
    changed: bool = False
    # The batch's payments already applied, to rebuild the state if one of them trips a bug.
    applied: list[tuple[int, Payment]] = field(default_factory=list)  # (produced ms, payment)

    def stored_state(self) -> KeyState:
        return KeyState.from_bytes(self.raw)


@dataclass
class Batch:
    """What a batch has decided, kept until its alerts are acknowledged."""

    now_ms: float
    partition: int  # of the records, and so of every state the batch reads and writes
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

    def _parse(self, message: Record) -> Payment:
        return parse_payment(message.value, int(self.now_ms), LIMITS)

    def add_payment(self, message: Record) -> Awaitable[None] | None:
        """A record of ``payments.raw``; its dead letter to await, if it is refused.
        Synchronous: a payment that is decided (nearly all) builds no coroutine."""
        try:
            payment, rekeyed = parse_keyed_payment(
                message.key, message.value, int(self.now_ms), LIMITS
            )
        except InvalidPayment as exc:
            return dead_letter(message, exc.reason, exc.detail)
        produced_ms = message.timestamp
        # Another group-by's rule counts it: forward it (most payments have nowhere to go).
        for record_key in rulebook.regroup_keys(payment):
            partition = key_partition(record_key, self.partitions)
            self._forward(record_key, partition, produced_ms, payment)
        if rekeyed:
            stats.rekeyed += 1
            card = payment.card_id
            record_key = group_record_key(CARD_GROUP, card)
            self._forward(record_key, card_partition(card, self.partitions), produced_ms, payment)
            return None
        if not payment.card_id:  # an event without a card (a login) has only its other keys
            return None
        refused = self._decide_for_card(produced_ms, payment)
        if refused is not None:
            return dead_letter(message, refused.reason, refused.detail)
        return None

    def _forward(self, record_key: str, partition: int, produced_ms: int, payment: Payment) -> None:
        forwarded = Forwarded(record_key, produced_ms, payment)
        self.forwards.setdefault(partition, []).append(forwarded)

    async def add_forwarded(self, message: Record) -> None:
        """A record of the repartition topic: a batch of forwarded payments (or, from a
        version before those, one payment keyed by group or re-keyed by card)."""
        if message.key == FORWARDED_BATCH_KEY:
            try:
                items = decode_forwarded(message.value or b"")
            except ValueError as exc:
                await dead_letter(message, "bad_forwarded_record", str(exc))
                return
            for item in items:
                group = _group_of(item.record_key)
                try:
                    refused = (
                        InvalidPayment("bad_group_key", _NO_GROUP_KEY)
                        if group is None
                        else self._decide_forwarded(
                            item.produced_ms, item.record_key, *group, item.payment
                        )
                    )
                except Exception as exc:
                    # As ``guarded`` handles it for a record; the item stands for a Kafka
                    # message only when it is dead-lettered.
                    await guarded(self.agent, _ForwardedPayment(message, item), _raise(exc))
                    continue
                if refused is not None:
                    await dead_letter(
                        _ForwardedPayment(message, item), refused.reason, refused.detail
                    )
            return
        try:
            text = (message.key or b"").decode()
        except ValueError:  # UnicodeDecodeError
            text = ""
        group = _group_of(text)
        if group is None:
            await dead_letter(message, "bad_group_key", _NO_GROUP_KEY)
            return
        try:
            payment = self._parse(message)
        except InvalidPayment as exc:
            # Validated before forwarding; only the wall-clock age bound can have moved.
            await dead_letter(message, exc.reason, exc.detail)
            return
        refused = self._decide_forwarded(message.timestamp, text, *group, payment)
        if refused is not None:
            await dead_letter(message, refused.reason, refused.detail)

    def _decide_forwarded(
        self,
        produced_ms: int,
        record_key: str,
        group_by: tuple[str, ...],
        key: str,
        payment: Payment,
    ) -> InvalidPayment | None:
        """A forwarded payment, validated on ``payments.raw``: not validated again (a
        payment accepted there is not dead-lettered for the age it gained on the way).
        Why it is refused (its dead letter's reason and detail), if it is."""
        rules = rulebook.rules_for(group_by)
        if group_by == CARD_GROUP:
            return self._decide_for_card(produced_ms, payment)
        if not rules:
            return None  # every rule of this group was deleted since the payment was forwarded
        refused = self._evaluate(group_state, record_key, key, rules, produced_ms, payment)
        if refused is None:
            self.grouped += 1
        return refused

    def _decide_for_card(self, produced_ms: int, payment: Payment) -> InvalidPayment | None:
        rules = rulebook.rules_for(CARD_GROUP)
        card = payment.card_id
        if rules:
            refused = self._evaluate(card_state, card, card, rules, produced_ms, payment)
            if refused is not None:
                return refused
        if payment.amount >= rulebook.high_value_amount:
            window = (card, int(payment.ts_ms // (WINDOW_S * 1000)))
            _, count = self.high_value.get(window, (0.0, 0))
            self.high_value[window] = (payment.ts_ms / 1000, count + 1)
        self.produced_ms.append(produced_ms)
        return None

    def _evaluate(
        self,
        table: Table,
        table_key: str,
        key: str,
        rules: list[Rule],
        produced_ms: int,
        payment: Payment,
    ) -> InvalidPayment | None:
        """Apply the payment to its key's state; why it is refused (its dead letter's reason
        and detail), if it is (late, or its txn_id reused with other content). Synchronous, as
        is the path to it: a payment that is decided (nearly all) costs no coroutine."""
        # Absence rules: the partition's clock moves, keys whose deadline passed alert.
        deadlines.advance(self, table, table_key, payment.ts_ms, produced_ms)
        where = (str(table.name), table_key)
        entry = self.keys.get(where)
        if entry is None:
            raw = store_of(table).read(self.partition, table_key)
            fresh = raw is None and not recent_alert_ids.used_for(key)
            if fresh and pools_nowhere(payment, rules):
                return None  # what evaluate decides on an empty state, without building one
            entry = _Key(table, raw, KeyState())
            state = decoded_states.take(where, raw) if raw is not None else None
            entry.state = state or entry.stored_state()
            # A replay may find the state without events published alerts already used.
            recent_alert_ids.mark_used(entry.state, key, rules)
            self.keys[where] = entry
        try:
            verdict = self._apply(entry, key, rules, produced_ms, payment)
        except Exception:
            # The state may be half-updated: rebuild it from the table and this batch's
            # earlier payments, then let the caller dead-letter this one.
            self._rebuild(where, entry, key, rules)
            raise
        if verdict.late:
            stats.late += 1
            return InvalidPayment(
                "late_event",
                f"event time {payment.ts} is more than {settings.allowed_lateness_s:g} s older"
                f" than the newest seen for {rules[0].group_by_name} {key}",
            )
        if verdict.conflict is not None:
            held, this = verdict.conflict
            return InvalidPayment(
                "conflicting_txn_id",
                f"txn_id {payment.txn_id} was seen with other content on"
                f" {rules[0].group_by_name} {key}: fingerprint {held} held, {this} here",
            )
        entry.applied.append((produced_ms, payment))
        return None

    def _apply(
        self, entry: _Key, key: str, rules: list[Rule], produced_ms: int, payment: Payment
    ) -> Verdict:
        verdict = evaluate(
            entry.state,
            payment,
            key,
            rules,
            LATENESS_MS,
            produced_at_ms=produced_ms,
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
        entry.state, entry.changed = entry.stored_state(), False
        recent_alert_ids.mark_used(entry.state, key, rules)
        try:
            for produced_ms, payment in entry.applied:
                self._apply(entry, key, rules, produced_ms, payment)
        except Exception:
            # Not reproducible from the same input would be a second bug: leave the key's
            # stored state alone rather than write a guess.
            del self.keys[where]

    def _state_writes(
        self,
    ) -> tuple[list[StateWrite], list[tuple[tuple[str, str], bytes, KeyState]]]:
        """Every changed state, encoded once for its store and its changelog (a key left
        without events is deleted); and the written states to keep decoded."""
        writes: list[StateWrite] = []
        keep: list[tuple[tuple[str, str], bytes, KeyState]] = []
        for where, entry in self.keys.items():
            if entry.changed and entry.state.rules:
                entry.state.written_ms = int(self.now_ms)
                # Within Kafka's message size whatever the events' ids hold.
                encoded, shed = fit(entry.state, encode_value)
                stats.key_events_evicted += shed
                writes.append(StateWrite(entry.table, self.partition, where[1], encoded))
                keep.append((where, encoded, entry.state))
            elif entry.raw is not None and not entry.state.rules:
                writes.append(StateWrite(entry.table, self.partition, where[1], None))
        return writes, keep

    async def finish(self, generation: int | None) -> Awaitable[Any] | None:
        """Make what the batch decided durable (``app.worker.checkpoint.commit``): what
        is still to complete before its offsets count, or None if the partition is no
        longer this worker's (``generation`` None: write whatever happens)."""
        # An alert a suppression holds is published all the same, as ``suppressed``.
        alerts = listbook.mark(tuple(self.alerts.values()))
        writes, keep = self._state_writes()

        def after_write() -> None:
            """The inspection tables and counters, once the state is written."""
            for where, encoded, state in keep:
                decoded_states.put(where, encoded, state)
            deadlines.written(self)
            for (card_id, _), (ts_s, count) in self.high_value.items():
                current_event_time.set(ts_s)
                high_value_counts[card_id] += count
            by_key: dict[str, list[Alert]] = {}
            for alert in alerts:
                by_key.setdefault(alert.group_key, []).append(alert)
            for group_key, key_alerts in by_key.items():
                remember_alerts(group_key, tuple(key_alerts))
            stats.record_decisions(self.produced_ms, time.time() * 1000)
            stats.processed += len(self.produced_ms)
            stats.grouped_processed += self.grouped

        return await commit(
            app,
            generation=generation,
            publish_alerts=lambda: publish_alerts(alerts),
            writes=writes,
            after_write=after_write,
            forwards=forwarded_records(self.forwards),
        )


_NO_GROUP_KEY = "repartition record without a group key"


def _group_of(record_key: str) -> tuple[tuple[str, ...], str] | None:
    """``(group_by, key)`` of a forwarded payment's record key; None if it names no group."""
    try:
        return split_group_record_key(record_key)
    except ValueError:
        return None


async def _raise(exc: Exception) -> None:
    """``exc`` raised again where ``guarded`` can dead-letter its record: the batch loops
    catch errors themselves, so that a record handled without one costs no coroutine."""
    raise exc


class _ForwardedPayment:
    """A payment of a forwarded batch record where the agents expect a Kafka message: its
    dead letter names the batch record (topic, partition, offset) and holds the payment."""

    __slots__ = ("key", "offset", "partition", "payment", "timestamp", "topic")

    def __init__(self, record: Record, item: Forwarded) -> None:
        self.topic, self.partition, self.offset = record.topic, record.partition, record.offset
        self.key = item.record_key.encode()
        self.timestamp = item.produced_ms
        self.payment = item.payment

    @property
    def value(self) -> bytes:
        return self.payment.to_json()


# Decides one record into a batch: ``Batch.add_payment`` or ``Batch.add_forwarded``. What it
# returns, when not None, is still to be awaited for that record (its dead letters).
Add = Callable[[Batch, Record], Awaitable[None] | None]


async def decide_batch(
    agent: str,
    add: Add,
    messages: Sequence[Record],
    *,
    replayable: bool = True,
) -> Awaitable[Any] | None:
    """Decide one partition's fetched records with ``add`` (``Batch.add_payment`` or
    ``Batch.add_forwarded``); what must still complete before their offsets count, or None
    if they must be fetched again (``app.worker.checkpoint``).

    ``replayable``: the caller fetches the batch again on None, so a rebalance between
    the alerts and the writes leaves the state to the partition's next owner. Faust's own
    stream acknowledges its event whatever happens: there the state is written anyway.
    """
    generation = app.consumer_generation_id if replayable else None
    partition = messages[0].partition
    batch = Batch(time.time() * 1000, partition, agent=agent)
    with deciding(partition):
        async with partition_locks[partition]:
            # Absence deadlines: each table's index for this partition, rebuilt from the
            # store first if it may not match it (the decisions below do not wait).
            await deadlines.begin(batch, (card_state, group_state))
            for message in messages:
                try:
                    pending = add(batch, message)
                    if pending is not None:
                        await pending
                except Exception as exc:  # as guarded does (cancellation is no Exception)
                    await guarded(agent, message, _raise(exc))
            sent = await batch.finish(generation)
    # The inspection tables' changelog writes wait in Faust's producer buffer; let it drain
    # below its limit, as Faust's conductor does before each record.
    await app.producer.buffer.wait_until_ebb()
    return sent


def batch_agent(topic: Any, name: str, add: Add) -> Any:
    """An agent of ``topic`` whose records are decided in batches with ``add``.

    The consumer hands it each fetched partition batch (``app.batch_handlers``); the
    agent's own stream subscribes the topic and takes, as a batch of one, any record that
    still comes through Faust's per-message path. No exception escapes either: a record
    that cannot be handled goes to the DLQ as ``internal_error``.
    """

    async def handle_batch(tp: TP, messages: Sequence[Record]) -> Awaitable[Any] | None:
        # Deciding before the rules topic has been read would miss alerts. The rules come
        # from the follower's own consumer, so waiting here cannot hold them up.
        await rulebook.loaded.wait()
        await listbook.loaded.wait()  # the lists and suppressions too (agents.lists)
        return await decide_batch(name, add, messages)

    async def handle_one(message: Record) -> None:
        sent = await decide_batch(name, add, [message], replayable=False)
        if sent is not None:
            await sent

    async def agent(stream: Any) -> None:
        await rulebook.loaded.wait()
        await listbook.loaded.wait()
        async for event in stream.events():
            await guarded(name, event.message, handle_one(MessageRecord(event.message)))

    app.batch_handlers[topic.get_topic_name()] = handle_batch
    return app.agent(topic, name=name)(agent)
