"""The local stores forget what the changelogs forget.

A state table's changelog is compacted and deleted by age (``tables.STATE_RETENTION_MS``,
the state retention ``FRAUD_STATE_RETENTION``: by default the longest aggregate or sequence
window, the allowed lateness and a day, and never less than the longest window of a rule in
force and the lateness; counted from a key's last write), so a worker that restores (a new
or moved one) no longer has a key nobody wrote for that long. A worker that keeps running
would: random card tokens seen once would grow its RocksDB, and every key it holds, without
bound. Every ``FRAUD_STATE_SWEEP_INTERVAL`` seconds this sweep deletes such keys from the
local stores by the same clock, the wall-clock time of the key's last write (``w`` in a
state, the newest alert's ``detected_at`` in ``card-alerts``), so a worker's stores hold
what a restore would give it.

Why the write time and not event time: lateness is judged per key, so a key's own clock
may lag its partition's by any amount, and a backlog replayed days late has old event
times but fresh writes. A key written within the retention may still join a window; one
not written for the retention cannot be part of anything a restore would keep either. A
state stored before write times were recorded falls back to its newest event time.

How: per assigned partition, keys are read in chunks (the event loop runs between them);
an expired key is deleted under the partition's lock after checking its bytes did not
change meanwhile, through the commit protocol (``app.worker.checkpoint``: the ownership
check, the local store, then a tombstone on the changelog, which compaction then drops).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from app.worker.checkpoint import StateWrite, commit
from app.worker.faust_app import app, settings
from app.worker.stats import stats
from tables import STATE_RETENTION_MS, card_alerts, card_state, group_state
from tables.store import decode_value, partition_locks, store_of

log = logging.getLogger(__name__)

CHUNK = 1000  # keys read between two turns of the event loop


class _Written(msgspec.Struct):
    """What the sweep reads of a state: msgspec skips the rest without building it."""

    t: int | None = None
    w: int | None = None


_decode_written = msgspec.json.Decoder(_Written).decode


def state_written_ms(raw: bytes) -> int | None:
    """When a state was last written; its newest event time if stored before that was
    recorded."""
    written = _decode_written(raw)
    return written.w if written.w is not None else written.t


def alerts_written_ms(raw: bytes) -> int | None:
    """When a card's recent alerts were last written: its newest alert's detection."""
    alerts = decode_value(raw)
    if not isinstance(alerts, list) or not alerts:
        return None
    detected = alerts[-1].get("detected_at") if isinstance(alerts[-1], dict) else None
    if not isinstance(detected, str):
        return None
    return int(datetime.fromisoformat(detected).timestamp() * 1000)


# Each swept table, with how to read a value's last write.
SWEPT: tuple[tuple[Any, Callable[[bytes], int | None]], ...] = (
    (card_state, state_written_ms),
    (group_state, state_written_ms),
    (card_alerts, alerts_written_ms),
)


def expired(raw: bytes, written_ms: Callable[[bytes], int | None], horizon_ms: int) -> bool:
    """Last written before ``horizon_ms`` (a value that says nothing is kept)."""
    try:
        written = written_ms(raw)
    except (msgspec.DecodeError, ValueError, TypeError, AttributeError):
        return False
    return written is not None and written < horizon_ms


async def sweep_partition(
    table: Any,
    partition: int,
    written_ms: Callable[[bytes], int | None],
    horizon_ms: int,
    generation: int,
) -> int:
    """Forget ``partition``'s keys of ``table`` last written before ``horizon_ms``; how
    many. Stops early once the partition is no longer this worker's."""
    store = store_of(table)
    swept, after = 0, None
    while True:
        chunk = store.items_of(partition, after, CHUNK)
        if not chunk:
            return swept
        after = chunk[-1][0]
        candidates = [(key, raw) for key, raw in chunk if expired(raw, written_ms, horizon_ms)]
        if candidates:
            async with partition_locks[partition]:
                keys = [(decode_value(key), raw) for key, raw in candidates]
                writes = [
                    StateWrite(table, partition, key, None)
                    for key, raw in keys
                    if store.read(partition, key) == raw  # unchanged meanwhile
                ]
                durable = await commit(
                    app,
                    generation=generation,
                    publish_alerts=_nothing,
                    writes=writes,
                    after_write=lambda: None,
                    forwards=(),
                )
            if durable is None:
                return swept  # a rebalance: the partition's next owner sweeps it
            await durable
            swept += len(writes)
            stats.state_keys_swept += len(writes)
        await asyncio.sleep(0)


async def _nothing() -> None:
    pass


async def sweep(now_ms: float | None = None) -> int:
    """One sweep of every assigned partition of the state tables; keys forgotten."""
    horizon_ms = int((time.time() * 1000 if now_ms is None else now_ms) - STATE_RETENTION_MS)
    generation = app.consumer_generation_id
    swept = 0
    for table, written_ms in SWEPT:
        topic = table.changelog_topic.get_topic_name()
        for tp in sorted(app.assignor.assigned_actives()):
            if tp.topic == topic:
                swept += await sweep_partition(
                    table, tp.partition, written_ms, horizon_ms, generation
                )
    if swept:
        log.info(
            "forgot %d keys not written for %.0f s (the state retention)",
            swept,
            STATE_RETENTION_MS / 1000,
        )
    return swept


@app.timer(settings.state_sweep_interval_s, name="tables.sweep")  # type: ignore[untyped-decorator]
async def sweep_now_and_then() -> None:
    try:
        await sweep()
    except Exception:
        # The next sweep tries again; the stores only hold more than they must meanwhile.
        log.exception("the state sweep failed")
