"""History rules: a payment compared with its key's own earlier payments.

A payment alerts when it passes the rule's filter, the key has at least ``min_earlier``
payments within ``[ts - window, ts)`` before it (event-time order, ties by ``txn_id``), and
its amount compares (``op``) with ``factor`` times the statistic of their amounts:
``amount > 10 * avg(amount)``. The comparison is exact: an average is compared as
``amount * n`` against ``factor * sum``. Every payment of the key is history, whether or not
it passes the filter, and a payment that alerted stays history for the next. As for
first-seen rules, a payment is decided at once on the payments the key has received
(``docs/reference/rule-format.md#history``).

The key's state (``HistoryState``) is its payments within the window and the lateness, one
entry each, bounded by the key's bound (``MAX_KEY_EVENTS``: past it the oldest are
forgotten, and the statistic is over the payments remembered). A decision reads the
payments of the window before it: O(payments in the window).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from app.detection.aggregates import Entry
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
        return own_state(HistoryState, rule, held)

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
    compares with the statistic of the key's earlier payments within the window as the
    rule says; None if not, or if there are fewer than ``min_earlier`` of them."""
    pool = state.pool
    before = bisect.bisect_left(pool, (payment.ts_ms, payment.txn_id))
    first = bisect.bisect_left(pool, (payment.ts_ms - rule.window_ms,))
    if before - first < rule.min_earlier:
        return None
    amounts = [Decimal(e[2]) for e in pool[first:before]]
    numerator, denominator = rule.statistic.fraction(amounts)
    if not _COMPARE[rule.op](payment.amount * denominator, rule.factor * numerator):
        return None
    value = (numerator / denominator).quantize(_CENT)
    return str(value), len(amounts)
