"""Shared test data: a valid payment with any field overridden.

``payment(card_id="tok_1", txn_id="t1", amount="1500", ts_ms=...)``: every other field
gets a plausible constant, and ``ts`` always agrees with ``ts_ms``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from botocore import exceptions as bexc

from app.cases.model import Case
from app.delivery.dynamodb import CONDITION_NEW_ALERT
from app.detection.models import Alert, Payment, iso_from_ms
from app.detection.rules import SEED_RULE


def payment(
    card_id: str = "tok_1",
    txn_id: str = "t1",
    amount: str | Decimal = "1500",
    ts_ms: int | None = None,
    **fields: Any,
) -> Payment:
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    body: dict[str, Any] = {
        "account_id": f"acct-{card_id}",
        "currency": "USD",
        "merchant_id": "m1",
        "mcc": "5411",
        "country": "US",
        "device_id": f"dev-{card_id}",
        "ip": "203.0.113.7",
        **fields,
    }
    return Payment(
        txn_id=txn_id,
        card_id=card_id,
        amount=Decimal(amount),
        ts=iso_from_ms(ts),
        ts_ms=ts,
        **body,
    )


def alert(n: int = 0, **overrides: Any) -> Alert:
    """An alert of the seed rule on one card; ``n`` makes its ``alert_id`` unique
    (32 characters, ending in ``n``)."""
    built = Alert(
        alert_id=f"a{n:031d}",
        rule_id="high-value-burst",
        rule_version=3,
        status="active",
        group_by="card_id",
        group_key="card-tok-1",
        txn_ids=("t1", "t2", "t3"),
        amounts=("1000.00", "2500", "1000.01"),
        countries=("DE", "DE", "FR"),
        aggregate_value="3",
        first_event_ts="2026-11-28T14:01:00.000Z",
        last_event_ts="2026-11-28T14:03:07.000Z",
        detected_at="2026-11-28T14:03:07.250Z",
        trigger_txn_id="t3",
        trigger_produced_at_ms=1_795_874_587_100,
        severity="high",
        description="3 payments >= 1000 within 5 min",
    )
    return replace(built, **overrides)


def closed_case(**overrides: Any) -> Case:
    """A case of the seed rule on one card, closed as ``not_fraud`` by alice: two alerts,
    six payments."""
    built = Case(
        case_id="c" * 24,
        status="closed",
        rule_id="high-value-burst",
        rule_version=3,
        group_by="card_id",
        group_key="tok_1",
        severity="high",
        description="",
        opened_at="2026-11-28T14:00:00.000Z",
        last_alert_at="2026-11-28T14:05:00.000Z",
        opening_alert_id="a1",
        last_alert_id="a2",
        alert_count=2,
        alert_ids=("a1", "a2"),
        txn_count=6,
        txn_ids=("t1", "t2", "t3", "t4", "t5", "t6"),
        disposition="not_fraud",
        note="owner confirmed",
        closed_by="alice",
        closed_at="2026-11-28T15:00:00.000Z",
    )
    return replace(built, **overrides)


def rule_body(**changes: Any) -> dict[str, Any]:
    """The seed rule as a JSON body with ``changes``; a field set to ``...`` is left out."""
    body = SEED_RULE.to_json()
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


PAN = b"4111111111111111"  # a Luhn-valid card number, as a producer might send by mistake


@dataclass
class Message:
    """A consumed Kafka record as an agent sees it (``event.message``); by default a
    payment whose key and value carry a card number in clear."""

    topic: str = "payments.raw"
    partition: int = 2
    offset: int = 41
    key: bytes | None = PAN
    value: bytes | None = b'{"card_id": "' + PAN + b'"}'


def client_error(code: str, status: int = 400) -> BaseException:
    """The botocore ClientError a DynamoDB ``PutItem`` raises with error ``code``."""
    error: BaseException = bexc.ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutItem",
    )
    return error


class FakeDynamoDB:
    """A DynamoDB client whose ``put_item`` raises the scripted errors for an alert id,
    then succeeds (and stores the row); a second put of a stored id fails its condition."""

    def __init__(self, script: Callable[[str, int], BaseException | None]) -> None:
        self.script = script
        self.calls: dict[str, int] = {}
        self.rows: dict[str, dict[str, Any]] = {}

    def put_item(self, **request: Any) -> dict[str, Any]:
        assert request["ConditionExpression"] == CONDITION_NEW_ALERT
        alert_id = request["Item"]["alert_id"]["S"]
        n = self.calls[alert_id] = self.calls.get(alert_id, 0) + 1
        failure = self.script(alert_id, n)
        if failure is not None:
            raise failure
        if alert_id in self.rows:
            raise client_error("ConditionalCheckFailedException")
        self.rows[alert_id] = request["Item"]
        return {}


# --- the notifier (lambdas/notifier) ---------------------------------------------------

# Shaped like a real webhook URL, so the shape-based redaction applies to it too.
SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnop"


def alert_image(**overrides: Any) -> dict[str, Any]:
    """An alert row's NewImage as the DynamoDB sink writes it (the stream's wire format);
    an override of None leaves that attribute out."""
    item: dict[str, Any] = {
        "alert_id": {"S": "al-7f3a"},
        "rule_id": {"S": "high-value-burst"},
        "rule_version": {"N": "3"},
        "status": {"S": "active"},
        "group_by": {"S": "card_id"},
        "group_key": {"S": "tok_4242"},
        "txn_ids": {"L": [{"S": "t1"}, {"S": "t2"}, {"S": "t3"}]},
        "aggregate_value": {"S": "3"},
        "amounts": {"L": [{"S": "1000.00"}, {"S": "1500"}, {"S": "2500.50"}]},
        "countries": {"L": [{"S": "FR"}, {"S": "FR"}, {"S": "GB"}]},
        "first_event_ts": {"S": "2026-11-28T14:03:07.250Z"},
        "last_event_ts": {"S": "2026-11-28T14:05:07.250+01:00"},
        "detected_at": {"S": "2026-11-28T14:05:07.300Z"},
        "trigger_produced_at_ms": {"N": "1795874707250"},
        "severity": {"S": "high"},
        "expires_at": {"N": "1795961107"},
    }
    for key, value in overrides.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def alert_row(alert_id: str, *, status: str = "active", card: str = "tok_4242") -> dict[str, Any]:
    """:func:`alert_image` of one alert among many (its own transactions), for stream tests."""
    return alert_image(
        alert_id={"S": alert_id},
        status={"S": status},
        group_key={"S": card},
        txn_ids={"L": [{"S": f"{alert_id}-t{i}"} for i in range(3)]},
        amounts={"L": [{"S": "1000.00"}, {"S": "1200.00"}, {"S": "4999.99"}]},
        countries={"L": [{"S": "FR"}, {"S": "DE"}, {"S": "DE"}]},
    )
