"""Sequence rules (app/detection/kinds/sequence.py) against a brute-force oracle.

Whatever the arrival order within the allowed lateness, the engine's alerts are exactly the
oracle's for that order (tests/oracle.py: after each payment, the earliest chain among the
key's unused payments), and they keep the properties in event time: every alert a chain,
no event in two alerts, every chain touched by an alert. In event-time order that is
greedy skip-past-last-event matching.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery.published import PublishedAlerts
from app.detection.engine import KeyState, evaluate
from app.detection.models import Alert, Payment, iso_from_ms
from app.detection.rules import KINDS, MAX_STEPS, MIN_STEPS, RuleError, SequenceRule, parse_rule
from app.detection.state import SequenceState
from app.rules_admin.topic import load_rule_file
from tests.docs import REPO, first_column, page, section
from tests.oracle import assert_sequence_properties, sequence_oracle
from tests.unit.detection.streams import (
    BASE_MS,
    LATENESS_MS,
    payment,
    run_engine,
    shuffle_within_lateness,
    with_redeliveries,
)


def sequence(rule_id: str, window: int, *steps: list[dict[str, Any]]) -> SequenceRule:
    rule = parse_rule(
        {
            "rule_id": rule_id,
            "version": 1,
            "kind": "sequence",
            "window": window,
            "steps": [{"filter": step} for step in steps],
        }
    )
    assert isinstance(rule, SequenceRule)
    return rule


def amount(op: str, value: str) -> dict[str, Any]:
    return {"field": "amount", "op": op, "value": value}


# The example: a payment under 2, then one of 500 or more on the same card.
TEST_THEN_CASH = sequence("test-then-cash", 300, [amount("<", "2")], [amount(">=", "500")])
# The second from another country than the first, and at least as much.
ABROAD_AGAIN = sequence(
    "abroad-again",
    200,
    [amount(">=", "250")],
    [
        {"field": "country", "op": "!=", "ref": "steps[0].country"},
        {"field": "amount", "op": ">=", "ref": "steps[0].amount"},
    ],
)
# Three steps with groups, references to both earlier steps and a step with no filter.
THREE_STEPS = sequence(
    "three-steps",
    300,
    [{"field": "country", "op": "in", "value": ["US", "GB"]}],
    [{"any": [amount("<", "2"), {"not": {"field": "country", "op": "==", "value": "US"}}]}],
    [
        {"field": "country", "op": "==", "ref": "steps[0].country"},
        {"not": {"field": "amount", "op": "<=", "ref": "steps[1].amount"}},
    ],
)
ANYTHING_THEN_BIG = sequence("anything-then-big", 60, [], [amount(">=", "1000")])
SEQUENCES = (TEST_THEN_CASH, ABROAD_AGAIN, THREE_STEPS, ANYTHING_THEN_BIG)

AMOUNTS = ["1", "1.50", "250", "500", "700", "1000", "1000.00"]
COUNTRIES = ["US", "GB", "FR"]
# Around the windows (60, 200, 300 s) and the lateness (60 s), with ties.
TS_STEPS = [0, 0, 1_000, 20_000, 59_000, 60_000, 61_000, 120_000, 199_000, 200_000, 301_000]


@st.composite
def streams(draw: st.DrawFn, max_size: int = 24) -> list[Payment]:
    """Event-time-ordered payments on 1-2 cards."""
    ts = BASE_MS
    events = []
    for txn in range(draw(st.integers(min_value=0, max_value=max_size))):
        ts += draw(st.sampled_from(TS_STEPS))
        events.append(
            payment(
                txn,
                draw(st.sampled_from(["c1", "c2"])),
                draw(st.sampled_from(AMOUNTS)),
                ts,
                draw(st.sampled_from(COUNTRIES)),
            )
        )
    return events


def alerted(alerts: list[Alert], rule: SequenceRule) -> list[tuple[str, tuple[str, ...]]]:
    return [(a.group_key, a.txn_ids) for a in alerts if a.rule_id == rule.rule_id]


@settings(max_examples=200, deadline=None)
@given(streams())
def test_in_order_streams_give_exactly_greedy_earliest_matching(events: list[Payment]) -> None:
    run = run_engine(events, SEQUENCES)
    assert not run.late
    for rule in SEQUENCES:
        assert alerted(run.alerts, rule) == sequence_oracle(events, rule)
        assert_sequence_properties(run.alerts, run.accepted, rule)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_any_order_within_lateness_gives_the_oracles_alerts_and_keeps_the_properties(
    events: list[Payment], seed: int
) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    run = run_engine(arrivals, SEQUENCES)
    assert not run.late, "the shuffle stays within the allowed lateness"
    for rule in SEQUENCES:
        assert alerted(run.alerts, rule) == sequence_oracle(arrivals, rule)
        assert_sequence_properties(run.alerts, run.accepted, rule)


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_arbitrary_order_marks_late_events_and_keeps_the_properties_for_the_rest(
    events: list[Payment], seed: int
) -> None:
    arrivals = list(events)
    random.Random(seed).shuffle(arrivals)
    run = run_engine(arrivals, SEQUENCES)
    for rule in SEQUENCES:
        assert alerted(run.alerts, rule) == sequence_oracle(run.accepted, rule)
        assert_sequence_properties(run.alerts, run.accepted, rule)


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_redeliveries_and_the_stored_state_change_nothing(events: list[Payment], seed: int) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    baseline = run_engine(arrivals, SEQUENCES)
    with_duplicates = with_redeliveries(arrivals, seed)
    replayed = run_engine(with_duplicates, SEQUENCES, roundtrip=True)
    assert [a.alert_id for a in replayed.alerts] == [a.alert_id for a in baseline.alerts]


def test_each_small_payment_pairs_with_the_next_large_one_within_the_window() -> None:
    events = [
        payment(0, "c1", "1", BASE_MS),
        payment(1, "c1", "1.5", BASE_MS + 10_000),
        payment(2, "c1", "40", BASE_MS + 20_000),  # neither step
        payment(3, "c1", "750", BASE_MS + 290_000),  # pairs with the earliest small one
        payment(4, "c1", "900", BASE_MS + 295_000),  # with the next
        payment(5, "c1", "900", BASE_MS + 296_000),  # both small ones are used up
    ]
    first, second = run_engine(events, [TEST_THEN_CASH]).alerts
    assert (first.txn_ids, second.txn_ids) == (("t0000", "t0003"), ("t0001", "t0004"))
    alert = first
    assert alert.kind == "sequence" and alert.steps == (1, 2)
    assert alert.aggregate_value == "2"
    assert alert.first_event_ts == iso_from_ms(BASE_MS)
    assert alert.to_dict()["steps"] == [1, 2]
    assert Alert.from_json(alert.to_json()) == alert


def test_the_steps_must_come_in_event_time_order_within_the_window() -> None:
    late_small = [payment(0, "c1", "900", BASE_MS), payment(1, "c1", "1", BASE_MS + 1_000)]
    assert run_engine(late_small, [TEST_THEN_CASH]).alerts == []
    too_far = [payment(0, "c1", "1", BASE_MS), payment(1, "c1", "900", BASE_MS + 300_001)]
    assert run_engine(too_far, [TEST_THEN_CASH]).alerts == []
    just_in = [payment(0, "c1", "1", BASE_MS), payment(1, "c1", "900", BASE_MS + 300_000)]
    assert len(run_engine(just_in, [TEST_THEN_CASH]).alerts) == 1


def test_a_step_compares_with_the_event_an_earlier_step_matched() -> None:
    events = [
        payment(0, "c1", "300", BASE_MS, "US"),
        payment(1, "c1", "900", BASE_MS + 1_000, "US"),  # same country as t0: not step 2
        payment(2, "c1", "299", BASE_MS + 2_000, "FR"),  # less than t0: not step 2
        payment(3, "c1", "300", BASE_MS + 3_000, "FR"),
    ]
    alerts = run_engine(events, [ABROAD_AGAIN]).alerts
    assert [a.txn_ids for a in alerts] == [("t0000", "t0003")]


def test_an_earlier_event_arriving_late_starts_a_match_with_a_waiting_step() -> None:
    """The large payment comes first in arrival, the small one 30 s earlier in event time
    arrives after it (within the lateness): the pair is found when the second arrives."""
    small, large = payment(0, "c1", "1", BASE_MS), payment(1, "c1", "600", BASE_MS + 30_000)
    (alert,) = run_engine([large, small], [TEST_THEN_CASH]).alerts
    assert alert.txn_ids == ("t0000", "t0001") and alert.trigger_txn_id == "t0000"


def test_which_events_pair_depends_on_what_has_arrived_when_a_chain_first_exists() -> None:
    """An engine that alerts at once cannot wait for events still to come: with two small
    payments and a large one, the large pairs with whichever small one arrived first. The
    alerts stay sound, disjoint and complete either way (an event-time-ordered buffer,
    as Flink CEP keeps, would delay every alert by the lateness)."""
    a, b = payment(0, "c1", "1", BASE_MS), payment(1, "c1", "1", BASE_MS + 10_000)
    big = payment(2, "c1", "600", BASE_MS + 20_000)
    in_order = run_engine([a, b, big], [TEST_THEN_CASH]).alerts
    b_first = run_engine([b, big, a], [TEST_THEN_CASH]).alerts
    assert [x.txn_ids for x in in_order] == [("t0000", "t0002")]
    assert [x.txn_ids for x in b_first] == [("t0001", "t0002")]


def test_a_state_stored_by_an_older_version_or_published_alerts_is_adopted() -> None:
    """A replay may top a key's state up with the events published alerts used: a plain
    rule state, before the sequence's first event; those events are never paired again."""
    published = PublishedAlerts()
    published.record("a1", (TEST_THEN_CASH.rule_id, "c1"), ("t0000", "t0001"), BASE_MS)
    state = KeyState()
    published.mark_used(state, "c1", [TEST_THEN_CASH])
    for p in [payment(0, "c1", "1", BASE_MS), payment(1, "c1", "600", BASE_MS + 1)]:
        verdict = evaluate(state, p, "c1", [TEST_THEN_CASH], LATENESS_MS, 0, 0)
        assert verdict.duplicate and not verdict.alerts
    new = payment(2, "c1", "700", BASE_MS + 2)
    assert not evaluate(state, new, "c1", [TEST_THEN_CASH], LATENESS_MS, 0, 0).alerts
    assert isinstance(state.rules[TEST_THEN_CASH.rule_id], SequenceState)


