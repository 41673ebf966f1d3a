"""The repartition topic's records: a batch's forwarded payments, several to a record.

The detect agent forwards a payment to the repartition topic for every other group-by
whose rules count it, and re-keys by card a payment whose Kafka key was not its card.
Each forwarded payment used to be a record of its own: a producer send, a fetched record,
a second decode and validation on the way in, about a fifth of all payments with the
default rules. Now a batch's forwarded payments for one partition of the repartition
topic travel together, already validated, as one record: a JSON array of
``[record_key, produced_ms, payment]`` (``Forwarded``), the payment as an array of its
fields, the amount a decimal string. The record key is ``FORWARDED_BATCH_KEY``; the
partition is the one each entry's own key hashes to (``app.detection.keys``), so a key's
payments still meet in one partition and one table. A record stays under
``MAX_FORWARDED_RECORD_BYTES``, far below Kafka's default message size limit (1 MiB).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import msgspec

from app.detection.models import Payment

FORWARDED_BATCH_KEY = b"\x1fforwarded"
MAX_FORWARDED_RECORD_BYTES = 256 * 1024


class Forwarded(NamedTuple):
    """One forwarded payment: its repartition key, when it reached Kafka, the payment."""

    record_key: str  # app.detection.keys.group_record_key
    produced_ms: int  # the payment's timestamp on payments.raw, for latency and alerts
    payment: Payment


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[Forwarded])


def encode_forwarded(
    items: Iterable[Forwarded], limit: int = MAX_FORWARDED_RECORD_BYTES
) -> list[bytes]:
    """Record values holding ``items`` in order, each under ``limit`` bytes (but for a
    single item larger than that, which gets a record of its own)."""
    if not isinstance(items, list):
        items = list(items)
    if not items:
        return []
    whole = _encoder.encode(items)  # the same bytes as its items' joined: compact JSON
    if len(whole) <= limit:  # the usual case: one encode call for the whole batch
        return [whole]
    records: list[bytes] = []
    parts: list[bytes] = []
    size = 2  # the brackets
    for item in items:
        part = _encoder.encode(item)
        if parts and size + len(part) + 1 > limit:
            records.append(b"[" + b",".join(parts) + b"]")
            parts, size = [], 2
        parts.append(part)
        size += len(part) + 1
    if parts:
        records.append(b"[" + b",".join(parts) + b"]")
    return records


def decode_forwarded(value: bytes) -> list[Forwarded]:
    """The payments of a forwarded batch record; ValueError if it is not one."""
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a forwarded batch record: {exc}") from exc
