"""A brute-force reference for the rule semantics, shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from app.detection.models import Payment
from app.detection.rules import Rule


def aggregate(rule: Rule, events: Sequence[Payment]) -> Decimal:
    if rule.aggregate.name == "count":
        return Decimal(len(events))
    if rule.aggregate.name == "sum":
        return sum((e.amount for e in events), Decimal(0))
    field = getattr(rule.aggregate, "field", None)
    assert field is not None, "distinct_count names its field"
    return Decimal(len({e.field(field) for e in events}))


def meets(rule: Rule, value: Decimal) -> bool:
    return value >= rule.threshold if rule.threshold_op == ">=" else value > rule.threshold


def oracle(events: Sequence[Payment], rule: Rule) -> set[tuple[str, tuple[str, ...]]]:
    """Greedy skip-past-last-event matching over events sorted by event time."""
    found: set[tuple[str, tuple[str, ...]]] = set()
    ordered = sorted(events, key=lambda p: (p.ts_ms, p.txn_id))
    for card in sorted({p.card_id for p in ordered}):
        buffer: list[Payment] = []
        for p in (p for p in ordered if p.card_id == card and rule.qualifies(p)):
            buffer = [b for b in buffer if p.ts_ms - b.ts_ms <= rule.window_ms] + [p]
            if meets(rule, aggregate(rule, buffer)):
                found.add((card, tuple(b.txn_id for b in buffer)))
                buffer = []
    return found