def test_the_card_view_says_which_steps_a_waiting_event_may_match() -> None:
    state = KeyState()
    for p in [payment(0, "c1", "1", BASE_MS), payment(1, "c1", "250", BASE_MS + 1)]:
        evaluate(state, p, "c1", [THREE_STEPS, ABROAD_AGAIN], LATENESS_MS, 0, 0)
    stored = KeyState.from_json(json.loads(json.dumps(state.to_json())))
    described = stored.describe()
    assert [e["steps"] for e in described["three-steps"]["pending"]] == [[1, 2, 3], [1, 3]]
    # Its second step reads only the first: any payment may be one.
    assert [e["steps"] for e in described["abroad-again"]["pending"]] == [[2], [1, 2]]
    assert described == state.describe()


def test_payments_no_step_can_match_cost_no_state() -> None:
    state = KeyState()
    verdict = evaluate(state, payment(0, "c1", "40", BASE_MS), "c1", [TEST_THEN_CASH], 0, 0, 0)
    assert not verdict.changed and state.rules == {}


def test_a_hot_key_whose_events_all_match_every_step_but_never_pair_stays_bounded() -> None:
    """Every event may be either step, and the reference to the first never holds: the
    search for the earliest chain tries each candidate first step once per event."""
    same_country = sequence(
        "other-country",
        3600,
        [],
        [{"field": "country", "op": "!=", "ref": "steps[0].country"}],
    )
    state = KeyState()
    started = time.perf_counter()
    for i in range(3_000):
        p = payment(i, "c1", "10", BASE_MS + i * 100)
        verdict = evaluate(state, p, "c1", [same_country], LATENESS_MS, 0, 0, 500)
        assert not verdict.alerts
        assert state.rules[same_country.rule_id].size() <= 500
    assert time.perf_counter() - started < 30
    other = payment(9_999, "c1", "10", BASE_MS + 3_000 * 100, "FR")
    (alert,) = evaluate(state, other, "c1", [same_country], LATENESS_MS, 0, 0, 500).alerts
    assert alert.txn_ids[1] == "t9999"


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"steps": [{"filter": []}]}, "steps", "2 to 5 steps"),
        ({"steps": [{"filter": []}] * 6}, "steps", "2 to 5 steps"),
        ({"steps": [{"filter": []}, []]}, "steps[1]", "an object"),
        ({"steps": [{"filter": []}, {"when": []}]}, "steps[1]", "unknown keys ['when']"),
        ({"threshold": 2}, "threshold", "not a field of a sequence rule"),
        (
            {"steps": [{"filter": [{"field": "ip", "op": "==", "ref": "steps[0].ip"}]}] * 2},
            "steps[0].filter[0].ref",
            "the first step has no earlier step",
        ),
        (
            {
                "steps": [
                    {"filter": []},
                    {"filter": [{"any": [{"field": "ip", "op": "==", "ref": "steps[1].ip"}]}]},
                ]
            },
            "steps[1].filter[0].any[0].ref",
            "earlier step: steps[0]",
        ),
        (
            {
                "steps": [
                    {"filter": []},
                    {"filter": [{"field": "ip", "op": "<", "ref": "steps[0].ip"}]},
                ]
            },
            "steps[1].filter[0].op",
            "is a string",
        ),
        (
            {
                "steps": [
                    {"filter": []},
                    {"filter": [{"field": "amount", "op": "<", "ref": "steps[0].ip"}]},
                ]
            },
            "steps[1].filter[0].ref",
            "not both amounts or text",
        ),
    ],
)
def test_bad_sequences_are_refused_naming_the_field(
    changes: dict[str, Any], field: str, problem: str
) -> None:
    body = {**TEST_THEN_CASH.to_json(), **changes}
    with pytest.raises(RuleError) as info:
        parse_rule(body)
    assert (info.value.field, problem in info.value.problem) == (field, True), info.value


