"""app.detection.pan: card numbers are recognised and masked before a record reaches the DLQ."""

from __future__ import annotations

import time

import pytest

from app.detection.pan import may_hold_pan, redact_pans
from app.detection.validation import InvalidPayment, parse_payment
from tests import factories

NOW_MS = int(time.time() * 1000)


def test_pans_are_masked_before_a_record_reaches_the_dlq() -> None:
    raw = factories.payment(card_id="4111111111111111").to_json()
    redacted = redact_pans(raw)
    assert b"4111111111111111" not in redacted
    assert b"************1111" in redacted
    # Digit runs that fail the Luhn check (order numbers, timestamps) are kept.
    assert redact_pans(b'{"n": "1234567890123"}') == b'{"n": "1234567890123"}'


def test_the_one_scan_per_record_never_lets_a_spelt_out_pan_through() -> None:
    ordinary = factories.payment(card_id="tok_0123456789abcdef").to_json()
    assert not may_hold_pan(ordinary)  # the common case skips the per-field checks
    assert may_hold_pan(factories.payment(device_id="dev-4111111111111111").to_json())
    # A card number spelt as JSON escapes, or in non-ASCII digits, has no ASCII digit run
    # in the raw bytes: the record must still get the per-field check, and be refused.
    escaped = ordinary.replace(b'"dev-', b'"\\u0034111111111111111-')
    assert may_hold_pan(escaped)
    with pytest.raises(InvalidPayment) as refused:
        parse_payment(escaped, NOW_MS)
    assert refused.value.reason == "pan_in_field"
    assert may_hold_pan(ordinary.replace(b'"dev-', '"\u0664'.encode()))
