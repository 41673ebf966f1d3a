"""app.worker.transport: the fetch wait and the bytes a fetch waits for are settings, and a
batch's offsets are acknowledged so that Faust's own commit arithmetic moves past them."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from app.worker.faust_app import FraudApp, app
from app.worker.settings import load_settings
from app.worker.transport import Consumer, Transport


def built_worker_consumer() -> Any:
    """The aiokafka consumer Faust builds for the worker, as our consumer thread leaves it:
    what aiokafka hands its Fetcher when the consumer starts."""
    assert isinstance(app.transport, Transport)
    assert isinstance(app.consumer, Consumer)

    async def build() -> Any:
        worker_consumer: Any = app.consumer
        thread = worker_consumer._new_consumer_thread()
        return thread._create_worker_consumer(app.transport)

    return asyncio.run(build())


def test_the_worker_consumer_waits_the_configured_time_at_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "fetch_max_wait_ms", 35)
    assert built_worker_consumer()._fetch_max_wait_ms == 35


def test_the_worker_consumer_waits_for_the_configured_bytes_at_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Faust passes no fetch_min_bytes: without the setting aiokafka's 1 byte would make a
    # slow stream's every few payments a fetch, a hand-over and a commit of their own.
    monkeypatch.setattr(app, "fetch_min_bytes", 4096)
    assert built_worker_consumer()._fetch_min_bytes == 4096


def test_the_worker_takes_the_fetch_bytes_from_its_settings() -> None:
    # The class keeps aiokafka's 1 byte; the worker's app object must carry the setting.
    assert FraudApp.fetch_min_bytes == 1
    assert app.fetch_min_bytes == load_settings({}).fetch_min_bytes == 4096


def offsets_of(tp: TP, *, read: int | None, committed: int) -> Any:
    """The consumer's offset bookkeeping, as Faust keeps it, for one partition."""
    monitor = SimpleNamespace(
        tp_read_offsets={}, stream_inbound_time={}, track_tp_end_offset=lambda tp, hw: None
    )
    return SimpleNamespace(
        _read_offset=defaultdict(lambda: None, {} if read is None else {tp: read}),
        _committed_offset=defaultdict(lambda: None, {tp: committed}),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _n_acked=0,
        app=SimpleNamespace(monitor=monitor),
        highwater=lambda tp: 1000,
    )


def test_acknowledged_batches_commit_up_to_their_last_offset_across_holes() -> None:
    # Offsets 100-102 never arrive (compaction, transaction markers): the batches
    # 103..110 and 111..116 must still move the commit, or the partition stalls.
    tp = TP("payments.raw", 2)
    consumer = offsets_of(tp, read=100, committed=100)
    Consumer._acknowledge_range(consumer, tp, 103, 110)
    assert FaustConsumer._new_offset(consumer, tp) == 111
    consumer._committed_offset[tp] = 111
    Consumer._acknowledge_range(consumer, tp, 111, 116)
    assert FaustConsumer._new_offset(consumer, tp) == 117
    assert consumer.app.monitor.tp_read_offsets[tp] == 116  # what the stall watch reads


def test_a_batch_sought_back_is_acknowledged_once_when_it_comes_again() -> None:
    tp = TP("payments.raw", 0)
    consumer = offsets_of(tp, read=None, committed=0)
    Consumer._acknowledge_range(consumer, tp, 0, 19)
    # 20..39 failed and were sought back (Faust's seek sets the read offset to 20) ...
    consumer._read_offset[tp] = 20
    # ... and come again, with 40..49 behind them.
    Consumer._acknowledge_range(consumer, tp, 20, 49)
    assert sorted(consumer._acked[tp]) == list(range(50))
    assert FaustConsumer._new_offset(consumer, tp) == 50


class PipelinedConsumer:
    """The consumer's hand-over and acknowledgement, on Faust's offset bookkeeping."""

    _hand_over: Any = Consumer._hand_over
    _acknowledge_when_sent: Any = Consumer._acknowledge_when_sent
    _acknowledge_range: Any = Consumer._acknowledge_range
    still_ours: Any = Consumer.still_ours
    _seek_back: Any = Consumer._seek_back
    _fetch_again: Any = Consumer._fetch_again
    _start_generation: Any = Consumer._start_generation
    app: Any

    def __init__(self, tp: TP) -> None:
        self.__dict__.update(vars(offsets_of(tp, read=None, committed=0)))
        self.app.consumer_generation_id = self._sought_generation = 7
        self.flow_active, self.should_stop = True, False
        self._buffered_partitions: set[TP] = set()
        self._in_flight: defaultdict[TP, Any] = defaultdict(deque)
        self._refetch_from: dict[TP, int] = {}
        self.app.should_stop = False
        self.sought: list[int] = []

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.sought.extend(partitions.values())

    def committable(self, tp: TP) -> int | None:
        return FaustConsumer._new_offset(self, tp)  # type: ignore[arg-type]


