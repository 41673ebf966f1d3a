"""Absence rules (app/detection/kinds/absence.py) against a brute-force oracle.

Time passes by the partition's event-time progress: whatever the arrival order within the
allowed lateness, with redeliveries and windows that straddle the deadline, the alerts are
exactly the oracle's for that order (tests/oracle.py), whether the states stay in memory
(the backtest's replay) or go through their JSON between payments (the tables).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.engine import KeyState, evaluate
from app.detection.kinds import absence
from app.detection.models import Alert, Payment, alert_id_for, iso_from_ms
from app.detection.rulebook import RuleBook
from app.detection.rules import AbsenceRule, RuleError, parse_rule
from app.detection.state import AbsenceState
from app.history.backtest import Replay
from app.rules_admin.topic import load_rule_file
from tests import factories
from tests.oracle import absence_oracle
from tests.unit.detection.streams import (
    BASE_MS,
    LATENESS_MS,
    shuffle_within_lateness,
    with_redeliveries,
)

WINDOW_S = 120
WINDOW_MS = WINDOW_S * 1000


def absence_rule(rule_id: str = "no-test-after-large", **more: Any) -> AbsenceRule:
    rule = parse_rule(
        {
            "rule_id": rule_id,
            "version": 1,
            "kind": "absence",
            "window": WINDOW_S,
            # A: a large payment; B: a tiny payment on the same card (and merchant, by key).
            "filter": [{"field": "amount", "op": ">=", "value": "500"}],
            "not_followed_by": [{"field": "amount", "op": "<", "value": "1"}],
            **more,
        }
    )
    assert isinstance(rule, AbsenceRule)
    return rule


RULE = absence_rule()
BY_MERCHANT = absence_rule("by-merchant", group_by=["card_id", "merchant_id"])
# Every payment of 500 or more is an A; one of 800 is a B too.
BOTH = absence_rule(
    "both",
    filter=[{"field": "amount", "op": ">=", "value": "500"}],
    not_followed_by=[
        {
            "any": [
                {"field": "amount", "op": "<", "value": "1"},
                {"field": "amount", "op": "==", "value": "800"},
            ]
        }
    ],
)
RULES = (RULE, BY_MERCHANT, BOTH)

# Steps that land on, just before and just after a deadline and its lateness.
TS_STEPS = [0, 0, 1_000, 30_000, 59_000, 60_000, 61_000, 119_000, 120_000, 121_000, 180_000]


def payment(txn: int, card: str, amount: str, ts_ms: int, **fields: Any) -> Payment:
    return factories.payment(card, f"t{txn:04d}", amount, ts_ms, **fields)


@st.composite
def streams(draw: st.DrawFn, max_size: int = 30) -> list[Payment]:
    """Event-time-ordered payments on 1-2 cards and merchants: large, tiny and other."""
    ts = BASE_MS
    events = []
    for txn in range(draw(st.integers(min_value=0, max_value=max_size))):
        ts += draw(st.sampled_from(TS_STEPS))
        events.append(
            payment(
                txn,
                draw(st.sampled_from(["c1", "c2"])),
                draw(st.sampled_from(["0.5", "10", "500", "800"])),
                ts,
                merchant_id=draw(st.sampled_from(["m1", "m2"])),
            )
        )
    return events


def alerted(alerts: list[Alert]) -> list[tuple[str, str]]:
    return sorted((a.group_key, a.txn_ids[0]) for a in alerts)


def run_tables(arrivals: list[Payment], rule: AbsenceRule) -> list[Alert]:
    """What a worker does: the partition's clock advanced before each payment, due keys
    alerted, every state through its JSON between payments (the RocksDB table)."""
    stored: dict[str, Any] = {}
    timers = absence.Timers()
    alerts: list[Alert] = []
    seen: set[str] = set()

    def load(key: str) -> KeyState:
        return KeyState.from_json(json.loads(json.dumps(stored.get(key))))

    for p in arrivals:
        if timers.advance(p.ts_ms):
            assert timers.clock is not None
            for key in timers.pop_due():
                state = load(key)
                alerts += absence.fire_due(state, key, [rule], timers.clock, LATENESS_MS, 0, 0)
                stored[key] = state.to_json()
                timers.schedule(key, absence.next_due(state, [rule], LATENESS_MS))
        key = rule.group_key(p)
        state = load(key)
        verdict = evaluate(state, p, key, [rule], LATENESS_MS, 0, 0)
        # Only a redelivery may be late: one the rule no longer holds (neither an A nor a B)
        # that arrives more than the lateness behind its key's newest payment.
        assert not verdict.alerts and (not verdict.late or p.txn_id in seen)
        seen.add(p.txn_id)
        stored[key] = state.to_json()
        timers.schedule(key, absence.next_due(state, [rule], LATENESS_MS))
    return alerts


def replay(arrivals: list[Payment], rule: AbsenceRule) -> list[Alert]:
    """The backtest's replay of one partition."""
    return list(Replay(rule, LATENESS_MS).alerts((0, p) for p in arrivals))


