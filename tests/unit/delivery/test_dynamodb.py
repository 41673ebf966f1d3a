"""app.delivery.dynamodb: the row an alert becomes (read back by the notifier Lambda's
parser), its TTL, and how DynamoDB errors are classified for retrying."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore import exceptions as bexc
from hypothesis import given
from hypothesis import strategies as st

from app.delivery.dynamodb import (
    CONDITION_NEW_ALERT,
    TTL_SECONDS,
    ErrorKind,
    alert_item,
    classify_error,
    error_code,
    expires_at,
    put_request,
)
from app.detection.models import iso_from_ms
from lambdas.notifier.models.alert import alert_from_image, classify_record
from tests import factories
from tests.factories import client_error

DETECTED = "2026-11-28T14:03:07.250Z"
DETECTED_S = int(datetime(2026, 11, 28, 14, 3, 7, tzinfo=UTC).timestamp())


# --------------------------------------------------------------------------- item mapping


def test_item_round_trips_through_the_notifier_parser() -> None:
    alert = factories.alert(detected_at=DETECTED)
    item = alert_item(alert, written_at_ms=1_795_874_588_000)
    parsed = alert_from_image(item)
    assert parsed.alert_id == alert.alert_id
    assert parsed.rule_id == alert.rule_id
    assert parsed.rule_version == 3
    assert parsed.status == "active"
    assert parsed.group_by == "card_id"
    assert parsed.group_key == "card-tok-1"
    assert parsed.txn_ids == alert.txn_ids
    assert parsed.amounts == alert.amounts
    assert parsed.countries == alert.countries
    assert parsed.aggregate_value == "3"
    assert parsed.first_event_ts == alert.first_event_ts
    assert parsed.last_event_ts == alert.last_event_ts
    assert parsed.detected_at == DETECTED
    assert parsed.severity == "high"
    assert parsed.trigger_produced_at_ms == alert.trigger_produced_at_ms
    assert parsed.expires_at == DETECTED_S + TTL_SECONDS
    # And the stream record the table emits for a new row notifies.
    decision = classify_record({"eventName": "INSERT", "dynamodb": {"NewImage": item}})
    assert decision.notify and decision.alert == parsed


def test_item_has_exactly_the_documented_attributes_and_types() -> None:
    item = alert_item(factories.alert(), written_at_ms=1_795_874_588_000)
    types = {name: next(iter(value)) for name, value in item.items()}
    assert types == {
        "alert_id": "S",
        "rule_id": "S",
        "rule_version": "N",
        "status": "S",
        "group_by": "S",
        "group_key": "S",
        "txn_ids": "L",
        "amounts": "L",
        "countries": "L",
        "aggregate_value": "S",
        "first_event_ts": "S",
        "last_event_ts": "S",
        "detected_at": "S",
        "trigger_txn_id": "S",
        "trigger_produced_at_ms": "N",
        "severity": "S",
        "description": "S",
        "expires_at": "N",
        "written_at_ms": "N",
    }
    assert item["txn_ids"] == {"L": [{"S": "t1"}, {"S": "t2"}, {"S": "t3"}]}
    assert item["written_at_ms"] == {"N": "1795874588000"}
    assert item["trigger_txn_id"] == {"S": "t3"}
    # Numbers are wire strings of integers, never floats.
    for name in ("rule_version", "trigger_produced_at_ms", "expires_at", "written_at_ms"):
        assert item[name]["N"].isdigit()


def test_shadow_alert_keeps_its_status_and_does_not_notify() -> None:
    item = alert_item(factories.alert(status="shadow"), written_at_ms=0)
    decision = classify_record({"eventName": "INSERT", "dynamodb": {"NewImage": item}})
    assert not decision.notify and decision.reason == "shadow"


def test_put_request_is_conditional_on_a_new_alert_id() -> None:
    request = put_request("fraud_alerts", factories.alert(), written_at_ms=5)
    assert request["TableName"] == "fraud_alerts"
    assert (
        request["ConditionExpression"] == CONDITION_NEW_ALERT == ("attribute_not_exists(alert_id)")
    )
    assert request["Item"]["written_at_ms"] == {"N": "5"}


# --------------------------------------------------------------------------- TTL


def test_expires_at_is_detected_at_plus_24_hours_in_whole_seconds() -> None:
    assert expires_at(DETECTED, fallback_ms=0) == DETECTED_S + 86400
    assert expires_at("2026-11-28T14:03:07.999Z", fallback_ms=0) == DETECTED_S + 86400
    assert expires_at("2026-11-28T15:03:07+01:00", fallback_ms=0) == DETECTED_S + 86400


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-11-28T14:03:07"])  # last: no zone
def test_expires_at_falls_back_to_the_write_time(bad: str) -> None:
    assert expires_at(bad, fallback_ms=1_000_000_999) == 1_000_000 + 86400


@given(st.integers(min_value=0, max_value=4_000_000_000_000))
def test_expires_at_matches_the_detectors_timestamps(ms: int) -> None:
    assert expires_at(iso_from_ms(ms), fallback_ms=0) == ms // 1000 + 86400


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("ConditionalCheckFailedException"), ErrorKind.DUPLICATE),
        (client_error("ProvisionedThroughputExceededException"), ErrorKind.THROTTLED),
        (client_error("ThrottlingException"), ErrorKind.THROTTLED),
        (client_error("RequestLimitExceeded"), ErrorKind.THROTTLED),
        (client_error("InternalServerError", 500), ErrorKind.TRANSIENT),
        (client_error("ServiceUnavailable", 503), ErrorKind.TRANSIENT),
        (client_error("SomethingNew", 502), ErrorKind.TRANSIENT),
        (client_error("TransactionConflictException"), ErrorKind.TRANSIENT),
        (bexc.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), ErrorKind.TRANSIENT),
        (bexc.ConnectTimeoutError(endpoint_url="http://x"), ErrorKind.TRANSIENT),
        (bexc.ReadTimeoutError(endpoint_url="http://x"), ErrorKind.TRANSIENT),
        (bexc.ConnectionClosedError(endpoint_url="http://x"), ErrorKind.TRANSIENT),
        (ConnectionResetError(), ErrorKind.TRANSIENT),
        (TimeoutError(), ErrorKind.TRANSIENT),
        (client_error("ValidationException"), ErrorKind.NON_RETRYABLE),
        (client_error("ResourceNotFoundException"), ErrorKind.NON_RETRYABLE),
        (client_error("AccessDeniedException"), ErrorKind.NON_RETRYABLE),
        (client_error("UnrecognizedClientException"), ErrorKind.NON_RETRYABLE),
        (bexc.NoCredentialsError(), ErrorKind.NON_RETRYABLE),
        (ValueError("bug"), ErrorKind.NON_RETRYABLE),
    ],
)
def test_errors_are_classified(exc: BaseException, kind: ErrorKind) -> None:
    assert classify_error(exc) is kind
    assert kind.retryable == (kind in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT))


def test_error_code_names_the_aws_code_or_the_class() -> None:
    assert error_code(client_error("ThrottlingException")) == "ThrottlingException"
    assert error_code(bexc.EndpointConnectionError(endpoint_url="u")) == ("EndpointConnectionError")


def test_an_alert_of_another_kind_carries_its_explanation_to_its_row() -> None:
    explained = factories.alert(
        kind="geo_velocity",
        txn_ids=("t1", "t2"),
        explanation=(("distance_km", "5570"), ("speed_kmh", "5570")),
    )
    item = alert_item(explained, written_at_ms=0)
    assert item["kind"] == {"S": "geo_velocity"}
    assert item["explanation"] == {"M": {"distance_km": {"S": "5570"}, "speed_kmh": {"S": "5570"}}}
    sequence = alert_item(factories.alert(kind="sequence", steps=(1, 2, 3)), written_at_ms=0)
    assert sequence["steps"] == {"L": [{"N": "1"}, {"N": "2"}, {"N": "3"}]}
    # An aggregate rule's row is as it always was.
    assert not {"kind", "steps", "explanation"} & set(alert_item(factories.alert(), 0))