def records(first: int, last: int) -> list[Any]:
    return [SimpleNamespace(offset=offset) for offset in range(first, last + 1)]


def test_a_batch_counts_only_once_kafka_holds_its_state_and_in_offset_order() -> None:
    tp = TP("payments.raw", 1)

    async def scenario() -> tuple[list[int | None], list[int]]:
        consumer = PipelinedConsumer(tp)
        loop = asyncio.get_running_loop()
        first_sent, second_sent = loop.create_future(), loop.create_future()
        sends = iter([first_sent, second_sent])

        async def handler(tp: TP, messages: Any) -> Any:
            return next(sends)

        await consumer._hand_over(handler, tp, records(0, 9), None)
        await consumer._hand_over(handler, tp, records(10, 19), None)
        seen = [consumer.committable(tp)]  # nothing acknowledged by Kafka yet
        second_sent.set_result(None)
        await asyncio.sleep(0.01)
        seen.append(consumer.committable(tp))  # the later batch waits for the earlier
        first_sent.set_result(None)
        await asyncio.sleep(0.01)
        seen.append(consumer.committable(tp))
        return seen, consumer.sought

    seen, sought = asyncio.run(scenario())
    assert seen == [None, None, 20]
    assert sought == []


def test_a_batch_whose_state_kafka_refused_is_fetched_again_and_later_ones_wait() -> None:
    tp = TP("payments.raw", 3)

    async def scenario() -> tuple[int | None, list[int]]:
        consumer = PipelinedConsumer(tp)
        loop = asyncio.get_running_loop()
        refused, accepted = loop.create_future(), loop.create_future()
        sends = iter([refused, accepted])

        async def handler(tp: TP, messages: Any) -> Any:
            return next(sends)

        await consumer._hand_over(handler, tp, records(0, 9), None)
        await consumer._hand_over(handler, tp, records(10, 19), None)
        accepted.set_result(None)
        refused.set_exception(RuntimeError("changelog partition has no leader"))
        await asyncio.sleep(0.01)
        return consumer.committable(tp), consumer.sought

    committable, sought = asyncio.run(scenario())
    assert committable is None
    assert sought == [0]  # from the first batch Kafka has not acknowledged


def test_a_rebalance_while_the_state_is_in_flight_acknowledges_nothing() -> None:
    tp = TP("payments.raw", 0)

    async def scenario() -> tuple[int | None, list[int]]:
        consumer = PipelinedConsumer(tp)
        sent = asyncio.get_running_loop().create_future()

        async def handler(tp: TP, messages: Any) -> Any:
            return sent

        await consumer._hand_over(handler, tp, records(0, 9), None)
        consumer.app.consumer_generation_id = 8  # Faust seeks to the committed offset
        sent.set_result(None)
        await asyncio.sleep(0.01)
        return consumer.committable(tp), consumer.sought

    assert asyncio.run(scenario()) == (None, [])


def test_a_batch_fetched_before_faust_seeks_to_the_committed_offsets_waits_for_the_seek() -> None:
    # Faust resumes the partitions just before it seeks them to the committed offsets; a
    # batch decided in between would be decided a second time after the seek.
    tp = TP("payments.raw", 2)

    async def scenario() -> tuple[int, int | None, list[int]]:
        consumer = PipelinedConsumer(tp)
        consumer.app.consumer_generation_id = 8  # assigned, not yet sought
        handled = 0

        async def handler(tp: TP, messages: Any) -> Any:
            nonlocal handled
            handled += 1
            return asyncio.sleep(0)

        await consumer._hand_over(handler, tp, records(0, 9), None)
        return handled, consumer.committable(tp), consumer.sought

    assert asyncio.run(scenario()) == (0, None, [0])  # fetched again from its first offset


def refusing_handler(sends: list[Any], handled: list[int]) -> Any:
    """A handler whose n-th batch's changelog sends end as ``sends[n]`` (a future)."""

    async def handler(tp: TP, messages: Any) -> Any:
        handled.append(messages[0].offset)
        return sends[len(handled) - 1]

    return handler


