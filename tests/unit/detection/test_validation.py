"""app.detection.validation: every kind of bad record gets a reason that names the problem."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.models import PAYMENT_FIELDS, iso_from_ms, ms_from_iso
from app.detection.validation import (
    _PLAIN_DECODER,
    _STRINGS_DECODER,
    InvalidPayment,
    Limits,
    _parse_any,
    _plain_payment,
    parse_keyed_payment,
    parse_payment,
    refuse_pan_in_key,
)
from tests.docs import REPO
from tests.pan_variants import (
    CARD_NUMBERS,
    PAN,
    field_variants,
    grouped,
    luhn_complete,
    spellings,
)

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
        (encode(good(ts=iso_from_ms(NOW_MS + 31_000))), "ts_in_future", "ahead"),
        (encode(good(ts="1999-01-01T00:00:00Z")), "timestamp_out_of_range", "past"),
        (encode(good(txn_id=7)), "bad_type", "txn_id"),
        (encode(good(card_id="4111111111111111")), "pan_in_card_id", "card_id"),
        (encode(good(card_id="4111 1111 1111 1111")), "pan_in_card_id", "card_id"),
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


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 6000 + b"]" * 6000, "unparseable"),  # deeper than json can recurse
        (with_raw_amount(b"1e9999999999999999999999"), "amount_out_of_range"),
        (with_raw_amount(b"9e999999"), "amount_out_of_range"),
        (encode(good(amount="1e999999")), "amount_out_of_range"),
        (encode(good(amount="1000000000000.01")), "amount_out_of_range"),
        (encode(good(amount="0.0000001")), "amount_out_of_range"),
        (with_raw_amount(b"1" + b"0" * 5000), "unparseable"),  # beyond int's digit limit
    ],
)
def test_amounts_out_of_bounds_and_absurd_json_are_refused_not_raised(
    raw: bytes, reason: str
) -> None:
    with pytest.raises(InvalidPayment) as caught:
        parse_payment(raw, NOW_MS)
    assert caught.value.reason == reason


def test_amount_bounds_are_settings() -> None:
    strict = Limits(max_amount=Decimal("500"), max_amount_decimals=2)
    with pytest.raises(InvalidPayment, match="largest allowed, 500"):
        parse_payment(encode(good(amount="500.01")), NOW_MS, strict)
    with pytest.raises(InvalidPayment, match="more than 2 decimal places"):
        parse_payment(encode(good(amount="10.001")), NOW_MS, strict)
    assert parse_payment(encode(good(amount="500.00")), NOW_MS, strict).amount == 500
    assert parse_payment(encode(good(amount="1E+2")), NOW_MS, strict).amount == 100


def with_raw_field(name: str, literal: str) -> bytes:
    """A good payment whose field ``name`` is the JSON text ``literal``."""
    encoded = {k: json.dumps(v) for k, v in good().items()}
    encoded[name] = literal
    return ("{" + ",".join(f'"{k}":{v}' for k, v in encoded.items()) + "}").encode()


# Three lengths and groupings (4-4-4-4, Amex's 4-6-5, 4-4-4-4-3), every spelling of each.
VARIANTS = [
    pytest.param(literal, id=f"{network}-{name}")
    for network in ("visa", "amex", "visa-19")
    for name, literal in field_variants(CARD_NUMBERS[network]).items()
]


@pytest.mark.parametrize("field", PAYMENT_FIELDS)
@pytest.mark.parametrize("literal", VARIANTS)
def test_a_card_number_in_any_field_and_any_spelling_is_refused(field: str, literal: str) -> None:
    with pytest.raises(InvalidPayment) as caught:
        parse_payment(with_raw_field(field, literal), NOW_MS)
    expected = "pan_in_card_id" if field == "card_id" else "pan_in_field"
    assert caught.value.reason == expected and repr(field) in caught.value.detail
    # Refused before any check that quotes a value: the detail holds no digit of it.
    assert not any(c.isdecimal() for c in caught.value.detail)


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("amount", PAN),  # a JSON number
        ("amount", "411111111111.1111"),  # an amount in range whose digits read as one
        ("mcc", PAN),
        ("ts", json.dumps(f"2026-11-28T14:03:07.250Z {grouped(PAN, ' ')}")),
        ("ts", json.dumps(grouped(PAN, "-"))),
    ],
)
def test_numbers_and_timestamps_are_checked_as_their_text(field: str, literal: str) -> None:
    with pytest.raises(InvalidPayment) as caught:
        parse_payment(with_raw_field(field, literal), NOW_MS)
    assert caught.value.reason == "pan_in_field" and repr(field) in caught.value.detail


def test_a_long_field_is_refused_for_its_length_before_its_digits_are_read() -> None:
    # 16 KiB of separated digits in ts: refused at once, not read group by group.
    with pytest.raises(InvalidPayment) as caught:
        parse_payment(encode(good(ts="1 " * 8000)), NOW_MS)
    assert caught.value.reason == "bad_value" and "'ts'" in caught.value.detail


def test_a_payment_in_utf16_with_a_card_number_is_refused() -> None:
    raw = json.dumps(good(card_id=spellings(PAN)["arabic-indic digits"])).encode("utf-16")
    with pytest.raises(InvalidPayment) as caught:
        parse_payment(raw, NOW_MS)
    assert caught.value.reason == "pan_in_card_id"


def test_tokens_that_hold_digits_are_accepted() -> None:
    # A 16-digit run in no network's range; 17 digits; a millisecond timestamp failing Luhn;
    # a card number in a field the payment does not keep (it is dropped, never copied).
    for field, value in [
        ("card_id", "tok_7567273142341000"),
        ("txn_id", "txn-14111111111111111"),
        ("txn_id", "1795000000001"),
        ("device_id", "dev-" + luhn_complete("999999999999999")),
        ("note", PAN),
    ]:
        payment = parse_payment(encode(good(**{field: value})), NOW_MS)
        assert field == "note" or payment.field(field) == value


@pytest.mark.parametrize("literal", VARIANTS)
def test_a_kafka_key_holding_a_card_number_is_refused(literal: str) -> None:
    # The key's bytes as a producer would send the text (escapes left as written).
    text = json.loads(literal) if "\\u" not in literal else literal.strip('"')
    for key in (text.encode(), text.encode("utf-16-le"), literal.encode()):
        with pytest.raises(InvalidPayment) as caught:
            refuse_pan_in_key(key)
        assert caught.value.reason == "pan_in_key"
        assert not any(c.isdecimal() for c in caught.value.detail)


def test_keys_that_are_tokens_or_ids_are_accepted() -> None:
    for key in (None, b"", b"tok_7567273142341000", b"txn-1_000000001", b'"tok_1"', b"\xff"):
        refuse_pan_in_key(key)


def test_a_record_is_re_keyed_unless_its_key_is_the_card_id_and_refused_if_it_holds_a_pan() -> None:
    raw = encode(good(card_id="tok_abc"))
    assert parse_keyed_payment(b"tok_abc", raw, NOW_MS)[1] is False
    assert parse_keyed_payment(None, raw, NOW_MS)[1] is True
    assert parse_keyed_payment(b"t1", raw, NOW_MS)[1] is True
    with pytest.raises(InvalidPayment) as caught:
        parse_keyed_payment(grouped(PAN, " ").encode(), raw, NOW_MS)
    assert caught.value.reason == "pan_in_key"
    # A bad value is refused for itself first, whatever the key.
    with pytest.raises(InvalidPayment) as caught:
        parse_keyed_payment(PAN.encode(), encode(good(card_id=PAN)), NOW_MS)
    assert caught.value.reason == "pan_in_card_id"


@settings(max_examples=300, deadline=None)
@given(
    values=st.dictionaries(
        st.sampled_from(PAYMENT_FIELDS),
        st.lists(st.sampled_from([*"0123456789", *" -._x", "4111", "\\u0034"]), max_size=30).map(
            "".join
        ),
        max_size=3,
    )
)
def test_the_prefilter_changes_no_outcome(values: dict[str, str]) -> None:
    # Whatever the fields hold, skipping the per-field check on the prefilter's word gives
    # the same answer as checking every record.
    raw = b"{" + b",".join(f'"{k}":"{values.get(k, v)}"'.encode() for k, v in good().items()) + b"}"

    def outcome() -> str:
        try:
            return repr(parse_payment(raw, NOW_MS))
        except InvalidPayment as exc:
            return exc.reason

    fast = outcome()
    with patch("app.detection.validation.may_hold_pan", return_value=True):
        assert outcome() == fast


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=2048))
def test_random_bytes_are_a_payment_or_a_reason_never_an_exception(raw: bytes) -> None:
    try:
        parse_payment(raw, NOW_MS)
    except InvalidPayment as exc:
        assert exc.reason and exc.detail


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(good())), _json, max_size=4))
def test_random_json_in_payment_fields_is_a_payment_or_a_reason(changes: dict[str, Any]) -> None:
    try:
        payment = parse_payment(encode(good(**changes)), NOW_MS)
    except InvalidPayment as exc:
        assert exc.reason and exc.detail
    else:
        assert payment.amount >= 0 and payment.card_id


_text_objects = st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=12)


@settings(max_examples=400, deadline=None)
@given(
    body=_text_objects,
    ensure_ascii=st.booleans(),
    cut=st.integers(min_value=0, max_value=400),
    noise=st.binary(max_size=3),
)
def test_the_fast_decoder_accepts_nothing_json_reads_differently(
    body: dict[str, str], ensure_ascii: bool, cut: int, noise: bytes
) -> None:
    # Whole objects of strings, the same spliced with a few random bytes, and objects
    # holding a lone surrogate or a BOM: wherever msgspec's decoder answers, json agrees.
    whole = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    spliced = whole[:cut] + noise + whole[cut:]
    for raw in (whole, spliced, b"\xef\xbb\xbf" + whole, whole.replace(b"}", b',"s":"\\ud800"}')):
        try:
            fast = _STRINGS_DECODER.decode(raw)
        except (msgspec.DecodeError, ValueError):
            continue
        assert json.loads(raw) == fast


def test_a_payment_json_reads_but_the_fast_decoder_does_not_is_still_a_payment() -> None:
    # A number amount, an integer mcc and a BOM each leave the fast path; same payment.
    expected = parse_payment(encode(good()), NOW_MS)
    assert parse_payment(with_raw_amount(b"1000.00"), NOW_MS) == expected
    assert parse_payment(encode(good(mcc=5411)), NOW_MS) == expected
    assert parse_payment(b"\xef\xbb\xbf" + encode(good()), NOW_MS) == expected
    with pytest.raises(InvalidPayment) as missing:
        parse_payment(encode({k: v for k, v in good().items() if k != "ip"}), NOW_MS)
    assert missing.value.reason == "missing_field" and "'ip'" in missing.value.detail


def test_the_payment_the_docs_show_is_valid_and_has_every_field() -> None:
    raw = (REPO / "examples/payment.json").read_bytes()
    body = json.loads(raw)
    assert list(body) == list(PAYMENT_FIELDS)
    sent_at = ms_from_iso(body["ts"])
    assert sent_at is not None
    payment = parse_payment(raw, now_ms=sent_at)
    assert payment.amount == Decimal("1250") and payment.country == "GB"


# --------------------------------------------------------------------------- the BIN


@pytest.mark.parametrize("bin_", ["411111", "41111122", "000000"])
def test_a_payment_may_give_its_bin_of_6_or_8_digits(bin_: str) -> None:
    payment = parse_payment(encode(good(bin=bin_)), NOW_MS)
    assert payment.bin == bin_ and payment.field("bin") == bin_
    # It travels with the payment (repartition topic, forwarding) and reads back the same.
    assert parse_payment(payment.to_json(), NOW_MS) == payment


def test_a_payment_without_a_bin_is_what_it_always_was() -> None:
    for body in (good(), good(bin=None)):
        payment = parse_payment(encode(body), NOW_MS)
        assert payment.bin == "" and b"bin" not in payment.to_json()
    plain = parse_payment(encode(good()), NOW_MS)
    assert parse_payment(encode(good(bin="411111")), NOW_MS).fingerprint() != plain.fingerprint()


@pytest.mark.parametrize(
    "literal",
    [
        '"41111"',
        '"4111111"',
        '"411111111"',
        '"4111x1"',
        '"\\u0664\\u0661\\u0661\\u0661\\u0661\\u0661"',
        '" 411111"',
        '""',
        "411111",
        "true",
        '["411111"]',
    ],
)
def test_a_bin_that_is_not_6_or_8_digits_is_refused_naming_the_field(literal: str) -> None:
    with pytest.raises(InvalidPayment) as caught:
        parse_payment(with_raw_field("bin", literal), NOW_MS)
    assert caught.value.reason == "bad_value" and "'bin'" in caught.value.detail


@pytest.mark.parametrize("literal", VARIANTS)
def test_a_card_number_in_the_bin_in_any_spelling_is_refused_as_one(literal: str) -> None:
    with pytest.raises(InvalidPayment) as caught:
        parse_payment(with_raw_field("bin", literal), NOW_MS)
    assert caught.value.reason == "pan_in_field" and "'bin'" in caught.value.detail
    assert not any(c.isdecimal() for c in caught.value.detail)


def _outcome(parse: Any) -> object:
    """A payment, or the reason and detail of its refusal."""
    try:
        return parse()
    except InvalidPayment as exc:
        return (exc.reason, exc.detail)


# Values a producer might put in any of a plain record's string fields: usual ones, and the
# ones each check of the general path refuses (whitespace, lengths at and past the limit,
# card numbers in several spellings, bad amounts, codes and times, non-ASCII text).
_field_values = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\u2003",
            "\t x ",
            "a" * 128,
            "a" * 129,
            "é" * 128,
            "é" * 129,
            "4111111111111111",
            "tok_4111 1111 1111 1111",
            "x\u0034111111111111111",
            "1000",
            "1000.1234567",
            "-1",
            "NaN",
            " 12.5 ",
            "1e3",
            "1_000",
            "1000000000001",
            "EUR",
            "eur",
            "FR",
            "XX",
            "5411",
            "\u0665\u0664\u0661\u0661",
            "541",
            iso_from_ms(NOW_MS),
            iso_from_ms(NOW_MS + 3_600_000),
            "2026-12-05T10:00:00",
            "2026-13-05T10:00:00Z",
            "1995-01-01T00:00:00Z",
            "411111",
            "41111122",
            "4111x1",
        ]
    ),
    st.text(max_size=20),
)


@settings(max_examples=600, deadline=None)
@given(
    changed=st.dictionaries(st.sampled_from([*PAYMENT_FIELDS, "bin"]), _field_values, max_size=3),
    ensure_ascii=st.booleans(),
)
def test_a_plain_record_is_decided_as_the_general_path_decides_it(
    changed: dict[str, str], ensure_ascii: bool
) -> None:
    # The fast path (msgspec straight into a struct of the eleven strings) must accept the
    # same records as the general one, give the same payment and refuse with the same
    # reason and detail: the DLQ and the alerts cannot tell which path a record took.
    raw = json.dumps(good(**changed), ensure_ascii=ensure_ascii).encode()
    limits = Limits()
    general = _outcome(lambda: _parse_any(raw, NOW_MS, limits))
    assert _outcome(lambda: parse_payment(raw, NOW_MS, limits)) == general
    tight = Limits(max_amount=Decimal("999.99"), max_amount_decimals=1)
    assert _outcome(lambda: parse_payment(raw, NOW_MS, tight)) == _outcome(
        lambda: _parse_any(raw, NOW_MS, tight)
    )


def test_a_plain_payment_takes_the_fast_path() -> None:
    # What producers send decodes into the struct and is decided there, to the payment the
    # general path gives; a card number, a whitespace identifier or another field does not.
    raw = encode(good())
    plain = _PLAIN_DECODER.decode(raw)
    payment = _plain_payment(plain, raw, NOW_MS, Limits())
    assert payment is not None and payment == _parse_any(raw, NOW_MS, Limits())
    for refused in (encode(good(ip=" ")), encode(good(merchant_id="m 4111111111111111"))):
        assert _plain_payment(_PLAIN_DECODER.decode(refused), refused, NOW_MS, Limits()) is None
    with_bin = encode(good(bin="411111"))
    payment = _plain_payment(_PLAIN_DECODER.decode(with_bin), with_bin, NOW_MS, Limits())
    assert payment is not None and payment.bin == "411111"
    assert payment == _parse_any(with_bin, NOW_MS, Limits())
    for other in (good(lat="1"), good(type="payment"), good(amount=5), good(bin=411111)):
        with pytest.raises(msgspec.DecodeError):
            _PLAIN_DECODER.decode(encode(other))
