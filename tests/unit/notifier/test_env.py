"""lambdas/notifier/models/env.py: the environment model."""

from __future__ import annotations

from dataclasses import fields

import pytest

from lambdas.notifier.models.env import VARIABLES, ConfigError, NotifierConfig
from tests.factories import SLACK_WEBHOOK_URL


def test_config_requires_an_idempotency_table() -> None:
    with pytest.raises(ConfigError, match="IDEMPOTENCY_TABLE"):
        NotifierConfig.from_env({"SLACK_WEBHOOK_URL": SLACK_WEBHOOK_URL})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLACK_WEBHOOK_URL": SLACK_WEBHOOK_URL, "SLACK_BOT_TOKEN": "xoxb-1-2"}, "either"),
        ({"SLACK_WEBHOOK_URL": SLACK_WEBHOOK_URL, "SLACK_WEBHOOK_SECRET_ARN": "arn:x"}, "not both"),
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
        {
            "IDEMPOTENCY_TABLE": "idem",
            "SLACK_WEBHOOK_URL": SLACK_WEBHOOK_URL,
            "AWS_REGION": "eu-west-1",
        }
    )
    assert config.slack_mode == "webhook"
    assert config.region == "eu-west-1"
    assert config.sns_topic_arn is None
    # Stream records live 24 h; idempotency records must outlive any redelivery.
    assert config.idempotency_ttl_s >= 24 * 3600


def test_every_setting_but_the_reserve_is_read_from_one_declared_variable() -> None:
    declared = [v.attr for v in VARIABLES]
    assert len(declared) == len(set(declared))
    assert set(declared) == {f.name for f in fields(NotifierConfig)} - {"reserve_s"}
    assert all(v.description for v in VARIABLES)


def test_region_falls_back_to_aws_default_region() -> None:
    env = {"IDEMPOTENCY_TABLE": "i", "SNS_TOPIC_ARN": "arn:x"}
    assert NotifierConfig.from_env({**env, "AWS_DEFAULT_REGION": "eu-north-1"}).region == (
        "eu-north-1"
    )
    both = {**env, "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-north-1"}
    assert NotifierConfig.from_env(both).region == "eu-west-1"
    assert NotifierConfig.from_env(env).region == "us-east-1"
