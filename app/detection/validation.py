"""Payment validation: raw bytes in, a :class:`Payment` or an :class:`InvalidPayment` out.

Pure and synchronous; the agent forwards every rejection to the DLQ.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
import pycountry

from app.detection.models import BIN, BIN_LENGTHS, EVENT_TYPES, PAYMENT, PAYMENT_FIELDS, Payment
from app.detection.pan import bytes_hold_pan, contains_pan, may_hold_pan

CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)
_STRING_FIELDS = ("txn_id", "card_id", "account_id", "merchant_id", "device_id", "ip")
_OTHER_FIELDS = tuple(name for name in PAYMENT_FIELDS if name not in _STRING_FIELDS)
_MAX_ID_LENGTH = 128
_MCC = re.compile(r"\d{4}")


class InvalidPayment(ValueError):
    """Why a record is not a usable payment; ``reason`` is a stable code for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 16 * 1024
    max_future_skew_ms: int = 30 * 1000
    max_event_age_ms: int = 30 * 24 * 3600 * 1000
    max_amount: Decimal = Decimal("1000000000000")
    max_amount_decimals: int = 6


def _reject_constant(name: str) -> Any:
    raise InvalidPayment("non_finite_number", f"JSON constant {name} is not allowed")


@functools.cache
def _quantum(decimals: int) -> Decimal:
    """``10 ** -decimals``, built once per setting rather than per payment."""
    return Decimal(1).scaleb(-decimals)


def parse_amount(value: object, limits: Limits = Limits()) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise InvalidPayment("bad_type", "field 'amount' must be a JSON number or a decimal string")
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        shown = value[:40] if isinstance(value, str) else value
        raise InvalidPayment("bad_amount", f"field 'amount' is not a decimal: {shown!r}") from None
    if not amount.is_finite():
        raise InvalidPayment("non_finite_number", "field 'amount' must be finite")
    if amount < 0:
        raise InvalidPayment("negative_amount", "field 'amount' must not be negative")
    if amount > limits.max_amount:
        raise InvalidPayment(
            "amount_out_of_range",
            f"field 'amount' is above the largest allowed, {limits.max_amount}",
        )
    # Exponents are bounded now (amount <= max_amount), so this comparison is cheap.
    if amount != amount.quantize(_quantum(limits.max_amount_decimals)):
        raise InvalidPayment(
            "amount_out_of_range",
            f"field 'amount' has more than {limits.max_amount_decimals} decimal places",
        )
    return amount


