"""What every rule kind implements, and the alert they all build the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.detection.aggregates import Entry
from app.detection.models import Alert, Payment, alert_id_for, iso_from_ms
from app.detection.rules import Rule
from app.detection.state import RuleState


@dataclass(frozen=True, slots=True)
class Context:
    """Where and when a payment is decided: what its alerts carry besides its events."""

    key: str
    produced_at_ms: int
    detected_at_ms: int


class Kind(Protocol):
    def state(self, rule: Rule, held: RuleState | None) -> RuleState:
        """The rule's state on the key: ``held`` (of the rule's version) in the kind's own
        type, or a new one if it holds nothing. A plain ``RuleState`` may come from
        ``app.delivery.published`` (the events published alerts used): it is adopted."""
        ...

    def apply(
        self, rule: Rule, rule_state: RuleState, payment: Payment, fingerprint: str, ctx: Context
    ) -> Alert | None:
        """Apply a payment the rule qualifies and does not hold yet; the alert it raises."""
        ...


def own_state(state_type: type[RuleState], rule: Rule, held: RuleState | None) -> RuleState:
    """``Kind.state`` for a kind whose state is ``state_type``: ``held`` if it is one, a new
    one if nothing is held, and a plain state (the events published alerts used) adopted
    with its events."""
    if held is None:
        return state_type(version=rule.version)
    if isinstance(held, state_type):
        return held
    return state_type(version=held.version, pool=held.pool, used=held.used)


def make_alert(
    rule: Rule,
    ctx: Context,
    events: Sequence[Entry],
    trigger: Payment,
    aggregate_value: str,
    **explanation: Any,
) -> Alert:
    """The alert of ``rule`` on ``events`` (in event-time order), raised by ``trigger``. Its
    id is a hash of the rule id, version, key and sorted txn ids, whatever the kind."""
    txn_ids = [e[1] for e in events]
    return Alert(
        alert_id=alert_id_for(rule.rule_id, rule.version, ctx.key, txn_ids),
        rule_id=rule.rule_id,
        rule_version=rule.version,
        status="shadow" if rule.status == "shadow" else "active",
        group_by=rule.group_by_name,
        group_key=ctx.key,
        txn_ids=tuple(txn_ids),
        amounts=tuple(e[2] for e in events),
        countries=tuple(e[3] for e in events),
        aggregate_value=aggregate_value,
        first_event_ts=iso_from_ms(events[0][0]),
        last_event_ts=iso_from_ms(events[-1][0]),
        detected_at=iso_from_ms(ctx.detected_at_ms),
        trigger_txn_id=trigger.txn_id,
        trigger_produced_at_ms=ctx.produced_at_ms,
        severity=rule.severity,
        description=rule.description,
        **explanation,
    )
