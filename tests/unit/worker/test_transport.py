"""app.worker.transport: the fetch wait is a setting, and a batch's offsets are acknowledged
so that Faust's own commit arithmetic moves past them."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from app.worker.faust_app import app
from app.worker.transport import Consumer, Transport


def test_the_worker_consumer_waits_the_configured_time_at_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(app.transport, Transport)
    assert isinstance(app.consumer, Consumer)
    monkeypatch.setattr(app, "fetch_max_wait_ms", 35)

    async def build() -> int:
        worker_consumer: Any = app.consumer
        thread = worker_consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        # What aiokafka hands its Fetcher when the consumer starts.
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == 35


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
