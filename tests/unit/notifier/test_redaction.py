"""lambdas/notifier/adapters/redaction.py: secrets scrubbed from text."""

from __future__ import annotations

from lambdas.notifier.adapters.redaction import Redactor, redact
from tests.factories import SLACK_WEBHOOK_URL


def test_redact_removes_configured_secrets_and_slack_shaped_ones() -> None:
    token = "xoxb-1234-5678-abcdefgh"
    text = f"POST {SLACK_WEBHOOK_URL} failed; auth Bearer {token}; path /services/T1/B2/zzzzzzzz"
    cleaned = redact(text, [])
    assert SLACK_WEBHOOK_URL not in cleaned
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
