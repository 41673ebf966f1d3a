"""The alert ids already on the alerts topic, so a replay does not publish them again.

At-least-once leaves one window: Kafka has an alert but the worker died before it
recorded the state that consumed the alert's events; the replay then evaluates the
same events and produces the same ``alert_id``. Before it evaluates anything after a
(re)start or a rebalance, the worker reads the tail of every alerts partition (more
than a commit interval's worth) and skips publishing an id that is already there.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from aiokafka import AIOKafkaConsumer

from app.rules_admin.topic import topic_partitions
from app.worker.kafka_security import kafka_options

log = logging.getLogger(__name__)


class RecentIds:
    """A bounded set: the newest ``capacity`` ids."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._ids: set[str] = set()
        self._order: deque[str] = deque()
        self._capacity = capacity

    def add(self, item: str) -> None:
        if item in self._ids:
            return
        self._ids.add(item)
        self._order.append(item)
        if len(self._order) > self._capacity:
            self._ids.discard(self._order.popleft())

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)


async def load_tail(
    bootstrap: str, topic: str, into: RecentIds, per_partition: int = 5_000, timeout_s: float = 30
) -> int:
    """Add the keys of the last ``per_partition`` records of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_options()
    )
    await consumer.start()
    loaded = 0
    try:
        partitions = await topic_partitions(bootstrap, topic)
        consumer.assign(partitions)
        begin = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        pending = set()
        for tp in partitions:
            if end[tp] > begin[tp]:
                consumer.seek(tp, max(begin[tp], end[tp] - per_partition))
                pending.add(tp)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for message in messages:
                    if message.key:
                        into.add(message.key.decode(errors="replace"))
                        loaded += 1
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read the tail of {topic!r} in {timeout_s} s")
    finally:
        await consumer.stop()
    log.info("%d recent alert ids loaded from %s", loaded, topic)
    return loaded
