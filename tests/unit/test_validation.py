"""Payment validation: every kind of bad record gets a reason that names the problem."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from app.models import iso_from_ms
from app.pan import redact_pans
from app.validation import InvalidPayment, Limits, parse_payment

NOW_MS = 1_795_000_000_000


def good(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "txn_id": "t1",
        "card_id": "tok_abc",
        "account_id": "acct_1",
        "amount": "1000.00",
        "currency": "EUR",
        "merchant_id": "m_1",
        "mcc": "5411",
        "country": "FR",
        "device_id": "dev_1",
        "ip": "203.0.113.9",
        "ts": iso_from_ms(NOW_MS),
    }
    body.update(overrides)
    return body


def encode(body: object) -> bytes:
    return json.dumps(body).encode()


def with_raw_amount(literal: bytes) -> bytes:
    """A payment whose amount is the JSON literal given (a number, or NaN)."""
    return encode(good()).replace(b'"amount": "1000.00"', b'"amount": ' + literal)


def test_good_payment_parses_with_exact_amount() -> None:
    payment = parse_payment(encode(good()), NOW_MS)
    assert payment.amount == Decimal("1000")
    assert payment.ts_ms == NOW_MS
    as_number = parse_payment(with_raw_amount(b"1000.10"), NOW_MS)
    assert as_number.amount == Decimal("1000.10")


@pytest.mark.parametrize(
    ("raw", "reason", "mentions"),
    [
        (b"", "unparseable", "not JSON"),
        (b"\xff\xfe garbage", "unparseable", "not JSON"),
        (b"[1, 2, 3]", "not_an_object", "object"),
        (encode({k: v for k, v in good().items() if k != "card_id"}), "missing_field", "card_id"),
        (encode(good(amount=None)), "missing_field", "amount"),
        (encode(good(amount=True)), "bad_type", "amount"),
        (encode(good(amount="12,50")), "bad_amount", "amount"),
        (encode(good(amount="-5")), "negative_amount", "amount"),
        (with_raw_amount(b"NaN"), "non_finite_number", "NaN"),
        (encode(good(amount="Infinity")), "non_finite_number", "amount"),
        (encode(good(currency="XYZ")), "unknown_currency", "currency"),
        (encode(good(country="XX")), "unknown_country", "country"),
        (encode(good(mcc="54")), "bad_value", "mcc"),
        (encode(good(ts="yesterday")), "bad_timestamp", "ts"),
        (encode(good(ts="2026-11-28T14:03:07")), "bad_timestamp", "time zone"),
        (
            encode(good(ts=iso_from_ms(NOW_MS + 2 * 24 * 3600 * 1000))),
            "timestamp_out_of_range",
            "future",
        ),
        (encode(good(ts="1999-01-01T00:00:00Z")), "timestamp_out_of_range", "past"),
        (encode(good(txn_id=7)), "bad_type", "txn_id"),
        (encode(good(card_id="4111111111111111")), "pan_in_card_id", "card_id"),
        (encode(good(merchant_id="x" * 200)), "bad_value", "merchant_id"),
    ],
)
def test_invalid_payments_are_rejected_with_a_reason(
    raw: bytes, reason: str, mentions: str
) -> None:
    with pytest.raises(InvalidPayment) as info:
        parse_payment(raw, NOW_MS)
    assert info.value.reason == reason
    assert mentions in info.value.detail


def test_oversize_record_is_rejected_before_decoding() -> None:
    raw = encode(good(description="x" * 20_000))
    with pytest.raises(InvalidPayment) as info:
        parse_payment(raw, NOW_MS, Limits(max_bytes=16_384))
    assert info.value.reason == "oversize"


def test_pans_are_masked_before_a_record_reaches_the_dlq() -> None:
    raw = encode(good(card_id="4111111111111111"))
    redacted = redact_pans(raw)
    assert b"4111111111111111" not in redacted
    assert b"************1111" in redacted
    # Digit runs that fail the Luhn check (order numbers, timestamps) are kept.
    assert redact_pans(b'{"n": "1234567890123"}') == b'{"n": "1234567890123"}'
