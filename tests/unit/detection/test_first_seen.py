"""First-seen rules (app/detection/kinds/first_seen.py) against a brute-force oracle.

Whatever the arrival order within the allowed lateness, the engine's alerts are exactly the
oracle's for that order (tests/oracle.py: a payment passing the filter whose key had received
payments within the window before it, none with its value), and complete in event time for
the history each payment found; in event-time order, exactly first use within the window.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.engine import MAX_KEY_EVENTS, KeyState, evaluate
from app.detection.models import Alert, Payment
from app.detection.rules import FIRST_SEEN_FIELDS, FirstSeenRule, Rule, RuleError, parse_rule
from app.detection.state import FirstSeenState
from tests import factories
from tests.docs import first_column, page, section
from tests.oracle import assert_first_seen_properties, first_seen_oracle
from tests.unit.detection.streams import (
    BASE_MS,
    LATENESS_MS,
    run_engine,
    shuffle_within_lateness,
    with_redeliveries,
)


def first_seen(rule_id: str, field: str, window: int, **more: Any) -> FirstSeenRule:
    rule = parse_rule(
        {
            "rule_id": rule_id,
            "version": 1,
            "kind": "first_seen",
            "field": field,
            "window": window,
            **more,
        }
    )
    assert isinstance(rule, FirstSeenRule)
    return rule


# The example: a device the card has not used within the window, and 500 or more.
NEW_DEVICE = first_seen(
    "new-device-high-value",
    "device_id",
    120,
    filter=[{"field": "amount", "op": ">=", "value": "500"}],
)
# Any payment from a country new for the card.
NEW_COUNTRY = first_seen("new-country", "country", 300)
CARD_RULES = (NEW_DEVICE, NEW_COUNTRY)
# A card new on a device, at a gambling or money-transfer merchant.
NEW_CARD_ON_DEVICE = first_seen(
    "new-card-on-device",
    "card_id",
    200,
    group_by="device_id",
    filter=[{"any": [{"field": "mcc", "op": "in", "value": ["7995", "4829"]}]}],
)

TS_STEPS = [0, 0, 1_000, 20_000, 59_000, 60_000, 61_000, 119_000, 120_000, 121_000, 301_000]


def payment(txn: int, card: str, amount: str, ts_ms: int, **fields: Any) -> Payment:
    return factories.payment(card, f"t{txn:04d}", amount, ts_ms, **fields)


@st.composite
def streams(draw: st.DrawFn, max_size: int = 30) -> list[Payment]:
    """Event-time-ordered payments on 1-2 cards and 1-3 devices and countries."""
    ts = BASE_MS
    events = []
    for txn in range(draw(st.integers(min_value=0, max_value=max_size))):
        ts += draw(st.sampled_from(TS_STEPS))
        events.append(
            payment(
                txn,
                draw(st.sampled_from(["c1", "c2"])),
                draw(st.sampled_from(["10", "499.99", "500", "800"])),
                ts,
                device_id=draw(st.sampled_from(["d1", "d2", "d3"])),
                country=draw(st.sampled_from(["US", "US", "GB", "FR"])),
                mcc=draw(st.sampled_from(["5411", "7995"])),
            )
        )
    return events


def alerted(alerts: list[Alert], rule: Rule) -> list[tuple[str, str]]:
    return [(a.group_key, a.txn_ids[0]) for a in alerts if a.rule_id == rule.rule_id]


RULE_GROUPS = (CARD_RULES, (NEW_CARD_ON_DEVICE,))


@settings(max_examples=200, deadline=None)
@given(streams())
def test_in_order_streams_alert_on_exactly_the_first_use_within_the_window(
    events: list[Payment],
) -> None:
    for rules in RULE_GROUPS:
        run = run_engine(events, rules)
        assert not run.late
        for rule in rules:
            assert alerted(run.alerts, rule) == first_seen_oracle(events, rule)
            assert_first_seen_properties(run.alerts, run.accepted, rule)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_any_order_within_lateness_gives_the_oracles_alerts_and_keeps_the_properties(
    events: list[Payment], seed: int
) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    for rules in RULE_GROUPS:
        run = run_engine(arrivals, rules)
        assert not run.late
        for rule in rules:
            assert alerted(run.alerts, rule) == first_seen_oracle(arrivals, rule)
            assert_first_seen_properties(run.alerts, run.accepted, rule)


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_arbitrary_order_marks_late_payments_and_decides_the_rest_as_the_oracle(
    events: list[Payment], seed: int
) -> None:
    arrivals = list(events)
    random.Random(seed).shuffle(arrivals)
    for rules in RULE_GROUPS:
        run = run_engine(arrivals, rules)
        for rule in rules:
            assert alerted(run.alerts, rule) == first_seen_oracle(run.accepted, rule)


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_redeliveries_and_the_stored_state_change_nothing(events: list[Payment], seed: int) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    for rules in RULE_GROUPS:
        baseline = run_engine(arrivals, rules)
        replayed = run_engine(with_redeliveries(arrivals, seed), rules, roundtrip=True)
        assert [a.alert_id for a in replayed.alerts] == [a.alert_id for a in baseline.alerts]


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32), st.integers(2, 8))
def test_a_small_bound_keeps_the_state_bounded_and_alerts_passing_the_filter(
    events: list[Payment], seed: int, bound: int
) -> None:
    run = run_engine(shuffle_within_lateness(events, seed), CARD_RULES, bound=bound)
    for alert in run.alerts:
        (txn_id,) = alert.txn_ids
        if alert.rule_id == NEW_DEVICE.rule_id:
            assert next(p for p in run.accepted if p.txn_id == txn_id).amount >= 500


def test_a_new_device_with_a_high_amount_alerts_and_explains_itself() -> None:
    events = [
        payment(0, "c1", "20", BASE_MS, device_id="phone"),
        payment(1, "c1", "900", BASE_MS + 10_000, device_id="phone"),  # known device
        payment(2, "c1", "30", BASE_MS + 20_000, device_id="laptop"),  # new, but small
        payment(3, "c1", "900", BASE_MS + 30_000, device_id="laptop"),  # known since t2
        payment(4, "c1", "750", BASE_MS + 40_000, device_id="tablet"),  # new and large
    ]
    (alert,) = run_engine(events, [NEW_DEVICE]).alerts
    assert alert.txn_ids == ("t0004",) and alert.trigger_txn_id == "t0004"
    assert alert.kind == "first_seen"
    assert dict(alert.explanation) == {
        "field": "device_id",
        "value": "tablet",
        "values_known": "2",
    }
    assert alert.aggregate_value == "2"
    assert alert.to_dict()["explanation"]["value"] == "tablet"
    assert Alert.from_json(alert.to_json()) == alert


def test_a_keys_first_payment_and_its_first_after_a_silence_set_what_is_known() -> None:
    """No alert without history within the window: a new card, or a rule just published,
    does not alert on every card's next payment."""
    events = [
        payment(0, "c1", "900", BASE_MS, device_id="phone"),
        payment(1, "c1", "900", BASE_MS + 121_000, device_id="laptop"),  # after 121 s alone
        payment(2, "c1", "900", BASE_MS + 122_000, device_id="tablet"),
    ]
    alerts = run_engine(events, [NEW_DEVICE]).alerts
    assert [a.txn_ids for a in alerts] == [("t0002",)]


