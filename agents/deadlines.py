"""Absence rules' deadlines on a worker: time passing for keys that receive nothing more.

An absence rule alerts on a pending A once its key's *partition* has moved past A's
deadline plus the allowed lateness (``app.detection.kinds.absence``). Per state table and
partition this module keeps that clock (the newest event time of the payments decided on
it) and the next deadline of each key with a pending A (``absence.Timers``, a heap): a
payment costs a comparison with the earliest deadline, and time passing visits only the
keys whose deadline passed.

The batch path (``agents.batch``) calls it three times:

- ``begin`` once per batch, before it decides anything: each table's index for the batch's
  partition, rebuilt first if it may not match the store.
- ``advance`` before each payment it decides on a table: the key decided just before is
  rescheduled from its state, the clock moves, and every key now due is read (from the
  batch or the store, like any key the batch decides) and alerted. Its alerts and its new
  state join the batch's, so they go through the same commit protocol
  (``app.worker.checkpoint``): the alert is acknowledged by Kafka before the state that
  resolved its A is written.
- ``written`` once the batch's state is written (the commit's step 3): the key decided
  last is rescheduled (every other one was, before the payment after it), and the
  partition's index is clean again.

The index lives in memory. It is rebuilt from the partition's stored states (their pending
As, and as the clock the newest event time they hold, a lower bound of the partition's) the
first time a batch needs it after a rebalance or a restart (a new consumer generation), and
after a batch that did not reach its write (the index may then be ahead of the store). A
rebuild reads every key of the partition's store a chunk at a time, yielding to the event
loop between chunks, under the partition's lock like the batch that asks for it. A stored
state that cannot be decoded is left out of the index, logged with its key and counted
(``fraud_internal_errors``), as the per-record path does with it (that path then
dead-letters each payment of the key as ``internal_error``); the partition goes on.

Nothing here reads the wall clock: a partition that receives nothing more alerts nothing
(``docs/reference/rule-format.md#absence``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.decisions import LATENESS_MS, recent_alert_ids
from app.detection.keys import split_group_record_key
from app.detection.kinds import absence
from app.detection.pan import redact_text
from app.detection.rulebook import CARD_GROUP, rulebook
from app.detection.rules import AbsenceRule, Rule
from app.detection.state import KeyState
from app.worker.failures import failures
from app.worker.faust_app import app
from tables import card_state
from tables.store import Table, decode_value, store_of

if TYPE_CHECKING:
    from agents.batch import Batch

log = logging.getLogger(__name__)

CHUNK = 1000  # keys read between two turns of the event loop when an index is rebuilt
CORRUPT_LOGGED = 10  # undecodable states logged one by one per rebuild (then only counted)
# What a stored state holding an absence rule's state contains (msgspec writes no spaces).
_ABSENCE_TAG = b'"k":"absence"'


@dataclass
class _Partition:
    """One table partition's clock and deadlines, and who last used them."""

    active: bool  # some live absence rule groups its table's keys
    generation: int | None = None
    timers: absence.Timers = field(default_factory=absence.Timers)
    # A batch has changed it and not written yet: rebuilt if that batch never writes.
    dirty: bool = False
    batch: weakref.ref[Batch] | None = None
    previous: str | None = None  # the key the batch decided last, to reschedule


_partitions: dict[tuple[str, int], _Partition] = {}


def _rules_of(table: Table | str, table_key: str) -> tuple[str, list[Rule]]:
    """(key, its group's rules) of a key of ``table`` (or the table of that name)."""
    if table is card_state or table == str(card_state.name):
        return table_key, rulebook.rules_for(CARD_GROUP)
    group_by, key = split_group_record_key(table_key)
    return key, rulebook.rules_for(group_by)


def _absence_live(table: Table) -> bool:
    """Some live absence rule keeps its state in ``table``."""
    on_cards = table is card_state
    return any(
        isinstance(rule, AbsenceRule)
        and rule.status != "paused"
        and (rule.group_by == CARD_GROUP) == on_cards
        for rule in rulebook.rules.values()
    )


async def begin(batch: Batch, tables: Sequence[Table]) -> None:
    """Before ``batch`` decides anything: each table's index for its partition, rebuilt
    from the store when it may not match it (so that deciding a payment never waits)."""
    for table in tables:
        part = _partitions.get((str(table.name), batch.partition))
        if part is None or part.batch is None or part.batch() is not batch:
            await _begin(batch, table, part)


def advance(batch: Batch, table: Table, table_key: str, ts_ms: int, produced_at_ms: int) -> None:
    """Before ``batch`` decides a payment of ``ts_ms`` on ``table_key``: move the
    partition's clock and alert every key whose deadline it passed (``begin`` first)."""
    part = _partitions.get((str(table.name), batch.partition))
    if part is None or not part.active or part.batch is None or part.batch() is not batch:
        return  # no live absence rule on this table when the batch began
    if part.previous is not None:
        _reschedule(batch, table, part, part.previous)
    part.previous = table_key
    if part.timers.advance(ts_ms):
        _fire(batch, table, part, produced_at_ms)


