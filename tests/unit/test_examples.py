"""examples/: the payment the docs show is one the workers accept, the producer sends it as
they expect it, and the first rule's YAML and JSON are the same rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.detection.models import PAYMENT_FIELDS
from app.detection.rules import KINDS, parse_rule
from app.detection.validation import InvalidPayment, parse_keyed_payment, parse_payment
from app.rules_admin.topic import bootstrap_servers as app_bootstrap_servers
from app.rules_admin.topic import load_rule_file
from examples.produce_payment import as_new_payment, bootstrap_servers, record

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PAYMENT = EXAMPLES / "payment.json"
RULE_YAML = EXAMPLES / "rules" / "first-rule.yaml"
RULE_JSON = EXAMPLES / "rules" / "first-rule.json"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def example() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(PAYMENT.read_bytes())
    return body


def test_the_example_payment_holds_exactly_the_payment_fields() -> None:
    assert list(example()) == list(PAYMENT_FIELDS)


def test_the_example_payment_is_accepted_once_its_ts_is_now() -> None:
    body = example()
    body["ts"] = datetime.now(UTC).isoformat()
    payment = parse_payment(json.dumps(body).encode(), now_ms())
    assert payment.amount == Decimal("1250.00")
    assert payment.card_id == body["card_id"]


def test_the_example_payment_dated_far_from_now_is_refused_for_its_ts() -> None:
    """Why the producer stamps it: a ts beyond FRAUD_MAX_FUTURE_SKEW or FRAUD_MAX_EVENT_AGE."""
    ts_ms = int(datetime.fromisoformat(example()["ts"]).timestamp() * 1000)
    with pytest.raises(InvalidPayment) as ahead:
        parse_payment(PAYMENT.read_bytes(), ts_ms - 31_000)
    assert ahead.value.reason == "ts_in_future"
    with pytest.raises(InvalidPayment) as old:
        parse_payment(PAYMENT.read_bytes(), ts_ms + 31 * 24 * 3600 * 1000)
    assert old.value.reason == "timestamp_out_of_range"


def test_the_producer_sends_a_new_payment_keyed_by_its_card() -> None:
    key, value, name = record(PAYMENT.read_bytes(), as_is=False)
    payment, rekeyed = parse_keyed_payment(key, value, now_ms())
    assert not rekeyed
    assert key == b"tok_3f9a2c7be41d08e5"
    assert payment.txn_id == name
    assert payment.txn_id.startswith("txn_demo_0001_")
    assert abs(payment.ts_ms - now_ms()) < 5_000
    assert payment.ts.endswith("Z")
    assert {n: payment.field(n) for n in PAYMENT_FIELDS if n not in ("txn_id", "ts")} == {
        n: Decimal(v) if n == "amount" else v
        for n, v in example().items()
        if n not in ("txn_id", "ts")
    }
    again = record(PAYMENT.read_bytes(), as_is=False)[2]
    assert again != name  # each run is a payment of its own


def test_the_producer_keeps_an_amount_written_as_a_json_number_exact() -> None:
    raw = PAYMENT.read_bytes().replace(b'"amount": "1250.00"', b'"amount": 1250.10')
    key, value, _ = record(raw, as_is=False)
    payment, _ = parse_keyed_payment(key, value, now_ms())
    assert payment.amount == Decimal("1250.10")


def test_the_producer_sends_any_bytes_unchanged_with_as_is() -> None:
    assert record(PAYMENT.read_bytes(), as_is=True) == (
        b"tok_3f9a2c7be41d08e5",
        PAYMENT.read_bytes(),
        "txn_demo_0001",
    )
    assert record(b"{not json", as_is=True) == (None, b"{not json", "a record that is not JSON")
    assert record(b"[1]", as_is=True)[0] is None
    with pytest.raises(ValueError):
        record(b"{not json", as_is=False)


def test_the_producer_dates_in_utc_with_the_zone() -> None:
    moment = datetime(2026, 12, 5, 14, 3, 7, 250_000, tzinfo=UTC)
    assert as_new_payment(example(), moment)["ts"] == "2026-12-05T14:03:07.250Z"


@pytest.mark.parametrize(
    "broker", ["kafka://127.0.0.1:9092", "kafka://a:1;kafka://b:2", "aiokafka://h:3"]
)
def test_the_producer_reads_fraud_broker_as_the_app_does(broker: str) -> None:
    assert bootstrap_servers(broker) == app_bootstrap_servers(broker)


def test_the_first_rule_as_json_is_the_yaml_rule_less_its_version() -> None:
    """The HTTP API gives a body without a version the next one (app/rules_admin/http.py),
    so the same JSON can be PUT again after the CLI put the YAML."""
    (from_yaml,) = load_rule_file(RULE_YAML)
    yaml_body = yaml.safe_load(RULE_YAML.read_text(encoding="utf-8"))
    json_body = json.loads(RULE_JSON.read_text(encoding="utf-8"))
    assert "version" not in json_body
    assert json_body == {k: v for k, v in yaml_body.items() if k != "version"}
    assert parse_rule({**json_body, "version": from_yaml.version}) == from_yaml
    assert from_yaml.status == "shadow"


def test_the_kinds_examples_hold_one_shadow_rule_of_each_kind_saying_what_it_catches() -> None:
    path = EXAMPLES / "rules" / "kinds.yaml"
    rules = load_rule_file(path)
    assert {rule.kind for rule in rules} == set(KINDS)
    assert len({rule.rule_id for rule in rules}) == len(rules)
    assert all(rule.status == "shadow" and rule.description for rule in rules)
    # Each rule is introduced by a comment on the fraud it catches.
    text = path.read_text(encoding="utf-8")
    for rule in rules:
        before = text[: text.index(f"- rule_id: {rule.rule_id}\n")].rstrip().splitlines()
        assert before[-1].startswith("# "), rule.rule_id