def check(arrivals: list[Payment]) -> None:
    for rule in RULES:
        expected = absence_oracle(arrivals, rule, LATENESS_MS)
        replayed = replay(arrivals, rule)
        assert alerted(replayed) == expected
        assert alerted(run_tables(arrivals, rule)) == expected
        for alert in replayed:
            # Sound and deterministic: one A, its id from the rule, the key and the A.
            (txn_id,) = alert.txn_ids
            assert alert.alert_id == alert_id_for(rule.rule_id, 1, alert.group_key, [txn_id])
            assert alert.kind == "absence"


@settings(max_examples=200, deadline=None)
@given(streams())
def test_in_order_streams_alert_exactly_as_the_oracle(events: list[Payment]) -> None:
    check(events)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_any_order_within_lateness_with_redeliveries_alerts_exactly_as_the_oracle(
    events: list[Payment], seed: int
) -> None:
    check(with_redeliveries(shuffle_within_lateness(events, seed), seed))


def test_an_a_not_followed_alerts_once_the_partition_passes_its_deadline() -> None:
    a = payment(1, "c1", "600", BASE_MS)
    # Other cards' payments move the partition's clock; c1 receives nothing more.
    just_before = payment(2, "c9", "10", BASE_MS + WINDOW_MS + LATENESS_MS)
    after = payment(3, "c9", "10", BASE_MS + WINDOW_MS + LATENESS_MS + 1)
    assert replay([a, just_before], RULE) == []
    (alert,) = replay([a, just_before, after], RULE)
    assert alert.txn_ids == ("t0001",) and alert.group_key == "c1"
    explanation = dict(alert.explanation)
    assert explanation["deadline"] == iso_from_ms(BASE_MS + WINDOW_MS)
    assert explanation["partition_time"] == iso_from_ms(after.ts_ms)
    assert explanation["a_txn_id"] == "t0001"
    assert json.loads(explanation["not_followed_by"]) == [
        {"field": "amount", "op": "<", "value": "1"}
    ]
    assert alert.trigger_txn_id == "t0001"


def test_a_b_within_the_window_cancels_and_one_after_it_does_not() -> None:
    a = payment(1, "c1", "600", BASE_MS)
    tick = payment(9, "c9", "10", BASE_MS + WINDOW_MS + LATENESS_MS + 1)
    on_deadline = payment(2, "c1", "0.5", BASE_MS + WINDOW_MS)
    too_late = payment(3, "c1", "0.5", BASE_MS + WINDOW_MS + 1)
    assert replay([a, on_deadline, tick], RULE) == []
    assert len(replay([a, too_late, tick], RULE)) == 1
    # A B that arrives first (out of order, within the lateness) still cancels.
    assert replay([on_deadline, a, tick], RULE) == []
    # A B before the A in event time does not follow it.
    before = payment(4, "c1", "0.5", BASE_MS - 1)
    assert len(replay([before, a, tick], RULE)) == 1


def test_a_late_b_within_the_lateness_cancels_but_not_once_the_a_has_alerted() -> None:
    a = payment(1, "c1", "600", BASE_MS)
    b = payment(2, "c1", "0.5", BASE_MS + 1_000)
    within = payment(8, "c9", "10", BASE_MS + WINDOW_MS + LATENESS_MS)  # clock not past yet
    past = payment(9, "c9", "10", BASE_MS + WINDOW_MS + LATENESS_MS + 1)
    assert replay([a, within, b, past], RULE) == []
    # Once the partition's clock has passed the deadline and the lateness, the A alerted.
    assert len(replay([a, past, b], RULE)) == 1


def test_the_partitions_of_a_replay_keep_their_own_clocks() -> None:
    a = payment(1, "c1", "600", BASE_MS)
    other = payment(9, "c9", "10", BASE_MS + WINDOW_MS + LATENESS_MS + 1)
    rows: list[tuple[int, Payment, int]] = [(0, a, 0), (0, other, 1)]
    assert list(Replay(RULE, LATENESS_MS).alerts(rows)) == []  # partition 0 did not move
    rows.append((0, payment(10, "c8", "10", other.ts_ms), 0))
    assert len(list(Replay(RULE, LATENESS_MS).alerts(rows))) == 1


