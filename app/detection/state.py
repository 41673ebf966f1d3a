"""What a key remembers between payments: its clock and each rule's state.

One :class:`KeyState` per group key, stored as JSON in the card or group state table
(``KeyState.to_json`` / ``from_json``, which still reads every older encoding;
``from_bytes`` reads the stored bytes, the batch path's way). Each rule
in force on the key has a :class:`RuleState`: the events it holds in event-time order (its
*pool*) and the events its alerts used. Rule kinds that remember more keep it in a
subclass (tagged ``k`` in the JSON). The decisions are in ``app.detection.engine``; these
classes keep their own bookkeeping consistent.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from app.detection.aggregates import Entry, Window
from app.detection.models import iso_from_ms

# A history rule's bucket of folded payments: [index (ts_ms // width), count, sum, max].
Bucket = list[Any]


@dataclass(slots=True)
class SlidingWindow:
    """The aggregate over ``pool[lo:]``, slid forward as in-order events arrive."""

    lo: int
    value: Window


@dataclass(slots=True)
class RuleState:
    """One rule's events on one key. Only ``version``, ``pool`` and ``used`` are stored;
    the rest is derived on first use and kept up to date by the methods below, which are
    the only writers of the pool."""

    version: int
    pool: list[Entry] = field(default_factory=list)
    # txn_id -> (ts_ms, fingerprint; "" for an event stored before fingerprints)
    used: dict[str, tuple[int, str]] = field(default_factory=dict)
    pooled: dict[str, str] | None = field(default=None, repr=False, compare=False)
    window: SlidingWindow | None = field(default=None, repr=False, compare=False)
    # The aggregate over the whole pool: no window can exceed it (monotone aggregates).
    whole: Window | None = field(default=None, repr=False, compare=False)
    used_oldest: int | None = field(default=None, repr=False, compare=False)
    # The JSON tag of a subclass (a rule kind's own state); "" is a plain rule state.
    kind: ClassVar[str] = ""

    def _pooled(self) -> dict[str, str]:
        """txn_id -> fingerprint of the pooled events."""
        if self.pooled is None:
            self.pooled = {e[1]: e[5] for e in self.pool}
        return self.pooled

    def fingerprint_of(self, txn_id: str) -> str | None:
        """The fingerprint of the event with this id if the rule holds it (pooled or used)."""
        used = self.used.get(txn_id)
        if used is not None:
            return used[1]
        if self.pooled is None and len(self.pool) <= 16:
            # A small pool, as most are once decoded: a scan costs less than its index.
            for e in self.pool:
                if e[1] == txn_id:
                    return e[5]
            return None
        return self._pooled().get(txn_id)

    def holds(self, txn_id: str) -> bool:
        """The event is pooled or used already: a redelivery."""
        return self.fingerprint_of(txn_id) is not None

    def size(self) -> int:
        return len(self.pool) + len(self.used)

    def empty(self) -> bool:
        """Nothing left to remember: the key needs no record for this rule."""
        return not self.pool and not self.used

    def expire_at(self, newest: int, lateness_ms: int, window_ms: int) -> None:
        """Forget what no event that is not late can use any more, the key's newest event
        time being ``newest``."""
        reach = lateness_ms + window_ms
        self.expire(newest - reach, reach // 8)

    def insert(self, entry: Entry) -> int:
        """Pool ``entry`` in event-time order; its index."""
        pool = self.pool
        if not pool or entry > pool[-1]:  # in event-time order: the common case
            index = len(pool)
            pool.append(entry)
            if self.window is not None:
                self.window.value.add(entry)
        else:
            index = bisect.bisect_left(pool, entry)
            pool.insert(index, entry)
            self.window = None
        if self.pooled is not None:
            self.pooled[entry[1]] = entry[5]
        if self.whole is not None:
            self.whole.add(entry)
        return index

    def take(self, first: int, end: int) -> list[Entry]:
        """Take ``pool[first:end + 1]`` out of the pool: an alert used those events."""
        run = self.pool[first : end + 1]
        del self.pool[first : end + 1]
        pooled = self.pooled
        for e in run:
            if pooled is not None:
                del pooled[e[1]]
            if self.whole is not None:
                self.whole.remove(e)
        self.mark_used({e[1]: (e[0], e[5]) for e in run})
        return run

    def mark_used(self, used: dict[str, tuple[int, str]]) -> None:
        """These events are used by an alert: none of them stays pooled."""
        pooled = self._pooled()
        if any(txn_id in pooled for txn_id in used):
            if self.whole is not None:
                for e in self.pool:
                    if e[1] in used:
                        self.whole.remove(e)
            self.pool = [e for e in self.pool if e[1] not in used]
            for txn_id in used:
                pooled.pop(txn_id, None)
        self.window = None  # the window's run changed: rebuilt on its next use
        self.used.update(used)
        oldest = min(ts for ts, _ in used.values()) if used else None
        if self.used_oldest is not None and oldest is not None:
            self.used_oldest = min(self.used_oldest, oldest)

    def expire(self, horizon: int, slack: int) -> None:
        """Forget the events older than ``horizon``: none can share a window with a future
        event that is not late. Used events are swept only once the oldest is ``slack``
        past the horizon, so a sweep (which reads them all) is rare on a busy key."""
        pool = self.pool
        if pool and pool[0][0] < horizon:
            self.drop_oldest_pooled(bisect.bisect_left(pool, (horizon,)))
        if self.used:
            if self.used_oldest is None:
                self.used_oldest = min(ts for ts, _ in self.used.values())
            if self.used_oldest < horizon - slack:
                self.used = {t: v for t, v in self.used.items() if v[0] >= horizon}
                self.used_oldest = None

    def evict_oldest(self, count: int) -> None:
        """Forget the ``count`` oldest events, pooled or used: the key is over its bound."""
        oldest = sorted(
            [(e[0], 0, e[1]) for e in self.pool[:count]]
            + [(ts, 1, txn_id) for txn_id, (ts, _) in self.used.items()]
        )[:count]
        pooled = sum(1 for _, kind, _ in oldest if kind == 0)
        self.drop_oldest_pooled(pooled)
        if pooled < len(oldest):
            for _, kind, txn_id in oldest:
                if kind == 1:
                    del self.used[txn_id]
            self.used_oldest = None
        self.window = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"v": self.version, "p": self.pool, "u": self.used}
        if self.kind:
            body["k"] = self.kind
        return body

    def load_extra(self, body: dict[str, Any]) -> None:
        """Read what a subclass stores beside the pool and the used events."""

    def load_body(self, body: _RuleBody) -> None:
        """``load_extra`` from the typed decoding (``KeyState.from_bytes``)."""

    def describe(self) -> dict[str, Any]:
        """Readable, for people (the card inspection endpoint)."""
        return {
            "version": self.version,
            # Qualifying events not (yet) part of an alert, oldest first.
            "pending": [self.describe_entry(entry) for entry in self.pool],
            # Events already consumed by an alert, kept to recognise redeliveries.
            "alerted": [
                {"txn_id": txn_id, "ts": iso_from_ms(ts), "ts_ms": ts}
                for txn_id, (ts, _) in sorted(
                    self.used.items(), key=lambda item: (item[1][0], item[0])
                )
            ],
        }

    def describe_entry(self, entry: Entry) -> dict[str, Any]:
        ts_ms, txn_id, amount, country, distinct, _ = entry
        event: dict[str, Any] = {
            "ts": iso_from_ms(ts_ms),
            "ts_ms": ts_ms,
            "txn_id": txn_id,
            "amount": amount,
            "country": country,
        }
        if distinct:
            event["distinct"] = distinct
        return event

    def drop_oldest_pooled(self, count: int) -> None:
        for e in self.pool[:count]:
            if self.pooled is not None:
                del self.pooled[e[1]]
            if self.whole is not None:
                self.whole.remove(e)
        del self.pool[:count]
        window = self.window
        if window is not None:
            # Expired events are older than any window still to be evaluated.
            window.lo -= count
            if window.lo < 0:
                self.window = None


def _entry(raw: Sequence[Any]) -> Entry:
    # A state stored before fingerprints has 5 fields: its events' fingerprint is unknown.
    ts_ms, txn_id, amount, country, distinct, *rest = raw
    return (ts_ms, txn_id, amount, country, distinct, rest[0] if rest else "")


def _used(raw: Any) -> tuple[int, str]:
    # Stored before fingerprints: the event time alone.
    return (raw, "") if isinstance(raw, int) else (raw[0], raw[1])


@dataclass(slots=True)
class KeyState:
    """Everything one group key needs: its newest event time and each rule's pool; and,
    set by whoever stores it, the wall-clock time it was last written (the store's sweep
    forgets a key by it, as the changelog's retention does)."""

    newest_ts: int | None = None
    rules: dict[str, RuleState] = field(default_factory=dict)
    written_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "t": self.newest_ts,
            "r": {rule_id: s.to_json() for rule_id, s in self.rules.items()},
        }
        if self.written_ms is not None:
            body["w"] = self.written_ms
        return body

    def describe(self) -> dict[str, Any]:
        """Readable per rule, for people (the card inspection endpoint)."""
        return {rule_id: s.describe() for rule_id, s in sorted(self.rules.items())}

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> KeyState:
        if not body:
            return cls()
        return cls(
            newest_ts=body["t"],
            written_ms=body.get("w"),
            rules={rule_id: rule_state_from_json(s) for rule_id, s in body["r"].items()},
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> KeyState:
        """The state stored as ``raw`` (what ``to_json`` encodes; None: no state). Decoded
        straight into typed records: about 30 % less CPU than ``from_json`` on the
        decoded JSON for a card under every rule kind; a state in an older encoding (an
        event without fingerprint, or anything else the current one does not spell) is
        read by ``from_json``."""
        if raw is None:
            return cls()
        try:
            body = _decode_key_body(raw)
        except msgspec.ValidationError:
            return cls.from_json(_decode_json(raw))
        return cls(
            newest_ts=body.t,
            written_ms=body.w,
            rules={rule_id: _rule_state_from_body(s) for rule_id, s in body.r.items()},
        )


@dataclass(slots=True)
class SequenceState(RuleState):
    """A sequence rule's events. The fifth field of a pooled entry says which steps the
    event may match and what the steps that compare with earlier ones need of it: the JSON
    ``[mask, value, ...]``, bit ``i`` of ``mask`` for step ``i``, then the values of the
    rule's kept fields (``SequenceRule.kept_fields``)."""

    kind: ClassVar[str] = "sequence"
    # The fifth fields read so far (many events share one): mask and kept values.
    decoded: dict[str, tuple[int, list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def steps_of(self, entry: Entry) -> tuple[int, list[str]]:
        info = entry[4]
        found = self.decoded.get(info)
        if found is None:
            if len(self.decoded) > 4096:
                self.decoded.clear()
            mask, *values = json.loads(info)
            found = self.decoded[info] = (mask, values)
        return found

    def describe_entry(self, entry: Entry) -> dict[str, Any]:
        ts_ms, txn_id, amount, country, _, _ = entry
        mask = self.steps_of(entry)[0]
        return {
            "ts": iso_from_ms(ts_ms),
            "ts_ms": ts_ms,
            "txn_id": txn_id,
            "amount": amount,
            "country": country,
            # The steps (from 1) it may match.
            "steps": [i + 1 for i in range(mask.bit_length()) if mask >> i & 1],
        }


@dataclass(slots=True)
class KeptState(RuleState):
    """The state of a kind whose pool holds every payment of the key, not only those an
    alert may use: a payment that alerted stays in it, as the history of the next."""

    def mark_used(self, used: dict[str, tuple[int, str]]) -> None:
        """These payments alerted; they stay in the pool."""
        self.used.update(used)
        oldest = min(ts for ts, _ in used.values()) if used else None
        if self.used_oldest is not None and oldest is not None:
            self.used_oldest = min(self.used_oldest, oldest)


@dataclass(slots=True)
class HistoryState(KeptState):
    """A history rule's memory of one key: its recent payments one by one, older ones
    folded into time buckets.

    Payments within the allowed lateness of the key's newest event time stay in the pool,
    one entry each (amount in each), because a payment from the past may still fall
    between them. Older ones are folded into ``buckets``: per bucket of ``width_ms`` of
    event time (aligned on the epoch), ``[index, count, sum, max]`` of their amounts, where
    ``index`` is ``ts_ms // width_ms``. A payment that is not late comes after all of
    them, so that is all it can still ask of them; a bucket whose end is older than
    ``newest - lateness - window`` (rounded down to a bucket) is forgotten. The state is
    then at most ``window / width + 2`` buckets and the payments of the lateness, whatever
    the key's rate. ``used`` holds the payments that alerted, as every rule state's does,
    for as long as a redelivery of them is not late.

    A state stored before buckets (every payment of the window in the pool) loads as is:
    its payments older than the lateness are folded on its next payment."""

    kind: ClassVar[str] = "history"
    buckets: list[Bucket] = field(default_factory=list)
    # The bucket width the buckets were folded with: the rule's (``HistoryRule.bucket_ms``,
    # set by the kind); 0 in a state stored before buckets, until the kind sets it.
    width_ms: int = 0
    # Count and sum over every bucket, derived (None: to be computed).
    totals: tuple[int, Decimal] | None = field(default=None, repr=False, compare=False)
    # (index, max) with decreasing maxima: the max over the buckets from an index on is
    # that of the first with an index at least it; derived (None: to be computed).
    peaks: deque[tuple[int, Decimal]] | None = field(default=None, repr=False, compare=False)
    # Count and sum of the pooled amounts, derived (None: to be computed).
    pooled_totals: tuple[int, Decimal] | None = field(default=None, repr=False, compare=False)

    def size(self) -> int:
        return len(self.pool) + len(self.used) + len(self.buckets)

    def insert(self, entry: Entry) -> int:
        if self.pooled_totals is not None:
            count, total = self.pooled_totals
            self.pooled_totals = (count + 1, total + Decimal(entry[2]))
        return RuleState.insert(self, entry)

    def pooled_sum(self, first: int, end: int) -> Decimal:
        """The sum of ``pool[first:end]``'s amounts: from the pool's running sum when the
        run is most of the pool (a payment in order on a busy key), else summed."""
        pool = self.pool
        if (end - first) * 2 <= len(pool):
            return _amounts(pool[first:end])
        if self.pooled_totals is None:
            self.pooled_totals = (len(pool), _amounts(pool))
        return self.pooled_totals[1] - _amounts(pool[:first]) - _amounts(pool[end:])

    def drop_oldest_pooled(self, count: int) -> None:
        if self.pooled_totals is not None and count:
            gone = _amounts(self.pool[:count])
            self.pooled_totals = (self.pooled_totals[0] - count, self.pooled_totals[1] - gone)
        RuleState.drop_oldest_pooled(self, count)

    def empty(self) -> bool:
        return not self.pool and not self.used and not self.buckets

    def folded(self, first_index: int) -> tuple[int, Decimal, Decimal | None]:
        """(count, sum, max) of the folded payments in the buckets from ``first_index`` on."""
        if self.totals is None:
            self.totals = (
                sum(b[1] for b in self.buckets),
                sum((b[2] for b in self.buckets), Decimal(0)),
            )
        count, total = self.totals
        for b in self.buckets:  # the few oldest, which only the window's start excludes
            if b[0] >= first_index:
                break
            count -= b[1]
            total -= b[2]
        peaks = self._peaks()
        peak = next((m for index, m in peaks if index >= first_index), None)
        return count, total, peak

    def _peaks(self) -> deque[tuple[int, Decimal]]:
        if self.peaks is None:
            self.peaks = deque()
            for b in self.buckets:
                self._push_peak(b[0], b[3])
        return self.peaks

    def _push_peak(self, index: int, peak: Decimal) -> None:
        assert self.peaks is not None
        while self.peaks and self.peaks[-1][1] <= peak:
            self.peaks.pop()
        self.peaks.append((index, peak))

    def expire_at(self, newest: int, lateness_ms: int, window_ms: int) -> None:
        fold = newest - lateness_ms
        pool = self.pool
        width = self.width_ms
        if width and pool and pool[0][0] < fold:
            count = bisect.bisect_left(pool, (fold,))
            buckets = self.buckets
            for e in pool[:count]:  # in event-time order: each goes in the last bucket or after
                index, amount = e[0] // width, Decimal(e[2])
                if buckets and buckets[-1][0] == index:
                    last = buckets[-1]
                    last[1] += 1
                    last[2] += amount
                    last[3] = max(last[3], amount)
                else:
                    buckets.append([index, 1, amount, amount])
                if self.totals is not None:
                    self.totals = (self.totals[0] + 1, self.totals[1] + amount)
                if self.peaks is not None:
                    self._push_peak(index, amount)
            self.drop_oldest_pooled(count)
        if self.buckets and width:
            # No payment that is not late has a window starting in an older bucket.
            first = (fold - window_ms) // width
            if self.buckets[0][0] < first:
                drop = bisect.bisect_left(self.buckets, [first])
                gone = self.buckets[:drop]
                del self.buckets[:drop]
                if self.totals is not None:
                    self.totals = (
                        self.totals[0] - sum(b[1] for b in gone),
                        self.totals[1] - sum((b[2] for b in gone), Decimal(0)),
                    )
                while self.peaks and self.peaks[0][0] < first:
                    self.peaks.popleft()
        # The payments that alerted matter as long as a redelivery is not late.
        self.expire(fold, lateness_ms // 8)

    def evict_oldest(self, count: int) -> None:
        """The oldest buckets go first (they are older than every pooled payment)."""
        drop = min(count, len(self.buckets))
        del self.buckets[:drop]
        self.totals = self.peaks = None
        if count > drop:
            RuleState.evict_oldest(self, count - drop)

    def to_json(self) -> dict[str, Any]:
        body = RuleState.to_json(self)
        if self.width_ms:
            body["bw"] = self.width_ms
        if self.buckets:
            body["b"] = [
                [index, n, str(total), str(peak)] for index, n, total, peak in self.buckets
            ]
        return body

    def load_extra(self, body: dict[str, Any]) -> None:
        self.width_ms = int(body.get("bw", 0))
        self.buckets = [
            [int(index), int(n), Decimal(total), Decimal(peak)]
            for index, n, total, peak in body.get("b", [])
        ]

    def load_body(self, body: _RuleBody) -> None:
        self.width_ms = body.bw
        self.buckets = [
            [index, n, Decimal(total), Decimal(peak)] for index, n, total, peak in body.b
        ]

    def describe(self) -> dict[str, Any]:
        described = RuleState.describe(self)
        # The payments folded before the pending ones, per bucket, oldest first.
        described["buckets"] = [
            {
                "from": iso_from_ms(index * self.width_ms),
                "from_ms": index * self.width_ms,
                "width_ms": self.width_ms,
                "count": n,
                "sum": str(total),
                "max": str(peak),
            }
            for index, n, total, peak in self.buckets
        ]
        return described


@dataclass(slots=True)
class FirstSeenState(KeptState):
    """A first-seen rule's memory of one key: every payment of the key is an occurrence of
    its value of the rule's field (the fifth field of its entry).

    Occurrences within the allowed lateness of the key's newest event time stay in the
    pool, one entry each, because a payment from the past may still fall between them. Older
    ones are folded into ``seen``: per value, the latest event time it was seen at, which is
    all a payment that is not late can still ask of them (it comes after all of them). A
    value not seen since ``newest - lateness - window`` is forgotten. ``used`` holds the
    payments that alerted, as every rule state's does."""

    kind: ClassVar[str] = "first_seen"
    seen: dict[str, int] = field(default_factory=dict)
    # The oldest and the newest time in ``seen``, derived (None: to be computed).
    seen_oldest: int | None = field(default=None, repr=False, compare=False)
    seen_newest: int | None = field(default=None, repr=False, compare=False)

    def size(self) -> int:
        return len(self.pool) + len(self.used) + len(self.seen)

    def empty(self) -> bool:
        return not self.pool and not self.used and not self.seen

    def newest_seen(self) -> int | None:
        """The latest time any folded value was seen at."""
        if self.seen_newest is None and self.seen:
            self.seen_newest = max(self.seen.values())
        return self.seen_newest

    def expire_at(self, newest: int, lateness_ms: int, window_ms: int) -> None:
        fold = newest - lateness_ms
        pool = self.pool
        if pool and pool[0][0] < fold:
            count = bisect.bisect_left(pool, (fold,))
            seen = self.seen
            for ts, _, _, _, value, _ in pool[:count]:
                if seen.get(value, ts - 1) < ts:
                    seen[value] = ts
                    if self.seen_newest is not None:
                        self.seen_newest = max(self.seen_newest, ts)
                    if self.seen_oldest is not None:
                        self.seen_oldest = min(self.seen_oldest, ts)
            self.drop_oldest_pooled(count)
        horizon = fold - window_ms
        if self.seen:
            if self.seen_oldest is None:
                self.seen_oldest = min(self.seen.values())
            # Swept once the oldest is well past the horizon, so rarely on a busy key (a
            # value past it is never asked: a window that is not late starts after it).
            if self.seen_oldest < horizon - (lateness_ms + window_ms) // 8:
                self.seen = {value: ts for value, ts in self.seen.items() if ts >= horizon}
                self.seen_oldest = self.seen_newest = None
        # The payments that alerted matter as long as a redelivery is not late.
        self.expire(fold, lateness_ms // 8)

    def evict_oldest(self, count: int) -> None:
        """The values seen longest ago go first (they are older than every pooled one)."""
        oldest = sorted(self.seen, key=lambda value: self.seen[value])[:count]
        for value in oldest:
            del self.seen[value]
        self.seen_oldest = self.seen_newest = None
        if count > len(oldest):
            RuleState.evict_oldest(self, count - len(oldest))

    def to_json(self) -> dict[str, Any]:
        body = RuleState.to_json(self)
        body["s"] = self.seen
        return body

    def load_extra(self, body: dict[str, Any]) -> None:
        self.seen = dict(body.get("s", {}))

    def load_body(self, body: _RuleBody) -> None:
        self.seen = body.s

    def describe(self) -> dict[str, Any]:
        described = RuleState.describe(self)
        # The values seen before the pending payments, the latest first.
        described["seen"] = [
            {"value": value, "ts": iso_from_ms(ts), "ts_ms": ts}
            for value, ts in sorted(self.seen.items(), key=lambda item: (-item[1], item[0]))
        ]
        return described

    def describe_entry(self, entry: Entry) -> dict[str, Any]:
        event = RuleState.describe_entry(self, entry)
        event["value"] = event.pop("distinct", "")
        return event


def _amounts(entries: Sequence[Entry]) -> Decimal:
    """The sum of the entries' amounts."""
    return sum((Decimal(e[2]) for e in entries), Decimal(0))


def sequence_info(mask: int, values: Sequence[str]) -> str:
    """The fifth field of a sequence rule's entry (see ``SequenceState``)."""
    return json.dumps([mask, *values], separators=(",", ":"))


# Each rule state type by its JSON tag (a state stored without one is a plain RuleState).
STATE_TYPES: dict[str, type[RuleState]] = {
    state_type.kind: state_type
    for state_type in (RuleState, SequenceState, FirstSeenState, HistoryState)
}


class _RuleBody(msgspec.Struct):
    """A stored rule state as the current code writes it (``RuleState.to_json``)."""

    v: int
    p: list[tuple[int, str, str, str, str, str]]
    u: dict[str, tuple[int, str]]
    k: str = ""
    s: dict[str, int] = {}  # FirstSeenState.seen
    bw: int = 0  # HistoryState.width_ms
    b: list[tuple[int, int, str, str]] = []  # HistoryState.buckets, amounts as text


class _KeyBody(msgspec.Struct):
    """A stored key state as the current code writes it (``KeyState.to_json``)."""

    t: int | None
    r: dict[str, _RuleBody]
    w: int | None = None


_decode_key_body: Callable[[bytes], _KeyBody] = msgspec.json.Decoder(_KeyBody).decode
_decode_json: Callable[[bytes], Any] = msgspec.json.Decoder().decode


def _rule_state_from_body(body: _RuleBody) -> RuleState:
    rule_state = STATE_TYPES[body.k](version=body.v, pool=body.p, used=body.u)
    rule_state.load_body(body)
    return rule_state


def rule_state_from_json(body: dict[str, Any]) -> RuleState:
    state_type = STATE_TYPES[body.get("k", "")]
    rule_state = state_type(
        version=body["v"],
        pool=[_entry(e) for e in body["p"]],
        used={t: _used(v) for t, v in body["u"].items()},
    )
    rule_state.load_extra(body)
    return rule_state


@dataclass(slots=True)
class GeoVelocityState(KeptState):
    """A geo-velocity rule's memory of one key: its qualifying events within the window and
    the lateness, each with its place (the fifth field of its entry: ``lat,lon``, or "" for
    its country's centroid), and the
    events its alerts used (which stay in the pool: an event's neighbours are all of the
    key's events, used or not)."""

    kind: ClassVar[str] = "geo_velocity"

    def describe_entry(self, entry: Entry) -> dict[str, Any]:
        event = RuleState.describe_entry(self, entry)
        event["place"] = event.pop("distinct", "")
        return event


STATE_TYPES[GeoVelocityState.kind] = GeoVelocityState


class AbsenceState(RuleState):
    """An absence rule's events on one key. The fifth field of a pooled entry is its role:
    ``a`` a pending A (waiting for its deadline or for a B), ``ab`` a pending A that is a B
    too, ``b`` a B (kept for the lateness and the window, for an A from the past that
    arrives after it). An A that is resolved (followed by a B, or alerted) leaves the pool
    for ``used``, or stays as a ``b`` if it is a B too. Pending As are never expired by the
    key's clock: only their alert (``app.detection.kinds.absence``) or the key's bound
    removes them."""

    kind: ClassVar[str] = "absence"

    def expire_at(self, newest: int, lateness_ms: int, window_ms: int) -> None:
        horizon = newest - lateness_ms - window_ms
        pool = self.pool
        # Swept once the oldest is well past the horizon, so rarely on a busy key: a B kept
        # longer could only follow an A that is late. (With the partition's clock ahead of
        # the key's, a pending A is alerted before the key's clock takes it past here.)
        slack = (lateness_ms + window_ms) // 8
        if pool and pool[0][0] < horizon - slack and any(e[4] == "b" for e in pool):
            kept = [e for e in pool if e[0] >= horizon or e[4] != "b"]
            if len(kept) != len(pool):
                self.pool = kept
                self.pooled = None
        if self.used:
            if self.used_oldest is None:
                self.used_oldest = min(ts for ts, _ in self.used.values())
            if self.used_oldest < horizon - slack:
                self.used = {t: v for t, v in self.used.items() if v[0] >= horizon}
                self.used_oldest = None

    def pending(self) -> list[Entry]:
        """The As still waiting, oldest first."""
        return [e for e in self.pool if e[4] != "b"]

    def resolve(self, entry: Entry) -> None:
        """``entry`` (a pending A) is followed by a B or alerted: it is no longer pending."""
        index = bisect.bisect_left(self.pool, entry)
        assert self.pool[index] == entry
        if entry[4] == "ab":
            self.pool[index] = (*entry[:4], "b", entry[5])
        else:
            del self.pool[index]
            self._pooled().pop(entry[1], None)
            self.used[entry[1]] = (entry[0], entry[5])
            if self.used_oldest is not None:
                self.used_oldest = min(self.used_oldest, entry[0])

    def describe_entry(self, entry: Entry) -> dict[str, Any]:
        event = RuleState.describe_entry(self, entry)
        event["role"] = {"a": "A, pending", "ab": "A, pending; B", "b": "B"}[entry[4]]
        event.pop("distinct", None)
        return event


STATE_TYPES[AbsenceState.kind] = AbsenceState
