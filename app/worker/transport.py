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

**So is the least a fetch waits for.** With aiokafka's 1 byte, a fetch came back as soon as
any payment had arrived: at 1 000 payments/s that was 100-200 fetches a second of 5-10
payments each, and every one of them paid the fetch round trip, the hand-over from the
consumer's thread, and for each of its partition batches a decision, a commit and a
changelog send (most of a worker's CPU at that rate). ``FRAUD_FETCH_MIN_BYTES`` lets the
broker hold a fetch until it has that many bytes or ``FRAUD_FETCH_MAX_WAIT_MS`` passed: a
slow stream is fetched every ~14 ms at 1 000/s (4 KiB: ~13 payments), a busy one as soon as
the bytes are there (under 2 ms of them at 10 000/s), an idle one every 20 ms.

**Batch topics skip Faust's per-message path.** Faust hands every record to its stream
one at a time: ``wait_first`` (four tasks and an ``asyncio.wait``), a lock and a queue per
delivery, an Event, the stream iterator, four sensor calls and an ack under a threading
lock, about 150 µs per record on this machine. For a topic in ``app.batch_handlers`` the
consumer instead passes each fetched partition batch to its handler as fetched (aiokafka's
``ConsumerRecord``, not Faust messages), in offset order; the batches of one fetch's
partitions are decided side by side (a batch waiting for its alerts' acknowledgements no
longer holds up the others), each partition's one after another. The handler returns once
the batch is decided (its alerts acknowledged by Kafka, its state written to the local
store and sent to the changelog), handing back the changelog sends; the range of offsets
is acknowledged when Kafka has acknowledged those sends, while the next batches are
already being decided. A batch is thus done when Kafka
holds its state, not when the local store does, and waiting for that costs no fetch round.
Acknowledgements stay in offset order per partition, at most ``MAX_IN_FLIGHT`` batches
behind. A handler that returns None or raises, a send that fails, a rebalance or a paused
partition: the partition is sought back to the batch's first offset (a rebalance leaves
that to Faust's seek to the committed offsets), so records are fetched again, never
skipped; until that batch has come again, no later batch of the partition is decided (a
fetch the consumer thread made before the seek is dropped), and every later batch waits
for its acknowledgement, so no acknowledgement can cover its offsets. Faust still commits
the acknowledged offsets, rebalances, recovers tables and serves the web views.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast

from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)


