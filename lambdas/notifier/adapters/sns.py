"""Publishing an alert to SNS: the ``Publish`` request (pure) and the call."""

from __future__ import annotations

import json
from typing import Any

from lambdas.notifier.models.alert import Alert

# SNS: a subject is ASCII, one line, at most 100 characters.
_SUBJECT_MAX = 100


def _subject(alert: Alert) -> str:
    text = f"[{alert.severity.upper()}] fraud alert {alert.rule_id} on {alert.group_key}"
    text = text.encode("ascii", "replace").decode("ascii")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text[:_SUBJECT_MAX]


def publish_request(alert: Alert, topic_arn: str) -> dict[str, Any]:
    """Keyword arguments for ``sns.publish``: the alert as JSON, filterable attributes.

    Subscribers filter on ``severity``/``rule_id``/``status`` attributes (e.g. page
    only on critical) without parsing the body.
    """
    attributes = {
        name: {"DataType": "String", "StringValue": value}
        for name, value in (
            ("severity", alert.severity),
            ("rule_id", alert.rule_id),
            ("status", alert.status),
            ("alert_id", alert.alert_id),
        )
        if value  # SNS rejects empty attribute values
    }
    request: dict[str, Any] = {
        "TopicArn": topic_arn,
        "Subject": _subject(alert),
        "Message": json.dumps(alert.to_payload(), sort_keys=True),
        "MessageAttributes": attributes,
    }
    if topic_arn.endswith(".fifo"):
        # A FIFO topic deduplicates on its own within 5 minutes; keyed per card so a
        # card's alerts stay in order.
        request["MessageGroupId"] = alert.group_key[:128]
        request["MessageDeduplicationId"] = alert.alert_id[:128]
    return request


def publish(client: Any, alert: Alert, topic_arn: str) -> dict[str, Any]:
    """Publish ``alert`` with ``client`` (boto3 SNS); the receipt is stored by idempotency.

    botocore's errors propagate: the caller decides what a failure means for the record.
    """
    response = client.publish(**publish_request(alert, topic_arn))
    return {"sink": "sns", "message_id": str(response.get("MessageId", ""))}
