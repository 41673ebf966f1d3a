"""app.detection.pan: card numbers are recognised and masked before a record reaches the DLQ."""

from __future__ import annotations

from app.detection.pan import redact_pans
from tests import factories


def test_pans_are_masked_before_a_record_reaches_the_dlq() -> None:
    raw = factories.payment(card_id="4111111111111111").to_json()
    redacted = redact_pans(raw)
    assert b"4111111111111111" not in redacted
    assert b"************1111" in redacted
    # Digit runs that fail the Luhn check (order numbers, timestamps) are kept.
    assert redact_pans(b'{"n": "1234567890123"}') == b'{"n": "1234567890123"}'
