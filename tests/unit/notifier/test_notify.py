"""lambdas/notifier/handlers/notify.py (and the logic behind it), without AWS or Slack.

The sinks point at a closed port: a record that reached one would fail, so a test
that expects no failure also proves no sink was called. Delivery itself is covered by
tests/integration/test_notifier.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.stream_poller import LocalLambdaContext
from lambdas.notifier.handlers import notify
from lambdas.notifier.models.env import VARIABLES, ConfigError
from tests.factories import alert_image

CLOSED_PORT = "http://127.0.0.1:9"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Only the given notifier variables, and a notifier built afresh."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable.name, raising=False)
        if variable.fallback:
            monkeypatch.delenv(variable.fallback, raising=False)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "idem")
    monkeypatch.setenv("FRAUD_DYNAMODB_ENDPOINT", CLOSED_PORT)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", CLOSED_PORT + "/services/local")
    monkeypatch.setenv("SNS_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:fraud-alerts")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", CLOSED_PORT)
    notify.reset_notifier()
    yield monkeypatch
    notify.reset_notifier()


def stream_record(
    event_name: str, seq: int, image: dict[str, Any] | None, **extra: Any
) -> dict[str, Any]:
    dynamodb: dict[str, Any] = {"Keys": {"alert_id": {"S": "al-7f3a"}}, "SequenceNumber": str(seq)}
    if image is not None:
        dynamodb["NewImage"] = image
    return {
        "eventID": f"ev-{seq}",
        "eventName": event_name,
        "eventSource": "aws:dynamodb",
        "dynamodb": dynamodb,
        **extra,
    }


def failed(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_records_that_do_not_notify_succeed_without_a_sink(env: pytest.MonkeyPatch) -> None:
    ttl = {"userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"}}
    records = [
        stream_record("REMOVE", 1, None, **ttl),
        stream_record("MODIFY", 2, alert_image()),
        stream_record("INSERT", 3, alert_image(status={"S": "shadow"})),
        # Malformed: skipped (logged), not failed, or it would block the shard forever.
        stream_record("INSERT", 4, alert_image(rule_id=None)),
    ]
    response = notify.handler({"Records": records}, LocalLambdaContext(30))
    assert failed(response) == []


def test_an_alert_without_time_left_is_failed_before_any_sink(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    records = [stream_record("INSERT", 7, alert_image()), stream_record("MODIFY", 8, None)]
    # 1 s left is less than the reserve kept for SNS and the idempotency writes.
    response = notify.handler({"Records": records}, LocalLambdaContext(1))
    assert failed(response) == ["7"]
    messages = [r.getMessage() for r in caplog.records if r.name == notify.logger.name]
    assert "no time left; record left for redelivery" in messages
    assert "delivery failed; will be retried" not in messages


def test_the_notifier_is_built_once_per_container_and_misconfiguration_raises(
    env: pytest.MonkeyPatch,
) -> None:
    first = notify.get_notifier()
    assert notify.get_notifier() is first
    notify.reset_notifier()
    env.delenv("IDEMPOTENCY_TABLE")
    with pytest.raises(ConfigError, match="IDEMPOTENCY_TABLE"):
        notify.handler({"Records": []}, LocalLambdaContext(30))
