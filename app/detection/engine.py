"""Exact sliding-window burst detection, pure and synchronous.

Per group key we keep the *pool*: qualifying events not yet used by an alert,
sorted by event time. Invariant after every event: no event-time interval of
length ``window`` holds unused pool events whose aggregate meets the threshold.
When a new event breaks the invariant, some run of pool events that contains it
(contiguous in event-time order, spanning at most ``window``) meets the
threshold; we consume the earliest such run as one alert. Because every
aggregate is monotone (count, sum of non-negative amounts, distinct count),
consuming any run that contains the new event restores the invariant, which
gives the architecture's four properties:

* sound: an alert's events pass the filter, share the key, span <= window;
* complete: an interval with enough qualifying events cannot survive the
  invariant, so one of its events was used by an alert;
* disjoint: used events leave the pool;
* idempotent: a redelivered ``txn_id`` is recognised and changes nothing. Each
  event carries a fingerprint of its content: the same ``txn_id`` with other content
  is no redelivery, and is reported as a conflict instead of being evaluated.

Events older than the key's newest event time by more than the allowed
lateness are *late*: reported, never evaluated (but a redelivery of an event the key
still holds is a duplicate, however old: a replay after a takeover finds a clock that
moved on since the event was decided). Pool entries older than
``newest - lateness - window`` can never share a window with a future
non-late event, so they are dropped; this bounds the state by event time.

No key may cost more per payment as its history grows. An event that arrives in
event-time order costs amortised O(1) plus a binary search (the window's aggregate
slides forward with it); one from the past costs O(events within a window of it).
And every key has a hard bound, ``max_key_events``: past it the oldest events are
forgotten (see ``_bound``). That keeps alerts sound and disjoint; completeness then
holds for the events the key still remembers (a burst among forgotten events is
missed), and a redelivery of a forgotten event is evaluated again. Overflows are
counted, so an operator sees which keys hit the bound.

A key's clock (its newest event time) lives in its state, and a key has state
only while some rule holds pool or used events for it. A key without state has
nothing an old event could join, so such an event is evaluated instead of
being dead-lettered as late; it cannot break the properties of the others.
This keeps the common case (a payment that qualifies for no rule, on a card
with no recent qualifying payment) free of any state write.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.detection.aggregates import Entry, Window
from app.detection.models import Alert, Payment, alert_id_for, iso_from_ms
from app.detection.rules import Rule

# How many events (pooled and used, all rules together) one key keeps at most: a busy
# key's cost and the size of its record. With ids of ordinary length an event encodes to
# about 100 bytes; ``fit`` sheds events from a key whose record would still be too large
# (ids of 128 characters that JSON escapes or UTF-8 spells in 4 bytes).
MAX_KEY_EVENTS = 2000
# A key's record must fit Kafka's default message size (1 MiB) with its key and headers.
MAX_STATE_BYTES = 1_000_000


@dataclass(slots=True)
class _SlidingWindow:
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
    window: _SlidingWindow | None = field(default=None, repr=False, compare=False)
    # The aggregate over the whole pool: no window can exceed it (monotone aggregates).
    whole: Window | None = field(default=None, repr=False, compare=False)
    used_oldest: int | None = field(default=None, repr=False, compare=False)

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
        return self._pooled().get(txn_id)

    def holds(self, txn_id: str) -> bool:
        """The event is pooled or used already: a redelivery."""
        return self.fingerprint_of(txn_id) is not None

    def size(self) -> int:
        return len(self.pool) + len(self.used)

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
        self._pooled()[entry[1]] = entry[5]
        if self.whole is not None:
            self.whole.add(entry)
        return index

    def take(self, first: int, end: int) -> list[Entry]:
        """Take ``pool[first:end + 1]`` out of the pool: an alert used those events."""
        run = self.pool[first : end + 1]
        del self.pool[first : end + 1]
        pooled = self._pooled()
        for e in run:
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
            self._drop_oldest_pooled(bisect.bisect_left(pool, (horizon,)))
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
        self._drop_oldest_pooled(pooled)
        if pooled < len(oldest):
            for _, kind, txn_id in oldest:
                if kind == 1:
                    del self.used[txn_id]
            self.used_oldest = None
        self.window = None

    def _drop_oldest_pooled(self, count: int) -> None:
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


def _describe_entry(entry: Entry) -> dict[str, Any]:
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
            "r": {
                rule_id: {"v": s.version, "p": s.pool, "u": s.used}
                for rule_id, s in self.rules.items()
            },
        }
        if self.written_ms is not None:
            body["w"] = self.written_ms
        return body

    def describe(self) -> dict[str, Any]:
        """Readable per rule, for people (the card inspection endpoint)."""
        return {
            rule_id: {
                "version": s.version,
                # Qualifying events not (yet) part of an alert, oldest first.
                "pending": [_describe_entry(entry) for entry in s.pool],
                # Events already consumed by an alert, kept to recognise redeliveries.
                "alerted": [
                    {"txn_id": txn_id, "ts": iso_from_ms(ts), "ts_ms": ts}
                    for txn_id, (ts, _) in sorted(
                        s.used.items(), key=lambda item: (item[1][0], item[0])
                    )
                ],
            }
            for rule_id, s in sorted(self.rules.items())
        }

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> KeyState:
        if not body:
            return cls()
        return cls(
            newest_ts=body["t"],
            written_ms=body.get("w"),
            rules={
                rule_id: RuleState(
                    version=s["v"],
                    pool=[_entry(e) for e in s["p"]],
                    used={t: _used(v) for t, v in s["u"].items()},
                )
                for rule_id, s in body["r"].items()
            },
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    late: bool
    duplicate: bool
    alerts: tuple[Alert, ...]
    changed: bool  # the key's state must be written back (False when it is empty)
    # The txn_id is held already with other content: (held fingerprint, this payment's).
    # Such a payment is not a redelivery and is not evaluated.
    conflict: tuple[str, str] | None = None
    evicted: int = 0  # events forgotten because the key reached its bound


_NOTHING = Verdict(late=False, duplicate=False, alerts=(), changed=False)


def _meets(rule: Rule, value: Decimal) -> bool:
    return value >= rule.threshold if rule.threshold_op == ">=" else value > rule.threshold


def _find_run(rule: Rule, rule_state: RuleState, index: int) -> tuple[int, int] | None:
    """The earliest run ``pool[first:end + 1]`` that holds ``index``, spans at most the
    window and meets the threshold; ``None`` if there is none.

    Every aggregate is monotone, so for a given ``first`` the longest run within the window
    meets the threshold if any does. An event that arrives in event-time order is the
    pool's last: then the only candidate is the whole window behind it, whose value the
    rule state slides forward in amortised O(1). An event from the past (within the
    lateness) slides a fresh window over the runs that may hold it: O(events in reach).
    """
    pool = rule_state.pool
    whole = rule_state.whole
    if whole is None:
        whole = rule_state.whole = rule.aggregate.window()
        for entry in pool:
            whole.add(entry)
    if not _meets(rule, whole.value()):
        # No run can meet the threshold if the whole pool does not: the usual case on a
        # busy key whose events never add up (one card at a device, tiny amounts), and
        # O(1) whatever the arrival order.
        return None
    window_ms = rule.window_ms
    new_ts = pool[index][0]
    lo = bisect.bisect_left(pool, (new_ts - window_ms,))
    if index == len(pool) - 1:
        sliding = rule_state.window
        if sliding is None or sliding.lo > lo:
            sliding = rule_state.window = _SlidingWindow(lo, rule.aggregate.window())
            for entry in pool[lo:]:
                sliding.value.add(entry)
        while sliding.lo < lo:
            sliding.value.remove(pool[sliding.lo])
            sliding.lo += 1
        return (lo, index) if _meets(rule, sliding.value.value()) else None
    reach = rule.aggregate.window()  # over pool[first:end + 1]
    end = lo - 1
    for first in range(lo, index + 1):
        limit = pool[first][0] + window_ms
        while end + 1 < len(pool) and pool[end + 1][0] <= limit:
            end += 1
            reach.add(pool[end])
        if _meets(rule, reach.value()):
            return first, _shortest_end(rule, pool, first, index)
        reach.remove(pool[first])
    return None


def _shortest_end(rule: Rule, pool: list[Entry], first: int, index: int) -> int:
    """The smallest ``end >= index`` whose run from ``first`` meets the threshold (one
    exists: the caller saw the longest run meet it)."""
    run = rule.aggregate.window()
    for entry in pool[first : index + 1]:
        run.add(entry)
    end = index
    while not _meets(rule, run.value()):
        end += 1
        run.add(pool[end])
    return end


def _alert(
    rule: Rule,
    key: str,
    run: Sequence[Entry],
    trigger: Payment,
    produced_at_ms: int,
    detected_at_ms: int,
) -> Alert:
    txn_ids = [e[1] for e in run]
    return Alert(
        alert_id=alert_id_for(rule.rule_id, rule.version, key, txn_ids),
        rule_id=rule.rule_id,
        rule_version=rule.version,
        status="shadow" if rule.status == "shadow" else "active",
        group_by=rule.group_by_name,
        group_key=key,
        txn_ids=tuple(txn_ids),
        amounts=tuple(e[2] for e in run),
        countries=tuple(e[3] for e in run),
        aggregate_value=str(rule.aggregate.value(run)),
        first_event_ts=iso_from_ms(run[0][0]),
        last_event_ts=iso_from_ms(run[-1][0]),
        detected_at=iso_from_ms(detected_at_ms),
        trigger_txn_id=trigger.txn_id,
        trigger_produced_at_ms=produced_at_ms,
        severity=rule.severity,
        description=rule.description,
    )


def _pool_and_match(
    rule: Rule, rule_state: RuleState, payment: Payment, fingerprint: str
) -> list[Entry] | None:
    """Add the payment to the rule's pool; if that makes a run meet the threshold, take the
    earliest such run out of the pool (its events are used) and return it."""
    entry: Entry = (
        payment.ts_ms,
        payment.txn_id,
        str(payment.amount),
        payment.country,
        rule.aggregate.entry_value(payment),
        fingerprint,
    )
    run = _find_run(rule, rule_state, rule_state.insert(entry))
    if run is None:
        return None
    return rule_state.take(*run)


def evaluate(
    state: KeyState,
    payment: Payment,
    key: str,
    rules: Sequence[Rule],
    allowed_lateness_ms: int,
    produced_at_ms: int,
    detected_at_ms: int,
    max_key_events: int = MAX_KEY_EVENTS,
) -> Verdict:
    """Apply one payment to the key's state (mutated in place) and return what it caused.

    ``rules`` must all group by the same fields, the ones ``key`` was built from.
    """
    if _nothing_to_do(state, payment, rules):
        return _NOTHING
    newest = state.newest_ts
    if newest is not None and payment.ts_ms < newest - allowed_lateness_ms:
        # A redelivery this old is a replay (after a takeover the restored clock has moved
        # on since the payment was decided): it changes nothing, and is not dead-lettered.
        if _redelivered(state, payment, rules):
            return Verdict(late=False, duplicate=True, alerts=(), changed=False)
        return Verdict(late=True, duplicate=False, alerts=(), changed=False)
    conflict = _conflict(state, payment, rules)
    if conflict is not None:
        return Verdict(late=False, duplicate=False, alerts=(), changed=False, conflict=conflict)

    clock_moved = newest is None or payment.ts_ms > newest
    if clock_moved:
        state.newest_ts = payment.ts_ms
    alerts, duplicate, changed = _apply_rules(
        state, payment, key, rules, produced_at_ms, detected_at_ms
    )
    changed = changed or clock_moved
    evicted = 0
    if changed:
        _expire(state, rules, allowed_lateness_ms)
        evicted = _bound(state, max_key_events)
    if not state.rules:
        # A key with no pools needs no record: it cannot join a future alert, so the
        # payments that qualify for no rule (almost all of them) cost no state write.
        changed = False
    return Verdict(
        late=False,
        duplicate=duplicate and not alerts,
        alerts=tuple(alerts),
        changed=changed,
        evicted=evicted,
    )


def _apply_rules(
    state: KeyState,
    payment: Payment,
    key: str,
    rules: Sequence[Rule],
    produced_at_ms: int,
    detected_at_ms: int,
) -> tuple[list[Alert], bool, bool]:
    """Pool the payment for every live rule it qualifies for: (alerts, whether some rule
    held it already, whether the state changed)."""
    alerts: list[Alert] = []
    duplicate = changed = False
    fingerprint = ""
    live_rule_ids: set[str] = set()
    for rule in rules:
        if rule.status == "paused":
            continue
        live_rule_ids.add(rule.rule_id)
        rule_state, reset = _state_of_version(state, rule)
        changed = changed or reset
        if not rule.qualifies(payment):
            continue
        if rule_state is None:
            rule_state = state.rules[rule.rule_id] = RuleState(version=rule.version)
        elif rule_state.holds(payment.txn_id):
            duplicate = True
            continue
        fingerprint = fingerprint or payment.fingerprint()
        used = _pool_and_match(rule, rule_state, payment, fingerprint)
        changed = True
        if used is not None:
            alerts.append(_alert(rule, key, used, payment, produced_at_ms, detected_at_ms))
    # Paused or deleted rules keep no state.
    changed = _drop_rules_not_in(state, live_rule_ids) or changed
    return alerts, duplicate, changed


def fit(
    state: KeyState, encode: Callable[[dict[str, Any]], bytes], max_bytes: int = MAX_STATE_BYTES
) -> tuple[bytes, int]:
    """The state encoded, and how many of its oldest events were forgotten to keep the
    encoding within ``max_bytes`` (``encode`` is what the store writes)."""
    raw, shed = encode(state.to_json()), 0
    while len(raw) > max_bytes:
        total = sum(s.size() for s in state.rules.values())
        keep = min(total - 1, int(total * max_bytes / len(raw) * 0.9))
        shed += _bound(state, max(keep, 0))
        raw = encode(state.to_json())
    return raw, shed


def _conflict(state: KeyState, payment: Payment, rules: Sequence[Rule]) -> tuple[str, str] | None:
    """(held, new) fingerprints if a rule holds this txn_id with other content: the id was
    reused, and the payment is no redelivery. One dict lookup per rule on the usual path."""
    fingerprint = ""
    for rule in rules:
        rule_state = state.rules.get(rule.rule_id)
        if rule_state is None or rule_state.version != rule.version:
            continue
        held = rule_state.fingerprint_of(payment.txn_id)
        if not held:  # not held, or held since before fingerprints: a redelivery as ever
            continue
        fingerprint = fingerprint or payment.fingerprint()
        if held != fingerprint:
            return held, fingerprint
    return None


def _redelivered(state: KeyState, payment: Payment, rules: Sequence[Rule]) -> bool:
    """A rule in force holds this txn_id with this content (or from before fingerprints)."""
    fingerprint = ""
    for rule in rules:
        rule_state = state.rules.get(rule.rule_id)
        if rule_state is None or rule_state.version != rule.version:
            continue
        held = rule_state.fingerprint_of(payment.txn_id)
        if held is None:
            continue
        fingerprint = fingerprint or payment.fingerprint()
        if held in ("", fingerprint):
            return True
    return False


def _bound(state: KeyState, max_key_events: int) -> int:
    """Keep the key within ``max_key_events`` events: over it, forget the oldest events of
    the rules holding the most, down to nine tenths of the bound (so that a key at its
    bound pays for a sweep once per tenth of it, not on every payment). How many."""
    total = sum(s.size() for s in state.rules.values())
    if total <= max_key_events:
        return 0
    excess = total - (max_key_events - max_key_events // 10)
    evicted = excess
    while excess > 0:
        by_size = sorted(state.rules.values(), key=RuleState.size, reverse=True)
        largest = by_size[0]
        next_size = by_size[1].size() if len(by_size) > 1 else 0
        count = min(excess, max(1, largest.size() - next_size))
        largest.evict_oldest(count)
        excess -= count
    for rule_id in [r for r, s in state.rules.items() if not s.size()]:
        del state.rules[rule_id]
    return evicted


def _nothing_to_do(state: KeyState, payment: Payment, rules: Sequence[Rule]) -> bool:
    """Nothing pooled for the key and nothing to pool: no state, no alert, and no clock to
    keep (see the module's note on keys without state). Most payments end here."""
    return not state.rules and pools_nowhere(payment, rules)


def pools_nowhere(payment: Payment, rules: Sequence[Rule]) -> bool:
    """No live rule of ``rules`` would pool the payment: on a key without state,
    ``evaluate`` decides nothing and changes nothing."""
    # A loop, not any(genexpr): this runs for every payment, and the generator costs more.
    for rule in rules:  # noqa: SIM110
        if rule.status != "paused" and rule.qualifies(payment):
            return False
    return True


def _state_of_version(state: KeyState, rule: Rule) -> tuple[RuleState | None, bool]:
    """The rule's state if it belongs to the version in force, and whether an older
    version's state was dropped: a new version may filter differently, so its pool
    starts empty."""
    rule_state = state.rules.get(rule.rule_id)
    if rule_state is not None and rule_state.version != rule.version:
        del state.rules[rule.rule_id]
        return None, True
    return rule_state, False


def _drop_rules_not_in(state: KeyState, live_rule_ids: set[str]) -> bool:
    """Forget the state of rules no longer live (paused or deleted); True if any."""
    dead = [rule_id for rule_id in state.rules if rule_id not in live_rule_ids]
    for rule_id in dead:
        del state.rules[rule_id]
    return bool(dead)


def _expire(state: KeyState, rules: Sequence[Rule], allowed_lateness_ms: int) -> None:
    newest = state.newest_ts
    if newest is None:
        return
    windows = {rule.rule_id: rule.window_ms for rule in rules}
    for rule_id, rule_state in state.rules.items():
        reach = allowed_lateness_ms + windows.get(rule_id, 0)
        rule_state.expire(newest - reach, reach // 8)
    for rule_id in [r for r, s in state.rules.items() if not s.pool and not s.used]:
        del state.rules[rule_id]
