"""Absence rules: a payment A (passing ``filter``) that no payment B (passing
``not_followed_by``) follows on its key within ``window`` (T) of event time.

*Follows*: ``A.ts <= B.ts <= A.ts + T`` and B is another payment (one payment may be an A
and a B: it cancels the other As before it, never itself). A's *deadline* is ``A.ts + T``.

Time. A key that receives nothing more still has to alert, so the clock that decides is
not the key's own but its *partition's*: the newest event time of the payments decided on
the partition so far (``Timers``), which a replay of the partition in offset order
reproduces. Before each payment is applied, every pending A whose ``deadline + lateness``
is behind that clock alerts (``fire_due``): waiting for the allowed lateness past the
deadline lets a B that arrives out of order, within the lateness, still cancel it. A B
that arrives after its A alerted cancels nothing. No wall clock decides anything: on a
partition that receives nothing more, nothing alerts (``docs/reference/rule-format.md``).

Per key the rule keeps (``AbsenceState``) its pending As, the Bs of the lateness and the
window (an A from the past may arrive after its B), and the resolved As for redeliveries.
Applying a payment is a binary search and O(events within its window); alerting a due key
is O(its events).
"""

from __future__ import annotations

import bisect
import heapq
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from app.detection.aggregates import Entry
from app.detection.kinds.base import Context, make_alert, own_state
from app.detection.models import Alert, Payment, iso_from_ms
from app.detection.rules import AbsenceRule, Rule
from app.detection.state import AbsenceState, KeyState, RuleState


class AbsenceKind:
    def state(self, rule: Rule, held: RuleState | None) -> RuleState:
        return own_state(AbsenceState, rule, held)

    def apply(
        self, rule: Rule, rule_state: RuleState, payment: Payment, fingerprint: str, ctx: Context
    ) -> Alert | None:
        """Pool the payment: a B resolves the pending As it follows; an A is pending unless
        a B already held follows it. Never alerts: only time does (``fire_due``)."""
        assert isinstance(rule, AbsenceRule) and isinstance(rule_state, AbsenceState)
        is_a, is_b = rule.is_a(payment), rule.is_b(payment)
        ts, window = payment.ts_ms, rule.window_ms
        if is_b:
            pool = rule_state.pool
            lo = bisect.bisect_left(pool, (ts - window,))
            hi = bisect.bisect_left(pool, (ts + 1,))
            for pending in [e for e in pool[lo:hi] if e[4] != "b" and e[1] != payment.txn_id]:
                rule_state.resolve(pending)
        followed = is_a and _followed(rule_state, payment, window)
        role = ("a" if is_a and not followed else "") + ("b" if is_b else "")
        entry: Entry = (ts, payment.txn_id, str(payment.amount), payment.country, role, fingerprint)
        if role:
            rule_state.insert(entry)
        else:  # an A a B already follows: resolved at once, kept for its redeliveries
            rule_state.used[payment.txn_id] = (ts, fingerprint)
            rule_state.used_oldest = None
        return None


KIND = AbsenceKind()


def _followed(state: AbsenceState, payment: Payment, window: int) -> bool:
    """A B the state holds follows ``payment``."""
    pool = state.pool
    start = bisect.bisect_left(pool, (payment.ts_ms,))
    for e in pool[start:]:
        if e[0] > payment.ts_ms + window:
            return False
        if "b" in e[4] and e[1] != payment.txn_id:
            return True
    return False


def _absence_rules(
    state: KeyState, rules: Iterable[Rule]
) -> Iterable[tuple[AbsenceRule, RuleState]]:
    """The live absence rules holding state of their version in force on the key."""
    for rule in rules:
        if not isinstance(rule, AbsenceRule) or rule.status == "paused":
            continue
        rule_state = state.rules.get(rule.rule_id)
        if rule_state is not None and rule_state.version == rule.version:
            yield rule, rule_state


def next_due(state: KeyState, rules: Sequence[Rule], lateness_ms: int) -> int | None:
    """The earliest partition clock at which ``fire_due`` would alert on the key (it alerts
    once the clock is past this time); None if nothing is pending."""
    held = state.rules
    if not held:
        return None
    due = None
    # ``_absence_rules`` inlined: this runs after every payment a batch decides.
    for rule in rules:
        if not isinstance(rule, AbsenceRule) or rule.status == "paused":
            continue
        rule_state = held.get(rule.rule_id)
        if rule_state is None or rule_state.version != rule.version:
            continue
        for e in rule_state.pool:
            if e[4] != "b":
                at = e[0] + rule.window_ms + lateness_ms
                if due is None or at < due:
                    due = at
                break  # the pool is in event-time order: its first pending A is the earliest
    return due


