"""Geo-velocity rules (app/detection/kinds/geo_velocity.py) against a brute-force oracle.

Whatever the arrival order within the allowed lateness, the engine's alerts are exactly the
oracle's for that order (tests/oracle.py: neighbours found by sorting the key's events
afresh for each), and the properties hold in the final event-time order: sound, complete
over neighbouring pairs (over every pair when there is no minimum distance), disjoint and
idempotent.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.engine import KeyState, evaluate
from app.detection.geo import CENTROIDS, distance_km
from app.detection.models import Alert, Payment
from app.detection.rules import GeoVelocityRule, Rule, RuleError, parse_rule
from app.detection.state import GeoVelocityState
from tests import factories
from tests.docs import first_column, page, section
from tests.oracle import assert_geo_velocity_properties, geo_velocity_oracle
from tests.unit.detection.streams import (
    BASE_MS,
    LATENESS_MS,
    run_engine,
    shuffle_within_lateness,
    with_redeliveries,
)

HOUR_MS = 3_600_000


def geo(rule_id: str, **more: Any) -> GeoVelocityRule:
    rule = parse_rule(
        {"rule_id": rule_id, "version": 1, "kind": "geo_velocity", "window": 6 * 3600, **more}
    )
    assert isinstance(rule, GeoVelocityRule)
    return rule


IMPOSSIBLE_TRAVEL = geo("impossible-travel")  # 1000 km/h, 500 km at least
NO_MINIMUM = geo("no-minimum", max_speed_kmh=800, min_distance_km=0)
ABROAD_ONLY = geo("abroad-only", filter=[{"field": "amount", "op": ">=", "value": "100"}])
POSITIONS_ONLY = geo("positions-only", use_centroids=False)
GEO_RULES = (IMPOSSIBLE_TRAVEL, NO_MINIMUM, ABROAD_ONLY, POSITIONS_ONLY)

# Places: countries near and far, and positions an event carries.
PLACES: list[dict[str, Any]] = [
    {"country": "GB"},
    {"country": "FR"},
    {"country": "BE"},
    {"country": "US"},
    {"country": "JP"},
    {"country": "GB", "lat": 51.5072, "lon": -0.1276},  # London
    {"country": "US", "lat": 40.7128, "lon": -74.006},  # New York
]
TS_STEPS = [0, 0, 1_000, 30_000, 59_000, 600_000, HOUR_MS, 3 * HOUR_MS, 7 * HOUR_MS]


def event(txn: int, card: str, amount: str, ts_ms: int, **where: Any) -> Payment:
    return factories.payment(card, f"t{txn:04d}", amount, ts_ms, **where)


@st.composite
def streams(
    draw: st.DrawFn, max_size: int = 25, places: list[dict[str, Any]] = PLACES
) -> list[Payment]:
    ts = BASE_MS
    events = []
    for txn in range(draw(st.integers(min_value=0, max_value=max_size))):
        ts += draw(st.sampled_from(TS_STEPS))
        card = draw(st.sampled_from(["c1", "c2"]))
        amount = draw(st.sampled_from(["5", "150"]))
        events.append(event(txn, card, amount, ts, **draw(st.sampled_from(places))))
    return events


def alerted(alerts: list[Alert], rule: Rule) -> list[tuple[str, tuple[str, ...]]]:
    return [(a.group_key, a.txn_ids) for a in alerts if a.rule_id == rule.rule_id]


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_any_order_within_lateness_gives_the_oracles_alerts_and_the_properties(
    events: list[Payment], seed: int
) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    run = run_engine(arrivals, GEO_RULES)
    assert not run.late
    for rule in GEO_RULES:
        assert alerted(run.alerts, rule) == geo_velocity_oracle(arrivals, rule)
        assert_geo_velocity_properties(run.alerts, run.accepted, rule)


# Positions only: between any two impossible events, a neighbouring pair is impossible too.
POSITIONS: list[dict[str, Any]] = [
    {"country": "GB", "lat": 51.5072, "lon": -0.1276},  # London
    {"country": "GB", "lat": 55.9533, "lon": -3.1883},  # Edinburgh
    {"country": "FR", "lat": 48.8566, "lon": 2.3522},  # Paris
    {"country": "US", "lat": 40.7128, "lon": -74.006},  # New York
    {"country": "JP", "lat": 35.6762, "lon": 139.6503},  # Tokyo
]


@settings(max_examples=150, deadline=None)
@given(streams(places=POSITIONS), st.integers(min_value=0, max_value=2**32))
def test_with_positions_no_impossible_pair_escapes_whatever_the_order(
    events: list[Payment], seed: int
) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    run = run_engine(arrivals, (NO_MINIMUM,))
    assert alerted(run.alerts, NO_MINIMUM) == geo_velocity_oracle(arrivals, NO_MINIMUM)
    assert_geo_velocity_properties(run.alerts, run.accepted, NO_MINIMUM)


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_arbitrary_order_marks_late_events_and_decides_the_rest_as_the_oracle(
    events: list[Payment], seed: int
) -> None:
    arrivals = list(events)
    random.Random(seed).shuffle(arrivals)
    run = run_engine(arrivals, GEO_RULES)
    for rule in GEO_RULES:
        assert alerted(run.alerts, rule) == geo_velocity_oracle(run.accepted, rule)


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=2**32))
def test_redeliveries_and_the_stored_state_change_nothing(events: list[Payment], seed: int) -> None:
    arrivals = shuffle_within_lateness(events, seed)
    baseline = run_engine(arrivals, GEO_RULES)
    replayed = run_engine(with_redeliveries(arrivals, seed), GEO_RULES, roundtrip=True)
    assert [a.alert_id for a in replayed.alerts] == [a.alert_id for a in baseline.alerts]


def test_london_then_new_york_an_hour_later_alerts_with_distance_and_speed() -> None:
    london = event(1, "c1", "20", BASE_MS, country="GB", lat=51.5072, lon=-0.1276)
    new_york = event(2, "c1", "900", BASE_MS + HOUR_MS, country="US", lat=40.7128, lon=-74.006)
    run = run_engine([london, new_york], (IMPOSSIBLE_TRAVEL,))
    (alert,) = run.alerts
    assert alert.kind == "geo_velocity" and alert.txn_ids == ("t0001", "t0002")
    explained = dict(alert.explanation)
    assert explained["distance_km"] == "5570"  # London-New York, great circle
    assert explained["speed_kmh"] == "5570" == alert.aggregate_value
    assert explained["hours"] == "1.000"
    assert explained["from"] == "GB (51.5072,-0.1276)"
    assert explained["to"] == "US (40.7128,-74.0060)"
    assert alert.to_dict()["explanation"] == explained


def test_country_centroids_place_events_without_a_position() -> None:
    gb = event(1, "c1", "5", BASE_MS, country="GB")
    jp = event(2, "c1", "5", BASE_MS + 3 * HOUR_MS, country="JP")
    (alert,) = run_engine([gb, jp], (IMPOSSIBLE_TRAVEL,)).alerts
    assert dict(alert.explanation)["to"] == "JP (36.0000,138.0000 centroid)"
    # The same trip over 10 hours is possible, and beyond the 6 h window is not compared.
    later = event(3, "c2", "5", BASE_MS + 10 * HOUR_MS, country="JP")
    assert not run_engine([gb._replace(card_id="c2"), later], (IMPOSSIBLE_TRAVEL,)).alerts


def test_a_centroid_does_not_tell_neighbouring_countries_apart() -> None:
    assert distance_km(CENTROIDS["FR"], CENTROIDS["BE"]) > 500  # the centroids are far apart
    fr = event(1, "c1", "5", BASE_MS, country="FR")
    be = event(2, "c1", "5", BASE_MS + 60_000, country="BE")
    assert not run_engine([fr, be], (NO_MINIMUM,)).alerts  # but share a border
    # Paris and Brussels themselves are 260 km apart: a minute is too little for that.
    paris, brussels = fr._replace(lat=48.8566, lon=2.3522), be._replace(lat=50.8503, lon=4.3517)
    assert run_engine([paris, brussels], (NO_MINIMUM,)).alerts
    assert not run_engine([paris, brussels], (IMPOSSIBLE_TRAVEL,)).alerts  # under 500 km
    # New York and the US centroid: one country, told apart by a centroid only.
    new_york = event(3, "c1", "5", BASE_MS + 120_000, country="US", lat=40.7128, lon=-74.006)
    kansas = event(4, "c1", "5", BASE_MS + 180_000, country="US")
    assert not run_engine([new_york, kansas], (IMPOSSIBLE_TRAVEL,)).alerts
    # Great Britain and France share no land border: a minute apart, by centroids, alerts.
    gb = event(5, "c1", "5", BASE_MS + 240_000, country="GB")
    (alert,) = run_engine([gb, fr._replace(ts_ms=gb.ts_ms + 60_000)], (NO_MINIMUM,)).alerts
    assert dict(alert.explanation)["from"] == "GB (54.0000,-2.0000 centroid)"


def test_two_places_at_once_alert_and_an_event_is_in_one_alert_only() -> None:
    gb, us = {"country": "GB"}, {"country": "US"}
    events = [event(n, "c1", "5", BASE_MS + n * 60_000, **(gb if n % 2 else us)) for n in range(4)]
    alerts = run_engine(events, (IMPOSSIBLE_TRAVEL,)).alerts
    assert [a.txn_ids for a in alerts] == [("t0000", "t0001"), ("t0002", "t0003")]


def test_a_login_is_compared_only_by_a_rule_that_names_its_type() -> None:
    login = factories.payment("", "l1", "0", BASE_MS, type="login", country="US")
    payment = event(2, "", "5", BASE_MS + 60_000, country="GB")
    logins_too = geo(
        "logins-too",
        group_by="account_id",
        filter=[{"field": "type", "op": "in", "value": ["login", "payment"]}],
    )
    login, payment = login._replace(account_id="a1"), payment._replace(account_id="a1")
    assert not IMPOSSIBLE_TRAVEL.qualifies(login)
    assert logins_too.qualifies(login) and logins_too.qualifies(payment)
    (alert,) = run_engine([login, payment], (logins_too,)).alerts
    assert alert.txn_ids == ("l1", "t0002")


def test_an_event_without_a_place_is_not_compared() -> None:
    assert "AQ" not in CENTROIDS  # Antarctica: no centroid in the data
    assert not IMPOSSIBLE_TRAVEL.qualifies(event(1, "c1", "5", BASE_MS, country="AQ"))
    assert IMPOSSIBLE_TRAVEL.qualifies(event(1, "c1", "5", BASE_MS, country="AQ", lat=-75, lon=0))
    gb, jp = event(1, "c1", "5", BASE_MS, country="GB"), event(2, "c1", "5", BASE_MS, country="JP")
    assert not POSITIONS_ONLY.qualifies(gb)
    assert not run_engine([gb, jp], (POSITIONS_ONLY,)).alerts
    london, tokyo = gb._replace(lat=51.5, lon=-0.13), jp._replace(lat=35.7, lon=139.7)
    assert run_engine([london, tokyo], (POSITIONS_ONLY,)).alerts


def test_the_state_keeps_the_window_and_reads_back_the_same() -> None:
    state = KeyState()
    for n in range(50):
        p = event(n, "c1", "5", BASE_MS + n * HOUR_MS, country="GB")
        evaluate(state, p, "c1", [IMPOSSIBLE_TRAVEL], LATENESS_MS, 0, 0)
    kept = state.rules[IMPOSSIBLE_TRAVEL.rule_id]
    assert isinstance(kept, GeoVelocityState)
    assert len(kept.pool) == 7  # the window (6 h) and the lateness behind the newest
    assert kept.pool[0][3:5] == ("GB", "")  # placed by its country's centroid
    again = KeyState.from_json(json.loads(json.dumps(state.to_json())))
    assert again.rules[IMPOSSIBLE_TRAVEL.rule_id] == kept
    assert again.describe()[IMPOSSIBLE_TRAVEL.rule_id]["pending"][0]["place"] == ""


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_speed_kmh": 0}, "max_speed_kmh"),
        ({"max_speed_kmh": "fast"}, "max_speed_kmh"),
        ({"min_distance_km": -1}, "min_distance_km"),
        ({"min_distance_km": 30000}, "min_distance_km"),
        ({"filter": [{"field": "lat", "op": ">", "value": 1}]}, "filter[0].field"),
        ({"threshold": 3}, "threshold"),
        ({"use_centroids": "no"}, "use_centroids"),
    ],
)
def test_bad_geo_velocity_rules_are_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    body = {"rule_id": "g", "version": 1, "kind": "geo_velocity", "window": 3600, **changes}
    with pytest.raises(RuleError) as refused:
        parse_rule(body)
    assert refused.value.field == field


def test_a_geo_velocity_rule_round_trips_and_the_page_lists_its_fields() -> None:
    for rule in GEO_RULES:
        assert parse_rule(json.loads(rule.to_bytes())) == rule
    text = section(page("reference/rule-format.md"), "Geo-velocity")
    assert first_column(text) == ["max_speed_kmh", "min_distance_km", "use_centroids", "filter"]
