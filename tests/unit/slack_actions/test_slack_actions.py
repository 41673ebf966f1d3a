"""lambdas/slack_actions without servers: what a press asks for, the messages that answer
it, the handler's environment, and where it never sends anything. The verification, the
replay table and the close run against real servers in
tests/integration/test_slack_actions.py."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from lambdas.notifier.models.env import ConfigError
from lambdas.slack_actions import message
from lambdas.slack_actions.config import DEFAULT_RESPONSE_URL_PREFIX, ActionsConfig
from lambdas.slack_actions.handler import Actions, logger

CASE = "0a1b2c3d4e5f60718293a4b5"


def press(action_id: str = "case_fraud", value: Any = CASE, **changes: Any) -> str:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U1", "username": "alice"},
        "actions": [{"action_id": action_id, "value": value}],
        "response_url": "https://hooks.slack.com/actions/T1/2/x",
        "message": {"blocks": [{"type": "header"}, {"type": "actions", "elements": []}]},
        **changes,
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def test_a_press_asks_for_its_disposition_on_its_case_by_its_presser() -> None:
    closing = message.parse(press("case_not_fraud"))
    assert closing is not None
    assert (closing.case_id, closing.disposition, closing.closed_by) == (
        CASE,
        "not_fraud",
        "slack:alice",
    )
    assert closing.note == "not_fraud (Slack button, by alice)"
    assert message.parse(press("open_case", value=None)) is None  # the link: nothing to do


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("payload=not-json", "payload: not JSON"),
        (press(type="view_submission"), "block_actions"),
        (press("delete_everything"), "action_id: unknown"),
        (press(value="../../rules"), "value: not a case id"),
        (press(response_url=None), "response_url: missing"),
    ],
)
def test_a_press_that_is_not_one_of_ours_is_refused_naming_the_field(body: str, field: str) -> None:
    with pytest.raises(message.BadPayload, match=field):
        message.parse(body)


def test_the_message_closed_from_slack_loses_its_buttons_and_says_how_it_closed() -> None:
    closing = message.parse(press())
    assert closing is not None
    closed = message.closed_message(
        closing, {"disposition": "fraud", "closed_by": "slack:alice", "closed_at": "T"}
    )
    assert closed["replace_original"] is True
    assert [b["type"] for b in closed["blocks"]] == ["header", "context"]
    assert "closed as *fraud* by slack:alice at T" in json.dumps(closed)
    refused = message.refusal_message(closing, "case is already closed")
    assert refused["response_type"] == "ephemeral" and refused["replace_original"] is False


def test_the_environment_is_checked_naming_the_variable_never_a_value() -> None:
    good = {
        "REPLAY_TABLE": "replays",
        "SLACK_SIGNING_SECRET": "s3cret-signing",
        "CASES_API_URL": "http://127.0.0.1:6066",
        "FRAUD_API_TOKEN": "t0ken-value",
    }
    config = ActionsConfig.from_env(good)
    assert config.response_url_prefix == DEFAULT_RESPONSE_URL_PREFIX
    assert "s3cret" not in repr(config) and "t0ken" not in repr(config)
    for change, named in (
        ({"REPLAY_TABLE": ""}, "REPLAY_TABLE"),
        ({"SLACK_SIGNING_SECRET_ARN": "arn:x"}, "SLACK_SIGNING_SECRET"),
        ({"CLOSER_FUNCTION_NAME": "closer"}, "CLOSER_FUNCTION_NAME"),
        ({"FRAUD_API_TOKEN": ""}, "FRAUD_API_TOKEN"),
        ({"CASES_API_URL": "ftp://x"}, "CASES_API_URL"),
    ):
        with pytest.raises(ConfigError, match=named) as refused:
            ActionsConfig.from_env({**good, **change})
        assert "s3cret" not in str(refused.value)


def test_a_response_url_off_slack_is_never_followed(caplog: pytest.LogCaptureFixture) -> None:
    config = ActionsConfig.from_env(
        {
            "REPLAY_TABLE": "replays",
            "SLACK_SIGNING_SECRET": "s3cret-signing",
            "CASES_API_URL": "http://127.0.0.1:9",
            "FRAUD_API_TOKEN": "t0ken-value",
            "FRAUD_DYNAMODB_ENDPOINT": "http://127.0.0.1:9",
        }
    )
    actions = Actions(config)
    # A closed port: had the handler followed the URL, the log would say it failed.
    actions._respond("http://127.0.0.1:9/steal", {"text": "x"})
    messages = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert messages == ["response_url refused: not Slack's"]
