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

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from app.detection.kinds import KIND_OF, Context
from app.detection.models import Alert, Payment
from app.detection.rules import Rule
from app.detection.state import KeyState, RuleState

__all__ = ["MAX_KEY_EVENTS", "KeyState", "RuleState", "Verdict", "evaluate", "fit", "pools_nowhere"]

# How many events (pooled and used, all rules together) one key keeps at most: a busy
# key's cost and the size of its record. With ids of ordinary length an event encodes to
# about 100 bytes; ``fit`` sheds events from a key whose record would still be too large
# (ids of 128 characters that JSON escapes or UTF-8 spells in 4 bytes).
MAX_KEY_EVENTS = 2000
# A key's record must fit Kafka's default message size (1 MiB) with its key and headers.
MAX_STATE_BYTES = 1_000_000


class Verdict(NamedTuple):
    """What one payment did to its key. A NamedTuple, not a frozen dataclass: one is built
    for every payment evaluated, and a frozen dataclass sets each field through
    ``object.__setattr__`` (about three times the cost)."""

    late: bool
    duplicate: bool
    alerts: tuple[Alert, ...]
    changed: bool  # the key's state must be written back (False when it is empty)
    # The txn_id is held already with other content: (held fingerprint, this payment's).
    # Such a payment is not a redelivery and is not evaluated.
    conflict: tuple[str, str] | None = None
    evicted: int = 0  # events forgotten because the key reached its bound


_NOTHING = Verdict(late=False, duplicate=False, alerts=(), changed=False)


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
        state, payment, rules, (key, produced_at_ms, detected_at_ms)
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
    state: KeyState, payment: Payment, rules: Sequence[Rule], where: tuple[str, int, int]
) -> tuple[list[Alert], bool, bool]:
    """Pool the payment for every live rule it qualifies for: (alerts, whether some rule
    held it already, whether the state changed). ``where`` is the ``Context`` to build if
    some rule takes the payment (most payments on a key with state pool nowhere)."""
    alerts: list[Alert] = []
    duplicate = changed = False
    fingerprint = ""
    ctx: Context | None = None
    live_rule_ids: set[str] = set()
    held = state.rules
    for rule in rules:
        if rule.status == "paused":
            continue
        rule_id = rule.rule_id
        live_rule_ids.add(rule_id)
        # The rule's state if it belongs to the version in force (a loop over every rule,
        # for every payment: inlined).
        rule_state = held.get(rule_id)
        if rule_state is not None and rule_state.version != rule.version:
            del held[rule_id]  # a new version may filter differently: its pool starts empty
            rule_state, changed = None, True
        if not rule.qualifies(payment):
            continue
        if rule_state is not None and rule_state.holds(payment.txn_id):
            duplicate = True
            continue
        kind = KIND_OF[type(rule)]
        rule_state = state.rules[rule.rule_id] = kind.state(rule, rule_state)
        fingerprint = fingerprint or payment.fingerprint()
        ctx = ctx or Context(*where)
        alert = kind.apply(rule, rule_state, payment, fingerprint, ctx)
        changed = True
        if alert is not None:
            alerts.append(alert)
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
    """A rule in force holds this txn_id, and none with other content (``_conflict``)."""
    held = any(
        (rule_state := state.rules.get(rule.rule_id)) is not None
        and rule_state.version == rule.version
        and rule_state.holds(payment.txn_id)
        for rule in rules
    )
    return held and _conflict(state, payment, rules) is None


def _bound(state: KeyState, max_key_events: int) -> int:
    """Keep the key within ``max_key_events`` events: over it, forget the oldest events of
    the rules holding the most, down to nine tenths of the bound (so that a key at its
    bound pays for a sweep once per tenth of it, not on every payment). How many."""
    total = 0
    for rule_state in state.rules.values():  # a loop: a generator costs more, every payment
        total += rule_state.size()
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


def _drop_rules_not_in(state: KeyState, live_rule_ids: set[str]) -> bool:
    """Forget the state of rules no longer live (paused or deleted); True if any."""
    if state.rules.keys() <= live_rule_ids:  # the usual case, without building a list
        return False
    dead = [rule_id for rule_id in state.rules if rule_id not in live_rule_ids]
    for rule_id in dead:
        del state.rules[rule_id]
    return bool(dead)


def _expire(state: KeyState, rules: Sequence[Rule], allowed_lateness_ms: int) -> None:
    newest = state.newest_ts
    if newest is None:
        return
    # After ``_apply_rules`` the key holds states of ``rules`` only (of live rules).
    held = state.rules
    emptied = False
    for rule in rules:
        rule_state = held.get(rule.rule_id)
        if rule_state is not None:
            rule_state.expire_at(newest, allowed_lateness_ms, rule.window_ms)
            emptied = emptied or rule_state.empty()
    if emptied:
        for rule_id in [r for r, s in held.items() if s.empty()]:
            del held[rule_id]
