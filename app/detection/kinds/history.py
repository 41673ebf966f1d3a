"""History rules: a payment compared with its key's own earlier payments.

A payment alerts when it passes the rule's filter, the key has at least ``min_earlier``
earlier payments in its history, and its amount compares (``op``) with ``factor`` times the
statistic of their amounts: ``amount > 10 * avg(amount)``. The comparison is exact: an
average is compared as ``amount * n`` against ``factor * sum``. Every payment of the key is
history, whether or not it passes the filter, and a payment that alerted stays history for
the next. As for first-seen rules, a payment is decided at once on the payments the key has
received (``docs/reference/rule-format.md#history``).

A payment's history is the key's payments received before it that come before it in event
time (ties by ``txn_id``) at or after the start of its window *rounded down to the rule's
bucket* (``HistoryRule.bucket_ms``, a sixtieth of the window): with ``w`` the bucket width,
``ts >= (payment.ts - window) // w * w``. So every payment within the window counts, and so
do those of the window's oldest bucket before its start (at most ``w`` older).

The key's state (``HistoryState``) keeps the payments within the lateness one by one and
folds older ones into buckets of ``w`` (count, sum, max): at most ``window / w + 2``
buckets, and a decision reads the pooled payments of the lateness and a few buckets, not
every payment of the window.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from app.detection.aggregates import Entry, Maximum
from app.detection.kinds.base import Context, make_alert, own_state
from app.detection.models import Alert, Payment
from app.detection.rules import HistoryRule, Rule
from app.detection.state import HistoryState, RuleState

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_CENT = Decimal("0.01")


class HistoryKind:
    def state(self, rule: Rule, held: RuleState | None) -> RuleState:
        assert isinstance(rule, HistoryRule)
        rule_state = own_state(HistoryState, rule, held)
        assert isinstance(rule_state, HistoryState)
        if not rule_state.width_ms:  # new, or stored before buckets
            rule_state.width_ms = rule.bucket_ms
        return rule_state

    def apply(
        self, rule: Rule, rule_state: RuleState, payment: Payment, fingerprint: str, ctx: Context
    ) -> Alert | None:
        assert isinstance(rule, HistoryRule) and isinstance(rule_state, HistoryState)
        found = compare(rule, rule_state, payment) if rule.alerts_on(payment) else None
        entry: Entry = (
            payment.ts_ms,
            payment.txn_id,
            str(payment.amount),
            payment.country,
            "",
            fingerprint,
        )
        rule_state.insert(entry)
        if found is None:
            return None
        value, earlier = found
        rule_state.mark_used({payment.txn_id: (payment.ts_ms, fingerprint)})
        return make_alert(
            rule,
            ctx,
            [entry],
            payment,
            value,
            kind=rule.kind,
            explanation=(
                ("statistic", rule.statistic.text),
                ("value", value),
                ("earlier_payments", str(earlier)),
                ("compared", f"amount {rule.op} {rule.factor} * {rule.statistic.text}"),
            ),
        )


KIND = HistoryKind()


def compare(rule: HistoryRule, state: HistoryState, payment: Payment) -> tuple[str, int] | None:
    """(the statistic to the cent, how many earlier payments) if the payment's amount
    compares with the statistic of its history (see the module) as the rule says; None if
    not, or if there are fewer than ``min_earlier`` earlier payments."""
    width = state.width_ms or rule.bucket_ms
    first_index = (payment.ts_ms - rule.window_ms) // width
    count, total, peak = state.folded(first_index)
    pool = state.pool
    before = bisect.bisect_left(pool, (payment.ts_ms, payment.txn_id))
    first = bisect.bisect_left(pool, (first_index * width,))
    count += before - first
    if count < rule.min_earlier:
        return None
    if isinstance(rule.statistic, Maximum):
        for e in pool[first:before]:
            amount = Decimal(e[2])
            if peak is None or amount > peak:
                peak = amount
    else:  # only the sum: from the pool's running sum on a busy key
        total += state.pooled_sum(first, before)
    # A maximum over at least one payment is never None; the other statistics ignore it.
    numerator, denominator = rule.statistic.of(count, total, peak or Decimal(0))
    if not _COMPARE[rule.op](payment.amount * denominator, rule.factor * numerator):
        return None
    value = (numerator / denominator).quantize(_CENT)
    return str(value), count
