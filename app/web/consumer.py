"""What the consumer has read and what waits: per-partition lag and the stall watch.

Faust's consumer knows only the highwater of partitions it fetched; a partition it
never fetches again (after a rebalance gone wrong) looks idle from inside. So
:class:`EndOffsets` asks the broker for end offsets with a consumer of its own, and
:class:`ConsumerWatch` turns lag that does not move into seconds stalled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

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


def _offset(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def consumer_lag(app: Any, end_offsets: Mapping[Any, int] | None = None) -> list[PartitionLag]:
    """Lag per assigned source partition (changelogs excluded); [] before assignment.

    Reads only what is known already (the consumer's highwater from its last fetch,
    offsets recorded by Faust's monitor, and ``end_offsets`` asked of the broker in the
    background by :class:`EndOffsets`), so it never waits on the broker. The broker's
    answer matters: a partition the consumer never fetches has no highwater of its own,
    and without it such a stall would look idle.
    """
    try:
        consumer = app.consumer
        assignment = consumer.assignment()
    except Exception:  # not started yet, or stopping: there is nothing to report
        return []
    changelogs = set(app.tables.changelog_topics)
    monitor = app.monitor
    committed_by_monitor = monitor.tp_committed_offsets or {}
    read_by_monitor = monitor.tp_read_offsets or {}
    # Offsets committed before this assignment; Faust keeps them (privately) per TP.
    committed_at_start = getattr(consumer, "_committed_offset", {})
    lags = []
    for tp in sorted(assignment):
        # Changelogs are restored, not consumed; the assignor's leader topic carries no data.
        if tp.topic in changelogs or tp.topic.endswith(LEADER_TOPIC_SUFFIX):
            continue
        try:
            highwater = _offset(consumer.highwater(tp))
        except Exception:
            highwater = None
        from_broker = _offset((end_offsets or {}).get(tp))
        if from_broker is not None and (highwater is None or from_broker > highwater):
            highwater = from_broker
        committed = _offset(committed_by_monitor.get(tp))
        if committed is None:
            committed = _offset(committed_at_start.get(tp))
        read = _offset(read_by_monitor.get(tp))
        done = committed if committed is not None else (None if read is None else read + 1)
        lag = None if highwater is None or done is None else max(0, highwater - done)
        lags.append(PartitionLag(tp.topic, tp.partition, highwater, committed, read, lag))
    return lags


class EndOffsets:
    """The broker's end offsets of the worker's assigned source partitions, refreshed
    in the background by its own group-less consumer (``refresh`` every few seconds)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.offsets: dict[Any, int] = {}
        self._consumer: Any = None
        self._failing = False

    async def refresh(self, app: Any) -> None:
        try:
            changelogs = set(app.tables.changelog_topics)
            tps = [
                tp
                for tp in app.consumer.assignment()
                if tp.topic not in changelogs and not tp.topic.endswith(LEADER_TOPIC_SUFFIX)
            ]
        except Exception:  # not started yet, or stopping
            return
        try:
            if self._consumer is None:
                self._consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap, enable_auto_commit=False, **kafka_options()
                )
                await self._consumer.start()
            found = await self._consumer.end_offsets(
                [TopicPartition(tp.topic, tp.partition) for tp in tps]
            )
            by_name = {(tp.topic, tp.partition): offset for tp, offset in found.items()}
            self.offsets = {tp: by_name[(tp.topic, tp.partition)] for tp in tps}
            self._failing = False
        except Exception as exc:
            # Stale end offsets only make a stall look idle for longer; say so once.
            if not self._failing:
                log.warning("cannot read end offsets for the stall watch: %r", exc)
            self._failing = True

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


@dataclass
class ConsumerWatch:
    """Decides whether the consumer is stalled: records wait but none is finished.

    A partition makes progress when its committed offset moves or nothing is left
    uncommitted; it is stalled for as long as neither happened. Watching the read
    offset alone misses a worker that read records but never acknowledged them.
    Recovery and rebalances pause the flow on purpose, so they count as progress.
    """

    _progress_at: dict[tuple[str, int], float] = field(default_factory=dict)
    _committed: dict[tuple[str, int], int | None] = field(default_factory=dict)

    def observe(self, lags: Sequence[PartitionLag], now: float, paused: bool = False) -> float:
        """Update with a fresh reading; returns how long the worst partition is stalled."""
        seen = set()
        worst = 0.0
        for lag in lags:
            key = (lag.topic, lag.partition)
            seen.add(key)
            moved = key not in self._committed or self._committed[key] != lag.committed
            idle = lag.lag is None or lag.lag == 0
            if paused or moved or idle or key not in self._progress_at:
                self._progress_at[key] = now
            self._committed[key] = lag.committed
            worst = max(worst, now - self._progress_at[key])
        for key in [k for k in self._progress_at if k not in seen]:  # revoked partitions
            del self._progress_at[key]
            self._committed.pop(key, None)
        return worst
