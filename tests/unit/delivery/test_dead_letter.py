"""app.delivery.dead_letter: the DLQ record carries no card number in clear and stays small."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery.dead_letter import DLQ_ORIGINAL_LIMIT, DeadLetter
from app.detection.pan import contains_pan
from tests.factories import PAN, Message


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
            shown = base64.b64decode(body[name]).decode("latin-1")
            assert not contains_pan(shown), "no card number a scanner would find"
