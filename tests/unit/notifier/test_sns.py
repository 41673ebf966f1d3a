"""lambdas/notifier/adapters/sns.py: the SNS ``Publish`` request."""

from __future__ import annotations

import json
from typing import Any

from lambdas.notifier.adapters.sns import publish_request
from lambdas.notifier.models.alert import Alert, alert_from_image
from tests.factories import alert_image


def make_alert(**overrides: Any) -> Alert:
    return alert_from_image(alert_image(**overrides))


def test_sns_request_carries_alert_json_and_filter_attributes() -> None:
    request = publish_request(make_alert(), "arn:aws:sns:us-east-1:1:fraud-alerts")
    assert json.loads(request["Message"])["alert_id"] == "al-7f3a"
    attributes = request["MessageAttributes"]
    assert attributes["severity"] == {"DataType": "String", "StringValue": "high"}
    assert attributes["rule_id"]["StringValue"] == "high-value-burst"
    assert "MessageGroupId" not in request


def test_sns_fifo_topic_gets_group_and_dedup_ids() -> None:
    request = publish_request(make_alert(), "arn:aws:sns:us-east-1:1:fraud-alerts.fifo")
    assert request["MessageGroupId"] == "tok_4242"
    assert request["MessageDeduplicationId"] == "al-7f3a"


def test_sns_subject_is_ascii_single_line_and_short() -> None:
    alert = make_alert(rule_id={"S": "règle\nnuméro-" + "x" * 200})
    subject = publish_request(alert, "arn:aws:sns:us-east-1:1:t")["Subject"]
    assert len(subject) <= 100
    assert subject.isascii()
    assert "\n" not in subject
