"""Sequence rules: payments matching steps in event-time order on one key, within a window.

A *chain* for a rule with steps ``s_0 .. s_{k-1}`` is k events of the key ``c_0 < c_1 < ...
< c_{k-1}`` in event-time order (ties broken by ``txn_id``), where ``c_i`` passes step
``i``'s filter (read with the events ``c_0 .. c_{i-1}`` for conditions on earlier steps)
and ``c_{k-1}`` is at most ``window`` after ``c_0``. Other events may come between the
steps (relaxed contiguity, Flink CEP's ``followedBy``).

Per key the rule keeps its *pool*: the events that may match some step, not yet used by an
alert, in event-time order. Invariant after every event: the pool holds no chain. When a
new event arrives, every chain the pool now holds contains it; the *earliest* of them (the
smallest by its events' event times, step by step) becomes one alert and its events leave
the pool, which restores the invariant (after-match skip past the last event: an event is
in at most one alert of the rule). The same argument as the aggregate rule's gives
soundness, completeness, disjointness and idempotence (``docs/design/engine.md``).

The search (``find_chain``) is a depth-first walk over the pool within a window of the new
event, steps in order and events in event-time order, so the first chain it finds is the
earliest; failures are remembered per (step, start, what later steps read of earlier
ones), which keeps it polynomial. An in-order event that cannot be a last step, the usual
case, costs O(1).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from app.detection.aggregates import Entry
from app.detection.kinds.base import Context, make_alert, own_state
from app.detection.models import Alert, Payment
from app.detection.rules import Rule, SequenceRule
from app.detection.state import RuleState, SequenceState, sequence_info

# What a kept event is rebuilt from: only the rule's kept fields are read.
_BLANK = Payment("", "", "", Decimal(0), "", "", "", "", "", "", "", 0)


class SequenceKind:
    def state(self, rule: Rule, held: RuleState | None) -> RuleState:
        return own_state(SequenceState, rule, held)

    def apply(
        self, rule: Rule, rule_state: RuleState, payment: Payment, fingerprint: str, ctx: Context
    ) -> Alert | None:
        assert isinstance(rule, SequenceRule) and isinstance(rule_state, SequenceState)
        mask = 0
        for i, step in enumerate(rule.steps):
            if step.possible(payment):
                mask |= 1 << i
        kept = [str(payment.field(name)) for name in rule.kept_fields]
        entry: Entry = (
            payment.ts_ms,
            payment.txn_id,
            str(payment.amount),
            payment.country,
            sequence_info(mask, kept),
            fingerprint,
        )
        index = rule_state.insert(entry)
        chain = find_chain(rule, rule_state, index, payment)
        if chain is None:
            return None
        events = [rule_state.pool[i] for i in chain]
        rule_state.mark_used({e[1]: (e[0], e[5]) for e in events})
        return make_alert(
            rule,
            ctx,
            events,
            payment,
            str(len(events)),
            kind=rule.kind,
            steps=tuple(range(1, len(events) + 1)),
        )


KIND = SequenceKind()


def find_chain(
    rule: SequenceRule, state: SequenceState, index: int, payment: Payment
) -> list[int] | None:
    """The earliest chain of ``state.pool`` that holds ``pool[index]`` (``payment``), as
    pool positions in step order; None if there is none."""
    pool = state.pool
    new_ts = pool[index][0]
    hi = bisect.bisect_left(pool, (new_ts + rule.window_ms + 1,))
    last = len(rule.steps) - 1
    if hi == index + 1 and not state.steps_of(pool[index])[0] >> last & 1:
        # Nothing after it within reach: it could only be the last step, and is not.
        return None
    search = _Search(rule, state, index, payment, hi)
    lo = bisect.bisect_left(pool, (new_ts - rule.window_ms,))
    return list(search.chosen) if search.extend(0, lo, False) else None


class _Search:
    """A depth-first walk for the earliest chain holding the new event: steps in order,
    each over the pool's events in event-time order."""

    def __init__(
        self, rule: SequenceRule, state: SequenceState, index: int, payment: Payment, hi: int
    ) -> None:
        self.rule, self.state, self.pool = rule, state, state.pool
        self.index, self.hi = index, hi
        self.last = len(rule.steps) - 1
        self.rebuilt: dict[int, Payment] = {index: payment}
        # Per step s: what the steps from s on read of the events before s, as (earlier
        # step, place of the field among the kept values).
        place = {name: i for i, name in enumerate(rule.kept_fields)}
        self.later_reads = [
            sorted({(j, place[name]) for t in rule.steps[s:] for j, name in t.reads if j < s})
            for s in range(len(rule.steps))
        ]
        # Where a chain cannot be completed: (step, start, whether the new event is in,
        # the first event's time if it bounds what follows, what later steps read).
        self.failed: set[tuple[object, ...]] = set()
        self.chosen: list[int] = []
        # Events after the new one must be within the window of the chain's first.
        self.bounded = hi > index + 1

    def payment_at(self, x: int) -> Payment:
        found = self.rebuilt.get(x)
        if found is None:
            values = self.state.steps_of(self.pool[x])[1]
            fields: dict[str, Any] = {
                name: Decimal(value) if name == "amount" else value
                for name, value in zip(self.rule.kept_fields, values, strict=True)
            }
            found = self.rebuilt[x] = _BLANK._replace(**fields)
        return found

    def candidates(self, s: int, start: int, included: bool) -> Sequence[int]:
        if not included and s == self.last:
            return [self.index] if start <= self.index else []
        return range(start, self.index + 1 if s == 0 else self.hi)

    def fits(self, s: int, x: int) -> bool:
        """Whether event ``x`` passes step ``s`` after the events chosen so far."""
        if not self.state.steps_of(self.pool[x])[0] >> s & 1:
            return False
        step = self.rule.steps[s]
        return not step.refers or step.holds(
            self.payment_at(x), [self.payment_at(c) for c in self.chosen]
        )

    def extend(self, s: int, start: int, included: bool) -> bool:
        """Choose events for steps ``s`` on from position ``start``: True once the chain
        is complete (in ``chosen``), False if no choice completes it."""
        if s > self.last:
            return included
        chosen, pool, steps_of = self.chosen, self.pool, self.state.steps_of
        # The kept values as stored: another spelling of an amount only misses the memo.
        context = tuple(steps_of(pool[chosen[j]])[1][i] for j, i in self.later_reads[s])
        first = pool[chosen[0]][0] if chosen else None
        if not included and s == self.last:
            # Only the new event can be the last step, and whether it is depends on what
            # it reads of the earlier ones alone (it is within the window of any first).
            key: tuple[object, ...] = (s, start <= self.index, context)
        else:
            key = (s, start, included, first if self.bounded else None, context)
        if key in self.failed:
            return False
        for x in self.candidates(s, start, included):
            if not included and x > self.index:
                break  # the new event can no longer be part of it
            if first is not None and pool[x][0] > first + self.rule.window_ms:
                break
            if self.fits(s, x):
                chosen.append(x)
                if self.extend(s + 1, x + 1, included or x == self.index):
                    return True
                chosen.pop()
        self.failed.add(key)
        return False
