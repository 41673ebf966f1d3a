"""A brute-force reference for the rule semantics, shared by unit and integration tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from app.detection.geo import BORDERS, distance_km, place
from app.detection.models import Alert, Payment, alert_id_for
from app.detection.rules import (
    AbsenceRule,
    AggregateRule,
    FirstSeenRule,
    GeoVelocityRule,
    HistoryRule,
    Rule,
    SequenceRule,
)

# The named lists a condition ``{op: in, value: "@name"}`` reads: name -> value -> the end
# of the entry in event-time milliseconds (None: no end). Tests that use lists fill it with
# what they load into the engine's ``listbook``, and empty it after.
LISTS: dict[str, dict[str, int | None]] = {}


def on_list(name: str, value: Any, ts_ms: int) -> bool:
    """``value`` is on list ``name`` at event time ``ts_ms``; on a BIN list (named ``bins``
    or ``..._bins``) an 8-digit BIN is also on it by its first 6 digits."""
    entries = LISTS.get(name, {})
    candidates = [value]
    if (name == "bins" or name.endswith("_bins")) and len(value) == 8:
        candidates.append(value[:6])
    for candidate in candidates:
        if candidate in entries:
            until = entries[candidate]
            if until is None or ts_ms < until:
                return True
    return False


def _value(field: str, raw: Any) -> Any:
    return Decimal(str(raw)) if field == "amount" else raw


def holds(condition: Mapping[str, Any], payment: Payment, earlier: Sequence[Payment] = ()) -> bool:
    """A filter condition read literally from its JSON, without the compiler; ``earlier``
    are the events a sequence's earlier steps matched."""
    if "any" in condition:
        return any(holds(c, payment, earlier) for c in condition["any"])
    if "all" in condition:
        return all(holds(c, payment, earlier) for c in condition["all"])
    if "not" in condition:
        return not holds(condition["not"], payment, earlier)
    field, op = condition["field"], condition["op"]
    left: Any = payment.field(field)
    right: Any
    if "ref" in condition and condition["ref"].startswith("steps["):
        step, name = condition["ref"].removeprefix("steps[").split("].")
        right = earlier[int(step)].field(name)
    elif "ref" in condition:
        right = payment.field(condition["ref"])
    elif op in ("in", "not in") and isinstance(condition["value"], str):
        name = str(condition["value"]).removeprefix("@")
        return on_list(name, left, payment.ts_ms) == (str(op) == "in")
    elif op in ("in", "not in"):
        members = [_value(field, v) for v in condition["value"]]
        return bool(left in members) == (str(op) == "in")
    else:
        right = _value(field, condition["value"])
    result: bool = {
        "==": left == right,
        "!=": left != right,
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }[op]
    return result


def aggregate(rule: AggregateRule, events: Sequence[Payment]) -> Decimal:
    if rule.aggregate.name == "count":
        return Decimal(len(events))
    if rule.aggregate.name == "sum":
        return sum((e.amount for e in events), Decimal(0))
    field = getattr(rule.aggregate, "field", None)
    assert field is not None, "distinct_count names its field"
    return Decimal(len({e.field(field) for e in events}))


def meets(rule: AggregateRule, value: Decimal) -> bool:
    return value >= rule.threshold if rule.threshold_op == ">=" else value > rule.threshold


def oracle(events: Sequence[Payment], rule: Rule) -> set[tuple[str, tuple[str, ...]]]:
    """Greedy skip-past-last-event matching over events sorted by event time."""
    assert isinstance(rule, AggregateRule)
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