def test_a_pending_a_outlives_the_keys_own_expiry_and_counts_toward_its_bound() -> None:
    state = KeyState()
    for i in range(5):
        evaluate(
            state,
            payment(i, "c1", "600", BASE_MS + i * 10_000_000),
            "c1",
            [RULE],
            LATENESS_MS,
            0,
            0,
        )
    held = state.rules[RULE.rule_id]
    assert isinstance(held, AbsenceState) and len(held.pending()) == 5
    assert absence.next_due(state, [RULE], LATENESS_MS) == BASE_MS + WINDOW_MS + LATENESS_MS
    state = KeyState()
    for i in range(30):
        evaluate(state, payment(i, "c1", "600", BASE_MS + i), "c1", [RULE], LATENESS_MS, 0, 0, 20)
    assert sum(s.size() for s in state.rules.values()) <= 20


def test_a_paused_rule_keeps_nothing_and_a_shadow_rule_alerts_in_shadow() -> None:
    a = payment(1, "c1", "600", BASE_MS)
    tick = payment(9, "c9", "10", BASE_MS + WINDOW_MS + LATENESS_MS + 1)
    shadow = absence_rule(status="shadow")
    (alert,) = replay([a, tick], shadow)
    assert alert.status == "shadow"
    paused = absence_rule(status="paused")
    state = KeyState()
    evaluate(state, a, "c1", [paused], LATENESS_MS, 0, 0)
    assert not state.rules
    assert absence.fire_due(state, "c1", [paused], tick.ts_ms, LATENESS_MS, 0, 0) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"not_followed_by": [{"field": "amount", "op": "<", "value": "1"}]}, "window"),
        ({"window": 60}, "not_followed_by"),
        ({"window": 60, "not_followed_by": {"field": "amount"}}, "not_followed_by"),
        (
            {"window": 60, "not_followed_by": [{"field": "nope", "op": "<", "value": "1"}]},
            "not_followed_by[0]",
        ),
        ({"window": 60, "not_followed_by": [], "steps": []}, "steps"),
    ],
)
def test_a_bad_absence_rule_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError) as raised:
        parse_rule({"rule_id": "r", "version": 1, "kind": "absence", **body})
    assert raised.value.field.startswith(field)


def test_an_absence_rule_survives_its_json() -> None:
    assert parse_rule(json.loads(BOTH.to_bytes())) == BOTH


def test_a_worker_refuses_a_bad_absence_rule_naming_the_field_and_keeps_the_last_good_one() -> None:
    book = RuleBook()
    assert book.apply(RULE.rule_id.encode(), RULE.to_bytes()).startswith("applied")
    bad = {**RULE.to_json(), "version": 2, "not_followed_by": [{"field": "amount", "op": "<"}]}
    outcome = book.apply(RULE.rule_id.encode(), json.dumps(bad).encode())
    assert outcome.startswith("poison: not_followed_by[0]")
    assert book.rules[RULE.rule_id] == RULE


def test_a_deadline_that_moves_later_costs_no_heap_entry_and_keys_come_due_in_order() -> None:
    timers = absence.Timers()
    timers.advance(0)
    for n in range(5_000):  # a busy key: each payment's B resolves the A before it
        timers.schedule("busy", 1_000 + n)
    timers.schedule("quiet", 3_000)
    timers.schedule("early", 2_000)
    assert len(timers.heap) == 3, "one entry per key, not one per payment"
    assert not timers.advance(1_000)
    assert timers.advance(5_999) and timers.pop_due() == ["early", "quiet"]
    assert len(timers.heap) == 1, "the busy key's entry waits again at its deadline"
    timers.advance(7_000)
    assert timers.pop_due() == ["busy"] and not timers.heap and not timers.pop_due()


def test_the_broad_absence_bench_is_the_default_rules_and_an_absence_on_every_payment() -> None:
    root = Path(__file__).resolve().parents[3]
    defaults = load_rule_file(root / "app" / "rules_admin" / "default_rules.yaml")
    *rules, broad = load_rule_file(root / "bench" / "default_and_broad_absence.yaml")
    assert rules == defaults
    assert isinstance(broad, AbsenceRule) and broad.status == "active"
    payment = factories.payment("tok_x", "t1", "12.50", 0)
    assert broad.is_a(payment) and broad.is_b(payment)