async def _begin(batch: Batch, table: Table, part: _Partition | None) -> _Partition:
    """The partition's index for a new batch: rebuilt when it may not match the store."""
    where = (str(table.name), batch.partition)
    if not _absence_live(table):
        part = _Partition(active=False)
    else:
        generation = app.consumer_generation_id
        if part is None or not part.active or part.dirty or part.generation != generation:
            part = _Partition(active=True, generation=generation)
            await _rebuild(batch.agent, table, batch.partition, part)
        part.dirty = True
        part.previous = None
    part.batch = weakref.ref(batch)
    _partitions[where] = part
    return part


async def _rebuild(agent: str, table: Table, partition: int, part: _Partition) -> None:
    """The partition's deadlines and clock from its stored states (an undecodable one left
    out, logged and counted)."""
    store = store_of(table)
    timers, after, keys, corrupt = part.timers, None, 0, 0
    while True:
        chunk = store.items_of(partition, after, CHUNK)
        if not chunk:
            break
        after = chunk[-1][0]
        for raw_key, raw in chunk:
            if _ABSENCE_TAG not in raw:
                continue
            try:
                table_key = decode_value(raw_key)
                state = KeyState.from_bytes(raw)
            except Exception as exc:
                corrupt += 1
                _undecodable(
                    agent, table, partition, raw_key, exc, log_it=corrupt <= CORRUPT_LOGGED
                )
                continue
            _, rules = _rules_of(table, table_key)
            due = absence.next_due(state, rules, LATENESS_MS)
            timers.schedule(table_key, due)
            keys += due is not None
            if state.newest_ts is not None:
                timers.advance(state.newest_ts)
        await asyncio.sleep(0)
    log.info(
        "absence deadlines of %s[%d] rebuilt: %d keys pending, clock %s, %d undecodable states",
        table.name,
        partition,
        keys,
        timers.clock,
        corrupt,
    )


def _undecodable(
    agent: str, table: Table, partition: int, key: bytes | str, exc: Exception, *, log_it: bool
) -> None:
    """A stored state that cannot be decoded: counted as the per-record path counts it (an
    internal error of ``agent``), logged with its key (any card number in it masked) unless
    ``log_it`` is false; its key is left out of the deadlines."""
    failures.internal_errors[(agent, type(exc).__name__)] += 1
    if log_it:
        text = key.decode(errors="replace") if isinstance(key, bytes) else key
        log.error(
            "%s: the stored state of key %s in %s[%d] cannot be decoded (%s): its absence"
            " deadlines are left out; each payment of the key goes to the DLQ as internal_error",
            agent,
            redact_text(text),
            table.name,
            partition,
            type(exc).__name__,
        )


def _reschedule(batch: Batch, table: Table | str, part: _Partition, table_key: str) -> None:
    entry = batch.keys.get((str(table if isinstance(table, str) else table.name), table_key))
    if entry is not None:
        _, rules = _rules_of(table, table_key)
        part.timers.schedule(table_key, absence.next_due(entry.state, rules, LATENESS_MS))


def _fire(batch: Batch, table: Table, part: _Partition, produced_at_ms: int) -> None:
    """Alert every key whose deadline the clock passed; their alerts and states join the
    batch's."""
    due = part.timers.pop_due()
    if not due:
        return  # only deadlines rescheduled since (the usual case: a B came in time)
    from agents.batch import _Key, decoded_states  # noqa: PLC0415 (batch imports this module)

    clock = part.timers.clock
    assert clock is not None
    for table_key in due:
        key, rules = _rules_of(table, table_key)
        where = (str(table.name), table_key)
        entry = batch.keys.get(where)
        if entry is None:
            raw = store_of(table).read(batch.partition, table_key)
            if raw is None:
                continue  # forgotten since (the sweep, a deleted rule)
            entry = _Key(table, raw, KeyState())
            try:
                entry.state = decoded_states.take(where, raw) or entry.stored_state()
            except Exception as exc:  # written by another since the index was built
                _undecodable(batch.agent, table, batch.partition, table_key, exc, log_it=True)
                continue
            recent_alert_ids.mark_used(entry.state, key, rules)
            batch.keys[where] = entry
        alerts = absence.fire_due(
            entry.state, key, rules, clock, LATENESS_MS, produced_at_ms, int(batch.now_ms)
        )
        if alerts:
            entry.changed = True
            batch.alerts.update((alert.alert_id, alert) for alert in alerts)
        part.timers.schedule(table_key, absence.next_due(entry.state, rules, LATENESS_MS))


def written(batch: Batch) -> None:
    """``batch``'s states are written: its partitions' indexes match their stores again.
    Every key the batch decided was rescheduled from its state before the batch's next
    payment on its table (or when it alerted) but the last one, rescheduled here. (``fit``
    may yet have shed a pending A from a written state: its deadline stays, earlier than
    the key's next one, and only makes ``_fire`` look at the key once for nothing.)"""
    for (table_name, _), part in _partitions.items():
        if part.batch is not None and part.batch() is batch:
            if part.active and part.previous is not None:
                _reschedule(batch, table_name, part, part.previous)
                part.previous = None
            part.dirty = False