def assert_properties(
    alerts: Sequence[Alert], accepted: Sequence[Payment], rule: Rule, complete: bool = True
) -> None:
    """The rule semantics for any arrival order: every alert of ``rule`` is sound, no event
    is in two of them, and (``complete``) every burst among the ``accepted`` payments holds
    a used event."""
    assert isinstance(rule, AggregateRule)
    by_txn = {p.txn_id: p for p in accepted}
    mine = [a for a in alerts if a.rule_id == rule.rule_id]
    used: set[str] = set()
    for alert in mine:
        events = [by_txn[t] for t in alert.txn_ids]
        # Sound.
        assert all(rule.qualifies(e) for e in events)
        assert {e.card_id for e in events} == {alert.group_key}
        assert max(e.ts_ms for e in events) - min(e.ts_ms for e in events) <= rule.window_ms
        assert meets(rule, aggregate(rule, events))
        assert alert.alert_id == alert_id_for(
            rule.rule_id, rule.version, alert.group_key, list(alert.txn_ids)
        )
        # Disjoint.
        assert used.isdisjoint(alert.txn_ids), "an event triggered two alerts"
        used.update(alert.txn_ids)
    if not complete:
        return
    # Complete: any window [s, s + W] whose events meet the threshold holds a used event.
    qualifying = [p for p in by_txn.values() if rule.qualifies(p)]
    for start in qualifying:
        inside = [
            p
            for p in qualifying
            if p.card_id == start.card_id and start.ts_ms <= p.ts_ms <= start.ts_ms + rule.window_ms
        ]
        if meets(rule, aggregate(rule, inside)):
            assert used & {p.txn_id for p in inside}, f"missed burst starting {start.ts}"


# ------------------------------------------------------------------------ sequence rules

Chain = tuple[Payment, ...]


def _order(p: Payment) -> tuple[int, str]:
    return (p.ts_ms, p.txn_id)


def chains(rule: Rule, events: Sequence[Payment]) -> list[Chain]:
    """Every chain of ``events`` (one key's): events in event-time order, each passing its
    step read literally from the rule's JSON, the last at most the window after the
    first. All of them, by brute force."""
    assert isinstance(rule, SequenceRule)
    steps = [step["filter"] for step in rule.to_json()["steps"]]
    ordered = sorted(events, key=_order)
    found: list[Chain] = []

    def extend(chain: Chain, start: int) -> None:
        if len(chain) == len(steps):
            found.append(chain)
            return
        for i in range(start, len(ordered)):
            p = ordered[i]
            if chain and p.ts_ms - chain[0].ts_ms > rule.window_ms:
                break
            if all(holds(c, p, chain) for c in steps[len(chain)]):
                extend((*chain, p), i + 1)

    extend((), 0)
    return found


def sequence_oracle(arrivals: Sequence[Payment], rule: Rule) -> list[tuple[str, tuple[str, ...]]]:
    """The sequence rule's alerts, (card, txn ids), for payments decided in ``arrivals``
    order (none of them late): after each payment, the earliest chain among the card's
    payments not yet in an alert becomes an alert. A redelivered txn id changes nothing."""
    found: list[tuple[str, tuple[str, ...]]] = []
    unused: dict[str, list[Payment]] = {}
    seen: set[tuple[str, str]] = set()
    for p in arrivals:
        if (p.card_id, p.txn_id) in seen:
            continue
        seen.add((p.card_id, p.txn_id))
        pool = unused.setdefault(p.card_id, [])
        pool.append(p)
        every = chains(rule, pool)
        if every:
            earliest = min(every, key=lambda chain: [_order(e) for e in chain])
            found.append((p.card_id, tuple(e.txn_id for e in earliest)))
            unused[p.card_id] = [e for e in pool if e not in earliest]
    return found


def assert_sequence_properties(
    alerts: Sequence[Alert], accepted: Sequence[Payment], rule: Rule, complete: bool = True
) -> None:
    """What holds whatever the arrival order: each alert is a chain of one key with its
    id; no event is in two alerts; (``complete``) every chain among the accepted payments
    holds an event of some alert."""
    by_txn = {p.txn_id: p for p in accepted}
    used: set[str] = set()
    for alert in (a for a in alerts if a.rule_id == rule.rule_id):
        events = tuple(by_txn[t] for t in alert.txn_ids)
        assert {e.card_id for e in events} == {alert.group_key}
        assert list(events) == sorted(events, key=_order), "txn ids in event-time order"
        assert chains(rule, events) == [events], "a chain, step by step"
        assert alert.steps == tuple(range(1, len(events) + 1))
        assert alert.alert_id == alert_id_for(
            rule.rule_id, rule.version, alert.group_key, list(alert.txn_ids)
        )
        assert used.isdisjoint(alert.txn_ids), "an event in two alerts"
        used.update(alert.txn_ids)
    if not complete:
        return
    for card in {p.card_id for p in by_txn.values()}:
        for chain in chains(rule, [p for p in by_txn.values() if p.card_id == card]):
            assert used & {e.txn_id for e in chain}, f"missed chain {[e.txn_id for e in chain]}"


