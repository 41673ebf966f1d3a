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
* idempotent: a redelivered ``txn_id`` is recognised and changes nothing.

Events older than the key's newest event time by more than the allowed
lateness are *late*: reported, never evaluated. Pool entries older than
``newest - lateness - window`` can never share a window with a future
non-late event, so they are dropped; this bounds the state.

A key's clock (its newest event time) lives in its state, and a key has state
only while some rule holds pool or used events for it. A key without state has
nothing an old event could join, so such an event is evaluated instead of
being dead-lettered as late; it cannot break the properties of the others.
This keeps the common case (a payment that qualifies for no rule, on a card
with no recent qualifying payment) free of any state write.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.detection.aggregates import Entry
from app.detection.models import Alert, Payment, alert_id_for, iso_from_ms
from app.detection.rules import Rule


@dataclass(slots=True)
class RuleState:
    version: int
    pool: list[Entry] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)  # txn_id -> ts_ms

    def holds(self, txn_id: str) -> bool:
        """The event is pooled or used already: a redelivery."""
        return txn_id in self.used or any(e[1] == txn_id for e in self.pool)


def _describe_entry(entry: Entry) -> dict[str, Any]:
    ts_ms, txn_id, amount, country, distinct = entry
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


@dataclass(slots=True)
class KeyState:
    """Everything one group key needs: its newest event time and each rule's pool."""

    newest_ts: int | None = None
    rules: dict[str, RuleState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.newest_ts,
            "r": {
                rule_id: {"v": s.version, "p": s.pool, "u": s.used}
                for rule_id, s in self.rules.items()
            },
        }

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
                    for txn_id, ts in sorted(s.used.items(), key=lambda item: (item[1], item[0]))
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
            rules={
                rule_id: RuleState(
                    version=s["v"], pool=[tuple(e) for e in s["p"]], used=dict(s["u"])
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


_NOTHING = Verdict(late=False, duplicate=False, alerts=(), changed=False)


def _meets(rule: Rule, value: Decimal) -> bool:
    return value >= rule.threshold if rule.threshold_op == ">=" else value > rule.threshold


def _find_run(rule: Rule, pool: list[Entry], index: int) -> tuple[int, int] | None:
    """The earliest run ``pool[first:end + 1]`` that holds ``index``, spans at most the
    window and meets the threshold; ``None`` if there is none."""
    window = rule.window_ms
    new_ts = pool[index][0]
    start = bisect.bisect_left(pool, (new_ts - window,))
    for first in range(start, index + 1):
        first_ts = pool[first][0]
        # Smallest end >= index within the window that meets the threshold.
        value = rule.aggregate.value(pool[first : index + 1])
        end = index
        if _meets(rule, value):
            return first, end
        if rule.aggregate.one_per_event:
            # Counting grows by one per step: jump straight to the needed end.
            needed = int(rule.threshold) + (1 if rule.threshold_op == ">" else 0)
            end = first + needed - 1
            if end < len(pool) and pool[end][0] - first_ts <= window:
                return first, end
            continue
        end += 1
        while end < len(pool) and pool[end][0] - first_ts <= window:
            if _meets(rule, rule.aggregate.value(pool[first : end + 1])):
                return first, end
            end += 1
    return None


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


def _pool_and_match(rule: Rule, rule_state: RuleState, payment: Payment) -> list[Entry] | None:
    """Add the payment to the rule's pool; if that makes a run meet the threshold, take the
    earliest such run out of the pool (its events are used) and return it."""
    distinct = rule.aggregate.entry_value(payment)
    entry: Entry = (payment.ts_ms, payment.txn_id, str(payment.amount), payment.country, distinct)
    index = bisect.bisect_left(rule_state.pool, entry)
    rule_state.pool.insert(index, entry)
    run = _find_run(rule, rule_state.pool, index)
    if run is None:
        return None
    first, end = run
    used = rule_state.pool[first : end + 1]
    del rule_state.pool[first : end + 1]
    for e in used:
        rule_state.used[e[1]] = e[0]
    return used


def evaluate(
    state: KeyState,
    payment: Payment,
    key: str,
    rules: Sequence[Rule],
    allowed_lateness_ms: int,
    produced_at_ms: int,
    detected_at_ms: int,
) -> Verdict:
    """Apply one payment to the key's state (mutated in place) and return what it caused.

    ``rules`` must all group by the same fields, the ones ``key`` was built from.
    """
    if _nothing_to_do(state, payment, rules):
        return _NOTHING
    newest = state.newest_ts
    if newest is not None and payment.ts_ms < newest - allowed_lateness_ms:
        return Verdict(late=True, duplicate=False, alerts=(), changed=False)

    changed = newest is None or payment.ts_ms > newest
    if changed:
        state.newest_ts = payment.ts_ms

    alerts: list[Alert] = []
    duplicate = False
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
        if rule_state.holds(payment.txn_id):
            duplicate = True
            continue
        used = _pool_and_match(rule, rule_state, payment)
        changed = True
        if used is not None:
            alerts.append(_alert(rule, key, used, payment, produced_at_ms, detected_at_ms))

    # Paused or deleted rules keep no state; surviving state is trimmed by event time.
    changed = _drop_rules_not_in(state, live_rule_ids) or changed
    if changed:
        _expire(state, rules, allowed_lateness_ms)
    if not state.rules:
        # A key with no pools needs no record: it cannot join a future alert, so the
        # payments that qualify for no rule (almost all of them) cost no state write.
        changed = False
    return Verdict(
        late=False, duplicate=duplicate and not alerts, alerts=tuple(alerts), changed=changed
    )


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
        horizon = newest - allowed_lateness_ms - windows.get(rule_id, 0)
        pool = rule_state.pool
        if pool and pool[0][0] < horizon:
            del pool[: bisect.bisect_left(pool, (horizon,))]
        used = rule_state.used
        if used and min(used.values()) < horizon:
            rule_state.used = {t: ts for t, ts in used.items() if ts >= horizon}
    for rule_id in [r for r, s in state.rules.items() if not s.pool and not s.used]:
        del state.rules[rule_id]