def test_an_aggregate_rule_cannot_refer_to_a_step() -> None:
    with pytest.raises(RuleError, match="only a step of a sequence"):
        parse_rule(
            {
                "rule_id": "x",
                "version": 1,
                "window": 60,
                "threshold": 1,
                "filter": [{"field": "ip", "op": "==", "ref": "steps[0].ip"}],
            }
        )


def test_a_sequence_round_trips_through_json() -> None:
    for rule in SEQUENCES:
        assert parse_rule(json.loads(rule.to_bytes())) == rule
        assert rule.to_json()["kind"] == "sequence"


def test_the_rule_format_page_shows_the_example_rule_and_every_sequence_field() -> None:
    rule_format = page("reference/rule-format.md")
    text = section(rule_format, "Sequences")
    shown = parse_rule(yaml.safe_load(text.split("```yaml\n")[1].split("```")[0]))
    (example,) = [
        r
        for r in load_rule_file(REPO / "examples/rules/kinds.yaml")
        if r.rule_id == "testing-then-cash-out"
    ]
    assert isinstance(shown, SequenceRule) and isinstance(example, SequenceRule)
    assert (shown.steps, shown.window_ms) == (example.steps, example.window_ms)
    assert first_column(text) == ["steps", "steps[i].filter"]
    assert f"{MIN_STEPS} to {MAX_STEPS} steps" in text
    properties = section(rule_format, "Properties of each kind")
    assert first_column(properties) == list(KINDS)