def test_a_device_seen_just_outside_the_window_is_new_again() -> None:
    events = [
        payment(0, "c1", "10", BASE_MS, device_id="laptop"),
        payment(1, "c1", "10", BASE_MS + 60_000, device_id="phone"),
        payment(2, "c1", "900", BASE_MS + 120_000, device_id="laptop"),  # 120 s: still known
        payment(3, "c1", "10", BASE_MS + 200_000, device_id="phone"),
        payment(4, "c1", "900", BASE_MS + 240_001, device_id="laptop"),  # 120.001 s: new
    ]
    assert [a.txn_ids for a in run_engine(events, [NEW_DEVICE]).alerts] == [("t0004",)]


def test_an_earlier_use_arriving_late_is_known_for_the_payments_after_it() -> None:
    """Decided on what has arrived: the large payment on the new device alerts; the device's
    earlier use, arriving after it within the lateness, is then itself new (and small)."""
    early = payment(0, "c1", "10", BASE_MS + 5_000, device_id="laptop")
    known = payment(1, "c1", "10", BASE_MS, device_id="phone")
    large = payment(2, "c1", "900", BASE_MS + 10_000, device_id="laptop")
    later = payment(3, "c1", "900", BASE_MS + 20_000, device_id="laptop")
    alerts = run_engine([known, large, early, later], [NEW_DEVICE]).alerts
    assert [a.txn_ids for a in alerts] == [("t0002",)]
    in_order = run_engine([known, early, large, later], [NEW_DEVICE]).alerts
    assert in_order == []


