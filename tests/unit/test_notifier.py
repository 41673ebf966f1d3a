"""Unit tests of the notifier's pure parts: record filtering, Block Kit, config, retries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from infra.local.slack_receiver import plain, render_line
from infra.local.stream_poller import first_failed_index, to_lambda_record
from lambdas.notifier.alert import (
    Alert,
    MalformedAlertError,
    alert_from_image,
    classify_record,
)
from lambdas.notifier.blocks import (
    build_blocks,
    card_url,
    escape_mrkdwn,
    fallback_text,
    slack_time,
    summarize,
)
from lambdas.notifier.config import ConfigError, NotifierConfig
from lambdas.notifier.handler import secret_text
from lambdas.notifier.slack import (
    BudgetedConnectionErrorRetryHandler,
    BudgetedRateLimitRetryHandler,
    BudgetedServerErrorRetryHandler,
    Redactor,
    RetryBudget,
    parse_retry_after,
    redact,
)
from lambdas.notifier.sns import publish_request

WEBHOOK = "https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnop"


def image(**overrides: Any) -> dict[str, Any]:
    """A NewImage as the DynamoDB sink writes it."""
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
    return alert_from_image(image(**overrides))


# --- stream record -> decision ------------------------------------------------------


def test_insert_of_active_alert_is_notified_with_every_field_parsed() -> None:
    decision = classify_record(record("INSERT", image()))
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
    decision = classify_record(record("INSERT", image(status={"S": "shadow"})))
    assert not decision.notify
    assert decision.reason == "shadow"
    assert decision.alert_id == "al-7f3a"


@pytest.mark.parametrize("status", ["paused", "ACTIVE ", ""])
def test_only_exactly_active_status_notifies(status: str) -> None:
    if status == "":
        with pytest.raises(MalformedAlertError, match="status"):
            classify_record(record("INSERT", image(status={"S": status})))
        return
    assert not classify_record(record("INSERT", image(status={"S": status}))).notify


def test_ttl_expiry_remove_is_ignored_and_labelled() -> None:
    decision = classify_record(record("REMOVE", None, principal="dynamodb.amazonaws.com"))
    assert not decision.notify
    assert decision.reason == "ttl-expiry"
    assert decision.alert_id == "al-7f3a"


def test_operator_remove_and_modify_are_ignored() -> None:
    assert classify_record(record("REMOVE", None)).reason == "removed"
    modify = classify_record(record("MODIFY", image()))
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
        classify_record(record("INSERT", image(**overrides)))


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


# --- Block Kit ----------------------------------------------------------------------


def _all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_blocks_show_rule_severity_card_amounts_countries_times_and_link() -> None:
    blocks = build_blocks(make_alert(), "https://fraud.example.com/")
    text = _all_text(blocks)
    assert blocks[0]["type"] == "header"
    assert "high-value-burst" in blocks[0]["text"]["text"]
    assert "HIGH" in blocks[0]["text"]["text"]
    for expected in (
        "`tok_4242`",
        "1000.00, 1500, 2500.50",
        "FR, GB",
        "v3",
        ":large_orange_circle:",
    ):
        assert expected in text
    # Times: a Slack date token with the UTC time as fallback (offsets converted).
    assert "2026-11-28 14:03:07 UTC" in text
    assert "2026-11-28 13:05:07 UTC" in text
    assert "<!date^" in text
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [b["url"] for b in buttons] == ["https://fraud.example.com/cards/tok_4242"]


def test_block_kit_limits_hold() -> None:
    alert = make_alert(rule_id={"S": "r" * 400}, group_key={"S": "k" * 3000})
    blocks = build_blocks(alert, "https://fraud.example.com")
    assert len(blocks[0]["text"]["text"]) <= 150
    section = blocks[1]
    assert len(section["fields"]) <= 10
    assert all(len(f["text"]) <= 2000 for f in section["fields"])
    # The card link would exceed Slack's 3000-char URL limit: no button rather than a 400.
    assert all(b["type"] != "actions" for b in blocks)


def test_card_link_is_url_encoded_and_only_for_card_keyed_alerts() -> None:
    odd = make_alert(group_key={"S": "tok/../a b?c"})
    assert card_url("http://x", odd) == "http://x/cards/tok%2F..%2Fa%20b%3Fc"
    merchant = make_alert(group_by={"S": "merchant_id"}, group_key={"S": "m-1"})
    assert card_url("http://x", merchant) is None
    assert "*merchant_id*" in _all_text(build_blocks(merchant, "http://x"))
    assert card_url(None, make_alert()) is None
    assert all(b["type"] != "actions" for b in build_blocks(make_alert(), None))


def _mrkdwn_texts(blocks: list[dict[str, Any]]) -> str:
    texts: list[str] = []
    for block in blocks:
        for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(part, dict) and part.get("type") == "mrkdwn":
                texts.append(part["text"])
    return "\n".join(texts)


def test_user_controlled_text_cannot_ping_or_link() -> None:
    alert = make_alert(rule_id={"S": "<!channel> & <http://evil|x>"})
    # plain_text (the header) is never parsed by Slack; mrkdwn and the fallback are.
    text = _mrkdwn_texts(build_blocks(alert, None)) + fallback_text(alert)
    assert "<!channel>" not in text
    assert "<http://evil" not in text
    assert "&lt;!channel&gt; &amp; &lt;http://evil|x&gt;" in text


def test_long_amount_lists_are_summarized() -> None:
    alert = make_alert(amounts={"L": [{"S": str(1000 + i)} for i in range(25)]})
    text = _all_text(build_blocks(alert, None))
    assert "1009 … (+15 more)" in text
    assert "1010" not in text


def test_fallback_text_is_one_informative_line() -> None:
    text = fallback_text(make_alert())
    assert "\n" not in text
    for expected in ("[HIGH]", "high-value-burst", "tok_4242", "3 txns", "1000.00", "FR, GB"):
        assert expected in text


def test_slack_time_handles_zones_and_garbage() -> None:
    assert "|2026-11-28 14:03:07 UTC>" in slack_time("2026-11-28T14:03:07Z")
    assert "|2026-11-28 14:03:07 UTC>" in slack_time("2026-11-28T14:03:07")  # naive = UTC
    assert slack_time("yesterday <b>") == "yesterday &lt;b&gt;"
    assert slack_time("") == "-"


@given(st.text())
def test_escaped_text_never_contains_angle_brackets(text: str) -> None:
    escaped = escape_mrkdwn(text)
    assert "<" not in escaped
    assert ">" not in escaped


def test_summarize() -> None:
    assert summarize(()) == "-"
    assert summarize(("a", "b"), limit=2) == "a, b"
    assert summarize(("a", "b", "c"), limit=2) == "a, b … (+1 more)"


# --- SNS ----------------------------------------------------------------------------


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


# --- secrets ------------------------------------------------------------------------


def test_redact_removes_configured_secrets_and_slack_shaped_ones() -> None:
    token = "xoxb-1234-5678-abcdefgh"
    text = f"POST {WEBHOOK} failed; auth Bearer {token}; path /services/T1/B2/zzzzzzzz"
    cleaned = redact(text, [])
    assert WEBHOOK not in cleaned
    assert token not in cleaned
    assert "zzzzzzzz" not in cleaned
    local = "http://127.0.0.1:9999/hook/secret-part-123"
    assert "secret-part-123" not in redact(f"error at {local}", [local])
    # Too-short "secrets" would blank out ordinary words.
    assert redact("the cat", ["cat"]) == "the cat"


def test_redactor_also_hides_the_url_path_alone() -> None:
    redactor = Redactor()
    redactor.add("http://127.0.0.1:9999/hook/secret-part-123")
    assert "secret-part-123" not in redactor("HTTP 404 for /hook/secret-part-123")


def test_secret_text_reads_plain_and_json_secrets() -> None:
    assert secret_text(f" {WEBHOOK}\n", ("url",)) == WEBHOOK
    assert secret_text(json.dumps({"url": WEBHOOK}), ("webhook_url", "url")) == WEBHOOK
    assert secret_text(WEBHOOK.encode(), ("url",)) == WEBHOOK
    with pytest.raises(ConfigError, match="webhook_url"):
        secret_text(json.dumps({"other": 1}), ("webhook_url",))


# --- config -------------------------------------------------------------------------


def test_config_requires_an_idempotency_table() -> None:
    with pytest.raises(ConfigError, match="IDEMPOTENCY_TABLE"):
        NotifierConfig.from_env({"SLACK_WEBHOOK_URL": WEBHOOK})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLACK_WEBHOOK_URL": WEBHOOK, "SLACK_BOT_TOKEN": "xoxb-1-2"}, "either"),
        ({"SLACK_WEBHOOK_URL": WEBHOOK, "SLACK_WEBHOOK_SECRET_ARN": "arn:x"}, "not both"),
        ({"SLACK_BOT_TOKEN": "xoxb-1-2"}, "SLACK_CHANNEL"),
        ({}, "nothing to notify"),
        ({"SLACK_WEBHOOK_URL": "hooks.slack.com/x"}, "SLACK_WEBHOOK_URL"),
        ({"SNS_TOPIC_ARN": "arn:x", "SLACK_TIMEOUT_SECONDS": "soon"}, "SLACK_TIMEOUT_SECONDS"),
        ({"SNS_TOPIC_ARN": "arn:x", "SLACK_MAX_RETRIES": "-1"}, "SLACK_MAX_RETRIES"),
    ],
)
def test_config_rejects_contradictions_and_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NotifierConfig.from_env({"IDEMPOTENCY_TABLE": "idem", **env})


def test_config_error_and_repr_never_show_secret_values() -> None:
    bad = "https://hooks.slack.com/services/T1/B2/leak leak"
    with pytest.raises(ConfigError) as err:
        NotifierConfig.from_env({"IDEMPOTENCY_TABLE": "i", "SLACK_WEBHOOK_URL": bad})
    assert "leak" not in str(err.value)
    config = NotifierConfig.from_env(
        {"IDEMPOTENCY_TABLE": "i", "SLACK_BOT_TOKEN": "xoxb-secret-1", "SLACK_CHANNEL": "#f"}
    )
    assert config.slack_mode == "chat"
    assert "xoxb" not in repr(config)
    assert "xoxb" not in str(config)


def test_config_defaults() -> None:
    config = NotifierConfig.from_env(
        {"IDEMPOTENCY_TABLE": "idem", "SLACK_WEBHOOK_URL": WEBHOOK, "AWS_REGION": "eu-west-1"}
    )
    assert config.slack_mode == "webhook"
    assert config.region == "eu-west-1"
    assert config.sns_topic_arn is None
    # Stream records live 24 h; idempotency records must outlive any redelivery.
    assert config.idempotency_ttl_s >= 24 * 3600


# --- retry budget -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _response(status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        status_code=status, headers={k: [v] for k, v in (headers or {}).items()}, data=b""
    )


_REQUEST = HttpRequest(method="POST", url="http://127.0.0.1/x", headers={})


def test_retry_after_parsing() -> None:
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after("soon") == 1.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("nan") == 1.0
    when = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
    start = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(format_datetime(when, usegmt=True), now=start) == 30.0


def test_rate_limit_retry_only_when_retry_after_fits_the_budget() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock)
    budget.start(10.0)
    handler = BudgetedRateLimitRetryHandler(budget, 2, max_retry_count=3, jitter_s=0.0)
    state = RetryState()
    ok = _response(429, {"Retry-After": "5"})
    assert handler.can_retry(state=state, request=_REQUEST, response=ok)
    too_long = _response(429, {"Retry-After": "30"})
    assert not handler.can_retry(state=state, request=_REQUEST, response=too_long)
    clock.now += 4.0  # 6 s left: 5 s wait + a 2 s attempt no longer fit
    assert not handler.can_retry(state=state, request=_REQUEST, response=ok)
    assert not handler.can_retry(state=state, request=_REQUEST, response=_response(500))


def test_retry_counts_still_apply_without_a_deadline() -> None:
    budget = RetryBudget(FakeClock())
    budget.start(None)
    handler = BudgetedServerErrorRetryHandler(budget, 2, max_retry_count=1)
    state = RetryState()
    assert handler.can_retry(state=state, request=_REQUEST, response=_response(502))
    assert not handler.can_retry(state=state, request=_REQUEST, response=_response(400))
    state.increment_current_attempt()
    assert not handler.can_retry(state=state, request=_REQUEST, response=_response(503))


def test_server_and_connection_retries_stop_when_the_budget_is_spent() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock)
    budget.start(4.0)
    server = BudgetedServerErrorRetryHandler(budget, 2, max_retry_count=5)
    conn = BudgetedConnectionErrorRetryHandler(budget, 2, max_retry_count=5)
    state = RetryState()
    refused = ConnectionResetError("reset")
    # First backoff: 0.5 s + up to 1 s jitter, then a 2 s attempt: fits in 4 s ...
    assert server.can_retry(state=state, request=_REQUEST, response=_response(500))
    assert conn.can_retry(state=state, request=_REQUEST, error=refused)
    clock.now += 2.5  # ... with 1.5 s left nothing does.
    assert not server.can_retry(state=state, request=_REQUEST, response=_response(500))
    assert not conn.can_retry(state=state, request=_REQUEST, error=refused)


# --- stream poller (pure parts) -----------------------------------------------------


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


# --- local Slack receiver rendering -------------------------------------------------


def test_receiver_renders_one_plain_line_per_alert() -> None:
    alert = make_alert()
    message = {"text": fallback_text(alert), "blocks": build_blocks(alert, "http://127.0.0.1:6066")}
    line = render_line(message, where="webhook", now=0)
    assert "\n" not in line
    assert "[HIGH] high-value-burst v3" in line
    assert line.endswith("-> http://127.0.0.1:6066/cards/tok_4242")
    assert plain("at <!date^1^{date}|2026-11-28 14:00 UTC> &lt;b&gt; <http://a|link>") == (
        "at 2026-11-28 14:00 UTC <b> link"
    )
