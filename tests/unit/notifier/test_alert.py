"""lambdas/notifier/models/alert.py: stream record -> alert, and whether it notifies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdas.notifier.models.alert import (
    Alert,
    MalformedAlertError,
    alert_from_image,
    classify_record,
)
from tests.factories import alert_image


def record(
    event_name: str = "INSERT",
    new_image: dict[str, Any] | None = None,
    *,
    principal: str | None = None,
    seq: str = "100",
) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "Keys": {"alert_id": {"S": "al-7f3a"}},
        "SequenceNumber": seq,
        "SizeBytes": 321,
        "StreamViewType": "NEW_IMAGE",
    }
    if new_image is not None:
        stream["NewImage"] = new_image
    rec: dict[str, Any] = {
        "eventID": f"ev-{seq}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": stream,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/fraud_alerts/stream/x",
    }
    if principal is not None:
        rec["userIdentity"] = {"type": "Service", "principalId": principal}
    return rec


def make_alert(**overrides: Any) -> Alert:
    return alert_from_image(alert_image(**overrides))


def test_insert_of_active_alert_is_notified_with_every_field_parsed() -> None:
    decision = classify_record(record("INSERT", alert_image()))
    assert decision.notify
    alert = decision.alert
    assert alert is not None
    assert alert.alert_id == "al-7f3a"
    assert alert.rule_version == 3
    assert alert.group_key == "tok_4242"
    assert alert.txn_ids == ("t1", "t2", "t3")
    # Decimal strings pass through untouched: "1500" must not become "1500.0".
    assert alert.amounts == ("1000.00", "1500", "2500.50")
    assert alert.countries == ("FR", "FR", "GB")
    assert alert.trigger_produced_at_ms == 1795874707250
    assert alert.expires_at == 1795961107
    assert alert.severity == "high"


def test_shadow_alert_is_not_notified() -> None:
    decision = classify_record(record("INSERT", alert_image(status={"S": "shadow"})))
    assert not decision.notify
    assert decision.reason == "shadow"
    assert decision.alert_id == "al-7f3a"


@pytest.mark.parametrize("status", ["paused", "ACTIVE ", ""])
def test_only_exactly_active_status_notifies(status: str) -> None:
    if status == "":
        with pytest.raises(MalformedAlertError, match="status"):
            classify_record(record("INSERT", alert_image(status={"S": status})))
        return
    assert not classify_record(record("INSERT", alert_image(status={"S": status}))).notify


def test_ttl_expiry_remove_is_ignored_and_labelled() -> None:
    decision = classify_record(record("REMOVE", None, principal="dynamodb.amazonaws.com"))
    assert not decision.notify
    assert decision.reason == "ttl-expiry"
    assert decision.alert_id == "al-7f3a"


def test_operator_remove_and_modify_are_ignored() -> None:
    assert classify_record(record("REMOVE", None)).reason == "removed"
    modify = classify_record(record("MODIFY", alert_image()))
    assert not modify.notify
    assert modify.reason == "modified"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"alert_id": None}, "alert_id"),
        ({"rule_id": None}, "rule_id"),
        ({"group_key": None}, "group_key"),
        ({"rule_version": {"N": "three"}}, "rule_version"),
        ({"txn_ids": {"L": [{"M": {}}]}}, "txn_ids"),
        ({"amounts": {"BOOL": True}}, "amounts"),
        ({"alert_id": "al-1"}, "alert_id"),
    ],
)
def test_malformed_image_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedAlertError, match=field):
        classify_record(record("INSERT", alert_image(**overrides)))


def test_insert_without_new_image_is_malformed() -> None:
    with pytest.raises(MalformedAlertError, match="NEW_IMAGE"):
        classify_record(record("INSERT", None))


def test_numbers_and_sets_are_accepted_where_strings_are_expected() -> None:
    alert = make_alert(
        aggregate_value={"N": "4500.50"},
        amounts={"NS": ["1000", "3500.50"]},
        countries={"SS": ["FR"]},
        severity=None,
        group_by=None,
    )
    assert alert.aggregate_value == "4500.50"
    assert alert.amounts == ("1000", "3500.50")
    assert alert.countries == ("FR",)
    assert alert.severity == "medium"
    assert alert.group_by == "card_id"


def test_payload_is_json_ready_and_complete() -> None:
    payload = make_alert().to_payload()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["txn_ids"] == ["t1", "t2", "t3"]
    assert set(payload) >= {"alert_id", "rule_id", "group_key", "amounts", "detected_at"}


def test_only_the_alert_that_opened_its_case_pages() -> None:
    opened = classify_record(
        record("INSERT", alert_image(case_id={"S": "c" * 24}, case_role={"S": "opened"}))
    )
    assert opened.notify and opened.alert is not None and opened.alert.case_id == "c" * 24
    for role in ("joined", "replayed"):
        decision = classify_record(
            record("INSERT", alert_image(case_id={"S": "c" * 24}, case_role={"S": role}))
        )
        assert (decision.notify, decision.reason) == (False, f"case-{role}")


def test_an_alert_written_without_cases_pages_as_before() -> None:
    decision = classify_record(record("INSERT", alert_image()))
    assert decision.notify and decision.alert is not None and decision.alert.case_id is None