def test_a_replayed_batch_that_fails_again_is_never_committed_past() -> None:
    # 0..9 fails while 10..19 is in flight; the replay of 0..9 fails again behind it. No
    # later batch may then acknowledge 0..9 (the hole before it), whatever comes next.
    tp = TP("payments.raw", 1)

    async def scenario() -> tuple[int | None, list[int], list[int]]:
        consumer = PipelinedConsumer(tp)
        loop = asyncio.get_running_loop()
        sends = [loop.create_future() for _ in range(4)]
        handled: list[int] = []
        handler = refusing_handler(sends, handled)
        await consumer._hand_over(handler, tp, records(0, 9), None)
        await consumer._hand_over(handler, tp, records(10, 19), None)
        sends[0].set_exception(RuntimeError("record too large"))
        await asyncio.sleep(0.01)
        await consumer._hand_over(handler, tp, records(0, 9), None)  # fetched again
        sends[1].set_result(None)
        sends[2].set_exception(RuntimeError("record too large"))
        await asyncio.sleep(0.01)
        # A fetch the consumer thread held before the seek: past the failure.
        await consumer._hand_over(handler, tp, records(20, 29), None)
        for send in sends[3:]:
            if not send.done():
                send.set_result(None)
        await asyncio.sleep(0.01)
        return consumer.committable(tp), consumer.sought, handled

    committable, sought, handled = asyncio.run(scenario())
    assert committable is None, "nothing past the batch Kafka refused twice"
    assert sought[-1] == 0
    assert 20 not in handled, "a batch past an unwritten one is not decided"


def test_a_failed_batch_comes_again_and_is_acknowledged_once_it_is_written() -> None:
    tp = TP("payments.raw", 2)

    async def scenario() -> tuple[int | None, list[int]]:
        consumer = PipelinedConsumer(tp)
        loop = asyncio.get_running_loop()
        sends = [loop.create_future() for _ in range(4)]
        handled: list[int] = []
        handler = refusing_handler(sends, handled)
        await consumer._hand_over(handler, tp, records(0, 9), None)
        await consumer._hand_over(handler, tp, records(10, 19), None)
        sends[0].set_exception(RuntimeError("no leader"))
        await asyncio.sleep(0.01)
        # The replay, while 10..19 (which waited for 0..9) may still be in flight.
        await consumer._hand_over(handler, tp, records(0, 9), None)
        await consumer._hand_over(handler, tp, records(10, 19), None)
        for send in sends:
            if not send.done():
                send.set_result(None)
        await asyncio.sleep(0.01)
        return consumer.committable(tp), handled

    assert asyncio.run(scenario()) == (20, [0, 10, 0, 10])


def test_batches_in_flight_from_before_a_rebalance_do_not_hold_up_the_new_generation() -> None:
    tp = TP("payments.raw", 0)

    async def scenario() -> int | None:
        consumer = PipelinedConsumer(tp)
        loop = asyncio.get_running_loop()
        old, new = loop.create_future(), loop.create_future()
        sends = iter([old, new])

        async def handler(tp: TP, messages: Any) -> Any:
            return next(sends)

        await consumer._hand_over(handler, tp, records(0, 9), None)
        # A rebalance keeps the partition; Faust seeks it to the committed offset (0).
        consumer.app.consumer_generation_id = 8
        consumer._start_generation(8)
        await consumer._hand_over(handler, tp, records(0, 9), None)
        new.set_result(None)  # the old generation's send never completes
        await asyncio.sleep(0.01)
        return consumer.committable(tp)

    assert asyncio.run(scenario()) == 10


def test_a_graceful_stop_acknowledges_the_batches_kafka_holds() -> None:
    # Faust stops the flow when the worker stops, as it does when a rebalance begins; but
    # the generation stays, and what Kafka holds must count, or every deploy replays it.
    tp = TP("payments.raw", 3)

    async def scenario() -> int | None:
        consumer = PipelinedConsumer(tp)
        sent = asyncio.get_running_loop().create_future()

        async def handler(tp: TP, messages: Any) -> Any:
            return sent

        await consumer._hand_over(handler, tp, records(0, 9), None)
        consumer.flow_active, consumer.app.should_stop = False, True
        sent.set_result(None)
        await asyncio.sleep(0.01)
        return consumer.committable(tp)

    assert asyncio.run(scenario()) == 10