# ---------------------------------------------------------------------- first-seen rules


def _earlier(p: Payment, others: Sequence[Payment], window_ms: int) -> list[Payment]:
    """The payments of ``others`` within the window before ``p`` in event time."""
    return [q for q in others if _order(q) < _order(p) and q.ts_ms >= p.ts_ms - window_ms]


def _received(
    arrivals: Sequence[Payment], rule: Rule
) -> Iterator[tuple[str, Payment, list[Payment]]]:
    """(key, payment, the key's payments received before it) for each payment of
    ``arrivals`` but redeliveries."""
    received: dict[str, list[Payment]] = {}
    for p in arrivals:
        key = rule.group_key(p)
        before = received.setdefault(key, [])
        if any(q.txn_id == p.txn_id for q in before):
            continue
        yield key, p, list(before)
        before.append(p)


def first_seen_oracle(arrivals: Sequence[Payment], rule: Rule) -> list[tuple[str, str]]:
    """The first-seen rule's alerts, (key, txn id), for payments decided in ``arrivals``
    order (none late): a payment alerts when it passes the filter (read literally from the
    rule's JSON) and the key's payments received before it hold some within the window
    before it in event time, none with its value. A redelivered txn id changes nothing."""
    assert isinstance(rule, FirstSeenRule)
    conditions = rule.to_json()["filter"]
    found: list[tuple[str, str]] = []
    for key, p, before in _received(arrivals, rule):
        earlier = _earlier(p, before, rule.window_ms)
        value = p.field(rule.field)
        if (
            all(holds(c, p) for c in conditions)
            and earlier
            and all(q.field(rule.field) != value for q in earlier)
        ):
            found.append((key, p.txn_id))
    return found


def assert_first_seen_properties(
    alerts: Sequence[Alert], arrivals: Sequence[Payment], rule: Rule
) -> None:
    """What holds whatever the arrival order (``arrivals``: the accepted payments as they
    arrived): every alert is one payment that passes the filter, with the field's value and
    id; no payment alerts twice; and every payment new in event time (no payment of the
    key, received at any time, has its value within the window before it) whose key had
    received another within the window before it when it arrived, alerted."""
    assert isinstance(rule, FirstSeenRule)
    conditions = rule.to_json()["filter"]
    by_txn = {p.txn_id: p for p in arrivals}
    mine = [a for a in alerts if a.rule_id == rule.rule_id]
    alerted = [a.txn_ids[0] for a in mine]
    assert len(alerted) == len(set(alerted)), "a payment alerted twice"
    for alert in mine:
        (txn_id,) = alert.txn_ids
        p = by_txn[txn_id]
        assert all(holds(c, p) for c in conditions)
        assert rule.group_key(p) == alert.group_key and alert.kind == "first_seen"
        assert dict(alert.explanation)["value"] == p.field(rule.field)
        assert alert.alert_id == alert_id_for(rule.rule_id, rule.version, alert.group_key, [txn_id])
    firsts: dict[str, int] = {}
    for i, p in enumerate(arrivals):
        firsts.setdefault(p.txn_id, i)
    for txn_id, i in firsts.items():
        p = arrivals[i]
        key = rule.group_key(p)
        same_key = [q for q in arrivals if rule.group_key(q) == key]
        everything = _earlier(p, same_key, rule.window_ms)
        received = _earlier(
            p, [q for q in arrivals[:i] if rule.group_key(q) == key], rule.window_ms
        )
        new = all(q.field(rule.field) != p.field(rule.field) for q in everything)
        if new and received and all(holds(c, p) for c in conditions):
            assert txn_id in alerted, f"missed first {rule.field} {p.field(rule.field)}"


# ------------------------------------------------------------------------- history rules


