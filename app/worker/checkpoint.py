"""How a decided batch becomes durable: the commit protocol, in the order that keeps
at-least-once (Quix Streams calls this its checkpoint).

A batch of one partition's records has been decided (``agents.batch``): the alerts it
raised, the state of each key it changed, and the payments it forwards to other groups.
``commit`` makes them durable in numbered steps, and the consumer
(``app.worker.transport``) acknowledges the batch's offsets only after the last one:

1. **Alerts.** Publish every alert and wait until Kafka has acknowledged each (one already
   on the topic is not sent again). A crash before this step loses nothing (the batch
   comes again); after it, an alert can only be repeated with its own id.
2. **Ownership.** Is the partition still this worker's? The same generation as when the
   batch was fetched and the flow not stopped by a rebalance (``Consumer.still_ours``,
   the check the acknowledgements make too), and, after a pause of the worker longer than
   the group session (``app.worker.liveness``), the group coordinator's word. If not, stop
   here: nothing is written, and whoever owns the partition now decides the batch again.
3. **Local state.** Write every changed state to its store: one RocksDB write batch per
   store and partition, with no await between step 2 and here. Then the inspection
   tables' writes (``after_write``).
4. **Changelogs and forwards.** Send the same state writes to the tables' changelogs and
   the forwarded payments to the repartition topic, one produce batch per partition.
5. **Durable.** When Kafka has acknowledged every send of step 4, record per store and
   partition the newest changelog offset it holds, so that a restart recovers only the
   changelog past it. ``commit`` returns this step, still running.
6. **Offsets** (the consumer): acknowledge the batch's offsets once step 5 is done and
   every earlier batch of the partition is acknowledged, in offset order; Faust commits
   what is acknowledged. A failure at step 4 or 5 seeks the partition back to the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from faust.types import TP

from app.worker.liveness import liveness
from app.worker.transport import Consumer, Producer, RawRecord, Sent
from tables.store import Table, encode_key, store_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StateWrite:
    """A key's new value (None: deleted) in a table's store and changelog partition."""

    table: Table
    partition: int
    key: str
    value: bytes | None


async def commit(
    app: Any,
    *,
    generation: int | None,
    publish_alerts: Callable[[], Awaitable[None]],
    writes: Sequence[StateWrite],
    after_write: Callable[[], None],
    forwards: Sequence[RawRecord],
) -> Awaitable[None] | None:
    """Steps 1-5 for one decided batch; step 5 still running, or None when the partition
    is no longer this worker's (step 2). ``generation`` None: a record Faust's own stream
    delivered, acknowledged whatever happens: write anyway."""
    # 1. Alerts.
    await publish_alerts()
    # 2. Ownership.
    if generation is not None and not await _still_ours(app, generation):
        return None
    # 3. Local state: no await from the ownership check to here.
    for write in writes:
        store_of(write.table).stage(write.partition, write.key, write.value)
    for table in {id(w.table): w.table for w in writes}.values():
        store_of(table).write_staged()
    after_write()
    # 4. Changelogs and forwards.
    changelog = [
        (w.table.changelog_topic.get_topic_name(), encode_key(w.key), w.value, w.partition)
        for w in writes
    ]
    if not changelog and not forwards:
        return None if generation is None else _done()
    sent = await produce(app, [*changelog, *forwards])
    tables = {w.table.changelog_topic.get_topic_name(): w.table for w in writes}
    # 5. Durable (awaited by the consumer before step 6).
    return asyncio.ensure_future(_durable(app, sent, tables))


async def _still_ours(app: Any, generation: int) -> bool:
    consumer = cast(Consumer, app.consumer)
    if liveness.paused():
        # Frozen past the group session, the partition may be another worker's now:
        # write nothing until the group confirms this worker's generation.
        if not await consumer.still_a_member():
            return False
        liveness.confirmed()
        log.info("the group confirmed this worker's generation after a pause")
    return consumer.still_ours(generation)


def _done() -> Awaitable[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def produce(app: Any, records: Sequence[RawRecord]) -> list[Sent]:
    """Hand ``records`` to the producer Faust's own sends use: as produce batches
    (``Producer.send_batches``), or record by record through Faust's ``send`` inside a
    transaction (exactly-once)."""
    producer: Any = await app.maybe_start_producer()
    if app.in_transaction:
        return [
            Sent(
                topic,
                partition,
                1,
                await producer.send(
                    topic, key, value, partition=partition, timestamp=None, headers=None
                ),
            )
            for topic, key, value, partition in records
        ]
    return await cast(Producer, producer).send_batches(records)


async def _durable(app: Any, sent: list[Sent], tables: dict[str, Table]) -> None:
    """Wait for every send; then record, per store and partition, the newest changelog
    offset it holds (what Faust's ``Table._on_changelog_sent`` records per record)."""
    results = await asyncio.gather(*(batch.acknowledged for batch in sent))
    newest: dict[tuple[str, int], int] = {}
    for batch, metadata in zip(sent, results, strict=True):
        if batch.topic in tables:
            last = metadata.offset + batch.records - 1  # the first record's offset + n - 1
            where = (batch.topic, batch.partition)
            newest[where] = max(last, newest.get(where, last))
    for (topic, partition), offset in newest.items():
        table, tp = tables[topic], TP(topic, partition)
        if app.in_transaction:  # exactly-once: written when the partition commits
            app.tables.persist_offset_on_commit(table.data, tp, offset)
        else:
            store_of(table).record_changelog_offset(tp, offset)