def parse_event_time(value: object) -> int:
    if not isinstance(value, str):
        raise InvalidPayment("bad_type", "field 'ts' must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidPayment(
            "bad_timestamp", f"field 'ts' is not ISO 8601: {value[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        raise InvalidPayment("bad_timestamp", "field 'ts' has no time zone")
    return int(moment.timestamp() * 1000)


# Built once: json.loads with parse_float builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def _loads(raw: bytes) -> Any:
    # Not plain ASCII: json.loads detects UTF-8/16/32 and raises on bad bytes, as it always has.
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


# The common case, a JSON object whose values are all strings, decodes in C about three
# times faster than json's decoder. It accepts nothing json would decode differently (no BOM,
# no lone surrogates, no non-string value); anything it refuses goes through json, which
# gives the reason (tests/unit/detection/test_validation.py holds the two to that).
_STRINGS_DECODER = msgspec.json.Decoder(dict[str, str])
_REQUIRED = frozenset(PAYMENT_FIELDS)
_PAYMENT_SIZE = len(PAYMENT_FIELDS)


def _decode(raw: bytes | None, limits: Limits) -> tuple[dict[str, Any], bool]:
    """The record's JSON object, or the reason it is not one; and whether it is a plain
    payment: today's eleven fields, all strings, nothing else (most records)."""
    if raw is None:
        raise InvalidPayment("empty", "record has no value")
    if len(raw) > limits.max_bytes:
        raise InvalidPayment("oversize", f"record is {len(raw)} bytes, limit {limits.max_bytes}")
    try:
        body = _STRINGS_DECODER.decode(raw)
    except (msgspec.DecodeError, ValueError):  # ValueError: UnicodeDecodeError
        body = _decode_json(raw)
    else:
        if body.keys() >= _REQUIRED:  # strings only: none of them can be null
            return body, len(body) == _PAYMENT_SIZE
    if body.get("type", PAYMENT) != PAYMENT:
        return body, False  # another type of event: its fields are checked by _parse_event
    for name in PAYMENT_FIELDS:
        if body.get(name) is None:
            raise InvalidPayment("missing_field", f"field {name!r} is missing")
    return body, False


def _decode_json(raw: bytes) -> dict[str, Any]:
    try:
        body = _DECODER.decode(raw.decode()) if raw.isascii() else _loads(raw)
    except InvalidPayment:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidPayment("unparseable", f"not JSON: {exc}") from None
    except RecursionError:
        raise InvalidPayment("unparseable", "JSON nested too deeply") from None
    except ArithmeticError:
        # A number whose exponent Decimal cannot even represent, e.g. 1e99999999999.
        raise InvalidPayment("amount_out_of_range", "a JSON number is out of range") from None
    if not isinstance(body, dict):
        raise InvalidPayment("not_an_object", "payment must be a JSON object")
    return body


def _holds_pan(value: object) -> bool:
    if isinstance(value, str):
        return contains_pan(value)
    # A JSON number's digits (an amount, an mcc) are text on every topic they reach.
    return isinstance(value, int | Decimal) and contains_pan(str(value))


def _refuse_card_numbers(
    body: dict[str, Any], raw: bytes | None, kept: tuple[str, ...] = PAYMENT_FIELDS
) -> None:
    """A card number in any field of the payment (the ones it keeps: others are dropped) is
    refused before any check whose detail quotes a value. The common record, ASCII
    without a long digit chain, is cleared by one scan of its bytes."""
    if raw is not None and not may_hold_pan(raw):
        return
    if "card_id" in kept and _holds_pan(body["card_id"]):
        raise InvalidPayment("pan_in_card_id", "field 'card_id' holds a card number, not a token")
    for name in kept:
        # A PAN in any other field would flow into topics, state and alerts in clear.
        if name != "card_id" and _holds_pan(body[name]):
            raise InvalidPayment("pan_in_field", f"field {name!r} holds a card number")


def refuse_pan_in_key(key: bytes | None) -> None:
    """A Kafka key holding a card number (in any spelling, see ``app.detection.pan``) means
    its producer puts card numbers on the topic: refused, so it shows as a DLQ reason
    rather than being quietly re-keyed, and masked in the DLQ copy. A key equal to the
    payment's card id needs no check: the card id had it."""
    if key is not None and bytes_hold_pan(key):
        raise InvalidPayment("pan_in_key", "the record's Kafka key holds a card number")


def _check_identifiers(
    body: dict[str, Any],
    strings: tuple[str, ...] = _STRING_FIELDS,
    others: tuple[str, ...] = _OTHER_FIELDS,
) -> None:
    """Identifiers are non-empty strings, and no text field is longer than any real one can
    be: the card-number check, next, then reads short text only (its cost grows with the
    digits it reads). No detail here quotes a value."""
    for name in strings:
        value = body[name]
        if not isinstance(value, str) or not value.strip():
            raise InvalidPayment("bad_type", f"field {name!r} must be a non-empty string")
        if len(value) > _MAX_ID_LENGTH:
            raise InvalidPayment("bad_value", f"field {name!r} is longer than {_MAX_ID_LENGTH}")
    for name in others:
        value = body[name]
        if isinstance(value, str) and len(value) > _MAX_ID_LENGTH:
            raise InvalidPayment("bad_value", f"field {name!r} is longer than {_MAX_ID_LENGTH}")


def _currency(currency: object) -> str:
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise InvalidPayment("unknown_currency", f"field 'currency' is not ISO 4217: {currency!r}")
    return currency


def _country(country: object) -> str:
    if not isinstance(country, str) or country not in COUNTRIES:
        raise InvalidPayment(
            "unknown_country", f"field 'country' is not ISO 3166-1 alpha-2: {country!r}"
        )
    return country


def _mcc(mcc: object) -> str:
    if isinstance(mcc, int) and not isinstance(mcc, bool):
        mcc = f"{mcc:04d}"
    if not isinstance(mcc, str) or not _MCC.fullmatch(mcc):
        raise InvalidPayment("bad_value", "field 'mcc' must be a 4-digit merchant category code")
    return mcc


def _codes(currency: object, country: object, mcc: object) -> tuple[str, str, str]:
    """Currency, country and merchant category code, each checked against its standard."""
    if (
        type(currency) is str
        and currency in CURRENCIES
        and type(country) is str
        and country in COUNTRIES
        and type(mcc) is str
        and _MCC.fullmatch(mcc)
    ):
        return currency, country, mcc  # what producers send, without three calls
    return _currency(currency), _country(country), _mcc(mcc)


# What msgspec checks as it decodes a plain record (below): the lengths _check_identifiers
# allows, so that a field beyond them leaves the fast path for the one that says why.
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_ID_LENGTH)]
_Text = Annotated[str, msgspec.Meta(max_length=_MAX_ID_LENGTH)]


