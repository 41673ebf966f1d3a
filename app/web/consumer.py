"""What the consumer has read and what waits: per-partition lag and the stall watch.

Faust's consumer knows only the highwater of partitions it fetched; a partition it
never fetches again (after a rebalance gone wrong) looks idle from inside, and so does one
whose group has never committed (nothing says where it starts). So :class:`BrokerOffsets`
asks the broker, with clients of its own, for each assigned partition's log start and end
offsets and the group's committed offset, and :class:`ConsumerWatch` turns lag that does
not move into seconds stalled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.worker.kafka_security import kafka_options

log = logging.getLogger(__name__)

# The assignor's leader topic is Faust bookkeeping, never payments: not lag.
LEADER_TOPIC_SUFFIX = "__assignor-__leader"


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One assigned source partition as the consumer sees it."""

    topic: str
    partition: int
    highwater: int | None  # offset the next produced record will get
    committed: int | None  # next offset to read after a restart
    read: int | None  # newest offset handed to an agent
    lag: int | None  # highwater - committed (records not yet committed)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "highwater": self.highwater,
            "committed": self.committed,
            "read": self.read,
            "lag": self.lag,
        }


@dataclass(frozen=True, slots=True)
class Offsets:
    """What the broker said of the assigned source partitions (by Faust TP)."""

    ends: Mapping[Any, int] = field(default_factory=dict)  # offset of the next record
    starts: Mapping[Any, int] = field(default_factory=dict)  # log start offset
    # The consumer group's committed offset; absent where the group never committed.
    committed: Mapping[Any, int] = field(default_factory=dict)


