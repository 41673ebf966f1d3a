"""app.detection.lists and list conditions: entries parsed and refused naming the field,
the store folded from records (bound, tombstones, poison), lists in conditions judged by
the payment's event time, suppressions marking alerts, and the engine with list conditions
checked against the brute-force oracle."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery.dynamodb import alert_item
from app.detection.conditions import list_names
from app.detection.lists import (
    LIST,
    SUPPRESSED,
    SUPPRESSION,
    ListBook,
    ListError,
    listbook,
    parse_entry,
)
from app.detection.models import iso_from_ms
from app.detection.rules import AggregateRule, RuleError, parse_rule
from app.rules_admin.topic import load_rule_file
from lambdas.notifier.models.alert import classify_record
from tests import factories, oracle
from tests.docs import REPO
from tests.factories import rule_body
from tests.unit.detection.streams import BASE_MS, run_engine, shuffle_within_lateness

T0 = BASE_MS


def entry_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "list": "blocked_devices",
        "value": "dev-1",
        "until": None,
        "reason": "seen in a takeover",
        "by": "ana",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def suppression_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "rule_id": "high-value-burst",
        "key": "tok_1",
        "until": iso_from_ms(T0 + 60_000),
        "reason": "merchant batch run",
    }
    body.update(changes)
    return body


def record(kind: str, body: dict[str, Any]) -> tuple[bytes, bytes]:
    entry = parse_entry(kind, body)
    return entry.record_key.encode(), entry.to_bytes()


@pytest.fixture
def lists() -> Iterator[ListBook]:
    """The engine's listbook, emptied after the test (the oracle's lists too)."""
    yield listbook
    listbook.lists.clear()
    listbook.suppressions.clear()
    oracle.LISTS.clear()


# ---------------------------------------------------------------------------- entries


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        (LIST, entry_body(list="Blocked"), "list"),
        (LIST, entry_body(list="a:b"), "list"),
        (LIST, entry_body(value=""), "value"),
        (LIST, entry_body(value="x" * 201), "value"),
        (LIST, entry_body(value="4111 1111 1111 1111"), "value"),
        (LIST, entry_body(value="@other"), "value"),
        (LIST, entry_body(until="2026-12-01T00:00:00"), "until"),
        (LIST, entry_body(until="tomorrow"), "until"),
        (LIST, entry_body(reason=...), "reason"),
        (LIST, entry_body(reason="  "), "reason"),
        (LIST, entry_body(by=7), "by"),
        (LIST, entry_body(colour="red"), "list"),
        (SUPPRESSION, suppression_body(rule_id="Bad Rule"), "rule_id"),
        (SUPPRESSION, suppression_body(until=None), "until"),
        (SUPPRESSION, suppression_body(key="@Not-A-List"), "key"),
        (SUPPRESSION, suppression_body(reason=""), "reason"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_field(kind: str, body: Any, field: str) -> None:
    with pytest.raises(ListError) as refused:
        parse_entry(kind, body)
    assert refused.value.field == field


def test_a_bin_is_not_a_card_number_and_may_be_listed() -> None:
    assert parse_entry(LIST, entry_body(list="test_bins", value="411111")).value == "411111"
    assert parse_entry(LIST, entry_body(list="test_bins", value="41111111")).value == "41111111"


def test_an_allowlist_suppression_may_stand_until_removed() -> None:
    entry = parse_entry(SUPPRESSION, suppression_body(key="@trusted_merchants", until=None))
    assert entry.until_ms is None and entry.record_key == "high-value-burst:@trusted_merchants"


def test_an_entry_round_trips_through_its_record() -> None:
    entry = parse_entry(LIST, entry_body(until="2026-12-06T10:00:00+01:00"))
    assert json.loads(entry.to_bytes())["until"] == "2026-12-06T09:00:00.000Z"
    assert parse_entry(LIST, json.loads(entry.to_bytes())) == entry


# ------------------------------------------------------------------------------ store


def test_records_add_replace_and_remove_entries() -> None:
    book = ListBook()
    assert book.apply(LIST, *record(LIST, entry_body())).startswith("applied")
    assert book.holds("blocked_devices", "dev-1", T0)
    book.apply(LIST, *record(LIST, entry_body(until=iso_from_ms(T0))))
    assert book.size() == 1 and not book.holds("blocked_devices", "dev-1", T0)
    assert book.apply(LIST, b"blocked_devices:dev-1", None).startswith("removed")
    assert book.size() == 0 and book.lists == {}


def test_a_poison_record_is_counted_and_changes_nothing() -> None:
    book = ListBook()
    key, value = record(LIST, entry_body())
    assert book.apply(LIST, b"blocked_devices:dev-2", value).startswith("poison")
    assert book.apply(LIST, key, b"{not json").startswith("poison")
    assert book.apply(LIST, key, json.dumps(entry_body(value="")).encode()).startswith("poison")
    assert book.apply(LIST, b"no-colon", None).startswith("poison")
    assert book.poison_records == 4 and book.size() == 0


def test_past_the_bound_a_new_entry_is_refused_but_a_held_one_still_changes() -> None:
    book = ListBook(max_entries=2)
    for value in ("dev-1", "dev-2"):
        book.apply(LIST, *record(LIST, entry_body(value=value)))
    assert book.apply(LIST, *record(LIST, entry_body(value="dev-3"))).startswith("poison")
    assert book.refused_at_bound == 1 and not book.holds("blocked_devices", "dev-3", T0)
    changed = entry_body(value="dev-1", reason="confirmed")
    assert book.apply(LIST, *record(LIST, changed)).startswith("applied")
    assert book.entry("blocked_devices", "dev-1").reason == "confirmed"  # type: ignore[union-attr]


def test_at_the_bound_entries_expired_long_ago_are_forgotten_to_make_room() -> None:
    book = ListBook(max_entries=1, forget_after_ms=1000)
    book.apply(LIST, *record(LIST, entry_body(until="2020-01-01T00:00:00Z")))
    assert book.apply(LIST, *record(LIST, entry_body(value="dev-2"))).startswith("applied")
    assert [e.value for e in book.entries(LIST)] == ["dev-2"]


# ------------------------------------------------------------------- list conditions


def list_rule(op: str = "in", name: str = "@blocked_devices", **changes: Any) -> AggregateRule:
    fields: dict[str, Any] = {
        "rule_id": "blocked-device",
        "filter": [{"field": "device_id", "op": op, "value": name}],
        "aggregate": "count",
        "threshold": {"op": ">=", "value": 1},
    }
    body = rule_body(**{**fields, **changes})
    rule = parse_rule(body)
    assert isinstance(rule, AggregateRule)
    return rule


@pytest.mark.parametrize(
    ("condition", "field", "problem"),
    [
        ({"field": "device_id", "op": "in", "value": "blocked"}, "filter[0].value", "'@name'"),
        ({"field": "device_id", "op": "in", "value": "@Blocked"}, "filter[0].value", "list name"),
        ({"field": "device_id", "op": "in", "value": "@"}, "filter[0].value", "list name"),
        ({"field": "amount", "op": "in", "value": "@big"}, "filter[0].field", "lists hold text"),
        ({"field": "device_id", "op": "==", "value": "@blocked"}, None, None),
    ],
)
def test_a_bad_list_reference_is_refused_naming_the_field(
    condition: dict[str, Any], field: str | None, problem: str | None
) -> None:
    body = rule_body(filter=[condition])
    if field is None:  # '==' compares with the text "@blocked": no list reference
        parse_rule(body)
        return
    with pytest.raises(RuleError) as refused:
        parse_rule(body)
    assert refused.value.field == field and str(problem) in refused.value.problem


def test_a_list_condition_round_trips_through_json_and_pickle() -> None:
    rule = list_rule("not in")
    assert rule.to_json()["filter"] == [
        {"field": "device_id", "op": "not in", "value": "@blocked_devices"}
    ]
    assert parse_rule(json.loads(rule.to_bytes())) == rule
    assert pickle.loads(pickle.dumps(rule)) == rule


def test_a_list_nobody_wrote_is_empty(lists: ListBook) -> None:
    p = factories.payment(device_id="dev-1", ts_ms=T0)
    assert not list_rule("in").qualifies(p)
    assert list_rule("not in").qualifies(p)


def test_a_list_entry_applies_from_the_next_payment_on(lists: ListBook) -> None:
    rule = list_rule()  # compiled before the entry exists: the lists are read per payment
    p = factories.payment(device_id="dev-1", ts_ms=T0)
    assert not rule.qualifies(p)
    lists.apply(LIST, *record(LIST, entry_body()))
    assert rule.qualifies(p)
    assert not rule.qualifies(factories.payment(device_id="dev-2", ts_ms=T0))
    lists.apply(LIST, b"blocked_devices:dev-1", None)
    assert not rule.qualifies(p)


def test_an_entry_expires_by_the_payment_event_time_not_the_clock(lists: ListBook) -> None:
    lists.apply(LIST, *record(LIST, entry_body(until=iso_from_ms(T0))))
    rule = list_rule()
    # T0 is in the past of the wall clock: a backlog's payment before it still matches.
    assert rule.qualifies(factories.payment(device_id="dev-1", ts_ms=T0 - 1))
    assert not rule.qualifies(factories.payment(device_id="dev-1", ts_ms=T0))


def test_lists_work_inside_groups(lists: ListBook) -> None:
    lists.apply(LIST, *record(LIST, entry_body(list="risky_countries", value="NG")))
    rule = parse_rule(
        rule_body(
            filter=[
                {
                    "any": [
                        {"field": "country", "op": "in", "value": "@risky_countries"},
                        {"not": {"field": "device_id", "op": "not in", "value": "@blocked"}},
                    ]
                }
            ]
        )
    )
    assert rule.qualifies(factories.payment(country="NG", ts_ms=T0))
    assert not rule.qualifies(factories.payment(country="US", ts_ms=T0))


# ------------------------------------------------------------------------ suppressions


def alert_at(last_ms: int, **changes: Any) -> Any:
    return factories.alert(last_event_ts=iso_from_ms(last_ms), group_key="tok_1", **changes)


def test_a_suppression_marks_the_rule_alert_for_its_key_until_it_ends() -> None:
    book = ListBook()
    book.apply(SUPPRESSION, *record(SUPPRESSION, suppression_body()))
    (inside,) = book.mark((alert_at(T0 + 59_999),))
    assert inside.status == SUPPRESSED
    assert "merchant batch run" in dict(inside.explanation)["suppressed"]
    (after,) = book.mark((alert_at(T0 + 60_000),))
    assert after.status == "active" and after.explanation == ()
    other_key = replace(alert_at(T0), group_key="tok_2")
    other_rule = replace(alert_at(T0), rule_id="other")
    assert [a.status for a in book.mark((other_key, other_rule))] == ["active", "active"]


def test_a_suppression_changes_only_the_status_not_the_alert_id() -> None:
    book = ListBook()
    book.apply(SUPPRESSION, *record(SUPPRESSION, suppression_body()))
    alert = alert_at(T0)
    (marked,) = book.mark((alert,))
    assert (marked.alert_id, marked.txn_ids) == (alert.alert_id, alert.txn_ids)


def test_a_shadow_alert_stays_shadow() -> None:
    book = ListBook()
    book.apply(SUPPRESSION, *record(SUPPRESSION, suppression_body()))
    (marked,) = book.mark((alert_at(T0, status="shadow"),))
    assert marked.status == "shadow"


def test_an_allowlist_suppresses_every_key_on_it_while_its_entry_holds() -> None:
    book = ListBook()
    book.apply(SUPPRESSION, *record(SUPPRESSION, suppression_body(key="@test_cards", until=None)))
    book.apply(
        LIST,
        *record(LIST, entry_body(list="test_cards", value="tok_1", until=iso_from_ms(T0))),
    )
    assert book.mark((alert_at(T0 - 1),))[0].status == SUPPRESSED
    assert book.mark((alert_at(T0),))[0].status == "active"
    assert book.about("tok_1")["suppressions"][0]["key"] == "@test_cards"
    assert book.about("tok_1")["lists"][0]["list"] == "test_cards"
    assert book.about("tok_9") == {"lists": [], "suppressions": []}


# ------------------------------------------------------------- the engine, the oracle


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2"]),
            st.sampled_from(["d1", "d2", "d3"]),
            st.integers(0, 600_000),
        ),
        min_size=1,
        max_size=25,
    ),
    st.dictionaries(
        st.sampled_from(["d1", "d2", "d3"]), st.one_of(st.none(), st.integers(0, 600_000))
    ),
    st.sampled_from(["in", "not in"]),
    st.integers(0, 1000),
)
def test_a_list_rule_keeps_the_rule_semantics_against_the_oracle(
    events: list[tuple[str, str, int]],
    entries: dict[str, int | None],
    op: str,
    seed: int,
) -> None:
    """A count rule whose filter reads a list (entries ending at random event times) is
    sound, complete and disjoint for any arrival order within the lateness; the oracle reads
    the filter from its JSON and the lists from its own copy."""
    listbook.lists.clear()
    try:
        for device, until in entries.items():
            until_iso = None if until is None else iso_from_ms(T0 + until)
            listbook.apply(LIST, *record(LIST, entry_body(value=device, until=until_iso)))
            oracle.LISTS.setdefault("blocked_devices", {})[device] = (
                None if until is None else T0 + until
            )
        rule = list_rule(op, threshold={"op": ">=", "value": 2}, window=120)
        payments = [
            factories.payment(card, f"t{i:03d}", "10", T0 + at, device_id=device)
            for i, (card, device, at) in enumerate(events)
        ]
        filter_ = rule.to_json()["filter"]
        for p in payments:
            assert rule.qualifies(p) == all(oracle.holds(c, p) for c in filter_)
        run = run_engine(shuffle_within_lateness(payments, seed), [rule])
        oracle.assert_properties(run.alerts, run.accepted, rule)
    finally:
        listbook.lists.clear()
        oracle.LISTS.clear()


def test_a_suppressed_alert_is_written_but_not_notified() -> None:
    """Downstream a suppressed alert is a row like any other whose status the notifier does
    not page for (and the sink opens a case only for an active alert)."""
    book = ListBook()
    book.apply(SUPPRESSION, *record(SUPPRESSION, suppression_body()))
    (marked,) = book.mark((alert_at(T0),))
    item = alert_item(marked, written_at_ms=0)
    assert item["status"] == {"S": SUPPRESSED}
    decision = classify_record({"eventName": "INSERT", "dynamodb": {"NewImage": item}})
    assert not decision.notify and decision.reason == "status:suppressed"


def test_a_list_rule_sent_to_a_backtest_process_takes_the_list_entries_along(
    lists: ListBook,
) -> None:
    """A backtest runs in a spawned process without a follower: the rule pickled to it
    carries its lists' entries, so it decides as this worker would."""
    lists.apply(LIST, *record(LIST, entry_body(until=iso_from_ms(T0))))
    probe = (
        "import pickle, sys; from tests import factories;"
        "rule = pickle.loads(sys.stdin.buffer.read());"
        f"print(rule.qualifies(factories.payment(device_id='dev-1', ts_ms={T0 - 1})),"
        f" rule.qualifies(factories.payment(device_id='dev-1', ts_ms={T0})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        input=pickle.dumps(list_rule()),
        capture_output=True,
        cwd=Path(__file__).resolve().parents[3],
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["True", "False"]


def test_a_follower_fed_process_keeps_its_own_entries_when_a_rule_arrives(
    lists: ListBook,
) -> None:
    sent = pickle.dumps(list_rule())  # the list is empty here
    lists.apply(LIST, *record(LIST, entry_body()))
    lists.loaded.set()
    try:
        assert pickle.loads(sent).qualifies(factories.payment(device_id="dev-1", ts_ms=T0))
    finally:
        lists.loaded.clear()


def test_the_lists_a_rule_reads_are_found_anywhere_in_it() -> None:
    body = rule_body(
        filter=[
            {"any": [{"field": "ip", "op": "in", "value": "@risky_ips"}]},
            {"not": {"field": "device_id", "op": "not in", "value": "@known"}},
            {"field": "country", "op": "in", "value": ["GB"]},
        ]
    )
    assert list_names(parse_rule(body).to_json()) == {"risky_ips", "known"}
    assert list_names(rule_body()) == set()


# ----------------------------------------------------------------------------- BIN lists


@pytest.mark.parametrize(
    "value", ["41111", "4111111", "411111111", "4111x1", "٤١١١١١", " 411111", "4111111111111111"]
)
def test_a_bin_list_takes_only_6_or_8_digit_bins(value: str) -> None:
    with pytest.raises(ListError) as refused:
        parse_entry(LIST, entry_body(list="risky_bins", value=value))
    assert refused.value.field == "value"
    # Another list takes any text but a card number.
    if value != "4111111111111111":
        assert parse_entry(LIST, entry_body(list="risky_codes", value=value)).value == value


def test_a_bin_list_is_no_allowlist_of_group_keys() -> None:
    with pytest.raises(ListError) as refused:
        parse_entry(SUPPRESSION, suppression_body(key="@risky_bins", until=None))
    assert refused.value.field == "key" and "BIN list" in refused.value.problem


def bin_rule(op: str = "in", name: str = "@risky_bins") -> AggregateRule:
    return list_rule(op, name, filter=[{"field": "bin", "op": op, "value": name}])


def test_an_8_digit_bin_is_on_a_bin_list_by_its_6_digit_prefix(lists: ListBook) -> None:
    lists.apply(LIST, *record(LIST, entry_body(list="risky_bins", value="411111")))
    lists.apply(LIST, *record(LIST, entry_body(list="risky_bins", value="52223344")))
    oracle.LISTS["risky_bins"] = {"411111": None, "52223344": None}
    rule, outside = bin_rule(), bin_rule("not in")
    for bin_, listed in [
        ("411111", True),
        ("41111122", True),  # an 8-digit BIN of the listed issuer prefix
        ("52223344", True),
        ("522233", False),  # a 6-digit BIN is not on a list of one of its 8-digit ranges
        ("52223355", False),
        ("411112", False),
        ("", False),  # the payment gave no BIN
    ]:
        p = factories.payment(bin=bin_, ts_ms=T0)
        assert (rule.qualifies(p), outside.qualifies(p)) == (listed, not listed), bin_
        assert oracle.holds(rule.to_json()["filter"][0], p) == listed


def test_an_expired_8_digit_entry_does_not_hide_its_6_digit_prefix(lists: ListBook) -> None:
    lists.apply(LIST, *record(LIST, entry_body(list="risky_bins", value="411111")))
    lists.apply(
        LIST,
        *record(LIST, entry_body(list="risky_bins", value="41111122", until=iso_from_ms(T0))),
    )
    assert bin_rule().qualifies(factories.payment(bin="41111122", ts_ms=T0 + 1))


def test_a_bin_is_compared_like_any_field(lists: ListBook) -> None:
    rule = parse_rule(rule_body(filter=[{"field": "bin", "op": "==", "value": "411111"}]))
    assert rule.qualifies(factories.payment(bin="411111", ts_ms=T0))
    assert not rule.qualifies(factories.payment(bin="41111122", ts_ms=T0))  # == is exact


@pytest.mark.parametrize(
    ("condition", "field", "problem"),
    [
        ({"field": "bin", "op": "in", "value": "@blocked"}, "filter[0].value", "BIN lists only"),
        ({"field": "card_id", "op": "in", "value": "@risky_bins"}, "filter[0].field", "BIN list"),
        ({"field": "ip", "op": "not in", "value": "@bins"}, "filter[0].field", "BIN list"),
    ],
)
def test_only_the_bin_field_reads_a_bin_list(
    condition: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(RuleError) as refused:
        parse_rule(rule_body(filter=[condition]))
    assert refused.value.field == field and problem in refused.value.problem


def test_the_bin_list_example_rule_fires_on_a_bin_attack_at_one_merchant(
    lists: ListBook,
) -> None:
    """examples/rules/bin-list.yaml, made active: five cards whose 8-digit BINs fall in a
    listed 6-digit BIN at one merchant within 10 minutes alert; BINs off the list do not."""
    (example,) = load_rule_file(REPO / "examples/rules/bin-list.yaml")
    rule = replace(example, status="active")
    lists.apply(LIST, *record(LIST, entry_body(list="risky_bins", value="411111")))
    attack = [
        factories.payment(
            f"tok_{n}", f"a{n}", "1", T0 + n * 1000, merchant_id="m9", bin=f"411111{n:02d}"
        )
        for n in range(5)
    ]
    others = [
        factories.payment(
            f"tok_{n}", f"o{n}", "1", T0 + n * 1000, merchant_id="m8", bin=f"522222{n:02d}"
        )
        for n in range(5)
    ]
    run = run_engine([*attack, *others], [rule])
    assert [(a.group_key, len(a.txn_ids)) for a in run.alerts] == [("m9", 5)]