class _PlainPayment(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """What producers send: today's eleven fields, each a string, and an optional BIN;
    nothing else. msgspec decodes it straight into these slots (no dict, no key strings) at
    half the cost of a dict, and checks each length; it refuses anything else (another
    field, a non-string value, a BOM, a lone surrogate, an empty identifier, a long field),
    which the general path then decodes and judges (tests/unit/detection/test_validation.py
    holds the two to the same payments and the same reasons)."""

    txn_id: _Id
    card_id: _Id
    account_id: _Id
    amount: _Text
    currency: _Text
    merchant_id: _Id
    mcc: _Text
    country: _Text
    device_id: _Id
    ip: _Id
    ts: _Text
    bin: str | None = None  # the optional BIN, checked by _bin as on the general path


_PLAIN_DECODER = msgspec.json.Decoder(_PlainPayment)


def parse_payment(raw: bytes | None, now_ms: int, limits: Limits = Limits()) -> Payment:
    """Decode and validate one record of ``payments.raw``.

    ``now_ms`` bounds only absurd timestamps; windows never look at the wall clock.
    """
    if raw is not None and len(raw) <= limits.max_bytes:
        try:
            plain = _PLAIN_DECODER.decode(raw)
        except (msgspec.DecodeError, ValueError):  # ValueError: UnicodeDecodeError
            pass
        else:
            payment = _plain_payment(plain, raw, now_ms, limits)
            if payment is not None:
                return payment
    return _parse_any(raw, now_ms, limits)


def _plain_payment(plain: _PlainPayment, raw: bytes, now_ms: int, limits: Limits) -> Payment | None:
    """A plain record's payment, checked as the general path checks it and in its order;
    None when an identifier is only whitespace or the record may hold a card number, for
    the general path to say why (or to clear it)."""
    txn_id, card_id, account_id = plain.txn_id, plain.card_id, plain.account_id
    merchant_id, device_id, ip = plain.merchant_id, plain.device_id, plain.ip
    if (
        txn_id.isspace()
        or card_id.isspace()
        or account_id.isspace()
        or merchant_id.isspace()
        or device_id.isspace()
        or ip.isspace()
        or may_hold_pan(raw)  # _refuse_card_numbers' one scan
    ):
        return None
    amount = parse_amount(plain.amount, limits)
    currency, country, mcc = _codes(plain.currency, plain.country, plain.mcc)
    ts = plain.ts
    return Payment(
        txn_id,
        card_id,
        account_id,
        amount,
        currency,
        merchant_id,
        mcc,
        country,
        device_id,
        ip,
        ts,
        _event_time(ts, now_ms, limits),  # before the BIN's check, as the general path
        PAYMENT,
        None,
        None,
        "" if plain.bin is None else _bin(plain.bin),
    )


def _parse_any(raw: bytes | None, now_ms: int, limits: Limits) -> Payment:
    """Any record: another type of event, another field, a JSON number, or a bad one."""
    body, plain = _decode(raw, limits)
    if not plain:
        kind = body.get("type", PAYMENT)
        if kind != PAYMENT:
            return _parse_event(body, raw, now_ms, limits, kind)
    _check_identifiers(body)
    _refuse_card_numbers(body, raw)
    amount = parse_amount(body["amount"], limits)
    currency, country, mcc = _codes(body["currency"], body["country"], body["mcc"])
    ts_ms = _event_time(body["ts"], now_ms, limits)
    payment = Payment(
        txn_id=body["txn_id"],
        card_id=body["card_id"],
        account_id=body["account_id"],
        amount=amount,
        currency=currency,
        merchant_id=body["merchant_id"],
        mcc=mcc,
        country=country,
        device_id=body["device_id"],
        ip=body["ip"],
        ts=body["ts"],
        ts_ms=ts_ms,
    )
    if plain:
        return payment  # today's eleven fields and no other: no BIN
    if body.get(BIN) is not None:
        # bin is the last field: positionally, about 0.3 us against 1 us for a replace.
        payment = Payment(*payment[:-1], _bin(body[BIN]))
    return _located(payment, body)


def _bin(value: object) -> str:
    """A payment's optional BIN: a string of 6 or 8 ASCII digits. A card number there is
    refused as one anywhere else is; no detail quotes the value."""
    if value is None:
        return ""
    if type(value) is str and len(value) in BIN_LENGTHS and value.isascii() and value.isdigit():
        return value
    if _holds_pan(value):
        raise InvalidPayment("pan_in_field", f"field {BIN!r} holds a card number")
    raise InvalidPayment(
        "bad_value", f"field {BIN!r} must be a string of 6 or 8 digits (the card's BIN)"
    )


def _event_time(ts: object, now_ms: int, limits: Limits) -> int:
    ts_ms = parse_event_time(ts)
    if ts_ms > now_ms + limits.max_future_skew_ms:
        # It would move its key's clock ahead of ours (see Settings.max_future_skew_s).
        raise InvalidPayment(
            "ts_in_future",
            f"field 'ts' is {(ts_ms - now_ms) / 1000:.3f} s ahead of the worker's clock,"
            f" more than the {limits.max_future_skew_ms / 1000:g} s allowed",
        )
    if ts_ms < now_ms - limits.max_event_age_ms:
        raise InvalidPayment("timestamp_out_of_range", "field 'ts' is too far in the past")
    return ts_ms


# Fields every type of event has, and those no type keeps as text of its own.
_EVERY_TYPE = ("txn_id", "account_id", "ts")
_LOCATION = ("lat", "lon")
_STRING_SET = frozenset(_STRING_FIELDS)


def _parse_event(
    body: dict[str, Any], raw: bytes | None, now_ms: int, limits: Limits, kind: object
) -> Payment:
    """An event of a type other than a payment (``EVENT_TYPES``): its own required fields,
    those it may have, and nothing of another type's."""
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        shown = kind[:40] if isinstance(kind, str) else kind
        raise InvalidPayment(
            "unknown_type", f"field 'type' is not one of {', '.join(EVENT_TYPES)}: {shown!r}"
        )
    needed, optional = EVENT_TYPES[kind]
    for name in (*_EVERY_TYPE, *needed):
        if body.get(name) is None:
            raise InvalidPayment("missing_field", f"field {name!r} is missing (a {kind} has it)")
    present = tuple(name for name in optional if body.get(name) is not None)
    for name in PAYMENT_FIELDS:
        if name in body and name not in _EVERY_TYPE and name not in needed + present:
            raise InvalidPayment("field_not_of_type", f"field {name!r} is not a field of a {kind}")
    kept = (*_EVERY_TYPE, *needed, *present)
    _check_identifiers(
        body,
        tuple(name for name in kept if name in _STRING_SET),
        tuple(name for name in kept if name not in _STRING_SET),
    )
    _refuse_card_numbers(body, raw, kept)
    fields: dict[str, Any] = {}
    if "amount" in kept:
        fields["amount"] = parse_amount(body["amount"], limits)
    if "currency" in kept:
        fields["currency"] = _currency(body["currency"])
    if "country" in kept:
        fields["country"] = _country(body["country"])
    if "mcc" in kept:
        fields["mcc"] = _mcc(body["mcc"])
    ts_ms = _event_time(body["ts"], now_ms, limits)
    for name in kept:
        if name in _STRING_SET:
            fields[name] = body[name]
    event = _EMPTY_EVENT._replace(**fields, ts=body["ts"], ts_ms=ts_ms, type=kind)
    return _located(event, body)


_EMPTY_EVENT = Payment("", "", "", Decimal(0), "", "", "", "", "", "", "", 0)


def _located(payment: Payment, body: dict[str, Any]) -> Payment:
    """The event with where it happened, if it says: ``lat`` and ``lon`` both, each a JSON
    number or a decimal string of degrees within its range."""
    if body.get("lat") is None and body.get("lon") is None:
        return payment
    lat, lon = (_degrees(body, name, bound) for name, bound in (("lat", 90), ("lon", 180)))
    return payment._replace(lat=lat, lon=lon)


def _degrees(body: dict[str, Any], name: str, bound: int) -> float:
    value = body.get(name)
    if value is None:
        raise InvalidPayment(
            "missing_field", f"field {name!r} is missing (lat and lon go together)"
        )
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise InvalidPayment(
            "bad_type", f"field {name!r} must be a JSON number or a decimal string"
        )
    try:
        degrees = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        degrees = Decimal("NaN")
    if not degrees.is_finite() or not -bound <= degrees <= bound:
        raise InvalidPayment(
            "bad_location", f"field {name!r} must be a number of degrees from -{bound} to {bound}"
        )
    return float(degrees)


def parse_keyed_payment(
    key: bytes | None, raw: bytes | None, now_ms: int, limits: Limits = Limits()
) -> tuple[Payment, bool]:
    """A record of ``payments.raw`` with its Kafka key: the payment, and whether it must be
    re-keyed (its key is not its card id). Refused as :func:`parse_payment` refuses, and
    as ``pan_in_key`` when the key holds a card number (whatever the event's type)."""
    payment = parse_payment(raw, now_ms, limits)
    # An event without a card (a login) has no card partition: it is never re-keyed, and
    # reaches the rules of its other keys (account, device, ip) by forwarding.
    if key == payment.card_id.encode():
        return payment, False
    refuse_pan_in_key(key)
    return payment, payment.card_id != ""
