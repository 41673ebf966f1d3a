"""Faust's aiokafka transport, with two changes to how the worker consumes.

**The fetch wait is a setting.** Faust 0.15 builds the worker's consumer with
``fetch_max_wait_ms=1500`` hard-coded (``AIOKafkaConsumerThread._create_worker_consumer``).
aiokafka keeps one fetch in flight per broker and leaves out partitions whose fetched
records are not consumed yet, and a worker's assignment also holds the (often empty)
repartition partitions: so a fetch can go out without the payments partitions and wait up
to 1.5 s at the broker while payments queue. Runs then settled at start-up into p50 ~12 ms
or p50 ~1.15 s. The wait is ``FRAUD_FETCH_MAX_WAIT_MS`` here; a busy partition still
answers at once (fetch.min.bytes stays 1), the setting only bounds how long an idle fetch
holds the others back.

**Batch topics skip Faust's per-message path.** Faust hands every record to its stream
one at a time: ``wait_first`` (four tasks and an ``asyncio.wait``), a lock and a queue per
delivery, an Event, the stream iterator, four sensor calls and an ack under a threading
lock, about 150 µs per record on this machine. For a topic in ``app.batch_handlers`` the
consumer instead passes each fetched partition batch to its handler as Faust messages, in
offset order, and acknowledges the whole offset range once the handler returns True (its
alerts acknowledged and its state written). On False, an exception, a rebalance or a
paused partition, it seeks the partition back to the batch's first offset: the records
are fetched again, never skipped. Faust still commits the acknowledged offsets (after
flushing the producer), rebalances, recovers tables and serves the web views.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)

# A partition's fetched records, as Faust messages, oldest first; True when every one of
# them is done (alerts acknowledged, state written) and their offsets may be committed.
BatchHandler = Callable[[TP, Sequence[Any]], Awaitable[bool]]


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            # aiokafka reads it in start(); a release that renames it must fail loudly here,
            # not silently bring back the 1.5 s wait.
            raise RuntimeError("aiokafka's consumer has no _fetch_max_wait_ms to set")
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_max_wait_ms", 1500))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
        # Faust's signature (the fetch timeout it passes on to aiokafka), hence the name.
        fetched, active = await super()._wait_next_records(timeout)
        records = cast(dict[TP, list[Any]] | None, fetched)
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        if not records or not handlers:
            return records, active
        for tp in [tp for tp in records if tp.topic in handlers]:
            batch = records.pop(tp)
            if batch:
                await self._hand_over(handlers[tp.topic], tp, batch, active)
        return records, active

    async def _hand_over(
        self, handler: BatchHandler, tp: TP, batch: Sequence[Any], active: Any
    ) -> None:
        generation = self.app.consumer_generation_id
        done = False
        servable = active is None or tp in active or tp in self._buffered_partitions
        if servable and self.flow_active and not self.should_stop:
            try:
                messages = [self._to_message(tp, record) for record in batch]
                done = await handler(tp, messages)
            except Exception:
                # The handler dead-letters what it cannot handle; this is a bug or an
                # outage. The batch is fetched again, and /healthz sees the stall.
                log.exception("batch of %s[%d] from offset %d failed", *tp, batch[0].offset)
        if generation != self.app.consumer_generation_id or not self.flow_active:
            # A rebalance began: the acknowledgements of revoked partitions are gone, and
            # Faust seeks every assigned partition to its committed offset before it
            # resumes (Recovery._resume_streams), so this batch comes again if still ours.
            return
        if done:
            self._acknowledge_range(tp, batch[0].offset, batch[-1].offset)
            return
        try:
            await self.seek(tp, batch[0].offset)
        except Exception:
            log.warning("could not seek %s[%d] back to %d", *tp, batch[0].offset, exc_info=True)

    def _acknowledge_range(self, tp: TP, first: int, last: int) -> None:
        """Acknowledge offsets ``first``..``last``, and the hole before ``first`` that
        compaction or transaction markers leave, as Faust's own gap tracking would."""
        read, committed = self._read_offset[tp], self._committed_offset[tp]
        starts = [x for x in (None if read is None else read + 1, committed) if x is not None]
        low = max([x for x in starts if x <= first], default=first)
        if committed is not None:
            low = max(low, committed)  # as Faust's ack: nothing below the committed offset
        index, acked = self._acked_index[tp], self._acked[tp]
        fresh = [offset for offset in range(low, last + 1) if offset not in index]
        index.update(fresh)
        acked.extend(fresh)
        self._n_acked += len(fresh)
        self._read_offset[tp] = last
        monitor = self.app.monitor
        # What the stall watch and Faust's slow-processing check read for this partition.
        monitor.tp_read_offsets[tp] = last
        monitor.track_tp_end_offset(tp, self.highwater(tp))
        monitor.stream_inbound_time[tp] = time.monotonic()


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer
