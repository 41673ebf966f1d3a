"""app.detection.engine: the detection engine against a brute-force oracle (hypothesis).

In-order streams must give exactly the oracle's alerts; any arrival order within
the allowed lateness must keep the four properties of the architecture notes.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.engine import MAX_STATE_BYTES, KeyState, evaluate, fit
from app.detection.models import Alert, Payment, iso_from_ms
from app.detection.rules import SEED_RULE, Rule, parse_rule
from tests import factories
from tests.oracle import assert_properties, oracle
from tests.unit.detection.streams import (
    BASE_MS,
    LATENESS_MS,
    Run,
    assert_derived_state_matches_the_pool,
    payment,
    run_engine,
    shuffle_within_lateness,
    with_redeliveries,
)

SUM_RULE = parse_rule(
    {
        "rule_id": "sum-velocity",
        "version": 1,
        "group_by": "card_id",
        "aggregate": "sum(amount)",
        "filter": [{"field": "amount", "op": ">", "value": 0}],
        "window": 120,
        "threshold": {"op": ">=", "value": "2500"},
    }
)
DISTINCT_RULE = parse_rule(
    {
        "rule_id": "country-hop",
        "version": 1,
        "group_by": "card_id",
        "aggregate": "distinct_count(country)",
        "filter": [{"field": "country", "op": "!=", "value": "ZZ"}],
        "window": 200,
        "threshold": {"op": ">", "value": 2},
    }
)
STRICT_COUNT_RULE = parse_rule(
    {
        "rule_id": "small-burst",
        "version": 1,
        "group_by": "card_id",
        "filter": [
            {"field": "amount", "op": "<", "value": "5"},
            {"field": "country", "op": "in", "value": ["US", "GB"]},
        ],
        "window": 60,
        "threshold": {"op": ">", "value": 3},
    }
)
STRICT_SUM_RULE = parse_rule(
    {
        "rule_id": "strict-sum",
        "version": 1,
        "group_by": "card_id",
        "aggregate": "sum(amount)",
        "filter": [
            {"field": "country", "op": "not in", "value": ["DE"]},
            {"field": "amount", "op": "<=", "value": "4999"},
        ],
        "window": 300,
        "threshold": {"op": ">", "value": "3000"},
    }
)
DISTINCT_AT_LEAST_RULE = parse_rule(
    {
        "rule_id": "merchant-spread",
        "version": 1,
        "group_by": "card_id",
        "aggregate": "distinct_count(country)",
        "filter": [{"field": "currency", "op": "==", "value": "USD"}],
        "window": 90,
        "threshold": {"op": ">=", "value": 2},
    }
)
# Groups and a comparison of two fields: any of (a high amount, not from US or GB).
GROUPED_RULE = parse_rule(
    {
        "rule_id": "grouped-filter",
        "version": 1,
        "group_by": "card_id",
        "filter": [
            {
                "any": [
                    {"field": "amount", "op": ">=", "value": "1000"},
                    {"not": {"field": "country", "op": "in", "value": ["US", "GB"]}},
                ]
            },
            {"field": "merchant_id", "op": "!=", "ref": "account_id"},
        ],
        "window": 120,
        "threshold": 3,
    }
)
# Every aggregate kind with both threshold operators, every filter operator and groups.
ALL_RULES = (
    SEED_RULE,
    SUM_RULE,
    DISTINCT_RULE,
    STRICT_COUNT_RULE,
    STRICT_SUM_RULE,
    DISTINCT_AT_LEAST_RULE,
    GROUPED_RULE,
)


def check_properties(run: Run, rule: Rule) -> None:
    assert_properties(run.alerts, run.accepted, rule)


AMOUNTS = ["1", "3.50", "250", "999.99", "1000", "1000.00", "1200", "4999"]
COUNTRIES = ["US", "GB", "FR", "DE"]
TS_STEPS = [
    0,
    1_000,
    5_000,
    20_000,
    30_000,
    45_000,
    60_000,
    90_000,
    120_000,
    240_000,
    299_000,
    300_000,
    301_000,
]


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40) -> list[Payment]:
    """Event-time-ordered payments on 1-3 cards, with bursts and ties."""
    size = draw(st.integers(min_value=0, max_value=max_size))
    ts = BASE_MS
    events = []
    for txn in range(size):
        ts += draw(st.sampled_from(TS_STEPS))
        events.append(
            payment(
                txn,
                draw(st.sampled_from(["c1", "c2", "c3"])),
                draw(st.sampled_from(AMOUNTS)),
                ts,
                draw(st.sampled_from(COUNTRIES)),
            )
        )
    return events


@settings(max_examples=300, deadline=None)
@given(streams())
def test_in_order_stream_equals_oracle(events: list[Payment]) -> None:
    run = run_engine(events, ALL_RULES)
    assert not run.late
    for rule in ALL_RULES:
        got = {(a.group_key, a.txn_ids) for a in run.alerts if a.rule_id == rule.rule_id}
        assert got == oracle(events, rule)
        check_properties(run, rule)


@settings(max_examples=300, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_any_order_within_lateness_keeps_the_properties(events: list[Payment], seed: int) -> None:
    run = run_engine(shuffle_within_lateness(events, seed), ALL_RULES)
    assert not run.late, "the shuffle stays within the allowed lateness"
    for rule in ALL_RULES:
        check_properties(run, rule)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_arbitrary_order_marks_late_events_and_keeps_properties_for_the_rest(
    events: list[Payment], seed: int
) -> None:
    arrivals = list(events)
    random.Random(seed).shuffle(arrivals)
    run = run_engine(arrivals, ALL_RULES)
    newest: dict[str, int] = {}
    for p in arrivals:  # recompute lateness independently
        is_late = p.card_id in newest and p.ts_ms < newest[p.card_id] - LATENESS_MS
        # Only truly late events are refused (a key without state accepts anything).
        assert is_late or p not in run.late
        if not is_late:
            newest[p.card_id] = max(newest.get(p.card_id, p.ts_ms), p.ts_ms)
    for rule in ALL_RULES:
        check_properties(run, rule)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_redelivery_and_state_roundtrip_change_nothing(events: list[Payment], seed: int) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    baseline = run_engine(arrivals, ALL_RULES)
    with_duplicates = with_redeliveries(arrivals, seed)
    replayed = run_engine(with_duplicates, ALL_RULES, roundtrip=True)
    assert [a.alert_id for a in replayed.alerts] == [a.alert_id for a in baseline.alerts]


def test_burst_of_six_gives_two_alerts_not_four() -> None:
    events = [payment(i, "c1", "1500", BASE_MS + i * 10_000) for i in range(6)]
    alerts = run_engine(events).alerts
    assert [a.txn_ids for a in alerts] == [("t0000", "t0001", "t0002"), ("t0003", "t0004", "t0005")]


def test_burst_straddling_a_five_minute_boundary_is_found() -> None:
    boundary = (BASE_MS // 300_000 + 1) * 300_000
    events = [payment(i, "c1", "1000.00", boundary - 20_000 + i * 15_000) for i in range(3)]
    (alert,) = run_engine(events).alerts
    assert alert.txn_ids == ("t0000", "t0001", "t0002")
    assert alert.aggregate_value == "3"
    assert alert.first_event_ts == iso_from_ms(boundary - 20_000)


def test_events_just_over_the_window_apart_do_not_alert() -> None:
    events = [
        payment(0, "c1", "1000", BASE_MS),
        payment(1, "c1", "1000", BASE_MS + 150_000),
        payment(2, "c1", "1000", BASE_MS + 300_001),
    ]
    assert run_engine(events).alerts == []
    events[2] = events[2]._replace(ts_ms=BASE_MS + 300_000)
    assert len(run_engine(events).alerts) == 1


def test_small_amounts_and_other_cards_never_count() -> None:
    events = [
        payment(0, "c1", "999.99", BASE_MS),
        payment(1, "c1", "1000", BASE_MS + 1),
        payment(2, "c2", "1000", BASE_MS + 2),
        payment(3, "c1", "5000", BASE_MS + 3),
    ]
    assert run_engine(events).alerts == []


def test_late_arrival_completes_a_burst_out_of_order() -> None:
    first, second, third = (payment(i, "c1", "2000", BASE_MS + i * 30_000) for i in range(3))
    alerts = run_engine([first, third, second]).alerts
    assert [a.txn_ids for a in alerts] == [("t0000", "t0001", "t0002")]
    assert alerts[0].trigger_txn_id == "t0001"


def test_event_older_than_lateness_is_late_and_not_evaluated() -> None:
    events = [
        payment(0, "c1", "2000", BASE_MS + 200_000),
        payment(1, "c1", "2000", BASE_MS),
        payment(2, "c1", "2000", BASE_MS + 200_001),
    ]
    run = run_engine(events)
    assert [p.txn_id for p in run.late] == ["t0001"]
    assert run.alerts == []


def test_a_redelivery_older_than_the_lateness_is_a_duplicate_not_a_late_event() -> None:
    """A replay after a takeover: the restored state's clock has moved past the lateness
    since the payment was first decided; it must change nothing, not be dead-lettered."""
    state = KeyState()
    first, later = payment(0, "c1", "2000", BASE_MS), payment(1, "c1", "2000", BASE_MS + 200_000)
    for event in (first, later):
        evaluate(state, event, "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    before = json.dumps(state.to_json())
    verdict = evaluate(state, first, "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    assert verdict.duplicate and not verdict.late and not verdict.alerts
    assert json.dumps(state.to_json()) == before
    # The same txn_id with other content that old is late, as any other such payment.
    reused = payment(0, "c1", "3000", BASE_MS)
    assert evaluate(state, reused, "c1", [SEED_RULE], LATENESS_MS, 0, 0).late


def test_paused_rule_keeps_no_state_and_new_version_starts_fresh() -> None:
    state = KeyState()
    paused = replace(SEED_RULE, status="paused")
    for i in range(5):
        verdict = evaluate(
            state, payment(i, "c1", "2000", BASE_MS + i), "c1", [paused], LATENESS_MS, 0, 0
        )
        assert verdict.alerts == ()
    assert state.rules == {}
    v1, v2 = SEED_RULE, replace(SEED_RULE, version=2)
    evaluate(state, payment(10, "c1", "2000", BASE_MS + 10), "c1", [v1], LATENESS_MS, 0, 0)
    evaluate(state, payment(11, "c1", "2000", BASE_MS + 11), "c1", [v1], LATENESS_MS, 0, 0)
    verdict = evaluate(
        state, payment(12, "c1", "2000", BASE_MS + 12), "c1", [v2], LATENESS_MS, 0, 0
    )
    assert verdict.alerts == ()
    assert [e[1] for e in state.rules[v2.rule_id].pool] == ["t0012"]


def test_shadow_rule_alerts_are_marked_shadow() -> None:
    shadow = replace(SEED_RULE, status="shadow")
    events = [payment(i, "c1", "2000", BASE_MS + i) for i in range(3)]
    (alert,) = run_engine(events, [shadow]).alerts
    assert alert.status == "shadow"


def test_state_is_bounded_by_event_time() -> None:
    state = KeyState()
    for i in range(2_000):
        evaluate(
            state,
            payment(i, "c1", "2000" if i % 3 else "10", BASE_MS + i * 200_000),
            "c1",
            [SEED_RULE],
            LATENESS_MS,
            0,
            0,
        )
    rule_state = state.rules[SEED_RULE.rule_id]
    assert len(rule_state.pool) + len(rule_state.used) <= 6


def test_event_behind_the_newest_still_pairs_with_older_events_in_its_window() -> None:
    # t3 arrives after t2 although it is older: it is within the lateness, and its window
    # [t0, t0 + 300 s] must still hold t0 even though t2 is already more than 300 s past t0.
    events = [
        payment(0, "c1", "2000", BASE_MS),
        payment(1, "c1", "2000", BASE_MS + 100_000),
        payment(2, "c1", "10", BASE_MS + 310_000),
        payment(3, "c1", "2000", BASE_MS + 290_000),
    ]
    (alert,) = run_engine(events).alerts
    assert alert.txn_ids == ("t0000", "t0001", "t0003")


def test_payments_that_qualify_for_nothing_write_no_state() -> None:
    state = KeyState()
    verdict = evaluate(state, payment(0, "c1", "12", BASE_MS), "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    assert not verdict.changed and state.rules == {}
    verdict = evaluate(
        state, payment(1, "c1", "1200", BASE_MS), "c1", [SEED_RULE], LATENESS_MS, 0, 0
    )
    assert verdict.changed
    # Once the qualifying payment has aged out, the key needs no record any more.
    later = payment(2, "c1", "12", BASE_MS + 10 * 60_000)
    verdict = evaluate(state, later, "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    assert state.rules == {} and not verdict.changed


def test_reused_txn_id_with_other_content_is_a_conflict_and_changes_nothing() -> None:
    state = KeyState()
    first = payment(1, "c1", "1500", BASE_MS)
    evaluate(state, first, "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    before = json.dumps(state.to_json())
    reused = factories.payment("c1", "t0001", "1600", BASE_MS + 1_000)
    verdict = evaluate(state, reused, "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    assert verdict.conflict == (first.fingerprint(), reused.fingerprint())
    assert verdict.alerts == () and not verdict.changed and not verdict.duplicate
    assert json.dumps(state.to_json()) == before


def test_same_txn_id_with_the_same_content_in_another_spelling_is_a_redelivery() -> None:
    state = KeyState()
    evaluate(state, payment(1, "c1", "1500", BASE_MS), "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    again = payment(1, "c1", "1500.00", BASE_MS)
    verdict = evaluate(state, again, "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    assert verdict.duplicate and verdict.conflict is None


def test_three_payments_sharing_one_txn_id_are_two_conflicts_not_silence() -> None:
    amounts = ["1500", "1600", "1700"]
    events = [factories.payment("c1", "t-same", a, BASE_MS + i) for i, a in enumerate(amounts)]
    state = KeyState()
    verdicts = [evaluate(state, p, "c1", [SEED_RULE], LATENESS_MS, 0, 0) for p in events]
    assert [v.conflict is not None for v in verdicts] == [False, True, True]


def test_a_state_stored_before_fingerprints_still_recognises_redeliveries() -> None:
    old = {
        "t": BASE_MS,
        "r": {SEED_RULE.rule_id: {"v": 1, "p": [[BASE_MS, "t0001", "1500", "US", ""]], "u": {}}},
    }
    state = KeyState.from_json(old)
    other_content = factories.payment("c1", "t0001", "1999", BASE_MS)
    verdict = evaluate(state, other_content, "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    assert verdict.duplicate and verdict.conflict is None
    for i in (2, 3):
        last = evaluate(state, payment(i, "c1", "1500", BASE_MS + i), "c1", [SEED_RULE], 0, 0, 0)
    assert last.alerts[0].txn_ids == ("t0001", "t0002", "t0003")


HOT_DEVICE_RULE = parse_rule(
    {
        "rule_id": "device-many-cards",
        "version": 1,
        "group_by": "device_id",
        "aggregate": "distinct_count(card_id)",
        "filter": [{"field": "mcc", "op": "in", "value": ["7995"]}],
        "window": 3600,
        "threshold": {"op": ">=", "value": 3},
    }
)


def test_a_hot_key_stays_within_its_bound_whatever_the_arrival_order() -> None:
    # 20 000 payments of one card at one device within the hour: the rules never fire
    # (one distinct card, tiny sums), so without a bound the key's pools would hold them
    # all, and each payment would cost as much as the pools hold.
    state = KeyState()
    rules = [HOT_DEVICE_RULE, replace(SUM_RULE, group_by=("device_id",))]
    rng = random.Random(7)
    evicted = 0
    for i in range(20_000):
        jitter = rng.randint(0, LATENESS_MS) if i % 2 else 0  # half from the past
        p = factories.payment("c1", f"h{i}", "0.01", BASE_MS + i * 150 - jitter)
        verdict = evaluate(state, p._replace(mcc="7995"), "dev", rules, LATENESS_MS, 0, 0, 500)
        assert not verdict.alerts and not verdict.late
        evicted += verdict.evicted
        assert sum(s.size() for s in state.rules.values()) <= 500
    assert evicted > 19_000


def test_a_key_at_its_bound_still_alerts_on_a_new_burst() -> None:
    state = KeyState()
    rules = [HOT_DEVICE_RULE]
    for i in range(3_000):
        p = factories.payment("c1", f"h{i}", "20", BASE_MS + i * 1_000)._replace(mcc="7995")
        evaluate(state, p, "dev", rules, LATENESS_MS, 0, 0, 1000)
    burst = [
        factories.payment(card, f"b{card}", "20", BASE_MS + 3_000_000)._replace(mcc="7995")
        for card in ("c2", "c3")
    ]
    verdicts = [evaluate(state, p, "dev", rules, LATENESS_MS, 0, 0, 1000) for p in burst]
    assert [len(v.alerts) for v in verdicts] == [0, 1]


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32), st.integers(2, 12))
def test_a_small_bound_keeps_alerts_sound_and_disjoint(
    events: list[Payment], seed: int, bound: int
) -> None:
    states: dict[str, KeyState] = {}
    alerts: list[Alert] = []
    accepted: list[Payment] = []
    for p in shuffle_within_lateness(events, seed):
        state = states.setdefault(p.card_id, KeyState())
        verdict = evaluate(state, p, p.card_id, ALL_RULES, LATENESS_MS, 0, 0, bound)
        assert sum(s.size() for s in state.rules.values()) <= bound
        assert_derived_state_matches_the_pool(state, ALL_RULES)
        alerts.extend(verdict.alerts)
        accepted.append(p)
    for rule in ALL_RULES:
        assert_properties(alerts, accepted, rule, complete=False)


def test_a_key_whose_record_would_outgrow_kafkas_message_limit_sheds_its_oldest_events() -> None:
    # Ids of 128 characters that UTF-8 spells in 4 bytes each: 2 000 such events would
    # encode to about 2 MB, past Kafka's 1 MiB message limit.
    encode = msgspec.json.Encoder().encode
    state = KeyState()
    for i in range(2_000):
        txn = f"{i:06d}" + "\U0001f600" * 122
        p = factories.payment("c1", txn, "1", BASE_MS + i)._replace(mcc="7995", device_id="dev")
        evaluate(state, p, "dev", [HOT_DEVICE_RULE], LATENESS_MS, 0, 0)
    assert len(encode(state.to_json())) > MAX_STATE_BYTES
    raw, shed = fit(state, encode)
    assert len(raw) <= MAX_STATE_BYTES and shed > 0
    assert raw == encode(state.to_json()), "what is written is the state that remains"
    newest = max(e[0] for s in state.rules.values() for e in s.pool)
    assert newest == BASE_MS + 1_999, "the oldest events went, the newest stayed"
    small = KeyState()
    evaluate(small, payment(1, "c1", "1500", BASE_MS), "c1", [SEED_RULE], LATENESS_MS, 0, 0)
    assert fit(small, encode) == (encode(small.to_json()), 0)