def _offset(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _newest(*offsets: int | None) -> int | None:
    known = [offset for offset in offsets if offset is not None]
    return max(known) if known else None


def consumer_lag(app: Any, broker: Offsets | None = None) -> list[PartitionLag]:
    """Lag per assigned source partition (changelogs excluded); [] before assignment.

    Reads only what is known already (the consumer's highwater from its last fetch,
    offsets recorded by Faust's monitor, and what :class:`BrokerOffsets` asked of the
    broker in the background), so it never waits on the broker. The broker's answer
    matters: a partition the consumer never fetches has no highwater of its own, and one
    whose group never committed has no committed offset here until its first commit; without
    the broker such stalls would look idle.
    """
    try:
        consumer = app.consumer
        assignment = consumer.assignment()
    except Exception:  # not started yet, or stopping: there is nothing to report
        return []
    broker = broker or Offsets()
    changelogs = set(app.tables.changelog_topics)
    monitor = app.monitor
    committed_by_monitor = monitor.tp_committed_offsets or {}
    read_by_monitor = monitor.tp_read_offsets or {}
    # Offsets committed before this assignment; Faust keeps them (privately) per TP.
    committed_at_start = getattr(consumer, "_committed_offset", {})
    # Where a partition the group never committed starts: its log start offset under
    # "earliest" (the app's setting); under "latest" the end at assignment, unknown here.
    reset = getattr(getattr(app, "conf", None), "consumer_auto_offset_reset", "earliest")
    lags = []
    for tp in sorted(assignment):
        # Changelogs are restored, not consumed; the assignor's leader topic carries no data.
        if tp.topic in changelogs or tp.topic.endswith(LEADER_TOPIC_SUFFIX):
            continue
        try:
            highwater = _offset(consumer.highwater(tp))
        except Exception:
            highwater = None
        highwater = _newest(highwater, _offset(broker.ends.get(tp)))
        # Committed offsets only move forward: the newest any source knows is the one.
        committed = _newest(
            _offset(committed_by_monitor.get(tp)),
            _offset(committed_at_start.get(tp)),
            _offset(broker.committed.get(tp)),
        )
        read = _offset(read_by_monitor.get(tp))
        if committed is not None:
            done: int | None = committed
        elif read is not None:
            done = read + 1
        else:
            done = _offset(broker.starts.get(tp)) if reset == "earliest" else None
        lag = None if highwater is None or done is None else max(0, highwater - done)
        lags.append(PartitionLag(tp.topic, tp.partition, highwater, committed, read, lag))
    return lags


def _by_tp(tps: Sequence[Any], found: Mapping[TopicPartition, int]) -> dict[Any, int]:
    """aiokafka's answer keyed by Faust's TPs."""
    by_name = {(tp.topic, tp.partition): offset for tp, offset in found.items()}
    return {
        tp: by_name[(tp.topic, tp.partition)] for tp in tps if (tp.topic, tp.partition) in by_name
    }


class BrokerOffsets:
    """The broker's offsets of the worker's assigned source partitions (:class:`Offsets`),
    refreshed in the background (``refresh`` every few seconds) by a group-less consumer and
    an admin client of its own."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.latest = Offsets()
        self._consumer: Any = None
        self._admin: Any = None
        self._failing = False

    async def refresh(self, app: Any) -> None:
        try:
            changelogs = set(app.tables.changelog_topics)
            tps = [
                tp
                for tp in app.consumer.assignment()
                if tp.topic not in changelogs and not tp.topic.endswith(LEADER_TOPIC_SUFFIX)
            ]
            group = str(app.conf.id)  # Faust's consumer group is the app id
        except Exception:  # not started yet, or stopping
            return
        if not tps:
            self.latest = Offsets()
            return
        try:
            if self._consumer is None:
                self._consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap, enable_auto_commit=False, **kafka_options()
                )
                await self._consumer.start()
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap, **kafka_options()
                )
                await self._admin.start()
            wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            ends = await self._consumer.end_offsets(wanted)
            starts = await self._consumer.beginning_offsets(wanted)
            found = await self._admin.list_consumer_group_offsets(group, partitions=wanted)
            # The broker answers -1 for a partition the group never committed.
            committed = {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}
            self.latest = Offsets(
                ends=_by_tp(tps, ends), starts=_by_tp(tps, starts), committed=_by_tp(tps, committed)
            )
            self._failing = False
        except Exception as exc:
            # Stale offsets only make a stall look idle for longer; say so once.
            if not self._failing:
                log.warning("cannot read offsets from the broker for the stall watch: %r", exc)
            self._failing = True

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None


@dataclass
class ConsumerWatch:
    """Decides whether the consumer is stalled: records wait but none is decided.

    A partition makes progress when its committed offset moves or nothing is left
    uncommitted; it is stalled for as long as neither happened while records wait. Watching
    the read offset alone misses a worker that read records but never acknowledged them.
    Nothing else counts as progress, whatever holds the partition up: a batch waiting for
    its alerts' acknowledgements or for the rules, a recovery or a rebalance (a rebalance
    keeps the assignment it revokes until the new one arrives, so those partitions stay
    watched). A partition whose lag is unknown (no offsets from the broker yet) is not
    judged, but its clock runs on: not knowing is no progress.
    """

    _progress_at: dict[tuple[str, int], float] = field(default_factory=dict)
    _committed: dict[tuple[str, int], int | None] = field(default_factory=dict)
    # After each observe: seconds stalled of each partition with records waiting.
    stalled: dict[tuple[str, int], float] = field(default_factory=dict)

    def observe(self, lags: Sequence[PartitionLag], now: float) -> float:
        """Update with a fresh reading; returns how long the worst partition is stalled."""
        seen = set()
        stalled = {}
        for lag in lags:
            key = (lag.topic, lag.partition)
            seen.add(key)
            first = key not in self._progress_at
            moved = not first and self._committed.get(key) != lag.committed
            if first or moved or lag.lag == 0:
                self._progress_at[key] = now
            self._committed[key] = lag.committed
            if lag.lag:
                stalled[key] = now - self._progress_at[key]
        for key in [k for k in self._progress_at if k not in seen]:  # revoked partitions
            del self._progress_at[key]
            self._committed.pop(key, None)
        self.stalled = stalled
        return max(stalled.values(), default=0.0)