def _statistic(name: str, amounts: list[Decimal]) -> Fraction:
    """A statistic of amounts in exact rationals."""
    exact = [Fraction(a) for a in amounts]
    if name == "avg(amount)":
        return sum(exact, Fraction(0)) / len(exact)
    if name == "max(amount)":
        return max(exact)
    assert name == "sum(amount)"
    return sum(exact, Fraction(0))


def history_bucket_ms(window_s: float) -> int:
    """The width of a history rule's buckets as the rule format states it: a sixtieth of the
    window in whole seconds, at least one."""
    return max(1, int(window_s) // 60) * 1000


def history_oracle(arrivals: Sequence[Payment], rule: Rule) -> list[tuple[str, str]]:
    """The history rule's alerts, (key, txn id), for payments decided in ``arrivals`` order
    (none late): a payment alerts when it passes the filter (read from the rule's JSON) and
    the key's payments received before it hold at least ``min_earlier`` that come before it
    in event time (ties by txn id) at or after the start of its window rounded down to the
    bucket width (``ts >= (p.ts - window) // width * width``), whose statistic, in exact
    rationals, compares with its amount. A redelivered txn id changes nothing."""
    assert isinstance(rule, HistoryRule)
    body = rule.to_json()
    width = history_bucket_ms(body["window"])
    window_ms = int(Fraction(str(body["window"])) * 1000)
    found: list[tuple[str, str]] = []
    for key, p, before in _received(arrivals, rule):
        start = (p.ts_ms - window_ms) // width * width
        amounts = [q.amount for q in before if _order(q) < _order(p) and q.ts_ms >= start]
        if all(holds(c, p) for c in body["filter"]) and len(amounts) >= body["min_earlier"]:
            bound = Fraction(body["factor"]) * _statistic(body["statistic"], amounts)
            amount = Fraction(p.amount)
            compared = {
                ">": amount > bound,
                ">=": amount >= bound,
                "<": amount < bound,
                "<=": amount <= bound,
            }[body["op"]]
            if compared:
                found.append((key, p.txn_id))
    return found


# -------------------------------------------------------------------- geo-velocity rules


def _geo_impossible(rule: GeoVelocityRule, a: Payment, b: Payment) -> bool:
    """Two events (``a`` first) at most the window apart, at least the minimum distance
    apart, and further than the speed covers in the time between them (floats, as km are)."""
    here, there = place(a), place(b)
    assert here is not None and there is not None
    by_centroid = a.lat is None or b.lat is None
    if by_centroid and (a.country == b.country or b.country in BORDERS.get(a.country, ())):
        return False  # a centroid cannot tell them apart
    elapsed = b.ts_ms - a.ts_ms
    distance = distance_km(here, there)
    return (
        elapsed <= rule.window_ms
        and distance >= float(rule.min_distance_km)
        and distance > float(rule.max_speed_kmh) * (elapsed / 3_600_000)
    )


def geo_velocity_oracle(
    arrivals: Sequence[Payment], rule: Rule
) -> list[tuple[str, tuple[str, str]]]:
    """The geo-velocity rule's alerts, (key, (earlier txn id, later txn id)), for events
    decided in ``arrivals`` order (none late), from scratch for each: sort the key's
    qualifying events received so far, find the new one's neighbours by scanning, and alert
    on the earlier neighbour pair, else the later, that is impossible with neither event in
    an alert already. A redelivered txn id changes nothing."""
    assert isinstance(rule, GeoVelocityRule)
    received: dict[str, list[Payment]] = {}
    used: set[str] = set()
    found: list[tuple[str, tuple[str, str]]] = []
    for p in arrivals:
        if not rule.qualifies(p):
            continue
        key = rule.group_key(p)
        events = received.setdefault(key, [])
        if any(q.txn_id == p.txn_id for q in events):
            continue
        events.append(p)
        ordered = sorted(events, key=_order)
        i = next(n for n, q in enumerate(ordered) if q.txn_id == p.txn_id)
        for a, b in ((i - 1, i), (i, i + 1)):
            if a < 0 or b >= len(ordered):
                continue
            first, second = ordered[a], ordered[b]
            if first.txn_id in used or second.txn_id in used:
                continue
            if _geo_impossible(rule, first, second):
                used.update((first.txn_id, second.txn_id))
                found.append((key, (first.txn_id, second.txn_id)))
                break
    return found


def assert_geo_velocity_properties(
    alerts: Sequence[Alert], accepted: Sequence[Payment], rule: Rule
) -> None:
    """Whatever the arrival order: every alert is an impossible pair of qualifying events of
    one key with the id of its events; no event is in two alerts; every impossible pair of
    neighbours in the final event-time order has an event in an alert; and with no minimum
    distance and every event at its own position, so has some event between any two
    impossible events within the window."""
    assert isinstance(rule, GeoVelocityRule)
    by_txn = {p.txn_id: p for p in accepted}
    used: set[str] = set()
    for alert in (a for a in alerts if a.rule_id == rule.rule_id):
        first, second = (by_txn[t] for t in alert.txn_ids)
        assert rule.qualifies(first) and rule.qualifies(second)
        assert rule.group_key(first) == rule.group_key(second) == alert.group_key
        assert _order(first) < _order(second) and _geo_impossible(rule, first, second)
        assert alert.alert_id == alert_id_for(
            rule.rule_id, rule.version, alert.group_key, list(alert.txn_ids)
        )
        assert used.isdisjoint(alert.txn_ids), "an event in two alerts"
        used.update(alert.txn_ids)
    by_key: dict[str, list[Payment]] = {}
    for p in by_txn.values():
        if rule.qualifies(p):
            by_key.setdefault(rule.group_key(p), []).append(p)
    for events in by_key.values():
        ordered = sorted(events, key=_order)
        for a, b in itertools.pairwise(ordered):
            if _geo_impossible(rule, a, b):
                assert {a.txn_id, b.txn_id} & used, f"missed {a.txn_id} -> {b.txn_id}"
        if rule.min_distance_km or any(p.lat is None for p in ordered):
            continue
        for i, a in enumerate(ordered):
            for j in range(i + 1, len(ordered)):
                if _geo_impossible(rule, a, ordered[j]):
                    between = {q.txn_id for q in ordered[i : j + 1]}
                    assert between & used, f"missed {a.txn_id} -> {ordered[j].txn_id}"


# ------------------------------------------------------------------------- absence rules


def absence_oracle(
    arrivals: Sequence[Payment], rule: Rule, lateness_ms: int
) -> list[tuple[str, str]]:
    """The absence rule's alerts, sorted (key, A's txn id), for payments decided in
    ``arrivals`` order on one partition (none late). The partition's clock at arrival ``i``
    is the newest event time of ``arrivals[:i + 1]``. An A (a payment passing ``filter``,
    read literally from the rule's JSON) alerts at the first arrival after it whose clock is
    past ``A.ts + window + lateness``, unless a B (another payment of its key passing
    ``not_followed_by`` with ``A.ts <= B.ts <= A.ts + window``) arrived before that. A
    redelivered txn id changes nothing."""
    assert isinstance(rule, AbsenceRule)
    body = rule.to_json()
    first: dict[str, int] = {}
    for i, p in enumerate(arrivals):
        first.setdefault(p.txn_id, i)
    clocks: list[int] = []
    for p in arrivals:
        clocks.append(max(p.ts_ms, clocks[-1]) if clocks else p.ts_ms)
    found: list[tuple[str, str]] = []
    for txn_id, j in first.items():
        a = arrivals[j]
        if not all(holds(c, a) for c in body["filter"]):
            continue
        due = a.ts_ms + rule.window_ms + lateness_ms
        fired = next((i for i in range(j + 1, len(arrivals)) if clocks[i] > due), None)
        if fired is None:
            continue
        followed = any(
            i < fired
            and b.txn_id != txn_id
            and rule.group_key(b) == rule.group_key(a)
            and a.ts_ms <= b.ts_ms <= a.ts_ms + rule.window_ms
            and all(holds(c, b) for c in body["not_followed_by"])
            for b, i in ((arrivals[i], i) for i in first.values())
        )
        if not followed:
            found.append((rule.group_key(a), txn_id))
    return sorted(found)