def test_every_payment_of_the_key_is_kept_and_the_state_is_bounded_by_values() -> None:
    """A first-seen rule touches every payment of its key; its state holds the payments of
    the lateness one by one and a time per value before them, whatever the history."""
    state = KeyState()
    for i in range(5_000):
        p = payment(i, "c1", "10", BASE_MS + i * 1_000, device_id=f"d{i % 7}")
        verdict = evaluate(state, p, "c1", [NEW_DEVICE], LATENESS_MS, 0, 0)
        assert verdict.changed
    rule_state = state.rules[NEW_DEVICE.rule_id]
    assert isinstance(rule_state, FirstSeenState)
    assert len(rule_state.pool) <= LATENESS_MS // 1_000 + 1
    assert sorted(rule_state.seen) == [f"d{i}" for i in range(7)]
    stored = KeyState.from_json(json.loads(json.dumps(state.to_json())))
    assert stored.describe() == state.describe()
    seen = [v["ts_ms"] for v in state.describe()[NEW_DEVICE.rule_id]["seen"]]
    assert seen == sorted(seen, reverse=True), "the latest first"


def test_a_key_with_many_values_forgets_those_seen_longest_ago_first() -> None:
    state = KeyState()
    evicted = 0
    for i in range(3_000):
        p = payment(i, "c1", "10", BASE_MS + i * 10, device_id=f"d{i}")
        evicted += evaluate(state, p, "c1", [NEW_DEVICE], LATENESS_MS, 0, 0, 1_000).evicted
    rule_state = state.rules[NEW_DEVICE.rule_id]
    assert rule_state.size() <= 1_000 and evicted >= 2_000
    assert isinstance(rule_state, FirstSeenState) and "d0" not in rule_state.seen
    assert MAX_KEY_EVENTS == 2_000


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"field": "txn_id"}, "field", "'txn_id' is not one of"),
        ({"field": "colour"}, "field", "'colour' is not one of"),
        ({"field": "card_id"}, "field", "the key itself"),
        (
            {"filter": [{"field": "amount", "op": ">", "ref": "steps[0].amount"}]},
            "filter[0].ref",
            "sequence",
        ),
        ({"steps": []}, "steps", "not a field of a first_seen rule"),
    ],
)
def test_bad_first_seen_rules_are_refused_naming_the_field(
    changes: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule({**NEW_DEVICE.to_json(), **changes})
    assert (info.value.field, problem in info.value.problem) == (field, True), info.value


def test_a_first_seen_rule_round_trips_and_the_page_lists_its_fields() -> None:
    for rule in (*CARD_RULES, NEW_CARD_ON_DEVICE):
        assert parse_rule(json.loads(rule.to_bytes())) == rule
    text = section(page("reference/rule-format.md"), "First seen")
    assert first_column(text) == ["field", "filter"]
    assert all(f"`{name}`" in text for name in FIRST_SEEN_FIELDS)
