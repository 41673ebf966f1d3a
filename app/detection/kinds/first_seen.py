"""First-seen rules: a payment whose value of a field (device, merchant, country, IP...) its
key has not seen within the window before it.

Every payment of the key is an *occurrence* of its value, whether or not it passes the
rule's filter. A payment alerts when it passes the filter, the key has an occurrence within
``[ts - window, ts)`` before it (so a key's first payment, or its first after a silence
longer than the window, sets what is known and does not alert), and none of those
occurrences has its value. "Before it" is event-time order, ties broken by ``txn_id``;
what the key knows is what has arrived, so a payment is decided at once on the payments
received so far (``docs/reference/rule-format.md#first-seen``).

The key's state (``FirstSeenState``) keeps recent occurrences one by one and older ones as
one time per value: a lookup is a dictionary read and a binary search, and the state holds
at most a value per distinct value seen in the window plus the payments of the lateness,
within the key's bound (``MAX_KEY_EVENTS``: past it the values seen longest ago go first).
"""

from __future__ import annotations

import bisect

from app.detection.aggregates import Entry
from app.detection.kinds.base import Context, make_alert, own_state
from app.detection.models import Alert, Payment
from app.detection.rules import FirstSeenRule, Rule
from app.detection.state import FirstSeenState, RuleState


class FirstSeenKind:
    def state(self, rule: Rule, held: RuleState | None) -> RuleState:
        return own_state(FirstSeenState, rule, held)

    def apply(
        self, rule: Rule, rule_state: RuleState, payment: Payment, fingerprint: str, ctx: Context
    ) -> Alert | None:
        assert isinstance(rule, FirstSeenRule) and isinstance(rule_state, FirstSeenState)
        value = str(payment.field(rule.field))
        alerts = rule.alerts_on(payment) and is_new(rule, rule_state, payment, value)
        entry: Entry = (
            payment.ts_ms,
            payment.txn_id,
            str(payment.amount),
            payment.country,
            value,
            fingerprint,
        )
        rule_state.insert(entry)
        if not alerts:
            return None
        rule_state.mark_used({payment.txn_id: (payment.ts_ms, fingerprint)})
        known = str(known_values(rule, rule_state, payment))
        return make_alert(
            rule,
            ctx,
            [entry],
            payment,
            known,
            kind=rule.kind,
            explanation=(("field", rule.field), ("value", value), ("values_known", known)),
        )


KIND = FirstSeenKind()


def is_new(rule: FirstSeenRule, state: FirstSeenState, payment: Payment, value: str) -> bool:
    """The key has seen other values within the window before the payment, and not this one."""
    start = payment.ts_ms - rule.window_ms
    seen_at = state.seen.get(value)
    if seen_at is not None and seen_at >= start:
        return False  # folded occurrences are all before any payment that is not late
    pool = state.pool
    before = bisect.bisect_left(pool, (payment.ts_ms, payment.txn_id))
    first = bisect.bisect_left(pool, (start,))
    for x in range(before - 1, first - 1, -1):  # the latest first: a repeat is usually recent
        if pool[x][4] == value:
            return False
    newest_seen = state.newest_seen()
    return first < before or (newest_seen is not None and newest_seen >= start)


def known_values(rule: FirstSeenRule, state: FirstSeenState, payment: Payment) -> int:
    """How many other values the key had seen within the window before the payment."""
    start = payment.ts_ms - rule.window_ms
    known = {value for value, ts in state.seen.items() if ts >= start}
    before = bisect.bisect_left(state.pool, (payment.ts_ms, payment.txn_id))
    first = bisect.bisect_left(state.pool, (start,))
    known.update(e[4] for e in state.pool[first:before])
    return len(known)