def fire_due(
    state: KeyState,
    key: str,
    rules: Sequence[Rule],
    clock_ms: int,
    lateness_ms: int,
    produced_at_ms: int,
    detected_at_ms: int,
) -> list[Alert]:
    """Time has reached ``clock_ms`` on the key's partition: the alert of every pending A
    whose deadline plus the lateness is behind it (the state is changed in place: the As
    alerted are resolved). ``produced_at_ms``: the produce time of the payment that moved
    the clock, for the alert's latency."""
    alerts: list[Alert] = []
    ctx = Context(key, produced_at_ms, detected_at_ms)
    for rule, held in list(_absence_rules(state, rules)):
        own = state.rules[rule.rule_id] = KIND.state(rule, held)
        assert isinstance(own, AbsenceState)
        due = [e for e in own.pending() if e[0] + rule.window_ms + lateness_ms < clock_ms]
        for entry in due:
            own.resolve(entry)
            alerts.append(_alert(rule, ctx, entry, clock_ms))
    return alerts


def _alert(rule: AbsenceRule, ctx: Context, entry: Entry, clock_ms: int) -> Alert:
    deadline = entry[0] + rule.window_ms
    expected = json.dumps(
        [c.to_json() for c in rule.not_followed_by], separators=(",", ":"), default=str
    )
    trigger = Payment(entry[1], "", "", Decimal(entry[2]), "", "", "", entry[3], "", "", "", 0)
    return make_alert(
        rule,
        ctx,
        [entry],
        trigger,
        "0",
        kind=rule.kind,
        explanation=(
            ("a_txn_id", entry[1]),
            ("a_ts", iso_from_ms(entry[0])),
            ("deadline", iso_from_ms(deadline)),
            ("not_followed_by", expected),
            ("partition_time", iso_from_ms(clock_ms)),
        ),
    )


@dataclass
class Timers:
    """One partition's event-time clock and the next deadline of each of its keys with a
    pending A, so that time passing visits only the keys whose deadline passed.

    Each such key has an entry in the heap no later than its deadline (``queued``, the
    earliest of its entries). A deadline that moves later (a B resolved the A, the next A
    comes later), what nearly every payment on a busy key does, costs a dict update: the
    key's entry is requeued at its deadline only when it comes up. Entries of keys resolved
    or rescheduled earlier since are skipped when they come up; the heap is rebuilt when it
    holds more than twice the keys with a pending A (plus a constant), which bounds it."""

    clock: int | None = None
    due: dict[str, int] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)
    heap: list[tuple[int, str]] = field(default_factory=list)

    def advance(self, ts_ms: int) -> bool:
        """A payment of ``ts_ms`` was decided on the partition: whether some key may be due
        (``pop_due`` says which)."""
        if self.clock is None or ts_ms > self.clock:
            self.clock = ts_ms
        return bool(self.heap) and self.heap[0][0] < self.clock

    def schedule(self, key: str, due: int | None) -> None:
        """The key's next deadline (None: nothing pending)."""
        if due is None:
            self.due.pop(key, None)
            return
        self.due[key] = due
        queued = self.queued.get(key)
        if queued is not None and queued <= due:
            return  # its entry comes up first, and is requeued then
        self.queued[key] = due
        heapq.heappush(self.heap, (due, key))
        if len(self.heap) > 2 * len(self.due) + 1024:
            self.heap = [(d, k) for k, d in self.due.items()]
            heapq.heapify(self.heap)
            self.queued = dict(self.due)

    def pop_due(self) -> list[str]:
        """The keys due at the clock, each once, in deadline order (then key order);
        forgotten until ``schedule`` names them again."""
        found: list[tuple[int, str]] = []
        heap, clock, queued = self.heap, self.clock, self.queued
        while heap and clock is not None and heap[0][0] < clock:
            at, key = heapq.heappop(heap)
            if queued.get(key) != at:
                continue  # not the key's earliest entry (it came up, or the key was rebuilt)
            del queued[key]
            due = self.due.get(key)
            if due is None:
                continue  # nothing pending any more
            if due < clock:
                del self.due[key]
                found.append((due, key))
            else:  # its deadline moved later since: wait for it
                queued[key] = due
                heapq.heappush(heap, (due, key))
        found.sort()
        return [key for _, key in found]