class Record(Protocol):
    """A Kafka record as the batch handlers read it: aiokafka's ``ConsumerRecord`` as
    fetched (building even a light copy of each cost the decision loop 4 % of its time;
    Faust's ``Message`` costs four times as much again), or a ``MessageRecord``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...  # milliseconds, as Kafka keeps it (not Faust's seconds)


class MessageRecord:
    """A Faust ``Message`` (a record that came through Faust's per-message path) as a
    ``Record``: its timestamp in milliseconds, as Kafka's fetched records carry it."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, message: Any) -> None:
        self.topic: str = message.topic
        self.partition: int = message.partition
        self.offset: int = message.offset
        self.key: bytes | None = message.key
        self.value: bytes | None = message.value
        self.timestamp: int = round(message.timestamp * 1000)


# A partition's fetched records (``Record``), oldest first. The handler returns when
# they are decided, with what must still complete before their offsets may be committed
# (the changelog sends of their state), or None when they must be fetched again.
BatchHandler = Callable[[TP, Sequence[Record]], Awaitable[Awaitable[Any] | None]]

# Decided batches per partition whose changelog sends may still be in flight; the fetch
# loop waits for the oldest beyond this, so the pipeline never holds more than this.
MAX_IN_FLIGHT = 4

# A record for ``Producer.send_batches``: topic, key, value, partition.
RawRecord = tuple[str, bytes, bytes | None, int]

# A produce batch's size limit, the producer's ``max_batch_size`` (FraudApp sets it): larger
# than aiokafka's default (16 KiB) so that a decided batch's records for one partition go
# out as one, and below Kafka's default message size limit (1 MiB). A second builder for a
# partition waits until the first leaves for the broker (aiokafka's add_batch), so builders
# should rarely fill. A record larger than this goes alone; one larger than the broker's
# limit is refused as it was record by record (the batch fails, the consumer seeks back
# and /healthz sees the stall).
PRODUCE_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Sent:
    """Records handed to the producer for one partition; ``acknowledged`` resolves to the
    first record's metadata (its offset) once Kafka has them all."""

    topic: str
    partition: int
    records: int
    acknowledged: Awaitable[Any]


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A decided batch of offsets ``first``..``last``; ``acknowledged`` resolves to whether
    its offsets were acknowledged."""

    first: int
    last: int
    acknowledged: asyncio.Task[bool]


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def still_a_member(self, offsets: dict[TP, int]) -> bool:
        """Commit ``offsets`` (what the group has committed already: a no-op) in the
        consumer's thread; the coordinator refuses it from a member it has expelled."""
        result: bool = await self.call_thread(self._commit_unchanged, offsets)
        return result

    async def _commit_unchanged(self, offsets: dict[TP, int]) -> bool:
        consumer = self._ensure_consumer()
        try:
            await consumer.commit(
                {
                    faust_aiokafka.ensure_aiokafka_TP(tp): OffsetAndMetadata(offset, "")
                    for tp, offset in offsets.items()
                }
            )
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            log.warning("the group did not confirm this worker's generation: %r", exc)
            return False
        return True

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            # aiokafka reads it in start(); a release that renames it must fail loudly here,
            # not silently bring back the 1.5 s wait.
            raise RuntimeError("aiokafka's consumer has no _fetch_max_wait_ms to set")
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_max_wait_ms", 1500))
        # Faust passes no fetch_min_bytes (aiokafka's default: 1 byte).
        consumer._fetch_min_bytes = int(getattr(self.app, "fetch_min_bytes", 1))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per partition, the batches decided but not yet acknowledged, oldest first.
        self._in_flight: defaultdict[TP, deque[_InFlight]] = defaultdict(deque)
        # Per partition, the first offset of the earliest batch that must be decided again
        # (its state is not in Kafka): no batch past it counts until it comes again.
        self._refetch_from: dict[TP, int] = {}
        # The generation whose seek to the committed offsets is done (see _hand_over).
        self._sought_generation: int | None = None

    async def on_stop(self) -> None:
        # A clean stop commits what Kafka already holds: let batches in flight finish first.
        in_flight = [b.acknowledged for batches in self._in_flight.values() for b in batches]
        if in_flight:
            await asyncio.wait(in_flight, timeout=10)
        await super().on_stop()

    async def perform_seek(self) -> None:
        generation = self.app.consumer_generation_id
        await super().perform_seek()
        self._start_generation(generation)

    def _start_generation(self, generation: int) -> None:
        """Faust has sought every assigned partition to its committed offset: what was in
        flight before counts for nothing now, and nothing of the new generation waits for
        it (its acknowledgements are refused as another generation's)."""
        self._sought_generation = generation
        self._in_flight = defaultdict(deque)
        self._refetch_from = {}

    async def still_a_member(self) -> bool:
        """Whether the group still counts this worker in its generation, asked of the
        coordinator (after a pause: ``app.worker.liveness``). With no committed offset to
        re-commit (a group that never committed) it cannot be asked: then True."""
        assigned = self.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._committed_offset.items()
            if offset is not None and tp in assigned
        }
        if not offsets:
            log.warning("no committed offset to confirm this worker's generation with")
            return True
        thread = cast(ConsumerThread, self._thread)
        return await thread.still_a_member(offsets)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
        # Faust's signature (the fetch timeout it passes on to aiokafka), hence the name.
        fetched, active = await super()._wait_next_records(timeout)
        records = cast(dict[TP, list[Any]] | None, fetched)
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        if not records or not handlers:
            return records, active
        batches = [(tp, records.pop(tp)) for tp in [tp for tp in records if tp.topic in handlers]]
        # Side by side: while one partition's batch awaits its alerts' acknowledgements,
        # the others are decided. The fetch loop goes on when all of them are handed over.
        outcomes = await asyncio.gather(
            *(
                self._hand_over(handlers[tp.topic], tp, batch, active)
                for tp, batch in batches
                if batch
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return records, active

    async def _hand_over(
        self, handler: BatchHandler, tp: TP, batch: Sequence[Any], active: Any
    ) -> None:
        generation = self.app.consumer_generation_id
        first, last = batch[0].offset, batch[-1].offset
        sent: Awaitable[Any] | None = None
        refetch = self._refetch_from.get(tp)
        if refetch is not None and self._sought_generation == generation:
            if first > refetch:
                # An earlier batch must come again first: this one was fetched before the
                # seek back took hold (the consumer thread fetches ahead). Deciding it would
                # let its acknowledgement cover the earlier batch's offsets.
                await self._seek_back(tp, refetch)
                return
            if last >= refetch:
                # The failed batch comes again; what follows waits for it (in flight), and
                # a second failure sets this again.
                del self._refetch_from[tp]
        if self._sought_generation != generation:
            # Faust resumes the partitions a moment before it seeks them to their committed
            # offsets (Recovery._resume_streams). A batch fetched in between would be
            # decided and then fetched and decided again after the seek: leave it for
            # later. It may also have been fetched after the seek, before perform_seek
            # returned here: seek back to it, or nothing would fetch it again.
            await self._seek_back(tp, first)
            return
        servable = active is None or tp in active or tp in self._buffered_partitions
        if servable and not self.should_stop and self.still_ours(generation):
            try:
                sent = await handler(tp, batch)
            except Exception:
                # The handler dead-letters what it cannot handle; this is a bug or an
                # outage. The batch is fetched again, and /healthz sees the stall.
                log.exception("batch of %s[%d] from offset %d failed", *tp, first)
        if not self.still_ours(generation):
            # A rebalance began: the acknowledgements of revoked partitions are gone, and
            # Faust seeks every assigned partition to its committed offset before it
            # resumes (Recovery._resume_streams), so this batch comes again if still ours.
            return
        if sent is None:
            await self._fetch_again(tp, first)
            return
        in_flight = self._in_flight[tp]
        # It waits for the newest batch in flight that ends before it. One that does not
        # (a batch past a failure, still in flight) is superseded by this batch, which is
        # the failed one come again: waiting for it would chain each replay to the last.
        previous = next((b.acknowledged for b in reversed(in_flight) if b.last < first), None)
        task = asyncio.ensure_future(
            self._acknowledge_when_sent(tp, first, last, sent, previous, generation)
        )
        entry = _InFlight(first, last, task)
        in_flight.append(entry)
        task.add_done_callback(lambda _: in_flight.remove(entry))
        while len(in_flight) > MAX_IN_FLIGHT:
            await asyncio.wait({in_flight[0].acknowledged})

    async def _acknowledge_when_sent(
        self,
        tp: TP,
        first: int,
        last: int,
        sent: Awaitable[Any],
        previous: asyncio.Task[bool] | None,
        generation: int,
    ) -> bool:
        """Acknowledge ``first``..``last`` once the batch's sends and every earlier batch of
        the partition are done; True if it did."""
        earlier_done = previous is None or await previous
        try:
            await sent
        except Exception:
            log.exception("state of %s[%d] %d..%d not written to its changelog", *tp, first, last)
            if self.still_ours(generation):
                await self._fetch_again(tp, first)
            return False
        # An earlier batch that failed has sought the partition back to itself or before:
        # this one comes again with it.
        if not earlier_done or not self.still_ours(generation):
            return False
        self._acknowledge_range(tp, first, last)
        return True

    async def _fetch_again(self, tp: TP, first: int) -> None:
        """The batch from ``first`` must be decided again: no later batch may count before
        it, and the partition is sought back to the earliest such batch."""
        refetch = min(first, self._refetch_from.get(tp, first))
        self._refetch_from[tp] = refetch
        await self._seek_back(tp, refetch)

    def still_ours(self, generation: int) -> bool:
        """No rebalance since ``generation``: the partitions assigned then are still this
        worker's, their state may be written and their acknowledgements still count. The
        batch's commit (app.worker.checkpoint) and the acknowledgements ask the same.

        Faust stops the flow both when a rebalance begins (before the new generation is
        known) and when the worker stops; only the first makes acknowledgements unsafe. On
        a graceful stop the batches in flight still count, so a deploy does not replay them.
        """
        if generation != self.app.consumer_generation_id:
            return False
        return bool(self.flow_active or self.app.should_stop)

    async def _seek_back(self, tp: TP, offset: int) -> None:
        try:
            # In the consumer's own thread: Faust's ``seek`` calls aiokafka from this one,
            # racing the fetcher, which then crashed the worker on a KeyError of its
            # fetched records (seen with changelog writes refused under load).
            await self.seek_wait({tp: offset})
        except Exception:
            log.warning("could not seek %s[%d] back to %d", *tp, offset, exc_info=True)

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


class Producer(faust_aiokafka.Producer):
    async def send_batches(self, records: Sequence[RawRecord]) -> list[Sent]:
        """Hand records straight to the aiokafka producer, without Faust's per-message
        FutureMessage, sensors and callbacks: each partition's records as one produce batch
        (aiokafka's ``send_batch``), since a send per record (a future, a partitioner call
        and the accumulator's bookkeeping each) cost more than the rest of a forwarded
        payment's path. Await every ``Sent`` before the source offsets count. Not for
        transactions (exactly-once sends go through Faust's ``send``)."""
        kafka = self._ensure_producer()
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for topic, key, value, partition in records:
            by_partition.setdefault((topic, partition), []).append((key, value))
        sent: list[Sent] = []
        for (topic, partition), pairs in by_partition.items():
            builder, count = kafka.create_batch(), 0
            for key, value in pairs:
                if builder.append(key=key, value=value, timestamp=None) is None:
                    sent.append(await self._send_batch(kafka, builder, topic, partition, count))
                    builder, count = kafka.create_batch(), 0
                    # A builder always takes its first record, whatever its size.
                    builder.append(key=key, value=value, timestamp=None)
                count += 1
            sent.append(await self._send_batch(kafka, builder, topic, partition, count))
        return sent

    @staticmethod
    async def _send_batch(kafka: Any, builder: Any, topic: str, partition: int, count: int) -> Sent:
        # Closed, the batch is complete: the sender takes it at once instead of lingering
        # (linger_ms) for records that would only come from other sends.
        builder.close()
        return Sent(
            topic, partition, count, await kafka.send_batch(builder, topic, partition=partition)
        )


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer
    Producer: ClassVar[Any] = Producer
