"""app.delivery.dead_letter: the DLQ record carries no card number in clear and stays small."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery.dead_letter import DLQ_ORIGINAL_LIMIT, DeadLetter
from app.detection.pan import bytes_hold_pan, contains_pan
from tests.factories import PAN, Message
from tests.pan_variants import CARD_NUMBERS, field_variants, grouped, readings


def test_the_dlq_record_masks_the_card_number_in_value_key_and_detail() -> None:
    record = DeadLetter.for_message(Message(), "bad_value", "field 'ip' is " + PAN.decode())
    body = json.loads(record.to_json())
    assert PAN.decode() not in json.dumps(body)
    assert base64.b64decode(body["original_key_b64"]) == b"************1111"
    assert PAN not in base64.b64decode(body["original_b64"])
    assert body["source"] == {"topic": "payments.raw", "partition": 2, "offset": 41}


def test_an_oversize_original_keeps_a_head_its_size_and_digest() -> None:
    value = b"x" * 3_000_000
    body = json.loads(DeadLetter.for_message(Message(value=value), "oversize", "big").to_json())
    assert body["original_truncated"] is True and body["original_size"] == 3_000_000
    assert len(base64.b64decode(body["original_b64"])) == DLQ_ORIGINAL_LIMIT
    assert len(body["original_sha256"]) == 64
    assert len(json.dumps(body)) < 1024 * 1024 // 2, "far below the producer's request limit"


@settings(max_examples=200, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=64)), value=st.one_of(st.none(), st.binary()))
def test_any_record_makes_a_dlq_record_without_a_card_number(
    key: bytes | None, value: bytes | None
) -> None:
    message = Message(key=None if key is None else key + b"-" + PAN, value=value)
    body = json.loads(DeadLetter.for_message(message, "unparseable", "x").to_json())
    assert PAN not in base64.b64decode(body["original_key_b64"] or "")
    for name in ("original_b64", "original_key_b64"):
        if body[name] is not None:
            # Read as the pipeline reads text (UTF-8, escapes, UTF-16/32 JSON would guess).
            assert not bytes_hold_pan(base64.b64decode(body[name]))


def copies(body: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(body[n]) for n in ("original_b64", "original_key_b64") if body[n]]


@pytest.mark.parametrize("network", ["visa", "amex", "visa-19"])
def test_every_spelling_in_a_value_or_a_key_is_masked_after_decoding(network: str) -> None:
    digits = CARD_NUMBERS[network]
    for name, literal in field_variants(digits).items():
        value = b'{"card_id":' + literal.encode() + b',"ts":"2026-11-28T14:03:07.250Z"}'
        key = literal.strip('"').encode()  # escapes left as written
        for message in (
            Message(key=b"tok_1", value=value),
            Message(key=key, value=b"{}"),
            Message(key=None, value=value.decode().encode("utf-16")),
        ):
            body = json.loads(DeadLetter.for_message(message, "pan_in_card_id", "x").to_json())
            for copy in copies(body):
                assert digits not in readings(copy), name
                assert not bytes_hold_pan(copy), name
            # The digits are masked in place: a masked JSON copy is still the same JSON.
            if message.value != b"{}":
                original = json.loads(base64.b64decode(body["original_b64"]))
                assert original["ts"] == "2026-11-28T14:03:07.250Z"
                assert not contains_pan(original["card_id"])
                # A digest of the original would let the masked digits be tried: none.
                assert body["original_sha256"] is None


def test_a_card_number_cut_by_the_size_limit_shows_no_more_than_its_last_four() -> None:
    for before in range(DLQ_ORIGINAL_LIMIT - 16, DLQ_ORIGINAL_LIMIT):
        value = b"x" * before + grouped(PAN.decode(), " ").encode() + b"x" * 100
        body = json.loads(DeadLetter.for_message(Message(value=value), "oversize", "").to_json())
        head = base64.b64decode(body["original_b64"])
        assert len(head) == DLQ_ORIGINAL_LIMIT
        assert set(head[before:]) <= set(b"* 1"), head[before:]
        assert body["original_sha256"] is None


def test_a_record_without_a_card_number_keeps_its_bytes_and_digest() -> None:
    value = b'{"card_id":"tok_7567273142341000","ts":"2026-11-28T14:03:07.250Z"}'
    body = json.loads(DeadLetter.for_message(Message(key=b"t1", value=value), "x", "").to_json())
    assert base64.b64decode(body["original_b64"]) == value
    assert base64.b64decode(body["original_key_b64"]) == b"t1"
    assert body["original_sha256"] == hashlib.sha256(value).hexdigest()


def test_the_detail_is_masked_before_and_after_its_cut() -> None:
    # 17 digits are no card number; cut at 2000 characters, the first 16 of them are one.
    detail = "x" * 1984 + PAN.decode() + "2"
    shown = DeadLetter.for_message(Message(), "bad_value", detail).detail
    assert shown == "x" * 1984 + "*" * 12 + "1111"
