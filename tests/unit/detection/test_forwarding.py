"""app.detection.forwarding: a batch's forwarded payments in few repartition records."""

from __future__ import annotations

import time

import pytest

from app.detection.forwarding import (
    MAX_FORWARDED_RECORD_BYTES,
    Forwarded,
    decode_forwarded,
    encode_forwarded,
)
from app.detection.keys import group_record_key
from app.generator import PaymentGenerator


def _forwarded(count: int) -> list[Forwarded]:
    generator = PaymentGenerator(seed=7, cards=50)
    start = int(time.time() * 1000)
    return [
        Forwarded(group_record_key(("device_id",), p.device_id), start + i, p)
        for i, (p, _) in enumerate(generator.stream(count, start))
    ]


def test_forwarded_payments_come_back_equal_in_order_with_exact_amounts() -> None:
    items = _forwarded(500)
    (record,) = encode_forwarded(items)
    assert decode_forwarded(record) == items
    assert [f.payment.amount for f in decode_forwarded(record)] == [f.payment.amount for f in items]


def test_records_stay_under_the_size_limit_and_keep_every_payment_in_order() -> None:
    items = _forwarded(2000)
    records = encode_forwarded(items, limit=20_000)
    assert len(records) > 10
    assert all(len(record) <= 20_000 for record in records)
    assert [f for record in records for f in decode_forwarded(record)] == items
    assert all(len(r) <= MAX_FORWARDED_RECORD_BYTES for r in encode_forwarded(_forwarded(5000)))


def test_a_payment_larger_than_the_limit_still_travels_alone() -> None:
    items = _forwarded(3)
    records = encode_forwarded(items, limit=10)
    assert len(records) == 3
    assert [decode_forwarded(r)[0] for r in records] == items


def test_nothing_to_forward_is_no_record() -> None:
    assert encode_forwarded([]) == []


@pytest.mark.parametrize(
    "value",
    [b"", b"{}", b"[1]", b'{"txn_id": "t"}', b'[["k", 1, ["t"]]]', b"[[", b'[["k", "x", []]]'],
)
def test_anything_else_is_refused_with_a_value_error(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a forwarded batch record"):
        decode_forwarded(value)
