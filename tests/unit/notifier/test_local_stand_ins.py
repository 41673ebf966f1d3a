"""The notifier's local stand-ins (infra/local): the stream poller for the event source
mapping, the Slack receiver for Slack. Their pure parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from infra.local.slack_receiver import plain, render_line
from infra.local.stream_poller import first_failed_index, to_lambda_record
from lambdas.notifier.logic.blocks import build_blocks, fallback_text
from lambdas.notifier.models.alert import alert_from_image
from tests.factories import alert_image


def test_lambda_record_shape_from_get_records() -> None:
    raw = {
        "eventID": "e1",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2026, 11, 28, 14, 0, tzinfo=UTC),
            "Keys": {"alert_id": {"S": "a"}},
            "NewImage": {"alert_id": {"S": "a"}, "blob": {"B": b"\x00\x01"}},
            "SequenceNumber": "42",
            "SizeBytes": 10,
            "StreamViewType": "NEW_IMAGE",
        },
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
    }
    out = to_lambda_record(raw, "arn:stream")
    assert out["eventSourceARN"] == "arn:stream"
    assert out["dynamodb"]["ApproximateCreationDateTime"] == int(
        datetime(2026, 11, 28, 14, 0, tzinfo=UTC).timestamp()
    )
    assert out["dynamodb"]["NewImage"]["blob"] == {"B": "AAE="}
    assert out["userIdentity"]["principalId"] == "dynamodb.amazonaws.com"
    json.dumps(out)  # the event must be plain JSON, as Lambda delivers it


def test_first_failed_index_follows_the_event_source_mapping_rules() -> None:
    batch = [{"dynamodb": {"SequenceNumber": s}} for s in ("10", "11", "12")]
    assert first_failed_index({"batchItemFailures": []}, batch) is None
    assert first_failed_index(None, batch) is None
    failures = [{"itemIdentifier": "12"}, {"itemIdentifier": "11"}]
    assert first_failed_index({"batchItemFailures": failures}, batch) == 1
    # An identifier not in the batch, or a response of the wrong shape: all of it again.
    assert first_failed_index({"batchItemFailures": [{"itemIdentifier": "99"}]}, batch) == 0
    assert first_failed_index({"batchItemFailures": [{}]}, batch) == 0
    assert first_failed_index("oops", batch) == 0


def test_receiver_renders_one_plain_line_per_alert() -> None:
    alert = alert_from_image(alert_image())
    message = {"text": fallback_text(alert), "blocks": build_blocks(alert, "http://127.0.0.1:6066")}
    line = render_line(message, where="webhook", now=0)
    assert "\n" not in line
    assert "[HIGH] high-value-burst v3" in line
    assert line.endswith("-> http://127.0.0.1:6066/cards/tok_4242")
    assert plain("at <!date^1^{date}|2026-11-28 14:00 UTC> &lt;b&gt; <http://a|link>") == (
        "at 2026-11-28 14:00 UTC <b> link"
    )
