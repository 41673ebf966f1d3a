"""Aggregate rules: enough qualifying payments on one key within a window.

Per key the rule keeps its *pool*: qualifying events not yet used by an alert, sorted by
event time. Invariant after every event: no event-time interval of length ``window`` holds
unused pool events whose aggregate meets the threshold. When a new event breaks it, some
run of pool events that contains it (contiguous in event-time order, spanning at most
``window``) meets the threshold; the earliest such run becomes one alert and leaves the
pool. Every aggregate is monotone (count, sum of non-negative amounts, distinct count), so
consuming any run that holds the new event restores the invariant; see
``app.detection.engine`` for the properties that gives.
"""

from __future__ import annotations

import bisect
from decimal import Decimal

from app.detection.aggregates import Entry
from app.detection.kinds.base import Context, make_alert
from app.detection.models import Alert, Payment
from app.detection.rules import AggregateRule, Rule
from app.detection.state import RuleState, SlidingWindow


class AggregateKind:
    def state(self, rule: Rule, held: RuleState | None) -> RuleState:
        return RuleState(version=rule.version) if held is None else held

    def apply(
        self,
        rule: Rule,
        rule_state: RuleState,
        payment: Payment,
        fingerprint: str,
        ctx: Context,
    ) -> Alert | None:
        assert isinstance(rule, AggregateRule)
        used = _pool_and_match(rule, rule_state, payment, fingerprint)
        if used is None:
            return None
        return make_alert(rule, ctx, used, payment, str(rule.aggregate.value(used)))


KIND = AggregateKind()


def _meets(rule: AggregateRule, value: Decimal) -> bool:
    return value >= rule.threshold if rule.threshold_op == ">=" else value > rule.threshold


def _find_run(rule: AggregateRule, rule_state: RuleState, index: int) -> tuple[int, int] | None:
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
            sliding = rule_state.window = SlidingWindow(lo, rule.aggregate.window())
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


def _shortest_end(rule: AggregateRule, pool: list[Entry], first: int, index: int) -> int:
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


def _pool_and_match(
    rule: AggregateRule, rule_state: RuleState, payment: Payment, fingerprint: str
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
