"""Events beyond payments: each type validated with its own fields, today's payments and
rules unchanged, and rules that name a type following events across types."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from app.detection.engine import KeyState, evaluate
from app.detection.forwarding import Forwarded, decode_forwarded, encode_forwarded
from app.detection.models import EVENT_TYPES, PAYMENT, iso_from_ms, ms_from_iso
from app.detection.rulebook import RuleBook
from app.detection.rules import FirstSeenRule, Rule, SequenceRule, parse_rule
from app.detection.validation import InvalidPayment, parse_keyed_payment, parse_payment
from app.rules_admin.topic import load_rule_file
from tests.docs import REPO
from tests.pan_variants import PAN
from tests.unit.detection.streams import BASE_MS, LATENESS_MS
from tests.unit.detection.test_validation import encode, good

NOW_MS = 1_795_000_000_000
# A value for every field any type may have: a good payment's.
VALUES: dict[str, Any] = {
    name: value for name, value in good().items() if name not in ("txn_id", "account_id", "ts")
}


def event(kind: str, optional: bool = True, **overrides: Any) -> dict[str, Any]:
    """An event of ``kind`` with its required fields, and its optional ones if asked."""
    needed, others = EVENT_TYPES[kind]
    body: dict[str, Any] = {"type": kind, "txn_id": "e1", "account_id": "acct_1"}
    body.update({name: VALUES[name] for name in (*needed, *(others if optional else ()))})
    body["ts"] = iso_from_ms(NOW_MS)
    body.update(overrides)
    return body


def refused(body: dict[str, Any], key: bytes | None = b"acct_1") -> InvalidPayment:
    with pytest.raises(InvalidPayment) as caught:
        parse_keyed_payment(key, encode(body), NOW_MS)
    return caught.value


@pytest.mark.parametrize("kind", list(EVENT_TYPES))
@pytest.mark.parametrize("optional", [True, False])
def test_each_type_is_accepted_with_its_fields_and_reads_back_from_its_json(
    kind: str, optional: bool
) -> None:
    parsed = parse_payment(encode(event(kind, optional)), NOW_MS)
    assert parsed.type == kind and parsed.account_id == "acct_1"
    needed, others = EVENT_TYPES[kind]
    for name, sent in VALUES.items():
        value = parsed.field(name)
        if name in needed or (optional and name in others):
            assert str(value) == sent
        else:
            assert value == (Decimal(0) if name == "amount" else "")
    assert parse_payment(parsed.to_json(), NOW_MS) == parsed


@pytest.mark.parametrize("kind", [k for k in EVENT_TYPES if k != PAYMENT])
def test_each_required_field_of_a_type_is_named_when_missing(kind: str) -> None:
    for name in ("txn_id", "account_id", "ts", *EVENT_TYPES[kind][0]):
        body = {k: v for k, v in event(kind).items() if k != name}
        problem = refused(body)
        assert problem.reason == "missing_field" and f"'{name}'" in problem.detail


def test_a_field_of_another_type_and_an_unknown_type_are_refused_naming_the_field() -> None:
    problem = refused(event("login", amount="5"))
    assert problem.reason == "field_not_of_type"
    assert problem.detail == "field 'amount' is not a field of a login"
    problem = refused(event("login", type="logon"))
    assert problem.reason == "unknown_type" and "field 'type'" in problem.detail
    assert refused(event("login", type=7)).reason == "unknown_type"


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"device_id": ""}, "bad_type", "device_id"),
        ({"device_id": "d" * 129}, "bad_value", "device_id"),
        ({"country": "UK"}, "unknown_country", "country"),
        ({"device_id": PAN}, "pan_in_field", "device_id"),
        ({"ts": "yesterday"}, "bad_timestamp", "ts"),
        ({"lat": "91", "lon": "0"}, "bad_location", "lat"),
        ({"lat": "1", "lon": "-180.5"}, "bad_location", "lon"),
        ({"lat": "NaN", "lon": "0"}, "bad_location", "lat"),
        ({"lat": "51.5"}, "missing_field", "lon"),
        ({"lat": True, "lon": 0}, "bad_type", "lat"),
    ],
)
def test_an_event_is_checked_as_a_payment_is(
    changes: dict[str, Any], reason: str, field: str
) -> None:
    problem = refused(event("login", **changes))
    assert problem.reason == reason and f"'{field}'" in problem.detail


def test_a_payout_checks_its_amount_and_currency_and_a_card_number_anywhere() -> None:
    assert refused(event("payout", amount="-1")).reason == "negative_amount"
    assert refused(event("payout", currency="XXY")).reason == "unknown_currency"
    assert refused(event("payout", card_id=PAN)).reason == "pan_in_card_id"
    assert refused(event("password_reset"), key=PAN.encode()).reason == "pan_in_key"


def test_a_payment_with_or_without_type_is_the_same_payment() -> None:
    plain = parse_payment(encode(good()), NOW_MS)
    typed = parse_payment(encode(good(type="payment")), NOW_MS)
    assert typed == plain and typed.type == PAYMENT
    assert typed.fingerprint() == plain.fingerprint()
    assert json.loads(plain.to_json()) == {**good(), "amount": "1000.00"}
    # A payment still needs every one of its fields.
    problem = refused({k: v for k, v in good(type="payment").items() if k != "mcc"})
    assert problem.reason == "missing_field" and "'mcc'" in problem.detail


def test_a_position_is_kept_and_changes_the_fingerprint() -> None:
    plain = parse_payment(encode(good()), NOW_MS)
    located = parse_payment(encode(good(lat="51.5072", lon=-0.1276)), NOW_MS)
    assert (located.lat, located.lon) == (51.5072, -0.1276)
    assert located._replace(lat=None, lon=None) == plain
    assert located.fingerprint() != plain.fingerprint()
    assert parse_payment(located.to_json(), NOW_MS) == located


def test_an_event_without_a_card_is_never_re_keyed_and_one_with_a_card_is() -> None:
    login, rekeyed = parse_keyed_payment(b"acct_1", encode(event("login")), NOW_MS)
    assert login.card_id == "" and not rekeyed
    _, rekeyed = parse_keyed_payment(None, encode(event("password_reset")), NOW_MS)
    assert not rekeyed
    _, rekeyed = parse_keyed_payment(b"acct_1", encode(event("refund")), NOW_MS)
    assert rekeyed  # it has a card: its state is the card's
    _, rekeyed = parse_keyed_payment(b"tok_abc", encode(event("refund")), NOW_MS)
    assert not rekeyed


def test_forwarded_events_keep_their_type_and_records_of_before_types_still_decode() -> None:
    login = parse_payment(encode(event("login", lat=1, lon=2)), NOW_MS)
    payment = parse_payment(encode(good()), NOW_MS)
    items = [Forwarded("account_id\x1facct_1", 5, login), Forwarded("c", 6, payment)]
    (record,) = encode_forwarded(items)
    assert decode_forwarded(record) == items
    before = json.dumps([["c", 6, [*payment[:3], "1000.00", *payment[4:12]]]]).encode()
    assert decode_forwarded(before) == [Forwarded("c", 6, payment)]


def test_the_login_the_docs_show_is_valid() -> None:
    raw = (REPO / "examples/login.json").read_bytes()
    sent_at = ms_from_iso(json.loads(raw)["ts"])
    assert sent_at is not None
    login = parse_payment(raw, sent_at)
    assert login.type == "login" and login.lat == 51.5072


# ------------------------------------------------------------------------------- rules


def shipped_rules() -> list[Rule]:
    files = ("app/rules_admin/default_rules.yaml", "examples/rules/kinds.yaml")
    return [rule for name in files for rule in load_rule_file(REPO / name)]


@pytest.mark.parametrize("kind", [k for k in EVENT_TYPES if k != PAYMENT])
def test_no_rule_that_names_no_type_sees_another_type_of_event(kind: str) -> None:
    other = parse_payment(encode(event(kind)), NOW_MS)
    # Every field filled in, whatever the type: only the type tells it from a payment.
    other = other._replace(**{**VALUES, "amount": Decimal(5000)})
    untyped = [r for r in shipped_rules() if "'type'" not in repr(r.to_json())]
    assert len(untyped) >= 8
    assert not [r.rule_id for r in untyped if r.qualifies(other)]
    assert [r.rule_id for r in untyped if r.qualifies(other._replace(type=PAYMENT))]
    assert not RuleBook(rules={r.rule_id: r for r in untyped}).regroup_keys(other)


def test_a_rule_that_names_a_type_sees_it_on_keys_the_event_has() -> None:
    logins = parse_rule(
        {
            "rule_id": "logins",
            "version": 1,
            "group_by": "device_id",
            "filter": [{"field": "type", "op": "==", "value": "login"}],
            "aggregate": "distinct_count(account_id)",
            "window": 600,
            "threshold": 3,
        }
    )
    login = parse_payment(encode(event("login")), NOW_MS)
    assert logins.qualifies(login)
    assert not logins.qualifies(login._replace(device_id=""))
    assert not logins.qualifies(parse_payment(encode(good()), NOW_MS))
    by_card = parse_rule({**logins.to_json(), "rule_id": "by-card", "group_by": "card_id"})
    assert not by_card.qualifies(login)  # a login has no card
    book = RuleBook(rules={"logins": logins})
    assert book.regroup_keys(login) == ["device_id\x1fdev_1"]


RESET_THEN_PAYOUT = parse_rule(
    {
        "rule_id": "reset-then-payout",
        "version": 1,
        "kind": "sequence",
        "group_by": "account_id",
        "steps": [
            {"filter": [{"field": "type", "op": "==", "value": "password_reset"}]},
            {
                "filter": [
                    {"field": "type", "op": "==", "value": "payout"},
                    {"field": "device_id", "op": "!=", "ref": "steps[0].device_id"},
                ]
            },
        ],
        "window": 1800,
        "severity": "critical",
    }
)


def decide(events: list[dict[str, Any]], rules: list[Rule]) -> list[tuple[str, ...]]:
    state, found = KeyState(), list[tuple[str, ...]]()
    for n, body in enumerate(events):
        ts = BASE_MS + body["at_s"] * 1000
        sent = {k: v for k, v in body.items() if k != "at_s"}
        p = parse_payment(encode({**sent, "txn_id": f"e{n}", "ts": iso_from_ms(ts)}), ts)
        verdict = evaluate(state, p, "acct_1", rules, LATENESS_MS, 0, 0)
        found.extend(a.txn_ids for a in verdict.alerts)
    return found


def test_a_password_reset_then_a_payout_from_another_device_within_30_minutes_alerts() -> None:
    assert isinstance(RESET_THEN_PAYOUT, SequenceRule)
    reset = event("password_reset", device_id="dev_owner", at_s=0)
    login = event("login", device_id="dev_thief", at_s=60)
    payment = {**good(device_id="dev_thief", account_id="acct_1"), "at_s": 100}
    payout = event("payout", device_id="dev_thief", at_s=1200)
    assert decide([reset, login, payment, payout], [RESET_THEN_PAYOUT]) == [("e0", "e3")]
    same_device = {**payout, "device_id": "dev_owner"}
    assert decide([reset, same_device], [RESET_THEN_PAYOUT]) == []
    too_late = {**payout, "at_s": 1801}
    assert decide([reset, too_late], [RESET_THEN_PAYOUT]) == []


def test_a_first_seen_rule_naming_no_type_learns_from_payments_only() -> None:
    new_device = parse_rule(
        {
            "rule_id": "new-device",
            "version": 1,
            "kind": "first_seen",
            "group_by": "account_id",
            "field": "device_id",
            "window": 3600,
        }
    )
    assert isinstance(new_device, FirstSeenRule)
    first = {**good(device_id="dev_a", account_id="acct_1"), "at_s": 0}
    login = event("login", device_id="dev_b", at_s=10)
    second = {**good(device_id="dev_b", account_id="acct_1"), "at_s": 20}
    # The login from dev_b is not history: the payment from dev_b is its first use.
    assert decide([first, login, second], [new_device]) == [("e2",)]
    learns = parse_rule(
        {
            **new_device.to_json(),
            "filter": [{"field": "type", "op": "in", "value": ["payment", "login"]}],
        }
    )
    assert decide([first, login, second], [learns]) == [("e1",)]
