"""lambdas/notifier/adapters/secrets.py: reading a Slack credential from Secrets Manager."""

from __future__ import annotations

import json

import pytest

from lambdas.notifier.adapters.secrets import secret_text
from lambdas.notifier.models.env import ConfigError
from tests.factories import SLACK_WEBHOOK_URL


def test_secret_text_reads_plain_and_json_secrets() -> None:
    assert secret_text(f" {SLACK_WEBHOOK_URL}\n", ("url",)) == SLACK_WEBHOOK_URL
    assert (
        secret_text(json.dumps({"url": SLACK_WEBHOOK_URL}), ("webhook_url", "url"))
        == SLACK_WEBHOOK_URL
    )
    assert secret_text(SLACK_WEBHOOK_URL.encode(), ("url",)) == SLACK_WEBHOOK_URL
    with pytest.raises(ConfigError, match="webhook_url"):
        secret_text(json.dumps({"other": 1}), ("webhook_url",))
