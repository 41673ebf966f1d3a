"""The alert ids already on the alerts topic, so a replay does not publish them again.

At-least-once leaves one window: Kafka has an alert but the worker died before it
recorded the state that consumed the alert's events; the replay then evaluates the
same events and produces the same ``alert_id``. Before it evaluates anything after a
(re)start or a rebalance, the worker reads the tail of every alerts partition (more
than a commit interval's worth) and skips publishing an id that is already there.

The same tail also says which payments those alerts used. A replay can start from a key
state that no longer remembers them: the state that consumed them was written ahead of the
committed offsets, and later payments of the same batch may have expired it entirely (its
record deleted). Replayed from nothing, those payments would be paired again into a second
alert (an event in two alerts of one rule). So a key's state is topped up, before a batch
evaluates it, with the events its rule's published alerts used (``mark_used``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer

from app.detection.engine import KeyState, RuleState
from app.detection.models import Alert, ms_from_iso
from app.detection.rules import Rule
from app.rules_admin.topic import topic_partitions
from app.worker.kafka_security import kafka_options

log = logging.getLogger(__name__)


class RecentIds:
    """A bounded set: the newest ``capacity`` ids."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._ids: set[str] = set()
        self._order: deque[str] = deque()
        self._capacity = capacity

    def add(self, item: str) -> str | None:
        """Add ``item``; the id it pushed out, if any."""
        if item in self._ids:
            return None
        self._ids.add(item)
        self._order.append(item)
        if len(self._order) > self._capacity:
            evicted = self._order.popleft()
            self._ids.discard(evicted)
            return evicted
        return None

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)


# (rule id, group key): a rule's alerts of every version. Events an alert of version 1
# used must not be paired again by version 2 when a batch is replayed across the bump.
UsedKey = tuple[str, str]


class PublishedAlerts(RecentIds):
    """The newest published alert ids, and the events each of them used."""

    def __init__(self, capacity: int = 50_000) -> None:
        super().__init__(capacity)
        self._used: dict[UsedKey, dict[str, int]] = {}
        # group key -> how many keys of _used hold it: most keys have none, and every
        # batch asks for each key it reads.
        self._group_keys: Counter[str] = Counter()
        self._by_id: dict[str, tuple[UsedKey, tuple[str, ...]]] = {}

    def add_alert(self, alert: Alert) -> None:
        self.record(
            alert.alert_id,
            (alert.rule_id, alert.group_key),
            alert.txn_ids,
            ms_from_iso(alert.last_event_ts) or 0,
        )

    def record(self, alert_id: str, key: UsedKey, txn_ids: tuple[str, ...], ts_ms: int) -> None:
        if alert_id in self:
            return
        evicted = self.add(alert_id)
        used = self._used.get(key)
        if used is None:
            used = self._used[key] = {}
            self._group_keys[key[1]] += 1
        for txn_id in txn_ids:
            used[txn_id] = ts_ms
        self._by_id[alert_id] = (key, txn_ids)
        if evicted is not None and evicted in self._by_id:
            old_key, old_txns = self._by_id.pop(evicted)
            old_used = self._used.get(old_key, {})
            for txn_id in old_txns:
                old_used.pop(txn_id, None)
            if not old_used and self._used.pop(old_key, None) is not None:
                self._group_keys[old_key[1]] -= 1
                if not self._group_keys[old_key[1]]:
                    del self._group_keys[old_key[1]]

    def used(self, rule_id: str, group_key: str) -> dict[str, int]:
        """txn id -> event time (the alert's last event's) of events published alerts of
        any version of the rule used."""
        return self._used.get((rule_id, group_key), {})

    def used_for(self, group_key: str) -> bool:
        """Whether a recent alert used events of this key (``mark_used`` has work to do)."""
        return group_key in self._group_keys

    def mark_used(self, state: KeyState, group_key: str, rules: Sequence[Rule]) -> None:
        """Mark in ``state`` as used the events that published alerts of ``rules`` used for
        this key: those it forgot, and those it still pools because it was stored before the
        alert was published (see the module's note)."""
        if not self.used_for(group_key):
            return
        for rule in rules:
            used = self._used.get((rule.rule_id, group_key))
            if not used:
                continue
            rule_state = state.rules.get(rule.rule_id)
            if rule_state is None or rule_state.version != rule.version:
                rule_state = state.rules[rule.rule_id] = RuleState(version=rule.version)
            # The alert topic does not carry fingerprints: "" (any content is a redelivery).
            fresh = {t: (ts, "") for t, ts in used.items() if t not in rule_state.used}
            if not fresh:
                continue
            # An event still pooled in a state stored before the alert was published (a
            # rebalance between the alert and the state write) was used by it all the same.
            rule_state.mark_used(fresh)


def _remember(into: RecentIds, key: bytes, value: bytes | None) -> None:
    alert_id = key.decode(errors="replace")
    if not isinstance(into, PublishedAlerts):
        into.add(alert_id)
        return
    try:
        alert = Alert.from_json(value or b"")
    except (ValueError, KeyError, TypeError):
        into.add(alert_id)  # not an alert we can read; its id still counts
        return
    into.add_alert(alert)


async def load_tail(
    bootstrap: str, topic: str, into: RecentIds, per_partition: int = 5_000, timeout_s: float = 30
) -> int:
    """Add the keys of the last ``per_partition`` records of every partition of ``topic``
    (and, into :class:`PublishedAlerts`, the events each alert used)."""
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
                        _remember(into, message.key, message.value)
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
